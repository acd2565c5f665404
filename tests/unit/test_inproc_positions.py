"""Perp positions through a whole cluster in one process (``shardex.inproc``, no account tier:
margin comes from the admin's ``set_margin``): margin in, a long against a short, the index
moves, and ``positions`` reads size, entry, unrealized PnL and equity back from the engine
shard; a reduce-only order closes the long (docs/perps.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from shardex.engine.codes import EV_MARGIN, EV_POSITION
from shardex.inproc import InProcCluster
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
