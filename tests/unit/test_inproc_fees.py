"""Fee tiers through a whole cluster in one process (``shardex.inproc``): a markets file's
``[fees]`` schedule, a fee group set by the admin command, a maker rebate paid on one account
shard while the taker's fee is collected on the other, the rates an account reads back, and the
audit that counts rebates. Money is checked exactly (Decimal)."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from shardex.accounts.core import account_shard_for
from shardex.client import AsyncClient, audit_report
from shardex.inproc import InProcCluster
from tests.support.fees import FEES
from tests.support.inproc import plan, run

pytestmark = pytest.mark.timeout(60)


def _on(shard: int, prefix: str) -> str:
    """An account name of account shard ``shard`` of 2."""
    return next(f"{prefix}{i}" for i in range(100) if account_shard_for(f"{prefix}{i}", 2) == shard)


def test_a_rebate_on_one_shard_and_the_taker_fee_on_the_other(tmp_path: Path) -> None:
    markets = tmp_path / "markets.toml"
    markets.write_text(FEES)
    maker, taker = _on(0, "mm"), _on(1, "tk")

    async def body(cl: InProcCluster) -> Any:
        async with cl.client(timeout=5) as c:
            await _trade(cl, c, maker, taker)

    run(plan(2, 2, markets_file=str(markets)), body)


async def _trade(cl: InProcCluster, c: AsyncClient, maker: str, taker: str) -> None:
    assert (await c.set_fee_group(maker, "gold")) == {
        "rejected": "unknown fee group 'gold' (the tiers: base, mm)", "code": "invalid"}
    assert (await c.set_fee_group(maker, "mm")) == {
        "ok": True, "account": maker, "group": "mm", "tier": "mm"}
    mine = await c.fees(maker)
    assert mine["tier"] == "mm" and mine["rates"]["BTC-USD"] == {"maker_bps": -3, "taker_bps": 4}
    assert (await c.fees(taker))["rates"]["BTC-USD"] == {"maker_bps": 2, "taker_bps": 5}
    assert (await c.deposit(maker, "BTC", "1")).ok and (await c.deposit(taker, "USD", "1000")).ok
    assert (await c.place("BTC-USD", "sell", "0.5", "100", account=maker, id="s1")).ok

    async def resting() -> bool:
        return (await c.order_status("BTC-USD", "s1", account=maker))["state"] == "live"

    await cl.until(resting, what="the sell on the book")
    assert (await c.place("BTC-USD", "buy", "0.5", "100", account=taker)).ok

    async def settled() -> bool:
        return (await c.balance(maker)).get("USD") == (D("50.015"), D(0)) and (
            await c.balance(taker)
        ).get("BTC") == (D("0.5"), D(0))

    await cl.until(settled, what="both sides settled")
    # 50 USD notional: the taker pays 5 bps (0.025), the maker is paid 3 bps back (0.015)
    assert await c.balance(taker) == {"USD": (D("949.975"), D(0)), "BTC": (D("0.5"), D(0))}
    shards = await c.audit()
    by_shard = {s["shard"]: s for s in shards}
    assert by_shard[0]["fees"] == {"USD": -15_000} and by_shard[0]["rebates"] == {"USD": 15_000}
    assert by_shard[1]["fees"] == {"USD": 25_000} and by_shard[1].get("rebates") == {}
    lines, ok = audit_report(shards)
    assert ok, lines
    assert any("fees 0.010000" in ln and "rebates 0.015000" in ln for ln in lines), lines
