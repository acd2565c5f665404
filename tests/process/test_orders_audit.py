"""Per-order audit and the open-order listing.

Before, nothing listed an account's open orders, and the audit (and the tests' live check)
compared counts: one order resting unfunded while another's hold stayed for no order passed,
and so did settlement anomalies (an order traded twice). Now ``shardex audit`` checks every
order both ways and fails on anomalies; ``shardex orders ACCOUNT`` and the SDKs list them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal as D
from types import SimpleNamespace

from shardex.accounts.assets import AssetTable
from shardex.accounts.machines import AccountMachineFactory
from shardex.accounts.orders import account_orders, audit_orders, persistent
from shardex.client import AsyncClient, audit_report
from shardex.config import load_markets
from shardex.engine.codes import BUY, SELL
from shardex.journal import Journal
from shardex.wire.protocol import shard_for
from tests.support.accounts import _wait
from tests.support.cluster import Cluster


def _held(acct, sym, oid, side=BUY, rem=5, price=100, held=500):
    return [acct, sym, oid, side, rem, price, price, held, 0]


def _live(acct, sym, oid, side=BUY, qty=5, price=100):
    return [acct, sym, oid, side, qty, price]


def test_every_order_is_judged_both_ways():
    held = [_held("a", "BTC-USD", "1"), _held("a", "BTC-USD", "2"), _held("b", "ETH-USD", "3")]
    live = [_live("a", "BTC-USD", "1"), _live("a", "BTC-USD", "9"), _live("b", "ETH-USD", "3")]
    # the same counts on both sides (3 and 3): the count check saw nothing
    problems = audit_orders(held, live, held)
    assert problems == [
        "BTC-USD 2 of a: holds 500 units and is live in no book",
        "BTC-USD 9 of a: live in its book (5 lots) and held by no account shard",
    ]
    # live for more than it holds, at a higher price than its hold covers, or on the other side
    assert audit_orders(held[:1], [_live("a", "BTC-USD", "1", qty=6)], held[:1])
    assert audit_orders(held[:1], [_live("a", "BTC-USD", "1", price=101)], held[:1])
    assert audit_orders(held[:1], [_live("a", "BTC-USD", "1", side=SELL)], held[:1])
    # covered: fewer lots live (a fill in flight), a buy resting below its cap
    assert audit_orders(held[:1], [_live("a", "BTC-USD", "1", qty=3, price=99)], held[:1]) == []
    # in flight between the reads: placed after the first (held in the second only) or ended
    # before the second: not judged
    assert audit_orders([], [_live("a", "BTC-USD", "1")], held[:1]) == []
    assert audit_orders(held[:1], [], []) == []
    assert persistent([["x", "y"], ["y"], ["y", "z"]]) == ["y"]
    assert persistent([["x"], []]) == []


def test_settlement_anomalies_fail_the_audit():
    shard = {"shard": 0, "integrity": "ok", "units": {"USD": "0.01"}, "balances": {"USD": 5},
             "deposited": {"USD": 5}, "anomalies": 2}  # fmt: skip
    lines, ok = audit_report([shard])
    assert not ok and any("2 settlement anomalies VIOLATION" in ln for ln in lines), lines
    lines, ok = audit_report([{**shard, "anomalies": 0}])
    assert ok, lines


def test_listed_holds_print_at_the_asset_precision_like_balances():
    """``shardex orders`` printed holds with whatever decimals they had (``2008.0035``,
    ``2099.049``) in a column next to balances printed at the asset's precision."""
    table = AssetTable(load_markets(None))
    unit = table.units["USD"]
    o = SimpleNamespace(side=BUY, rem=100, price=2_000_000, held=int(D("2099.049") / unit),
                        pending=0)  # fmt: skip
    row = account_orders({"alice": {("BTC-USD", "a1"): o}}, "alice", table)["orders"][0]
    decimals = -unit.as_tuple().exponent
    assert row["held"] == f"2099.049{'0' * (decimals - 3)}" == table.fixed("USD", o.held)


def test_listing_and_the_per_order_audit_on_a_live_cluster(tmp_path):
    """Alice's two resting buys are listed with their holds; then account shard 0's snapshot is
    forged while the cluster is down so that order a2's hold is kept under another id: every
    count, sum and per-shard check still passes, and only the per-order audit sees it."""
    data = tmp_path / "data"
    cl = Cluster(1, data_dir=str(data), accounts=1)
    try:
        with cl.client() as c:
            assert c.deposit("alice", "USD", "1000").ok
            for oid in ("a1", "a2"):
                assert c.place("BTC-USD", "buy", "0.01", "20000", account="alice", id=oid).ok
            _wait(lambda: c.balance("alice")["USD"][1] == D("400.20"), "both held")
            rows = c.open_orders("alice")
            assert [(r["id"], r["side"], r["price"], r["open"], r["held"], r["asset"])
                    for r in rows] == [("a1", "buy", D("20000.00"), D("0.0100"), D("200.10"),
                                        "USD"), ("a2", "buy", D("20000.00"), D("0.0100"),
                                                 D("200.10"), "USD")]  # fmt: skip
            assert c.open_orders("nobody") == []
            _wait(lambda: c.audit_orders() == [], "clean per-order audit")

        async def listed() -> list:
            async with AsyncClient(cl.endpoint, key=cl.key) as ac:
                return [await ac.open_orders("alice"), await ac.audit_orders()]

        assert asyncio.run(listed()) == [rows, []]
        cli = [sys.executable, "-m", "shardex.cli", "--log-level", "warning"]
        where = ["--endpoint", cl.endpoint, *cl.key_args()]
        out = subprocess.run([*cli, "orders", "alice", "--json", *where], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert [json.loads(ln)["held"] for ln in out.stdout.splitlines()] == ["200.100000"] * 2
        ok = subprocess.run([*cli, "audit", *where], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0 and "audit: ok" in ok.stdout, ok.stdout + ok.stderr
    finally:
        cl.stop()
    fac = AccountMachineFactory(0, 1, lambda s: shard_for(s, 1), engines=1)
    j = Journal(data / "accounts-0", load_markets(None), machine=fac)
    m = j.recover().engine
    o = m.core.orders.pop(("alice", "BTC-USD", "a2"))
    m.core.orders[("alice", "BTC-USD", "ghost")] = o  # the same hold, for an order no book has
    index = m.core.open_by["alice"]  # (and the account's index of its orders, as the core keeps)
    del index[("BTC-USD", "a2")]
    index[("BTC-USD", "ghost")] = o
    m.core.check_integrity()  # the shard alone cannot see it
    j.snapshot(m)
    j.close()
    cl = Cluster(1, data_dir=str(data), accounts=1)
    try:
        with cl.client() as c:
            held = sum(s["open_orders"] for s in c.audit())
            assert held == sum(s["resting"] for s in c.status()) == 2  # the old check passed
            assert audit_report(c.audit())[1]
            assert [r["id"] for r in c.open_orders("alice")] == ["a1", "ghost"]
            problems = c.audit_orders()
        assert problems == [
            "BTC-USD a2 of alice: live in its book (100 lots) and held by no account shard",
            "BTC-USD ghost of alice: holds 200100000 units and is live in no book",
        ]
        bad = subprocess.run([*cli, "audit", *where[:1], cl.endpoint, *cl.key_args()],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "ghost of alice" in bad.stdout and "audit: FAILED" in bad.stdout, bad.stdout
    finally:
        cl.stop()
