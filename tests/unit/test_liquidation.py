"""Liquidations and the insurance fund (pure): the breach test and bankruptcy price against
exact rationals on random rows, then the engine's take-over on an index -- a surplus to the
fund, a deficit the fund pays, a deficit an empty fund cannot pay, a book too thin to close --
with conservation, replay and snapshots (``shardex.engine.liquidation``, docs/perps.md)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shardex.engine.codes import (
    BUY,
    EV_ADL,
    EV_CANCELLED,
    EV_MARGIN,
    EV_TRADE,
    OP_INDEX,
    OP_MARGIN,
    OP_TIME,
    SELL,
)
from shardex.engine.engine import Engine
from shardex.engine.liquidation import bankruptcy, breaching, maintenance
from shardex.engine.positions import COLLATERAL, COST, FUNDING, REALIZED, SIZE, equity
from shardex.wire.layouts import LIQ_ACCOUNT as L_ACCOUNT
from shardex.wire.layouts import LIQ_BANKRUPTCY as L_LIMIT
from shardex.wire.layouts import LIQ_CLOSED as L_CLOSED
from shardex.wire.layouts import LIQ_FUND as L_FUND
from shardex.wire.layouts import LIQ_NOTIONAL as L_NOTIONAL
from shardex.wire.layouts import LIQ_SETTLED as L_SETTLED
from shardex.wire.layouts import LIQ_UNCOVERED as L_UNCOVERED
from shardex.wire.layouts import TRADE_PRICE as _TR_PRICE
from shardex.wire.layouts import TRADE_QTY as _TR_QTY
from shardex.wire.layouts import TRADE_TAKER as _TR_TAKER
from shardex.wire.pub import check_event
from shardex.wire.schema import event_to_json
from tests.support.perps import LOTS, OPEN, PERP
from tests.support.perps import check_conservation as _check_conservation
from tests.support.perps import liquidations as _liquidations
from tests.support.perps import markets as _markets
from tests.support.perps import opened as _opened
from tests.support.perps import order as _order
from tests.support.perps import start as _start

MM = Fraction(1, 20)

# -- the pure core: exact rationals as the reference ---------------------------------------

rows = st.tuples(st.integers(-10**6, 10**6).filter(bool), st.integers(1, 10**6),
                 st.integers(-10**9, 10**9), st.integers(-10**9, 10**9),
                 st.integers(-10**6, 10**6))  # fmt: skip


def _row(size: int, entry: int, collateral: int, realized: int, funding: int) -> list[int]:
    return [size, size * entry, realized, collateral, funding]


@settings(max_examples=80, deadline=None)
@given(st.lists(rows, min_size=1, max_size=8), st.integers(1, 10**7))
def test_breaching_is_exactly_the_accounts_below_maintenance(spec: list, mark: int) -> None:
    """Every account returned has equity < MM × |size| × mark (as a rational), and every
    account with a position not returned has equity >= it."""
    accounts = {f"a{i}": _row(*s) for i, s in enumerate(spec)}
    accounts["flat"] = [0, 0, 5, 7, 0]
    got = set(breaching(accounts, mark, 1, 20))
    for name, row in accounts.items():
        below = row[SIZE] != 0 and equity(row, mark) < MM * abs(row[SIZE]) * mark
        assert (name in got) == below, (name, row)
    assert maintenance(-3, 7, 1, 20) == 2  # (1.05 rounded up: against the account)


@settings(max_examples=150, deadline=None)
@given(rows)
def test_bankruptcy_price_is_the_last_tick_of_nonpositive_equity(spec: tuple) -> None:
    """Equity at the bankruptcy price is <= 0; one tick better for the account (up for a long,
    down for a short) it is > 0; and it is within one tick of the exact rational root."""
    row = _row(*spec)
    p = bankruptcy(row)
    better = p + 1 if row[SIZE] > 0 else p - 1
    assert equity(row, p) <= 0 < equity(row, better)
    root = Fraction(row[COST] - row[COLLATERAL] - row[REALIZED] - row[FUNDING], row[SIZE])
    assert abs(root - p) < 1


# -- the engine ------------------------------------------------------------------------------


def _check_take_over(ev: tuple, events: list, before: list[int]) -> None:
    """The liquidation event against its own trades: closed lots, notional, and the settled
    amount = the account's equity left once flat (a reference from the fills alone)."""
    oid = next(e[_TR_TAKER] for e in events if e[0] == EV_TRADE and e[_TR_TAKER].startswith(
        "liq:") and e[1] < ev[1])  # fmt: skip
    fills = [e for e in events if e[0] == EV_TRADE and e[_TR_TAKER] == oid]
    assert sum(e[_TR_QTY] for e in fills) == abs(ev[L_CLOSED])
    assert sum(e[_TR_QTY] * e[_TR_PRICE] for e in fills) == ev[L_NOTIONAL]
    assert all(e[_TR_PRICE] >= ev[L_LIMIT] for e in fills)  # (a long: sells no lower)
    left = before[COLLATERAL] + before[REALIZED] + before[FUNDING] + ev[L_NOTIONAL] - before[COST]
    assert ev[L_SETTLED] - ev[L_UNCOVERED] == left  # (a surplus: nothing uncovered)


def test_a_drop_liquidates_the_long_and_the_fund_takes_the_surplus() -> None:
    eng = Engine(_markets())
    events = eng.apply_many([*_start(), *_opened("long", 400_000)])
    events += eng.apply_many([_order("m1", "mm", BUY, 270_000, 5),
                              _order("m2", "mm", BUY, 265_000, 5),
                              _order("rest", "long", SELL, 310_000, 1)])  # fmt: skip
    before = list(eng.books[PERP].positions.accounts["long"])
    assert not _liquidations(eng.apply_many([(OP_INDEX, PERP, 290_000)]))  # (above: nothing)
    step = eng.apply_many([(OP_INDEX, PERP, 270_000)])
    events += step
    (ev,) = _liquidations(step)
    assert ev[L_ACCOUNT] == "long" and ev[L_CLOSED] == LOTS and ev[L_SETTLED] > 0
    assert any(e[0] == EV_CANCELLED and e[3] == "rest" and e[4] == "liquidation" for e in step)
    _check_take_over(ev, step, before)
    pos = eng.books[PERP].positions
    assert pos.fund == ev[L_FUND] == ev[L_SETTLED] and pos.accounts["long"][SIZE] == 0
    assert equity(pos.accounts["long"], eng.books[PERP].oracle.mark) == 0
    assert pos.accounts["short"][SIZE] == -LOTS  # (the winner is untouched)
    _check_conservation(eng, events)
    # (the cancelled order's recent result, reason "liquidation", survives a restore)
    assert Engine.restore(eng.snapshot(), _markets()).snapshot() == eng.snapshot()


def _crash(eng: Engine, events: list, n: int) -> tuple:
    """A long whose bankruptcy price falls between ticks opens; the only bid sits at that
    price and the index crashes far below: filled at the bankruptcy price, a deficit."""
    events += eng.apply_many([(OP_INDEX, PERP, OPEN), *_opened(f"l{n}", 400_003, n)])
    row = eng.books[PERP].positions.accounts[f"l{n}"]
    before, limit = list(row), bankruptcy(row)
    events += eng.apply_many([_order(f"c{n}", "mm", BUY, limit, LOTS)])
    step = eng.apply_many([(OP_INDEX, PERP, 200_000)])
    events += step
    (ev,) = _liquidations(step)
    assert ev[L_CLOSED] == LOTS and ev[L_LIMIT] == limit and ev[L_SETTLED] <= 0
    _check_take_over(ev, step, before)
    return ev


def test_a_flash_crash_deficit_is_paid_by_the_fund_or_deleveraged_when_it_is_empty() -> None:
    eng = Engine(_markets())
    events = eng.apply_many([*_start(), *_opened("long", 400_000),
                             _order("m1", "mm", BUY, 270_000, LOTS),
                             (OP_INDEX, PERP, 270_000)])  # fmt: skip
    fund = eng.books[PERP].positions.fund
    assert fund > 0
    paid = _crash(eng, events, 1)
    assert paid[L_SETTLED] < 0 and paid[L_UNCOVERED] == 0 and paid[L_FUND] == fund + paid[
        L_SETTLED]  # fmt: skip
    _check_conservation(eng, events)
    # an empty fund cannot pay the rounding: the limit is rounded toward the account (one
    # tick up), the bid at the floor does not fill, and the bankrupt long is deleveraged
    # against the short at that limit: no deficit (regression: it was left unpaid, the
    # account's equity negative and ``uncovered`` > 0)
    empty = Engine(_markets())
    events = empty.apply_many(_start())
    events += empty.apply_many([(OP_INDEX, PERP, OPEN), *_opened("l2", 400_003, 2)])
    row = empty.books[PERP].positions.accounts["l2"]
    limit = bankruptcy(row) + 1
    events += empty.apply_many([_order("c2", "mm", BUY, limit - 1, LOTS)])
    step = empty.apply_many([(OP_INDEX, PERP, 200_000)])
    events += step
    (ev,) = _liquidations(step)
    (adl,) = [e for e in step if e[0] == EV_ADL]
    assert adl[3:] == ("short", "l2", -LOTS, limit)
    assert ev[L_CLOSED] == LOTS and ev[L_LIMIT] == limit and ev[L_NOTIONAL] == LOTS * limit
    assert ev[L_SETTLED] >= 0 and ev[L_UNCOVERED] == 0
    pos = empty.books[PERP].positions
    assert pos.uncovered == 0 and equity(pos.accounts["l2"], 1) == 0
    assert pos.accounts["short"][SIZE] == 0 and "c2" in empty.books[PERP].orders
    _check_conservation(empty, events)


def test_a_book_too_thin_leaves_the_rest_open_for_the_next_index() -> None:
    eng = Engine(_markets())
    events = eng.apply_many([*_start(), *_opened("long", 400_000),
                             _order("m1", "mm", BUY, 270_000, 4)])  # fmt: skip
    step = eng.apply_many([(OP_INDEX, PERP, 270_000)])
    (ev,) = _liquidations(step)
    assert ev[L_CLOSED] == 4 and ev[L_SETTLED] == ev[L_UNCOVERED] == 0
    assert eng.books[PERP].positions.accounts["long"][SIZE] == LOTS - 4
    step2 = eng.apply_many([_order("m2", "mm", BUY, 255_000, 6), (OP_INDEX, PERP, 250_000)])
    (ev2,) = _liquidations(step2)
    assert ev2[L_CLOSED] == 6 and eng.books[PERP].positions.accounts["long"][SIZE] == 0
    _check_conservation(eng, events + step + step2)


def test_liquidations_replay_and_restore_byte_identically() -> None:
    cmds = [*_start(), *_opened("long", 400_000), _order("m1", "mm", BUY, 270_000, LOTS),
            (OP_INDEX, PERP, 270_000), (OP_INDEX, PERP, OPEN), *_opened("l1", 400_003, 1),
            _order("c1", "mm", BUY, 259_999, LOTS), (OP_INDEX, PERP, 200_000)]  # fmt: skip
    eng = Engine(_markets())
    events = eng.apply_many(cmds)
    assert len(_liquidations(events)) == 2
    assert Engine(_markets()).apply_many(cmds) == events
    restored = Engine.restore(eng.snapshot(), _markets())
    assert restored.snapshot() == eng.snapshot()
    assert restored.books[PERP].positions.fund == eng.books[PERP].positions.fund > 0
    more = [(OP_INDEX, PERP, OPEN), *_opened("l3", 400_000, 3), (OP_INDEX, PERP, 100_000)]
    assert restored.apply_many(more) == eng.apply_many(more)


def test_liquidation_events_pass_the_bridge_check_and_format_as_decimals() -> None:
    eng = Engine(_markets())
    events = eng.apply_many([*_start(), *_opened("long", 400_000),
                             _order("m1", "mm", BUY, 270_000, LOTS),
                             (OP_INDEX, PERP, 270_000)])  # fmt: skip
    (ev,) = _liquidations(events)
    markets = _markets()
    assert check_event(ev, markets)
    doc = event_to_json(ev, markets)
    assert doc["ev"] == "liquidation" and doc["account"] == "long" and doc["closed"] == "0.010"
    assert doc["bankruptcy"] == markets[PERP].price_str(ev[L_LIMIT])
    assert doc["fund"] == str(ev[L_FUND] * markets[PERP].tick * markets[PERP].lot)
    assert not check_event((*ev[:L_ACCOUNT], "", *ev[L_ACCOUNT + 1:]), markets)


# -- random sessions ---------------------------------------------------------------------------

TRADERS = ("a", "b", "c")
trade = st.tuples(st.just("trade"), st.sampled_from(TRADERS), st.sampled_from(TRADERS),
                  st.integers(1, 8), st.integers(-20_000, 20_000))  # fmt: skip
index = st.tuples(st.just("index"), st.integers(-90_000, 90_000))
steps = st.lists(st.one_of(
    trade, trade, index, index,
    st.tuples(st.just("bid"), st.integers(1, 12), st.integers(-90_000, 0)),
    st.tuples(st.just("ask"), st.integers(1, 12), st.integers(0, 90_000)),
    st.tuples(st.just("margin"), st.sampled_from(TRADERS), st.integers(1, 200_000)),
), min_size=4, max_size=30)  # fmt: skip


def _session(spec: list) -> list[tuple]:
    """Random trades between the traders (an ask rested, a bid that takes it), the market
    maker's resting bids and asks, margin moves and index moves around ``OPEN``."""
    cmds = [*_start(), *((OP_MARGIN, PERP, a, 300_000) for a in TRADERS)]
    ladder = [(side, 6, k * off) for k in range(3, 10, 2) for side, off in (("bid", -10_000),
                                                                              ("ask", 10_000))]
    for n, s in enumerate([("trade", "a", "b", 8, 0), ("trade", "c", "a", 3, 5_000), *ladder,
                           *spec]):
        if s[0] == "trade" and s[1] != s[2]:
            cmds += [_order(f"s{n}", s[1], SELL, OPEN + s[4], s[3]),
                     _order(f"b{n}", s[2], BUY, OPEN + s[4], s[3])]  # fmt: skip
        elif s[0] in ("bid", "ask"):
            cmds.append(_order(f"m{n}", "mm", BUY if s[0] == "bid" else SELL, OPEN + s[2], s[1]))
        elif s[0] == "index":
            cmds += [(OP_TIME, 2_000 + n), (OP_INDEX, PERP, OPEN + s[1])]
        elif s[0] == "margin":
            cmds.append((OP_MARGIN, PERP, s[1], s[2]))
    return cmds


@settings(max_examples=40, deadline=None)
@given(steps)
@example([("index", 0), ("index", 0), ("index", 0), ("index", 85_800)])  # (a cascade: the
# short's take-over fills a trader's resting ask far below the mark, who breaches then)
def test_random_sessions_conserve_replay_and_leave_no_breach_the_book_could_close(
        spec: list) -> None:  # fmt: skip
    """After every index: conservation holds, the fund is never negative, every event passes
    the bridge's check, and an account still below maintenance had a take-over that the book
    could not complete (it is retried); replay and restore are byte-identical."""
    cmds, markets = _session(spec), _markets()
    eng = Engine(markets)
    events: list = []
    for cmd in cmds:
        step = eng.apply_many([cmd])
        events += step
        assert all(check_event(ev, markets) for ev in step), step
        if cmd[0] != OP_INDEX:
            continue
        pos, mark = eng.books[PERP].positions, eng.books[PERP].oracle.mark
        assert pos.fund >= 0 and pos.uncovered >= 0
        _check_conservation(eng, events)
        taken = {ev[L_ACCOUNT] for ev in _liquidations(step)}
        assert set(breaching(pos.accounts, mark, 1, 20)) <= taken
    assert Engine(markets).apply_many(cmds) == events
    assert Engine.restore(eng.snapshot(), markets).snapshot() == eng.snapshot()


def test_a_winner_liquidated_later_keeps_a_readable_negative_collateral() -> None:
    """An account that realized a profit, then lost most of it on a larger position, is
    liquidated with a surplus bigger than its collateral: the fund takes all its equity, so
    its collateral goes below zero (its realized PnL stays as traded). Its next margin move's
    event must still pass the bridge's check, and its snapshot must load."""
    eng, markets = Engine(_markets()), _markets()
    events = eng.apply_many([*_start(), *_opened("w", 400_000),
                             (OP_INDEX, PERP, 330_000),
                             _order("x1", "mm", BUY, 330_000, LOTS),
                             _order("x2", "w", SELL, 330_000, LOTS),  # (+300,000 realized)
                             _order("y1", "short", SELL, 330_000, 20),
                             _order("y2", "w", BUY, 330_000, 20),
                             _order("z1", "mm", BUY, 320_000, 20),
                             (OP_INDEX, PERP, 280_000)])  # fmt: skip
    # (a mark below its bankruptcy price, 295,000: taken over whole, not partly)
    (ev,) = _liquidations(events)
    row = eng.books[PERP].positions.accounts["w"]
    assert ev[L_SETTLED] > 0 and row[SIZE] == 0 and row[REALIZED] > 0 > row[COLLATERAL]
    step = eng.apply_many([(OP_MARGIN, PERP, "w", 1_000)])
    assert step[-1][0] == EV_MARGIN and check_event(step[-1], markets)
    assert Engine.restore(eng.snapshot(), markets).snapshot() == eng.snapshot()
    _check_conservation(eng, events + step)
