"""The account tier end to end: real ``shardex up --accounts`` clusters
(router, engine shards, account shards as processes, CURVE keys), real sockets.

Money is checked exactly (Decimal): deposits, holds, price improvement, maker/taker fees
(defaults 2/5 bps, rounded up), cancels releasing holds, refusals with reasons and codes,
kill -9 of an account shard and of an engine shard mid-flow, and the conservation audit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal as D

import pytest

from shardex.client import Client, audit_report
from tests.support.accounts import _wait
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(120)


def _live(c: Client, oid: str, account: str):
    return lambda: c.order_status("BTC-USD", oid, account=account)["state"] == "live"


def _settled(c: Client, account: str, expect: dict[str, tuple[D, D]]):
    return lambda: c.balance(account) == expect


@pytest.fixture(scope="module")
def cluster():
    cl = Cluster(2, accounts=2)
    try:
        yield cl
    finally:
        cl.stop()


def _client(cl: Cluster) -> Client:
    return Client(cl.endpoint, key=cl.key, timeout=5)


def test_trade_settles_both_sides_exactly(cluster):
    with _client(cluster) as c:
        assert c.deposit("alice", "USD", "1000", ref="t1-a").ok
        assert c.deposit("bob", "BTC", "1", ref="t1-b").ok
        sell = c.place("BTC-USD", "sell", "0.5", "100", account="bob", id="bob-1")
        assert sell.ok and sell.events == []  # held and forwarded
        # bob's 0.5 BTC is held until the sell ends; it rests on the engine shard
        _wait(_settled(c, "bob", {"BTC": (D("0.5"), D("0.5"))}), "bob's hold")
        _wait(_live(c, "bob-1", "bob"), "the sell on the book")
        buy = c.place("BTC-USD", "buy", "0.5", "101", account="alice")
        assert buy.ok
        # alice pays 100 (price improvement: her limit was 101) + 5 bps taker fee = 50.025
        _wait(_settled(c, "alice", {"USD": (D("949.975"), D(0)), "BTC": (D("0.5"), D(0))}),
              "alice settled")  # fmt: skip
        # bob receives 50 - 2 bps maker fee = 49.99
        _wait(_settled(c, "bob", {"BTC": (D("0.5"), D(0)), "USD": (D("49.99"), D(0))}),
              "bob settled")  # fmt: skip


def test_refusals_reach_the_client_with_reason_and_code(cluster):
    with _client(cluster) as c:
        assert c.deposit("carol", "USD", "10", ref="t2-c").ok
        r = c.place("BTC-USD", "buy", "0.3", "100", account="carol")
        assert r.rejected and r.code == "insufficient_funds"
        assert r.reason == "insufficient USD: available 10.00, needed 30.015"
        w = c.withdraw("carol", "USD", "10.01")
        assert w.rejected and w.code == "insufficient_funds"
        assert w.reason == "insufficient USD: available 10.00, needed 10.01"
        again = c.deposit("carol", "USD", "10", ref="t2-c")  # the same transfer retried
        assert again.ok and again.events[0]["repeated"]
        other = c.deposit("carol", "USD", "11", ref="t2-c")
        assert other.rejected and other.code == "duplicate_ref"
        assert c.balance("carol") == {"USD": (D("10.00"), D(0))}
        off = c.deposit("carol", "USD", "0.0000001")
        assert off.rejected and off.code == "off_grid"


def test_cancel_releases_the_hold(cluster):
    with _client(cluster) as c:
        assert c.deposit("dave", "USD", "100", ref="t3-d").ok
        r = c.place("BTC-USD", "buy", "1", "50", account="dave", id="dave-1")
        assert r.ok
        _wait(_settled(c, "dave", {"USD": (D("49.975"), D("50.025"))}), "dave's hold")
        _wait(_live(c, "dave-1", "dave"), "the buy on the book")
        assert c.cancel("BTC-USD", "dave-1", account="dave").ok
        _wait(_settled(c, "dave", {"USD": (D("100.00"), D(0))}), "hold released")


def test_orders_cannot_bypass_the_account_tier(cluster):
    from shardex.engine.codes import OP_NEW

    with _client(cluster) as c:
        c.topology()
        cmd = (OP_NEW, "BTC-USD", "sneaky", "eve", 0, 0, 100_00, 1, 0, False, 0)
        error, results = c._request(c._router, b"BTC-USD", cmd, "engine")  # straight to engine
        assert error is None
        ev = results[0][0]
        assert ev[3] == "sneaky" and "account" in ev[4] and ev[5] == 12  # not_allowed


def test_audit_cli_exit_code(cluster):
    env = {**os.environ, "SHARDEX_KEY": str(cluster.key)}
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "audit", "--endpoint", cluster.endpoint],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "audit: ok (2 account shards)" in out.stdout


def test_status_shows_the_account_shards(cluster):
    env = {**os.environ, "SHARDEX_KEY": str(cluster.key)}
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "status", "--endpoint", cluster.endpoint],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines()]
    acct = rows.index(["acct", "state", "seq", "accounts", "open", "commands", "gaps",
                       "anomal.", "journal"])  # fmt: skip
    assert [r[:2] for r in rows[acct + 1 : acct + 3]] == [["0", "up"], ["1", "up"]], out.stdout
    assert all(r[-1] == "ok" for r in rows[acct + 1 : acct + 3]), out.stdout
    with _client(cluster) as c:
        sts = c.account_status()
        assert [st["account_shard"] for st in sts] == [0, 1]
        # each has heard from both engine shards on its link (what readiness waits for)
        assert [list(st["engines_linked"]) for st in sts] == [[0, 1], [0, 1]]


def test_audit_report_flags_a_violation():
    good = {"shard": 0, "integrity": "ok", "units": {"USD": "0.01"}, "balances": {"USD": 100},
            "fees": {"USD": 1}, "deposited": {"USD": 101}, "withdrawn": {}, "flow": {}}  # fmt: skip
    assert audit_report([good])[1]
    assert not audit_report([{**good, "balances": {"USD": 101}}])[1]  # money appeared
    assert not audit_report([{**good, "flow": {"USD": 5}}])[1]  # inflows do not cancel out
    assert not audit_report([{**good, "integrity": "held 3 != 2"}])[1]
    assert not audit_report([good, {"shard": 1, "error": "timeout"}])[1]


def test_kill9_account_and_engine_shard_mid_flow():
    cl = Cluster(1, accounts=1)
    try:
        with Client(cl.endpoint, key=cl.key, timeout=5) as c:
            assert c.deposit("m", "BTC", "10", ref="k-m").ok
            assert c.deposit("t", "USD", "100000", ref="k-t").ok
            ids = iter(range(1000))

            def round_trip() -> None:
                for _ in range(5):
                    assert c.place("BTC-USD", "sell", "0.1", "100", account="m",
                                   id=f"s{next(ids)}").ok  # fmt: skip
                    assert c.place("BTC-USD", "buy", "0.1", "100", account="t",
                                   id=f"b{next(ids)}").ok  # fmt: skip

            round_trip()
            info = c.topology()
            os.kill(info["account_topology"][0]["pid"], signal.SIGKILL)
            old = info["account_topology"][0]["pid"]
            _wait(lambda: c.topology()["account_topology"][0].get("pid") not in (None, old),
                  "account shard back")  # fmt: skip
            _wait(lambda: c.balance("m") is not None, "account shard serving")
            round_trip()
            os.kill(info["topology"][0]["pid"], signal.SIGKILL)
            _wait(lambda: c.topology()["topology"][0].get("pid")
                  not in (None, info["topology"][0]["pid"]), "engine shard back")  # fmt: skip
            _wait(lambda: c.place("BTC-USD", "sell", "0.1", "100", account="m",
                                  id=f"s{next(ids)}").ok, "engine path")  # fmt: skip
            _wait(lambda: c.place("BTC-USD", "buy", "0.1", "100", account="t",
                                  id=f"b{next(ids)}").ok, "engine path")  # fmt: skip
            # 11 trades of 0.1 BTC at 100: t paid 110 + 5 bps per order (0.005 each, exact)
            want_t = {"USD": (D("100000") - D("110") - 11 * D("0.005"), D(0)),
                      "BTC": (D("1.1"), D(0))}  # fmt: skip
            want_m = {"BTC": (D("8.9"), D(0)), "USD": (D("110") - 11 * D("0.002"), D(0))}
            _wait(_settled(c, "t", want_t), "taker settled exactly once")
            _wait(_settled(c, "m", want_m), "maker settled exactly once")
            lines, ok = audit_report(c.audit())
            assert ok, lines
            assert all(sh.get("anomalies") == 0 for sh in c.audit())
    finally:
        cl.stop()


def test_a_cancel_sent_after_the_place_reply_never_overtakes_its_order(cluster):
    """The place reply means "held and forwarded"; the cancel takes the short path (router →
    engine shard). The forward must already be on its way, and the engine shard must read its
    account links before client requests, so the cancel finds the order. Before: the account
    shard answered clients before it sent the forwards, and the engine shard read client
    requests first, so a cancel right after the reply was now and then refused as unknown
    (README's example failed in CI that way)."""
    with _client(cluster) as c:
        assert c.deposit("erin", "USD", "1000000", ref="t-overtake").ok
        ids = [f"erin-{k}" for k in range(300)]
        results = c.submit_many(
            [c.order("BTC-USD", "buy", "1", str(100 + k % 50), account="erin", id=oid)
             for k, oid in enumerate(ids)],  # fmt: skip
            batch=100,
            window=8,
        )
        assert all(r.ok for r in results), [r.reason for r in results if not r.ok][:3]
        cancels = c.submit_many(
            [{"op": "cancel", "symbol": "BTC-USD", "id": oid, "account": "erin"} for oid in ids],
            batch=100,
            window=8,
        )
        refused = [(oid, r.reason) for oid, r in zip(ids, cancels, strict=True) if not r.ok]
        assert not refused, f"{len(refused)} cancels overtook their orders: {refused[:3]}"
        _wait(_settled(c, "erin", {"USD": (D("1000000.00"), D(0))}), "every hold released")
