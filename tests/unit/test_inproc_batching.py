"""Smart batching on the router ⇄ shard link, end to end, in one process (``shardex.inproc``:
the router and shard of ``shardex up`` over the in-memory transport).

The router merges the requests one wake-up reads for the same shard into one message and splits
the shard's one reply message back. What must not change: every client gets exactly its own
reply, and that reply carries exactly the events the engine sequenced for its command. The
reference is the shard's journal (on disk: the plan has a data dir), replayed offline by
``shardex replay --journal``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shardex.cli.replay import replay
from shardex.engine import DEFAULT_MARKETS
from shardex.inproc import InProcCluster
from shardex.wire.protocol import command_from_json, decode_reply, encode_request, event_to_json
from tests.support.inproc import plan, run

pytestmark = pytest.mark.timeout(60)

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


async def _client(cluster: InProcCluster, k: int, replies: dict) -> None:
    """A raw DEALER keeping ``WINDOW`` one-order frames in flight until every one is answered."""
    sock = cluster.net.Context().socket(cluster.net.DEALER)
    sock.connect(cluster.endpoint)
    try:
        todo = _orders(k)
        sent = got = 0
        while got < len(todo):
            while sent < len(todo) and sent - got < WINDOW:
                symbol, req, payload = todo[sent]
                sock.send_multipart([symbol.encode(), req, payload])
                sent += 1
            req, payload = await cluster.until(
                lambda: sock.poll(0) and sock.recv_multipart(), timeout=20,
                what=f"client {k}'s reply ({got}/{len(todo)})")  # fmt: skip
            replies[req] = decode_reply(payload)
            got += 1
    finally:
        sock.close(0)


def test_interleaved_single_orders_get_exactly_their_own_events(tmp_path: Path):
    data = tmp_path / "data"
    replies: dict[bytes, tuple] = {}

    async def body(cluster: InProcCluster) -> dict[str, Any]:
        await asyncio.gather(*[_client(cluster, k, replies) for k in range(CLIENTS)])
        async with cluster.client() as c:
            return await c.topology()

    info = run(plan(1, data_dir=str(data)), body)
    assert len(replies) == CLIENTS * ORDERS
    # the router did merge: fewer shard messages than requests
    batching = info["batching"]
    assert batching["requests"] >= CLIENTS * ORDERS
    assert batching["messages"] < batching["requests"], batching
    out = CliRunner().invoke(replay, ["--journal", str(data / "shard-0")], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    journal = [json.loads(line) for line in out.output.splitlines()]
    by_seq = {ev["seq"]: ev for ev in journal}
    seen: list[int] = []
    trades = 0
    for req, (error, results) in replies.items():
        assert error is None, (req, error)
        assert len(results) == 1, (req, results)
        evs = [event_to_json(ev, DEFAULT_MARKETS) for ev in results[0]]
        assert evs, req  # every command yields at least one event
        for ev in evs:
            journaled = dict(by_seq.get(ev["seq"]) or {})
            assert journaled.pop("ts", 0) > 0, (req, ev)  # (with the exchange time of its batch)
            assert journaled == ev, (req, ev)  # its own events, as journaled
            seen.append(ev["seq"])
        trades += sum(ev["ev"] == "trade" for ev in evs)
    # every event the engine sequenced reached exactly one client, none twice
    assert sorted(seen) == sorted(by_seq)
    assert trades > 0
