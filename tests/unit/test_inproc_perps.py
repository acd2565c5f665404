"""A perp pair through a whole cluster in one process (``shardex.inproc``, with the account
tier): the SDK's ``set_index`` reaches the pair's engine shard (a ``SettledEngine``: nothing to
settle), the shard's market read shows the index and mark, a spot pair refuses an index, and
the published events carry them."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardex.engine.codes import EV_INDEX
from shardex.inproc import InProcCluster
from tests.support.inproc import plan, published, run

pytestmark = pytest.mark.timeout(120)

PERP = "BTCPERP-USD"


def test_index_and_mark_through_an_in_process_cluster(tmp_path: Path) -> None:
    markets = tmp_path / "markets.toml"
    markets.write_text(f'[markets.{PERP}]\nkind = "perp"\ntick = "0.1"\nlot = "0.001"\n')

    async def body(cl: InProcCluster) -> None:
        async with cl.client() as c:
            first = await c.set_index(PERP, "30000.04")  # rounded to the tick
            assert first["ok"] and first["index"] == "30000.0" and first["mark"] == "30000.0"
            again = await c.set_index(PERP, "30010")
            assert again["index"] == "30010.0" and again["seq"] > first["seq"]
            spot = await c.set_index("BTC-USD", "30000")
            assert spot == {"ok": False, "rejected": spot["rejected"], "code": "not_perp"}
            rules = await c.market_rules()
        perp = rules[PERP]
        assert (perp["kind"], perp["index"], perp["mark"]) == ("perp", "30010.0", "30010.0")
        assert perp["initial_margin"] == "0.05" and rules["BTC-USD"]["kind"] == "spot"
        events = [ev for node in cl.engines for ev in published(node) if ev[0] == EV_INDEX]
        assert [ev[3] for ev in events] == [300000, 300100]

    run(plan(1, accounts=1, markets_file=str(markets)), body)
