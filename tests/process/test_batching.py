"""Smart batching on the router ⇄ shard link, end to end (real router, real shard, real sockets).

The router merges the requests one wake-up reads for the same shard into one message and splits
the shard's one reply message back. What must not change: every client gets exactly its own
reply, and that reply carries exactly the events the engine sequenced for its command. The
reference is the shard's journal, replayed offline by ``shardex replay --journal``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import zmq

from shardex.auth import KeyFile
from shardex.engine import DEFAULT_MARKETS
from shardex.wire.protocol import (
    command_from_json,
    decode_reply,
    encode_request,
    event_to_json,
)
from shardex.wire.transport import dealer
from tests.support.cluster import Cluster

CLIENTS = 8
ORDERS = 150  # per client
WINDOW = 50  # one-order frames each client keeps in flight (well under the router's caps)
SYMBOLS = ("BTC-USD", "ETH-USD")


def _orders(k: int) -> list[tuple[str, bytes, bytes]]:
    """Client k's one-order frames: crossing prices so that many orders trade with other
    clients' orders, partially and in full, plus a cancel now and then."""
    out = []
    for n in range(ORDERS):
        symbol = SYMBOLS[n % 2]
        oid = f"c{k}-{n}"
        if n % 10 == 9:
            obj = {"op": "cancel", "symbol": symbol, "id": f"c{k}-{n - 2}", "account": f"a{k}"}
        else:
            obj = {
                "op": "new",
                "symbol": symbol,
                "id": oid,
                "account": f"a{k}",
                "side": "buy" if (n + k) % 2 else "sell",
                "type": "limit",
                "price": str(100 + (n * 7 + k * 3) % 11),
                "qty": str(1 + (n + k) % 3),
            }
        cmd = command_from_json(obj, DEFAULT_MARKETS)
        out.append((symbol, f"{k}:{n}".encode(), encode_request([cmd])))
    return out


def _client(endpoint: str, key: KeyFile, k: int, replies: dict, errors: list) -> None:
    ctx = zmq.Context()
    sock = dealer(ctx, endpoint, 10.0, key=key)
    try:
        todo = _orders(k)
        sent = got = 0
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while got < len(todo):
            while sent < len(todo) and sent - got < WINDOW:
                symbol, req, payload = todo[sent]
                sock.send_multipart([symbol.encode(), req, payload])
                sent += 1
            if not poller.poll(20_000):
                errors.append(f"client {k}: no reply within 20 s ({got}/{len(todo)})")
                return
            req, payload = sock.recv_multipart()
            replies[req] = decode_reply(payload)
            got += 1
    finally:
        sock.close(0)
        ctx.term()


def _router_info(cluster: Cluster) -> dict:
    with cluster.client() as c:
        return c.topology()


def test_interleaved_single_orders_get_exactly_their_own_events():
    data = tempfile.mkdtemp(prefix="shardex-batching-")
    cluster = Cluster(1, data_dir=data)
    try:
        key = KeyFile.read(cluster.key)
        replies: dict[bytes, tuple] = {}
        errors: list[str] = []
        threads = [
            threading.Thread(target=_client, args=(cluster.endpoint, key, k, replies, errors))
            for k in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
        assert len(replies) == CLIENTS * ORDERS
        info = _router_info(cluster)
    finally:
        cluster.stop()
    try:
        # the router did merge: fewer shard messages than requests
        batching = info["batching"]
        assert batching["requests"] >= CLIENTS * ORDERS
        assert batching["messages"] < batching["requests"], batching
        journal_dir = str(Path(data, "shard-0"))
        proc = subprocess.run(
            [sys.executable, "-m", "shardex.cli", "replay", "--journal", journal_dir],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        journal = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    finally:
        import shutil

        shutil.rmtree(data, ignore_errors=True)
    by_seq = {ev["seq"]: ev for ev in journal}
    seen: list[int] = []
    trades = 0
    for req, (error, results) in replies.items():
        assert error is None, (req, error)
        assert len(results) == 1, (req, results)
        evs = [event_to_json(ev, DEFAULT_MARKETS) for ev in results[0]]
        assert evs, req  # every command yields at least one event
        for ev in evs:
            assert by_seq.get(ev["seq"]) == ev, (req, ev)  # its own events, as journaled
            seen.append(ev["seq"])
        trades += sum(ev["ev"] == "trade" for ev in evs)
    # every event the engine sequenced reached exactly one client, none twice
    assert sorted(seen) == sorted(by_seq)
    assert trades > 0
