"""Expiring orders and cancel-all through a whole in-process cluster with the account tier, on
a virtual clock: a gtd order's hold comes back when exchange time passes its expire time (an
idle shard's own sweep, no write needed), a cancel-all releases every hold it covers, an expire
time already passed is refused and released, and the conservation audit stays clean."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from shardex.client import AsyncClient, audit_report
from shardex.client.heartbeat import CancelOnDisconnect
from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.timemarks import wall_ms
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(60)


def _usd(c: AsyncClient, account: str, want: tuple[D, D]):
    async def pred() -> bool:
        return (await c.balance(account)).get("USD") == want

    return pred


def _state(c: AsyncClient, symbol: str, oid: str, account: str, want: str):
    async def pred() -> bool:
        return (await c.order_status(symbol, oid, account=account))["state"] == want

    return pred


def test_expiry_and_cancel_all_release_holds_on_the_exchange_clock() -> None:
    clock = VirtualClock()
    cluster = InProcCluster(plan(2, 2), clock=clock)
    a = "exp-alice"

    async def main() -> None:
        async with cluster, cluster.client(timeout=5) as c:
            assert (await c.deposit(a, "USD", "1000", ref="exp-d")).ok
            now = wall_ms(clock)
            gtd = await c.place("BTC-USD", "buy", "1", "100", account=a, id="gtd-1",
                                expire=now + 60_000)  # fmt: skip
            assert gtd.ok, gtd
            for sym, oid in (("BTC-USD", "gtc-1"), ("ETH-USD", "gtc-2")):
                assert (await c.place(sym, "buy", "1", "50", account=a, id=oid)).ok
            # each hold: qty x price + the 5 bps taker fee
            held = D("100.05") + D("50.025") * 2
            await cluster.until(_usd(c, a, (D(1000) - held, held)), what="three holds")
            for sym, oid in (("BTC-USD", "gtd-1"), ("BTC-USD", "gtc-1"), ("ETH-USD", "gtc-2")):
                await cluster.until(_state(c, sym, oid, a, "live"), what=f"{oid} rests")

            late = await c.place("BTC-USD", "buy", "1", "10", account=a, id="late", expire=now)
            assert late.ok  # held and forwarded; the engine shard refuses it: released

            done = await c.cancel_all("ETH-USD", account=a)
            assert done.ok and done.cancelled == [("ETH-USD", "gtc-2")] and done.count == 1
            held -= D("50.025")
            await cluster.until(_usd(c, a, (D(1000) - held, held)), what="cancel-all released")

            clock.advance(59)  # not yet: the gtd order still rests
            await cluster.until(_state(c, "BTC-USD", "gtd-1", a, "live"), what="still live")
            clock.advance(1)  # its expire time: the idle shard sweeps it on its own
            await cluster.until(_state(c, "BTC-USD", "gtd-1", a, "cancelled"), what="expired")
            status = await c.order_status("BTC-USD", "gtd-1", account=a)
            assert status["reason"] == "expired", status
            held -= D("100.05")
            await cluster.until(_usd(c, a, (D(1000) - held, held)), what="expiry released")

            every = await c.cancel_all(account=a)  # every pair: one cancel_all per pair
            assert every.ok and every.cancelled == [("BTC-USD", "gtc-1")]
            await cluster.until(_usd(c, a, (D("1000.00"), D(0))), what="all released")
            lines, ok = audit_report(await c.audit())
            assert ok, lines

    asyncio.run(main())


def test_a_dead_sessions_orders_go_at_its_dead_man_deadline() -> None:
    """A session arms cancel-on-disconnect, refreshes it once, then dies (its client closes:
    no more heartbeats); when exchange time passes its last refresh + timeout, its orders are
    cancelled on their shards and their holds come back. Another account's orders stay."""
    clock = VirtualClock()
    cluster = InProcCluster(plan(2, 2), clock=clock)
    a, b = "dm-alice", "dm-bob"

    async def main() -> None:
        async with cluster:
            async with cluster.client(timeout=5) as admin:
                for acct in (a, b):
                    assert (await admin.deposit(acct, "USD", "1000", ref=f"{acct}-d")).ok
            async with cluster.client(timeout=5) as session:
                assert (await session.cancel_after(30_000, account=a)).ok  # every pair
                for sym, oid in (("BTC-USD", "dm-1"), ("ETH-USD", "dm-2")):
                    assert (await session.place(sym, "buy", "1", "50", account=a, id=oid)).ok
                    await cluster.until(_state(session, sym, oid, a, "live"), what=oid)
                assert (await session.place("BTC-USD", "buy", "1", "40", account=b,
                                            id="other")).ok  # fmt: skip
                clock.advance(20)
                assert (await session.cancel_after(30_000, account=a)).ok  # the heartbeat
            # the session is gone: no heartbeat after virtual 20 s
            async with cluster.client(timeout=5) as c:
                clock.advance(29)  # 49 s: before 20 + 30
                await cluster.until(_state(c, "BTC-USD", "dm-1", a, "live"), what="still live")
                clock.advance(1)  # 50 s: the deadline
                for sym, oid in (("BTC-USD", "dm-1"), ("ETH-USD", "dm-2")):
                    await cluster.until(_state(c, sym, oid, a, "cancelled"), what=f"{oid} gone")
                    status = await c.order_status(sym, oid, account=a)
                    assert status["reason"] == "deadman", status
                await cluster.until(_usd(c, a, (D("1000.00"), D(0))), what="holds released")
                assert (await c.order_status("BTC-USD", "other", account=b))["state"] == "live"
                lines, ok = audit_report(await c.audit())
                assert ok, lines

    asyncio.run(main())


def test_a_live_sessions_heartbeat_keeps_its_orders_and_a_clean_exit_disarms() -> None:
    """While ``CancelOnDisconnect`` beats, exchange time may pass the timeout many times over
    (each refresh pushes the deadline back); leaving it disarms the switch: the orders stay."""
    clock = VirtualClock()
    cluster = InProcCluster(plan(1, 0), clock=clock)
    a = "hb-alice"

    async def main() -> None:
        async with cluster, cluster.client(timeout=5) as c:
            assert (await c.place("BTC-USD", "buy", "1", "50", account=a, id="hb-1")).ok
            async with CancelOnDisconnect(c, 1_000, account=a, symbol="BTC-USD",
                                          every_s=0.001) as hb:  # fmt: skip
                for _ in range(4):  # 2 s of exchange time in all: twice the timeout
                    n = hb.beats
                    clock.advance(0.5)
                    await cluster.until(lambda n=n: hb.beats >= n + 2, what="refreshes")
                assert (await c.order_status("BTC-USD", "hb-1", account=a))["state"] == "live"
            assert hb.failed == 0
            clock.advance(10)  # disarmed: nothing fires, however long
            first = cluster.rounds
            await cluster.until(lambda: cluster.rounds >= first + 200, what="rounds")
            assert (await c.order_status("BTC-USD", "hb-1", account=a))["state"] == "live"
            assert not cluster.engines[0].core.engine.expiry.switches

    asyncio.run(main())


def test_gtd_stop_orders_release_their_holds_when_they_expire_pending_or_triggered() -> None:
    """A gtd stop-limit buy holds like a limit buy while pending; exchange time passing its
    expire time cancels it (``expired``) and its hold comes back. Another one, triggered and
    resting, keeps its expire time and is released the same way."""
    clock = VirtualClock()
    cluster = InProcCluster(plan(1, 2), clock=clock)
    a, b, t = "st-alice", "st-bob", "st-taker"

    async def main() -> None:
        async with cluster, cluster.client(timeout=5) as c:
            assert (await c.deposit(a, "USD", "1000", ref="st-da")).ok
            assert (await c.deposit(b, "BTC", "1", ref="st-db")).ok
            assert (await c.deposit(t, "USD", "1000", ref="st-dt")).ok
            expire = wall_ms(clock) + 60_000
            for oid, trigger, price in (("st-1", "110", "120"), ("st-2", "101", "105")):
                placed = await c.place("BTC-USD", "buy", "1", price, account=a, id=oid,
                                       type="stop_limit", trigger=trigger, expire=expire)
                assert placed.ok, placed
                await cluster.until(_state(c, "BTC-USD", oid, a, "pending"), what=oid)
            held = D("120.06") + D("105.0525")  # qty x price + the 5 bps taker fee each
            await cluster.until(_usd(c, a, (D(1000) - held, held)), what="two holds")
            assert (await c.place("BTC-USD", "sell", "0.1", "101", account=b, id="st-s")).ok
            assert (await c.place("BTC-USD", "buy", "0.1", "101", account=t, id="st-b")).ok
            await cluster.until(_state(c, "BTC-USD", "st-2", a, "live"), what="st-2 fired")
            clock.advance(60)  # the expire time: one pending, one resting, both go
            for oid in ("st-1", "st-2"):
                await cluster.until(_state(c, "BTC-USD", oid, a, "cancelled"), what=oid)
                status = await c.order_status("BTC-USD", oid, account=a)
                assert status["reason"] == "expired", status
            await cluster.until(_usd(c, a, (D("1000.00"), D(0))), what="holds released")
            lines, ok = audit_report(await c.audit())
            assert ok, lines

    asyncio.run(main())
