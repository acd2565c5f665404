"""The account tier's logic through a whole cluster in one process (``shardex.inproc``): the
router, engine shards and account shards of ``shardex up --accounts M`` over the in-memory
transport. Money is checked exactly (Decimal): deposits, holds, price improvement, maker/taker
fees (defaults 2/5 bps, rounded up), cancels and engine refusals releasing holds, refusals with
reasons and codes, orders that try to skip the account tier, and the conservation audit.
tests/process/test_accounts_wire.py keeps what needs real processes (the CLI, kill -9)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from typing import Any

import pytest

from shardex.accounts.core import account_shard_for
from shardex.client import AsyncClient, audit_report
from shardex.engine.codes import OP_NEW
from shardex.inproc import InProcCluster
from tests.support.inproc import plan
from tests.support.inproc import run as run_on

pytestmark = pytest.mark.timeout(60)


Body = Callable[[InProcCluster, AsyncClient], Awaitable[Any]]


def run(shards: int, accounts: int, body: Body) -> Any:
    """``body(cluster, client)`` on ``shardex up --shards N --accounts M``'s cluster."""

    async def with_client(cluster: InProcCluster) -> Any:
        async with cluster.client(timeout=5) as c:
            return await body(cluster, c)

    return run_on(plan(shards, accounts), with_client)


def _live(c: AsyncClient, oid: str, account: str) -> Callable[[], Awaitable[bool]]:
    async def pred() -> bool:
        return (await c.order_status("BTC-USD", oid, account=account))["state"] == "live"

    return pred


def _settled(c: AsyncClient, account: str, expect: dict[str, tuple[D, D]]):
    async def pred() -> bool:
        return await c.balance(account) == expect

    return pred


def test_trade_settles_both_sides_exactly():
    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        assert (await c.deposit("alice", "USD", "1000", ref="t1-a")).ok
        assert (await c.deposit("bob", "BTC", "1", ref="t1-b")).ok
        sell = await c.place("BTC-USD", "sell", "0.5", "100", account="bob", id="bob-1")
        assert sell.ok and sell.events == []  # held and forwarded
        # bob's 0.5 BTC is held until the sell ends; it rests on the engine shard
        await cl.until(_settled(c, "bob", {"BTC": (D("0.5"), D("0.5"))}), what="bob's hold")
        await cl.until(_live(c, "bob-1", "bob"), what="the sell on the book")
        buy = await c.place("BTC-USD", "buy", "0.5", "101", account="alice")
        assert buy.ok
        # alice pays 100 (price improvement: her limit was 101) + 5 bps taker fee = 50.025
        await cl.until(_settled(c, "alice", {"USD": (D("949.975"), D(0)),
                                             "BTC": (D("0.5"), D(0))}),
                       what="alice settled")  # fmt: skip
        # bob receives 50 - 2 bps maker fee = 49.99
        await cl.until(_settled(c, "bob", {"BTC": (D("0.5"), D(0)), "USD": (D("49.99"), D(0))}),
                       what="bob settled")  # fmt: skip

    run(2, 2, body)


def test_refusals_reach_the_client_with_reason_and_code():
    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        assert (await c.deposit("carol", "USD", "10", ref="t2-c")).ok
        r = await c.place("BTC-USD", "buy", "0.3", "100", account="carol")
        assert r.rejected and r.code == "insufficient_funds"
        assert r.reason == "insufficient USD: available 10.00, needed 30.015"
        w = await c.withdraw("carol", "USD", "10.01")
        assert w.rejected and w.code == "insufficient_funds"
        assert w.reason == "insufficient USD: available 10.00, needed 10.01"
        again = await c.deposit("carol", "USD", "10", ref="t2-c")  # the same transfer retried
        assert again.ok and again.events[0]["repeated"]
        other = await c.deposit("carol", "USD", "11", ref="t2-c")
        assert other.rejected and other.code == "duplicate_ref"
        assert await c.balance("carol") == {"USD": (D("10.00"), D(0))}
        off = await c.deposit("carol", "USD", "0.0000001")
        assert off.rejected and off.code == "off_grid"

    run(2, 2, body)


def test_cancel_releases_the_hold():
    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        assert (await c.deposit("dave", "USD", "100", ref="t3-d")).ok
        r = await c.place("BTC-USD", "buy", "1", "50", account="dave", id="dave-1")
        assert r.ok
        await cl.until(_settled(c, "dave", {"USD": (D("49.975"), D("50.025"))}),
                       what="dave's hold")  # fmt: skip
        await cl.until(_live(c, "dave-1", "dave"), what="the buy on the book")
        assert (await c.cancel("BTC-USD", "dave-1", account="dave")).ok
        await cl.until(_settled(c, "dave", {"USD": (D("100.00"), D(0))}), what="hold released")

    run(2, 2, body)


def test_orders_cannot_bypass_the_account_tier():
    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        await c.topology()
        cmd = (OP_NEW, "BTC-USD", "sneaky", "eve", 0, 0, 100_00, 1, 0, False, 0)
        error, results = await c._request(c._router, b"BTC-USD", cmd, "engine")  # to the engine
        assert error is None
        ev = results[0][0]
        assert ev[3] == "sneaky" and "account" in ev[4] and ev[5] == 12  # not_allowed

    run(2, 2, body)


def test_a_cancel_sent_after_the_place_reply_never_overtakes_its_order():
    """The place reply means "held and forwarded"; the cancel takes the short path (router →
    engine shard). The forward must already be on its way, and the engine shard must read its
    account links before client requests, so the cancel finds the order. Before: the account
    shard answered clients before it sent the forwards, and the engine shard read client
    requests first, so a cancel right after the reply was now and then refused as unknown
    (README's example failed in CI that way)."""

    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        assert (await c.deposit("erin", "USD", "1000000", ref="t-overtake")).ok
        ids = [f"erin-{k}" for k in range(300)]
        results = await c.submit_many(
            [
                c.order("BTC-USD", "buy", "1", str(100 + k % 50), account="erin", id=oid)
                for k, oid in enumerate(ids)
            ],  # fmt: skip
            batch=100,
            window=8,
        )
        assert all(r.ok for r in results), [r.reason for r in results if not r.ok][:3]
        cancels = await c.submit_many(
            [{"op": "cancel", "symbol": "BTC-USD", "id": oid, "account": "erin"} for oid in ids],
            batch=100,
            window=8,
        )
        refused = [(oid, r.reason) for oid, r in zip(ids, cancels, strict=True) if not r.ok]
        assert not refused, f"{len(refused)} cancels overtook their orders: {refused[:3]}"
        await cl.until(_settled(c, "erin", {"USD": (D("1000000.00"), D(0))}),
                       what="every hold released")  # fmt: skip

    run(2, 2, body)


def test_engine_rejects_release_holds():
    """Through the cluster of ``shardex up --accounts 2``, every engine-level refusal a client
    can provoke after its hold is taken: duplicate id (live, and recently finished), post-only
    cross, post-only with an IOC. Each hold comes back, the audit stays clean."""

    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        a, b = "rej-alice", "rej-bob"
        assert account_shard_for(a, 2) != account_shard_for(b, 2)
        for acct in (a, b):
            assert (await c.deposit(acct, "USD", "1000", ref=f"{acct}-usd")).ok
            assert (await c.deposit(acct, "BTC", "10", ref=f"{acct}-btc")).ok
        assert (await c.place("BTC-USD", "sell", "1", "100", account=a, id="dup")).ok
        await cl.until(_live(c, "dup", a), what="rest")
        assert (await c.place("BTC-USD", "buy", "0.1", "90", account=b, id="dup")).ok  # live id
        assert (await c.place("BTC-USD", "buy", "0.1", "101", account=b, post_only=True)).ok
        assert (await c.place("BTC-USD", "buy", "0.1", "90", account=b, post_only=True,
                              tif="ioc")).ok  # fmt: skip
        assert (await c.place("BTC-USD", "buy", "0.01", "100", account=b, id="fill")).ok  # fills

        async def filled() -> bool:
            return (await c.balance(b))["BTC"][0] == D("10.01")

        await cl.until(filled, what="the fill settled")
        assert (await c.place("BTC-USD", "buy", "0.01", "90", account=b, id="fill")).ok  # finished
        # bob paid 0.01 × 100 + 5 bps taker fee for the fill; every other hold came back
        await cl.until(_settled_usd(c, b, (D("998.9995"), D(0))), what="bob's holds released")
        assert (await c.cancel("BTC-USD", "dup", account=a)).ok

        async def released() -> bool:
            return (await c.balance(a))["BTC"][1] == D(0)

        await cl.until(released, what="alice released")
        lines, ok = audit_report(await c.audit())
        assert ok, lines

    run(1, 2, body)


def _settled_usd(c: AsyncClient, account: str, want: tuple[D, D]):
    async def pred() -> bool:
        return (await c.balance(account))["USD"] == want

    return pred


def test_audit_report_flags_a_violation():
    good = {"shard": 0, "integrity": "ok", "units": {"USD": "0.01"}, "balances": {"USD": 100},
            "fees": {"USD": 1}, "deposited": {"USD": 101}, "withdrawn": {}, "flow": {}}  # fmt: skip
    assert audit_report([good])[1]
    assert not audit_report([{**good, "balances": {"USD": 101}}])[1]  # money appeared
    assert not audit_report([{**good, "flow": {"USD": 5}}])[1]  # inflows do not cancel out
    assert not audit_report([{**good, "integrity": "held 3 != 2"}])[1]
    assert not audit_report([good, {"shard": 1, "error": "timeout"}])[1]


def test_async_client_deposit_withdraw_balance_audit():
    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        r = await c.deposit("async-a", "USD", "100.25", ref="as-1")
        assert r.ok and r.events[0]["available"] == D("100.25")
        again = await c.deposit("async-a", "USD", "100.25", ref="as-1")
        assert again.ok and again.events[0].get("repeated")  # the ref: applied once
        too_much = await c.withdraw("async-a", "USD", "1000", ref="as-2")
        assert too_much.rejected and too_much.code == "insufficient_funds"
        assert "available 100.25" in too_much.reason
        assert (await c.withdraw("async-a", "USD", "0.25", ref="as-3")).ok
        assert await c.balance("async-a") == {"USD": (D(100), D(0))}
        bad = await c.deposit("async-a", "XYZ", "1", ref="as-4")
        assert bad.rejected and bad.code == "unknown_asset"
        lines, ok = audit_report(await c.audit())
        assert ok, lines

    run(1, 2, body)


def test_a_turns_forwards_to_an_engine_shard_leave_as_one_link_message():
    """The account shard forwards what one group commit held in one message per engine shard
    (not one per order), and counts its link messages (``shardex_accounts_link{what=
    "messages"}``, next to ``forwards``) as the engine shard does: 20 orders placed at once
    reach the engine in fewer messages than orders, each applied once."""

    async def body(cl: InProcCluster, c: AsyncClient) -> None:
        assert (await c.deposit("alice", "USD", "1000", ref="b-a")).ok
        (acct,), (engine,) = cl.accounts, cl.engines
        sent, msgs = acct.counts["forwards"], acct.counts["messages"]
        replies = await asyncio.gather(*(
            c.place("BTC-USD", "buy", "0.01", str(90 + k), account="alice", id=f"b{k}")
            for k in range(20)))  # fmt: skip
        assert all(r.ok for r in replies), replies
        await cl.until(lambda: engine.link_counts["forwards"] >= sent + 20, what="forwarded")
        assert acct.counts["forwards"] - sent == 20 == engine.link_counts["forwards"] - sent
        assert 1 <= acct.counts["messages"] - msgs < 20, acct.counts

    run(1, 1, body)
