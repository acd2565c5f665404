"""Balance changes → Redis (issue 14, phase 2): ``shardex:balances:<j>`` through the bridge.

Real ``shardex up --accounts`` clusters (CURVE keys), a real redis-server, the real bridge. What
the stream must hold is read back from each account shard itself (its direct port re-sends any
range of its events, ``OP_EVENTS``): exactly its balance and fee-ledger events, in seq order,
each once, with exact decimal amounts — also after kill -9 of the bridge in the middle of load.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from decimal import Decimal as D

import pytest
import zmq
from conftest import Cluster, RedisServer

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_BALANCE, AE_FEES
from shardex.auth import KeyFile, client_socket
from shardex.config import load_markets
from shardex.wire.protocol import OP_EVENTS, OP_STATUS, decode_reply, encode_request

pytestmark = pytest.mark.timeout(120)
ASSETS = AssetTable(load_markets(None))


def _ask(cluster: Cluster, j: int, cmd: tuple) -> dict:
    """One request to account shard j's direct port, with the cluster's admin key."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    client_socket(s, KeyFile.read(cluster.key))
    s.connect(cluster.layout.account_direct(j))
    try:
        s.send_multipart([b"test", b"r1", encode_request([cmd])])
        assert s.poll(5000), f"account shard {j} did not answer {cmd!r}"
        req, payload = s.recv_multipart()
        error, results = decode_reply(payload)
        assert error is None, error
        return results[0]
    finally:
        s.close(0)


def _expected(cluster: Cluster, j: int) -> list[tuple[str, dict[str, str]]]:
    """Account shard j's balance and fee events, as the stream entries they must become."""
    seq = _ask(cluster, j, (OP_STATUS,))["seq"]
    out: list[tuple[str, dict[str, str]]] = []
    first = 1
    while first <= seq:
        res = _ask(cluster, j, (OP_EVENTS, first, seq))
        assert "error" not in res, res
        evs = res["events"]
        assert evs and evs[0][1] == first
        for ev in evs:
            fmt = ASSETS.fmt
            if ev[0] == AE_BALANCE:
                _, s, account, asset, avail, held, why, ref = ev
                f = {"ev": "balance", "account": account, "asset": asset,
                     "available": fmt(asset, avail), "held": fmt(asset, held),
                     "why": why, "ref": ref}  # fmt: skip
            elif ev[0] == AE_FEES:
                _, s, asset, total = ev
                f = {"ev": "fees", "asset": asset, "total": fmt(asset, total)}
            else:
                continue
            out.append((f"{s}-0", {**f, "seq": str(s), "shard": str(j)}))
        first = evs[-1][1] + 1
    return out


def _stream(r, j: int) -> list[tuple[str, dict[str, str]]]:
    return [(eid, dict(f)) for eid, f in r.xrange(f"shardex:balances:{j}")]


def _converged(cluster: Cluster, r, shards: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        diff = []
        for j in range(shards):
            want, got = _expected(cluster, j), _stream(r, j)
            if want != got:
                diff.append((j, len(want), len(got)))
        if not diff:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"balances streams differ (shard, want, got): {diff}")
        time.sleep(0.2)


def _flow(c, tag: str, n: int, halfway: threading.Event | None = None) -> None:
    """Deposits, resting orders, trades (price improvement, fees) and cancels."""
    for k in range(n):
        if halfway is not None and k == n // 2:
            halfway.set()
            time.sleep(0.3)  # the bridge dies here; orders go on
        a, b = f"buyer-{tag}-{k % 3}", f"seller-{tag}-{k % 3}"
        assert c.deposit(a, "USD", "1000", ref=f"{tag}-d{k}a").ok
        assert c.deposit(b, "BTC", "1", ref=f"{tag}-d{k}b").ok
        assert c.place("BTC-USD", "sell", "0.01", "100", account=b, id=f"{tag}-s{k}").ok
        assert c.place("BTC-USD", "buy", "0.01", "101", account=a, id=f"{tag}-b{k}").ok
        assert c.place("BTC-USD", "buy", "0.01", "50", account=a, id=f"{tag}-r{k}").ok
        c.cancel("BTC-USD", f"{tag}-r{k}", account=a)


def test_balances_stream_exactly_once_also_across_a_bridge_kill(redis_server: RedisServer):
    cluster = Cluster(1, "--accounts", "2", redis=redis_server.url)
    try:
        r = redis_server.client()
        with cluster.client() as c:
            _flow(c, "a", 6)
            _converged(cluster, r, 2)
            stream = _stream(r, 0) + _stream(r, 1)
            kinds = {f["ev"] for _, f in stream}
            assert kinds == {"balance", "fees"}
            whys = {f["why"] for _, f in stream if f["ev"] == "balance"}
            assert {"deposit", "hold", "trade", "release"} <= whys
            # a deposit's entry carries the exact amount and its ref
            dep = [f for _, f in stream if f.get("ref") == "a-d0a"]
            assert len(dep) == 1 and D(dep[0]["available"]) == D(1000)

            # kill -9 the bridge while orders flow; the supervisor restarts it, it resumes from
            # the streams' tops and repairs the rest from the account shards' rings
            errors: list[BaseException] = []
            halfway = threading.Event()

            def load() -> None:
                try:
                    with cluster.client() as c2:
                        _flow(c2, "b", 60, halfway)
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            old = cluster.child_pid("bridge")
            t = threading.Thread(target=load)
            t.start()
            assert halfway.wait(30)
            os.kill(old, signal.SIGKILL)
            t.join(60)
            assert not errors, errors
            assert not t.is_alive()
            deadline = time.monotonic() + 20
            while cluster.child_pid("bridge") == old:  # the supervisor restarts it
                assert time.monotonic() < deadline, "bridge not restarted"
                time.sleep(0.1)
            _converged(cluster, r, 2, timeout=30.0)
            for j in range(2):
                ids = [int(eid.split("-")[0]) for eid, _ in _stream(r, j)]
                assert ids == sorted(set(ids))  # in order, no duplicates
        assert "bridge (pid" in cluster.output() and "DIED" in cluster.output()
    finally:
        cluster.stop()
