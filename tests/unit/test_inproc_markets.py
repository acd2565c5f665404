"""Markets and accounts at runtime through a whole cluster in one process (``shardex.inproc``,
``shardex up --shards 2 --accounts 2``): trade, halt, resume, cancel-only, a price band and a
maximum size, restrict and unrestrict, then delist: every hold released on the account tier
and the audit clean; after a restart (journals replayed) the pair is still delisted, the
other pair's rules and the restriction still hold, from snapshots and from the journals alone;
and a replicated engine shard's standby that takes over runs by the rules its leader set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from shardex.accounts.core import account_shard_for
from shardex.client import AsyncClient, Retry, audit_report
from shardex.clock import VirtualClock
from shardex.engine.codes import EV_REJECTED, OP_MARKET_RULE, reject_name
from shardex.inproc import InProcCluster
from shardex.placement import default_owner
from shardex.sim.store import SimStore
from shardex.wire.codes import WRONG_SHARD
from tests.support.inproc import plan, run, run_virtual

pytestmark = pytest.mark.timeout(120)

P, Q = "BTC-USD", "ETH-USD"
AL = next(a for a in (f"al{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
BO = next(a for a in (f"bo{k}" for k in range(50)) if account_shard_for(a, 2) == 1)


def _code(res: Any) -> str:
    """The reject code of a placed/cancelled order's result (its one ``rejected`` event)."""
    assert not res.ok, res
    return res.code


async def _refused(cl: InProcCluster, res: Any) -> str:
    """The code the engine shard refused a new order with that its account shard held and
    forwarded (the answer was ``[]``): its ``rejected`` event, as the shard published it."""
    assert res.ok and res.events == [], res
    oid = res.command["id"]
    found: list[str] = []

    def seen() -> bool:
        for node in cl.engines:  # (after a restart the ring starts after the replayed seqs)
            ring, seq = node.core.ring, node.core.engine.seq
            events = ring.get(ring.first, seq) if ring.first <= seq else []
            found.extend(reject_name(ev[5]) for ev in events or ()
                         if ev[0] == EV_REJECTED and ev[3] == oid)  # fmt: skip
        return bool(found)

    await cl.until(seen, what=f"{oid} refused by its engine shard")
    return found[0]


def _live(c: AsyncClient, oid: str, account: str) -> Callable[[], Awaitable[bool]]:
    async def pred() -> bool:
        return (await c.order_status(P, oid, account=account))["state"] == "live"

    return pred


def _balance(c: AsyncClient, account: str, asset: str, want: tuple[D, D]):
    async def pred() -> bool:
        return (await c.balance(account)).get(asset) == want

    return pred


async def _trade_halt_resume(cl: InProcCluster, c: AsyncClient) -> None:
    assert (await c.deposit(AL, "USD", "100000", ref="d-al")).ok
    assert (await c.deposit(BO, "BTC", "10", ref="d-bo")).ok
    assert (await c.place(P, "sell", "1", "1000", account=BO, id="s1")).ok
    await cl.until(_live(c, "s1", BO), what="the sell resting")
    assert (await c.place(P, "buy", "0.5", "1000", account=AL, id="b1")).ok  # trades 0.5
    await cl.until(_balance(c, BO, "BTC", (D("9"), D("0.5"))), what="the trade settled")
    res = await c.set_market(P, state="halted")
    assert res["ok"] and res["state"] == "halted", res
    assert await _refused(cl, await c.place(P, "buy", "0.1", "990", account=AL, id="h1")) == (
        "market_halted"
    )
    assert _code(await c.cancel(P, "s1", account=BO)) == "market_halted"
    await cl.until(_balance(c, AL, "USD", (D("99499.75"), D(0))), what="h1's hold released")
    assert (await c.set_market(P, state="open"))["state"] == "open"
    assert (await c.place(P, "buy", "0.1", "990", account=AL, id="b2")).ok
    await cl.until(_live(c, "b2", AL), what="b2 resting after the resume")
    assert (await c.set_market(P, state="cancel_only"))["ok"]
    assert await _refused(cl, await c.place(P, "buy", "0.1", "990", account=AL, id="c1")) == (
        "cancel_only"
    )
    assert (await c.set_market(P, state="open", band_bps=100, max_qty="2"))["max_qty"] == "2.0000"
    x1 = await c.place(P, "buy", "0.1", "1010.01", account=AL, id="x1")
    assert await _refused(cl, x1) == "price_band"
    x2 = await c.place(P, "buy", "3", "1000", account=AL, id="x2")
    assert await _refused(cl, x2) == "order_too_large"
    assert (await c.set_market(P, min_qty="0.01"))["min_qty"] == "0.0100"
    x3 = await c.place(P, "buy", "0.005", "1000", account=AL, id="x3")
    assert await _refused(cl, x3) == "order_too_small"
    assert (await c.set_market(P, min_qty="0"))["min_qty"] == "0"
    assert (await c.set_market(Q, band_bps=250))["ok"]


async def _restrict(cl: InProcCluster, c: AsyncClient) -> None:
    assert (await c.restrict(AL))["restricted"] is True
    assert _code(await c.place(P, "buy", "0.1", "995", account=AL, id="r1")) == (
        "account_restricted"
    )
    withdrawal = await c.withdraw(AL, "USD", "1", ref="w-al")
    assert not withdrawal.ok and withdrawal.code == "account_restricted", withdrawal
    assert (await c.cancel(P, "b2", account=AL)).ok  # cancels still run
    assert (await c.restrict(AL, False))["restricted"] is False
    assert (await c.place(P, "buy", "0.1", "995", account=AL, id="r2")).ok
    await cl.until(_live(c, "r2", AL), what="r2 resting after the unrestrict")
    assert (await c.restrict(AL))["ok"]  # (restricted again: the restart keeps it)


async def _delist(cl: InProcCluster, c: AsyncClient) -> None:
    stop = await c.place(P, "sell", "0.1", "995", account=BO, id="t1", type="stop_limit",
                         trigger="995")  # fmt: skip
    assert stop.ok, stop.events

    async def pending() -> bool:
        return (await c.order_status(P, "t1", account=BO))["state"] == "pending"

    await cl.until(pending, what="t1 pending on the engine shard")
    res = await c.set_market(P, state="delisted")
    # s1's rest, r2 and the pending stop t1 (whose hold outlived the pair before)
    assert res["ok"] and res["cancelled"] == 3, res
    await cl.until(_balance(c, BO, "BTC", (D("9.5"), D(0))), what="bo's hold released")
    await cl.until(_balance(c, AL, "USD", (D("99499.75"), D(0))), what="al's holds released")
    d1 = await c.place(P, "sell", "0.1", "1000", account=BO, id="d1")
    assert await _refused(cl, d1) == "delisted"
    assert (await c.set_market(P, state="open"))["code"] == "delisted"
    lines, ok = audit_report(await c.audit())
    assert ok, lines


def test_markets_and_accounts_at_runtime(tmp_path: Path) -> None:
    p = plan(2, accounts=2, data_dir=str(tmp_path))

    async def live(cl: InProcCluster) -> dict[str, Any]:
        async with cl.client(timeout=10.0) as c:
            with pytest.raises(ValueError, match="nothing to change"):
                await c.set_market(P)  # refused before it is sent
            other = 1 - default_owner(P, 2)  # the rule sent straight to the shard not owning P
            cmd = (OP_MARKET_RULE, P, {"state": "halted"})
            error, (res,) = await c._request(c._router, f"#{other}".encode(), cmd, "rule")
            assert error is None and res["error"][0] == WRONG_SHARD, res
            await _trade_halt_resume(cl, c)
            await _restrict(cl, c)
            await _delist(cl, c)
            return await c.market_rules()

    rules = run(p, live)
    assert rules[P]["state"] == "delisted" and rules[Q]["band_bps"] == 250

    async def restarted(cl: InProcCluster) -> dict[str, Any]:
        async with cl.client(timeout=10.0) as c:
            d2 = await c.place(P, "sell", "0.1", "1000", account=BO, id="d2")
            assert await _refused(cl, d2) == "delisted"
            assert _code(await c.place(Q, "buy", "0.1", "1000", account=AL, id="q1")) == (
                "account_restricted"
            )
            lines, ok = audit_report(await c.audit())
            assert ok, lines
            return await c.market_rules()

    assert run(p, restarted) == rules  # (from the shutdown's snapshots)
    for snap in tmp_path.glob("*/snapshot-*"):
        snap.unlink()
    assert run(p, restarted) == rules  # (every journal replayed from its start)


def test_a_standby_that_takes_over_keeps_the_rules(tmp_path: Path) -> None:
    """A replicated engine shard (two replicas, the simulated store as its Redis): a price
    band and a halt set on the leader are journaled to the standby; the leader is killed, the
    standby leads with the same rules (a new order refused ``market_halted``), and the rules'
    ``market`` events are in the stream once, in seq order."""
    store = SimStore(VirtualClock())
    p = plan(1, 0, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))

    async def body(cl: InProcCluster) -> list[str]:
        (old,) = await cl.until(cl.leaders, what="a leader")
        await cl.until(lambda: len(old.leader.replica.isr) == 2, what="the standby in sync")
        (standby,) = [r for r in cl.replicas if r is not old]
        async with cl.client(account="al", timeout=1.0, retry=Retry(10.0)) as c:
            assert (await c.place(P, "sell", "1", "100", id="s1")).ok
            assert (await c.place(P, "buy", "0.5", "100", id="b1", account="bo")).ok
            assert (await c.set_market(P, band_bps=300))["ok"]
            assert (await c.set_market(P, state="halted"))["ok"]
            cl.freeze(old)  # killed: no more turns, no more lease renewals
            await cl.until(lambda: standby.leader is not None, what="the standby to lead")
            assert (await c.place(P, "buy", "0.1", "99", id="b2", account="bo")).code == (
                "market_halted"
            )
            book = standby.leader.core.engine.books[P]
            assert (
                book.gate.to_wire()
                == {
                    "state": "halted",
                    "band_bps": 300,
                    "max_qty": 0,
                    "max_notional": 0,
                    "min_qty": 0,
                }
                and book.last == 10000
            )
            assert (await c.set_market(P, state="open"))["ok"]
            b3 = await c.place(P, "buy", "0.1", "90", id="b3", account="bo")
            assert b3.code == "price_band", b3  # (3 % around the last trade at 100)
            seq = standby.leader.core.engine.seq
            await cl.until(lambda: _stream_top(store) >= seq, what="the stream to catch up")
        entries = store.client().xrange("shardex:events:0")
        seqs = [int(eid.split(b"-")[0]) for eid, _ in entries]
        assert seqs == list(range(1, seq + 1))
        return [f[b"state"].decode() for _, f in entries if f.get(b"ev") == b"market"]

    assert run_virtual(p, body, store) == ["open", "halted", "open"]


def _stream_top(store: SimStore) -> int:
    entries = store.client().xrange("shardex:events:0")
    return int(entries[-1][0].split(b"-")[0]) if entries else 0
