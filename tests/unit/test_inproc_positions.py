"""Perp positions through a whole cluster in one process (``shardex.inproc``, no account tier:
margin comes from the admin's ``set_margin``): margin in, a long against a short, the index
moves, and ``positions`` reads size, entry, unrealized PnL and equity back from the engine
shard; a reduce-only order closes the long (docs/perps.md)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from shardex.clock import VirtualClock
from shardex.engine.codes import EV_FUNDING, EV_MARGIN, EV_POSITION
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from tests.support.inproc import plan, published, run

pytestmark = pytest.mark.timeout(120)

PERP = "BTCPERP-USD"


def test_margin_positions_and_pnl_through_an_in_process_cluster(tmp_path: Path) -> None:
    markets = tmp_path / "markets.toml"
    markets.write_text(f'[markets.{PERP}]\nkind = "perp"\ntick = "0.1"\nlot = "0.001"\n'
                       'initial_margin = "0.1"\nmaintenance_margin = "0.05"\n')  # fmt: skip

    async def body(cl: InProcCluster) -> None:
        async with cl.client() as c:
            await c.set_index(PERP, "30000")
            for who in ("alice", "bob"):
                moved = await c.set_margin(who, PERP, "5000")
                assert moved["ok"] and moved["collateral"] == "5000.0000"
            too_big = await c.place(PERP, "buy", "2", "30000", account="alice")
            assert too_big.code == "insufficient_margin"
            short = await c.place(PERP, "sell", "1", "30000", account="bob")
            long = await c.place(PERP, "buy", "1", "30000", account="alice", tif="ioc")
            assert not short.rejected and not long.rejected
            await c.set_index(PERP, "30100")
            alice, bob = await c.positions("alice"), await c.positions("bob")
            out = await c.set_margin("bob", PERP, "-4000")  # would leave less than initial
            assert out == {"ok": False, "rejected": out["rejected"],
                           "code": "insufficient_margin"}  # fmt: skip
            grow = await c.place(PERP, "buy", "0.5", None, account="alice", tif="ioc",
                                 reduce_only=True)  # fmt: skip
            assert grow.code == "reduce_only_rejected"
            assert (await c.set_margin("carol", PERP, "5000"))["ok"]
            bid = await c.place(PERP, "buy", "1", "30050", account="carol")  # to close against
            assert not bid.rejected
            close = await c.place(PERP, "sell", "1", None, account="alice", tif="ioc",
                                  reduce_only=True)  # fmt: skip
            assert not close.rejected
            closed = await c.positions("alice")
        (a,), (b,) = alice, bob
        assert (a["size"], a["entry"], b["size"], b["entry"]) == ("1.000", "30000.0", "-1.000",
                                                                  "30000.0")  # fmt: skip
        assert a["mark"] == "30100.0" and Decimal(a["unrealized"]) == -Decimal(b["unrealized"])
        assert Decimal(a["unrealized"]) == Decimal("100")  # 1 BTC × 100
        assert Decimal(a["equity"]) == Decimal("5100") and Decimal(b["equity"]) == Decimal("4900")
        assert Decimal(a["initial"]) == Decimal("3010")
        (c1,) = closed
        assert c1["size"] == "0.000" and Decimal(c1["realized"]) == Decimal("50")
        kinds = [ev[0] for node in cl.engines for ev in published(node)]
        assert kinds.count(EV_MARGIN) == 3 and kinds.count(EV_POSITION) == 4

    run(plan(1, markets_file=str(markets)), body)


def test_the_leader_journals_funding_when_its_time_comes(tmp_path: Path) -> None:
    """On a virtual clock: the feed's indexes are premium samples; when exchange time passes
    the interval, the batch's ``OP_TIME`` brings ``OP_FUNDING`` (the leader's sweep): the long
    pays, the short receives, and the payments and the remainder sum to zero."""
    markets = tmp_path / "markets.toml"
    markets.write_text(f'[markets.{PERP}]\nkind = "perp"\ntick = "0.1"\nlot = "0.001"\n'
                       "funding_interval_s = 60\noracle_staleness_ms = 3600000\n")  # fmt: skip
    clock = VirtualClock()
    cluster = InProcCluster(plan(1, markets_file=str(markets)), net=mem_transport(clock=clock))

    async def body() -> None:
        async with cluster as cl, cl.client() as c:
            await c.set_index(PERP, "30000")
            for who in ("alice", "bob", "carol"):
                assert (await c.set_margin(who, PERP, "10000"))["ok"]
            await c.place(PERP, "sell", "1", "30000", account="bob")
            await c.place(PERP, "buy", "1", "30000", account="alice", tif="ioc")
            await c.place(PERP, "buy", "0.001", "30040", account="carol")  # the book's mid
            await c.place(PERP, "sell", "0.001", "30060", account="carol")  # is above
            for _ in range(3):  # samples with the mark above the index, then the payment
                clock.advance(30)
                await c.set_index(PERP, "30000")
            alice, bob = await c.positions("alice"), await c.positions("bob")
        (paid,) = [ev for ev in published(cl.engines[0]) if ev[0] == EV_FUNDING]
        assert paid[3] > 0  # (per lot: the longs pay)
        (a,), (b,) = alice, bob
        a_paid, b_got = Decimal(a["funding"]), Decimal(b["funding"])
        remainder = Decimal(paid[5]) * Decimal("0.0001")
        assert a_paid < 0 < b_got and a_paid + b_got + remainder == 0

    asyncio.run(body())
