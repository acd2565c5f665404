"""Perp margin through the account tier, in one process (``shardex.inproc``): free USD moves
into a perp pair's margin over the account link and back, perp orders hold and settle no spot
asset, what may leave includes realized PnL, refusals give the money back, a liquidation's
fills settle on the account tier, and a crash of either side between the steps of a move
creates or loses nothing (docs/perps.md "Margin in and out")."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from shardex.accounts.codes import S_TRADE
from shardex.accounts.feed import SettlementFeed
from shardex.accounts.ledger import account_shard_for
from shardex.client import AsyncClient, audit_report
from shardex.client.perps import margin_command, margin_outcome
from shardex.clock import VirtualClock
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_INDEX,
    EV_TRADE,
    GTC,
    LIMIT,
    OP_INDEX,
    OP_NEW,
    SELL,
)
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.sim.crash import Lifecycle
from shardex.sim.loop import run as sim_run
from shardex.sim.sched import Scheduler
from tests.support.inproc import plan, run

pytestmark = pytest.mark.timeout(120)

PERP = "BTCPERP-USD"
SPEC = (f'[markets.{PERP}]\nkind = "perp"\ntick = "0.1"\nlot = "0.001"\n'
        'initial_margin = "0.1"\nmaintenance_margin = "0.05"\n')  # fmt: skip


def _markets(tmp_path: Path) -> str:
    path = tmp_path / "markets.toml"
    path.write_text(SPEC)
    return str(path)


async def _collateral(c: AsyncClient, who: str) -> D:
    rows = [p for p in await c.positions(who) if p["symbol"] == PERP]
    return D(rows[0]["collateral"]) if rows else D(0)


async def _funded(c: AsyncClient, *accounts: str) -> None:
    """10,000 USD deposited to each of ``accounts``, and the pair's index at 30,000."""
    for who in accounts:
        assert (await c.deposit(who, "USD", "10000", ref=f"d-{who}")).ok
    await c.set_index(PERP, "30000")


def _core(cl: InProcCluster) -> Any:
    return cl.accounts[0].handler.core


async def _settled(cl: InProcCluster, c: AsyncClient, who: str, usd: str, collateral: str) -> None:
    """Wait until ``who`` has ``usd`` available and ``collateral`` on the pair, nothing in
    flight, and the account shard's books balance."""

    async def done() -> bool:
        return (
            (await c.balance(who)).get("USD") == (D(usd), D(0))
            and (await _collateral(c, who) == D(collateral))
            and not _core(cl).margin_moves
        )

    await cl.until(done, what=f"{who}: {usd} USD, {collateral} in margin")
    _core(cl).check_integrity()


def test_margin_in_trade_and_out_with_realized_pnl(tmp_path: Path) -> None:
    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            await _funded(c, "alice", "bob", "carol")
            too_much = await c.set_margin("alice", PERP, "10000.01")
            assert too_much["code"] == "insufficient_funds"
            moved = await c.set_margin("alice", PERP, "5000", ref="m-a")
            assert moved["ok"] and D(moved["available"]) == 5000 and moved["forwarded"]
            again = await c.set_margin("alice", PERP, "5000", ref="m-a")  # a retry: a no-op
            assert again["ok"] and again["repeated"] and D(again["available"]) == 5000
            for who in ("bob", "carol"):
                assert (await c.set_margin(who, PERP, "5000"))["ok"]
            for who in ("alice", "bob", "carol"):
                await _settled(cl, c, who, "5000.0000", "5000")
            # perp orders hold nothing at the account tier; the engine's margin is the gate
            assert (await c.place(PERP, "sell", "1", "30000", account="bob")).ok
            assert (await c.place(PERP, "buy", "1", "30000", account="alice", tif="ioc")).ok
            assert (await c.place(PERP, "buy", "1", "30050", account="carol")).ok
            close = await c.place(PERP, "sell", "1", None, account="alice", tif="ioc",
                                  reduce_only=True)  # fmt: skip
            assert close.ok

            async def closed() -> bool:
                (a,) = await c.positions("alice")
                return a["size"] == "0.000" and D(a["realized"]) == 50

            await cl.until(closed, what="alice closed at a 50 USD profit")
            # a perp market buy needs no budget: bob (short 1) buys back half from carol
            assert (await c.place(PERP, "sell", "0.5", "30100", account="carol")).ok
            back = await c.place(PERP, "buy", "0.5", None, account="bob", tif="ioc",
                                 reduce_only=True)  # fmt: skip
            assert back.ok, back

            async def halved() -> bool:
                return (await c.positions("bob"))[0]["size"] == "-0.500"

            await cl.until(halved, what="bob bought back half")
            assert await c.balance("alice") == {"USD": (D(5000), D(0))}  # no BTCPERP anywhere
            assert not _core(cl).open_by  # the fills closed the orders at the tier too
            # out: the engine decides, the tier credits; realized PnL may leave
            greedy = await c.set_margin("bob", PERP, "-4000")  # (bob is short 1: initial 3005)
            assert greedy["ok"] and greedy["forwarded"]
            out = await c.set_margin("alice", PERP, "-5050")
            assert out["ok"]
            await _settled(cl, c, "alice", "10050.0000", "-50")  # collateral below 0: profits
            await _settled(cl, c, "bob", "5000.0000", "5000")  # refused by the engine
            # the admin cannot move margin straight on the engine shard with the tier on
            cmd = margin_command(c.markets[PERP], "dave", "100")
            error, results = await c._request(c._router, PERP.encode(), cmd, "margin")
            assert error is None and "through the account shard" in str(results[0]["error"])
            lines, ok = audit_report(await c.audit())
        assert ok, lines
        assert any(line.startswith(PERP) and line.endswith("ok") for line in lines), lines

    run(plan(1, accounts=1, markets_file=_markets(tmp_path)), body)


def test_a_liquidation_settles_its_makers_on_the_account_tier(tmp_path: Path) -> None:
    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            await _funded(c, "long", "short", "maker")
            # (10 lots: a position that small is taken over whole, not partially)
            for who, amount in (("long", "31"), ("short", "50"), ("maker", "50")):
                assert (await c.set_margin(who, PERP, amount))["ok"]
                await _settled(cl, c, who, str(D(10000) - D(amount)) + ".0000", amount)
            assert (await c.place(PERP, "sell", "0.01", "30000", account="short")).ok
            assert (await c.place(PERP, "buy", "0.01", "30000", account="long", tif="ioc")).ok
            assert (await c.place(PERP, "buy", "0.01", "28000", account="maker", id="bid")).ok
            # long: equity 12 < maintenance 14.05; twice, as a feed does: an index after a
            # stale one (virtual time passes while the moves settle) only re-anchors the mark
            await c.set_index(PERP, "28100")
            await c.set_index(PERP, "28100")

            async def taken_over() -> bool:
                (p,) = await c.positions("long")
                return p["size"] == "0.000"

            await cl.until(taken_over, what="the long taken over")
            await cl.until(lambda: not _core(cl).open_by, what="the maker's bid filled at the tier")
            assert _core(cl).anomalies == 0
            _core(cl).check_integrity()
            lines, ok = audit_report(await c.audit())
        assert ok, lines  # (the fund holds the liquidated long's surplus)

    run(plan(1, accounts=1, markets_file=_markets(tmp_path)), body)


def test_a_crash_of_either_side_mid_move_creates_and_loses_nothing(tmp_path: Path) -> None:
    """On virtual time (``shardex.sim``): the engine shard down while the account shard takes
    and forwards a move in; the account shard killed right after forwarding a move out; the
    engine shard killed after applying one. Each move lands exactly once."""
    clock = VirtualClock()
    net = mem_transport(clock=clock)
    p = plan(1, 1, markets_file=_markets(tmp_path), data_dir=str(tmp_path / "d"), fsync="none")

    async def main() -> None:
        cl = InProcCluster(p, net=net)
        cl.sched = Scheduler(3, hub=net.hub)
        life = Lifecycle(cl)
        async with cl, cl.client(timeout=1.0) as c:
            assert (await c.deposit("alice", "USD", "10000", ref="d")).ok
            await c.set_index(PERP, "30000")
            life.crash("engine-0")
            moved = await c.set_margin("alice", PERP, "4000", ref="in")
            assert moved["ok"] and D(moved["available"]) == 6000
            life.restart("engine-0")
            await _settled(cl, c, "alice", "6000", "4000")
            assert (await c.set_margin("alice", PERP, "-1500", ref="out"))["ok"]
            life.crash("accounts-0")  # (its journal has the move; the engine may answer it)
            life.restart("accounts-0")
            await _settled(cl, c, "alice", "7500", "2500")
            engine = cl.engines[0]
            seq = engine.core.engine.seq
            assert (await c.set_margin("alice", PERP, "-500", ref="out2"))["ok"]
            await cl.until(lambda: engine.core.engine.seq > seq, what="the engine applied it")
            life.crash("engine-0")
            life.restart("engine-0")
            await _settled(cl, c, "alice", "8000", "2000")

    sim_run(main(), clock)


def test_the_audit_names_a_perp_pair_whose_collateral_is_not_the_margin_moved() -> None:
    """``audit_report`` over forged answers: a pair's collateral + fund one unit above the
    margin the account shards moved fails, naming the pair and the numbers; the same with a
    move in flight is said and not compared; a fill cash flow that is not zero-sum fails."""
    shard = {
        "shard": 0,
        "integrity": "ok",
        "units": {"USD": "0.0001"},
        "balances": {"USD": 6},
        "deposited": {"USD": 10},
        "margin": {"USD": 4},
        "margin_pairs": {PERP: [4, 0]},
    }
    totals = {"collateral": 5, "fund": 0, "size": 0, "pnl": 0, "funding": 0, "remainder": 0,
              "uncovered": 0}  # fmt: skip
    lines, ok = audit_report([shard, {"engine": 0, "pairs": {PERP: totals}}])
    (line,) = [x for x in lines if x.startswith(PERP)]
    assert not ok and (
        "collateral+funding+fund 5 != margin moved 4 (difference 1: money appeared)" in line
    )
    flying = {**shard, "margin_pairs": {PERP: [4, 1]}}
    lines, ok = audit_report([flying, {"engine": 0, "pairs": {PERP: totals}}])
    assert ok and any("1 moves in flight: not compared" in x for x in lines), lines
    skewed = {**totals, "collateral": 4, "pnl": 3}
    lines, ok = audit_report([shard, {"engine": 0, "pairs": {PERP: skewed}}])
    assert not ok and any("VIOLATION (pnl 3)" in x for x in lines), lines


def test_the_settlement_feed_settles_the_maker_of_a_liquidation_order() -> None:
    """A liquidation's order is the engine's own (no forward named it): its trade settles the
    maker only, with taker account ``""``, and its unfilled rest settles nothing. Before, the
    feed raised on the order's accept, and every settlement of that index was lost."""
    feed = SettlementFeed(0, 2)
    j = account_shard_for("maker", 2)
    new = (OP_NEW, PERP, "bid", "maker", BUY, LIMIT, 280000, 2000, GTC, False, 0)
    assert feed.route(new, [(EV_ACCEPTED, 1, PERP, "bid")], cause=7, origin=j) == []
    index = (OP_INDEX, PERP, 281000)
    events = [(EV_INDEX, 2, PERP, 281000, 281000), (EV_ACCEPTED, 3, PERP, "liq:3"),
              (EV_TRADE, 4, PERP, 280000, 1000, "liq:3", "bid", SELL, 1),
              (EV_CANCELLED, 5, PERP, "liq:3", "ioc", 500)]  # fmt: skip
    trade = (S_TRADE, 0, 4, 0, PERP, 280000, 1000, "", "liq:3", "maker", "bid", SELL, 1)
    assert feed.route(index, events) == [(j, trade)]
    assert feed.live == {(PERP, "bid"): ["maker", 1000]}


def test_the_account_shard_tells_a_move_the_engine_refused_from_one_it_moved(tmp_path) -> None:
    """``margin_moves`` (the account shard's balance read) counts an account's moves in
    flight per pair and the net the engine confirmed, so a client can wait for a move's fate
    (``shardex margin --wait``, ``margin_outcome``): a move out beyond what may leave is
    refused, one within it moved."""

    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            await _funded(c, "alice")
            before = await c.margin_moves("alice")
            assert before == {}
            assert (await c.set_margin("alice", PERP, "5000"))["ok"]
            await _settled(cl, c, "alice", "5000.0000", "5000")
            after = await c.margin_moves("alice")
            assert list(after) == [PERP] and after[PERP]["pending"] == 0
            assert D(after[PERP]["moved"]) == 5000
            assert margin_outcome(before, after, PERP, D(5000)) == "moved"
            assert (await c.set_margin("alice", PERP, "-6000"))["ok"]  # (forwarded: in flight)
            flying = {PERP: {**after[PERP], "pending": 1}}  # (as read before the answer)
            assert margin_outcome(after, flying, PERP, D(-6000)) is None

            async def answered() -> bool:
                return (await c.margin_moves("alice"))[PERP]["pending"] == 0

            await cl.until(answered, what="the engine answered the move out")
            now = await c.margin_moves("alice")
            assert margin_outcome(after, now, PERP, D(-6000)) == "refused"
            assert (await c.set_margin("alice", PERP, "-1000"))["ok"]
            await _settled(cl, c, "alice", "6000.0000", "4000")
            assert margin_outcome(now, await c.margin_moves("alice"), PERP, D(-1000)) == "moved"

    run(plan(1, accounts=1, markets_file=_markets(tmp_path)), body)
