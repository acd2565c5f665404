"""Stop orders through a whole cluster with the account tier, in one process
(``shardex.inproc``): a pending stop is held exactly as the order it becomes, shows as
``pending``, counts in the per-order audit, is released by a cancel and settled after its
trigger, and the audits stay clean."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal as D

import pytest

from shardex.client import AsyncClient, audit_report
from shardex.inproc import InProcCluster
from tests.support.inproc import plan
from tests.support.inproc import run as run_on

pytestmark = pytest.mark.timeout(60)
S = "BTC-USD"


def _balance(c: AsyncClient, account: str, want: dict[str, tuple[D, D]]):
    async def pred() -> bool:
        return await c.balance(account) == want

    return pred


def _state(c: AsyncClient, oid: str, account: str, state: str) -> Callable[[], Awaitable[bool]]:
    async def pred() -> bool:
        return (await c.order_status(S, oid, account=account))["state"] == state

    return pred


def test_a_stop_is_held_pending_then_settled_after_its_trigger_and_audits_stay_clean():
    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            for acct, asset, amount in (("al", "USD", "1000"), ("bo", "BTC", "10"),
                                        ("cy", "BTC", "10"), ("di", "USD", "1000")):  # fmt: skip
                assert (await c.deposit(acct, asset, amount, ref=f"{acct}-in")).ok
            # a first trade: the last price is 100
            assert (await c.place(S, "sell", "1", "100", account="bo")).ok
            assert (await c.place(S, "buy", "1", "100", account="di")).ok
            await cl.until(_balance(c, "di", {"USD": (D("899.95"), D(0)), "BTC": (D(1), D(0))}),
                           what="the first trade settled")  # fmt: skip
            # al's stop-limit buy 0.5 @ 106, trigger 105: held as that limit buy (53 + 5 bps)
            r = await c.place(S, "buy", "0.5", "106", type="stop_limit", trigger="105",
                              account="al", id="al-stop")  # fmt: skip
            assert r.ok, r
            await cl.until(_balance(c, "al", {"USD": (D("946.9735"), D("53.0265"))}),
                           what="al's hold")  # fmt: skip
            await cl.until(_state(c, "al-stop", "al", "pending"), what="pending on its engine")
            status = await c.order_status(S, "al-stop", account="al")
            assert (status["type"], status["trigger"], status["price"]) == (
                "stop_limit", D("105"), D("106"))  # fmt: skip
            assert await c.audit_orders() == []  # the pending order is in its book's rows
            # an amend (a buy's price up: the account shard holds more first) is refused by
            # the engine while pending, and the extra hold comes back
            assert (await c.amend(S, "al-stop", price="107", account="al")).ok
            await cl.until(_balance(c, "al", {"USD": (D("946.9735"), D("53.0265"))}),
                           what="al's hold as before the refused amend")  # fmt: skip
            assert (await c.order_status(S, "al-stop", account="al"))["price"] == D("106")
            # a would-trigger-now stop is refused by the engine and its hold comes back
            assert (await c.place(S, "sell", "0.5", type="stop_market", trigger="101",
                                  account="cy", id="cy-now")).ok  # fmt: skip
            await cl.until(_state(c, "cy-now", "cy", "unknown"), what="cy's refusal")
            # cy's stop-market sell, trigger 95, held (0.5 BTC) and then cancelled: released
            assert (await c.place(S, "sell", "0.5", type="stop_market", trigger="95",
                                  account="cy", id="cy-stop")).ok  # fmt: skip
            await cl.until(_balance(c, "cy", {"BTC": (D("9.5"), D("0.5"))}), what="cy's hold")
            await cl.until(_state(c, "cy-stop", "cy", "pending"), what="cy's stop pending")
            assert (await c.cancel(S, "cy-stop", account="cy")).ok
            await cl.until(_balance(c, "cy", {"BTC": (D("10"), D(0))}), what="cy released")
            # a trade at 105 fires al's stop: it buys bo's 0.5 @ 106
            assert (await c.place(S, "sell", "0.5", "106", account="bo", id="bo-106")).ok
            assert (await c.place(S, "sell", "0.5", "105", account="cy", id="cy-105")).ok
            await cl.until(_state(c, "cy-105", "cy", "live"), what="cy's ask")
            assert (await c.place(S, "buy", "0.5", "105", account="di")).ok
            await cl.until(_balance(c, "al", {"USD": (D("946.9735"), D(0)),
                                              "BTC": (D("0.5"), D(0))}),
                           what="al's stop filled and settled")  # fmt: skip
            assert (await c.order_status(S, "al-stop", account="al"))["state"] == "filled"
            lines, ok = audit_report(await c.audit())
            assert ok, lines
            assert await c.audit_orders() == []

    run_on(plan(1, 2), body)


def test_without_the_account_tier_the_sdk_places_reads_and_decodes_stops():
    """The engine shard's edge takes the options form from the SDK; a pending order's fate, its
    refusals and the ``triggered`` event in the reply of the command that fired it decode."""

    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            assert (await c.place(S, "sell", "1", "100", account="mk")).ok
            assert (await c.place(S, "buy", "0.5", "100", account="tk")).ok  # last: 100
            r = await c.place(S, "sell", "0.2", type="take_profit", trigger="101",
                              account="al", id="tp")  # fmt: skip
            assert [e["ev"] for e in r.events] == ["accepted"]
            st = await c.order_status(S, "tp", account="al")
            assert (st["state"], st["type"], st["trigger"], st["price"]) == (
                "pending", "take_profit", D("101"), None)  # fmt: skip
            r = await c.place(S, "sell", "0.2", type="take_profit", trigger="99", account="al")
            assert r.rejected and r.code == "would_trigger"
            r = await c.amend(S, "tp", qty="0.1", account="al")
            assert r.rejected and r.code == "untriggered"
            assert (await c.place(S, "buy", "1", "101", account="tk")).ok  # rests at 101
            r = await c.place(S, "sell", "0.3", "101", account="mk")  # trades at 101: fires tp
            kinds = [(e["ev"], e.get("id") or e.get("taker")) for e in r.events]
            assert kinds[-2:] == [("triggered", "tp"), ("trade", "tp")], kinds
            assert (r.events[-2]["last"], r.events[-2]["trigger"]) == (D("101"), D("101"))
            assert (await c.order_status(S, "tp", account="al"))["state"] == "filled"

    run_on(plan(1, 0), body)
