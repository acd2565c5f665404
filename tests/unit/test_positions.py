"""Perp positions and margin (pure): the position core against a tiny reference model, the
engine's margin and reduce-only rejects, and positions through replay, snapshots and a move
(``shardex.engine.positions``, docs/perps.md)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.engine.codes import (
    BUY,
    EV_MARGIN,
    EV_POSITION,
    EV_REJECTED,
    EV_TRADE,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_ADOPT,
    OP_AMEND,
    OP_HANDOFF,
    OP_INDEX,
    OP_MARGIN,
    OP_NEW,
    OP_TIME,
    REJ_INSUFFICIENT_MARGIN,
    REJ_INVALID,
    REJ_NO_MARK,
    REJ_NOT_PERP,
    REJ_REDUCE_ONLY_REJECTED,
    SELL,
    STOP_MARKET,
    STP_NONE,
)
from shardex.engine.engine import Engine
from shardex.engine.markets import DEFAULT_MARKETS, markets_from_table
from shardex.engine.positions import COLLATERAL, COST, REALIZED, SIZE, WIDTH, equity, fill
from shardex.wire.layouts import (
    POSITION_ACCOUNT,
    POSITION_COST,
    POSITION_REALIZED,
    POSITION_SIZE,
)
from shardex.wire.pub import check_event
from shardex.wire.schema import event_to_json

PERP = "BTCPERP-USD"
SPEC = {"kind": "perp", "tick": "0.1", "lot": "0.001", "initial_margin": "0.1",
        "maintenance_margin": "0.05"}  # fmt: skip
MARK = 300_000  # ticks (30000.0)
ACCOUNTS = ("a", "b", "c")


def _markets() -> dict:
    return {**DEFAULT_MARKETS, **markets_from_table({PERP: SPEC})}


def _new(oid: str, account: str, side: int, price: int | None, qty: int, tif: int = GTC,
         opts: dict | None = None) -> tuple:  # fmt: skip
    otype = LIMIT if price is not None else MARKET
    cmd = (OP_NEW, PERP, oid, account, side, otype, price, qty, tif, False, STP_NONE)
    return cmd if opts is None else (*cmd, None, opts)


def _funded(*accounts: str, units: int = 10**9) -> list[tuple]:
    """Exchange time, an index at ``MARK`` and ``units`` of margin for each account."""
    return [(OP_TIME, 1_000), (OP_INDEX, PERP, MARK),
            *((OP_MARGIN, PERP, a, units) for a in accounts)]  # fmt: skip


# -- the pure core against a reference model ------------------------------------------------

fills = st.lists(
    st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS),
              st.integers(1, 50), st.integers(1, 1000)),  # fmt: skip
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(fills, st.integers(1, 2000))
def test_core_matches_a_reference_model(trades: list, mark: int) -> None:
    """Random trades (buyer, seller, lots, price): sizes sum to zero, each account's
    ``realized − cost`` is its cash flow ``−Σ q × price`` exactly, the entry price is the
    reference's average (a rational), and the PnL of all accounts sums to zero at any mark."""
    rows = {a: [0] * WIDTH for a in ACCOUNTS}
    cash = dict.fromkeys(ACCOUNTS, 0)
    lots = dict.fromkeys(ACCOUNTS, 0)
    entry: dict[str, Fraction] = dict.fromkeys(ACCOUNTS, Fraction(0))  # reference average
    for buyer, seller, qty, price in trades:
        for who, q in ((buyer, qty), (seller, -qty)):
            fill(rows[who], q, price)
            cash[who] -= q * price
            old = lots[who]
            if old == 0 or (old > 0) == (q > 0):
                entry[who] = (entry[who] * abs(old) + price * abs(q)) / abs(old + q)
            elif abs(q) > abs(old):
                entry[who] = Fraction(price)
            lots[who] = old + q
            if lots[who] == 0:
                entry[who] = Fraction(0)
    assert sum(r[SIZE] for r in rows.values()) == 0
    for a, r in rows.items():
        assert r[SIZE] == lots[a]
        assert r[REALIZED] - r[COST] == cash[a]
        if r[SIZE]:
            # the basis is the reference's average × size, give or take the floor's units
            assert abs(Fraction(r[COST]) - entry[a] * r[SIZE]) < len(trades) + 1
        else:
            assert r[COST] == 0
    assert sum(equity(r, mark) for r in rows.values()) == 0  # (no collateral: PnL only)


def test_fill_realizes_exactly_on_close_and_flip() -> None:
    row = [0] * WIDTH
    fill(row, 3, 100)  # long 3 @ 100
    fill(row, 2, 103)  # long 5, cost 506 (entry 101.2)
    fill(row, -2, 110)  # close 2: basis 506 * 2 // 5 = 202 out, realized 220 - 202
    assert row[:3] == [3, 304, 18]
    fill(row, -5, 90)  # close 3 (basis 304, value 270), flip to short 2 @ 90
    assert row[:3] == [-2, -180, 18 + 270 - 304]
    fill(row, 2, 95)  # close the short: basis -180, pays 190
    assert row[:3] == [0, 0, 18 + 270 - 304 - 10]


# -- the engine: margin, reduce-only, events --------------------------------------------------


def test_positions_follow_trades_on_both_sides_with_events() -> None:
    eng = Engine(_markets())
    events = eng.apply_many([*_funded("a", "b"), _new("s", "b", SELL, MARK, 400),
                             _new("x", "a", BUY, MARK + 10, 1_000)])  # fmt: skip
    trade = next(ev for ev in events if ev[0] == EV_TRADE)
    moved = [ev for ev in events if ev[0] == EV_POSITION]
    assert [ev[1] for ev in moved] == [trade[1] + 1, trade[1] + 2]  # (right after the trade)
    got = {ev[POSITION_ACCOUNT]: (ev[POSITION_SIZE], ev[POSITION_COST], ev[POSITION_REALIZED])
           for ev in moved}  # fmt: skip
    assert got == {"a": (400, 400 * MARK, 0), "b": (-400, -400 * MARK, 0)}
    markets = _markets()
    for ev in [*moved, next(ev for ev in events if ev[0] == EV_MARGIN)]:
        assert check_event(ev, markets)  # (the bridge's and PUB readers' check)
    assert event_to_json(moved[0], markets) == {
        "ev": "position", "symbol": PERP, "account": "a", "size": "0.400",
        "cost": "12000.0000", "realized": "0.0000", "seq": moved[0][1]}  # fmt: skip


def _reject_code(events: list) -> int | None:
    codes = [ev[5] for ev in events if ev[0] == EV_REJECTED]
    return codes[-1] if codes else None


def test_opening_orders_need_initial_margin_at_their_worst_price() -> None:
    eng = Engine(_markets())
    # 0.1 initial margin of 1 BTC at 30000 is 3000.0000 = 30_000_000 units (tick × lot 0.0001)
    need = 1000 * MARK // 10
    eng.apply_many([*_funded("a", units=need - 1), (OP_MARGIN, PERP, "mm", 10**12)])
    assert _reject_code(eng.apply_many([_new("1", "a", BUY, MARK, 1000)])) \
        == REJ_INSUFFICIENT_MARGIN  # fmt: skip
    eng.apply_many([(OP_MARGIN, PERP, "a", 1)])
    assert _reject_code(eng.apply_many([_new("1", "a", BUY, MARK, 1000)])) is None
    # a second order counts with the first (resting) one: refused
    assert _reject_code(eng.apply_many([_new("2", "a", BUY, MARK, 10)])) \
        == REJ_INSUFFICIENT_MARGIN  # fmt: skip
    # a sell below the mark loses (mark − price) × qty at once: that counts too
    eng.apply_many([(OP_MARGIN, PERP, "b", need)])
    assert _reject_code(eng.apply_many([_new("3", "b", SELL, MARK - 100, 1000)])) \
        == REJ_INSUFFICIENT_MARGIN  # fmt: skip
    # a market order is margined at the deepest level it would reach
    eng.apply_many([_new("m1", "mm", SELL, MARK + 10, 500), _new("m2", "mm", SELL, 2 * MARK, 500)])
    assert _reject_code(eng.apply_many([_new("4", "b", BUY, None, 1000, IOC)])) \
        == REJ_INSUFFICIENT_MARGIN  # fmt: skip
    assert _reject_code(eng.apply_many([_new("5", "b", BUY, None, 500, IOC)])) is None
    # an amend to a higher price is margined there; a smaller qty needs no check
    assert _reject_code(eng.apply_many([(OP_AMEND, PERP, "1", "a", None, MARK * 3)])) \
        == REJ_INSUFFICIENT_MARGIN  # fmt: skip
    assert _reject_code(eng.apply_many([(OP_AMEND, PERP, "1", "a", 10, None)])) is None


def test_no_mark_no_opening_orders_and_spot_is_untouched() -> None:
    eng = Engine(_markets())
    events = eng.apply_many([(OP_MARGIN, PERP, "a", 10**9), _new("1", "a", BUY, MARK, 1)])
    assert _reject_code(events) == REJ_NO_MARK
    spot = (OP_NEW, "BTC-USD", "s", "a", BUY, LIMIT, 100, 1, GTC, False, STP_NONE)
    assert _reject_code(eng.apply_many([spot])) is None  # (no margin on a spot pair)
    assert _reject_code(eng.apply_many([(OP_MARGIN, "BTC-USD", "a", 5)])) == REJ_NOT_PERP


def test_stop_orders_are_refused_on_perp_pairs() -> None:
    """A triggered order enters matching without the margin check: refused until it has one
    (``invalid``), while a spot pair still takes it."""
    eng = Engine(_markets())
    eng.apply_many(_funded("a"))
    stop = (OP_NEW, PERP, "st", "a", SELL, STOP_MARKET, None, 10, IOC, False, STP_NONE, None,
            {"trigger": MARK - 100})  # fmt: skip
    assert _reject_code(eng.apply_many([stop])) == REJ_INVALID
    spot = (OP_NEW, "BTC-USD", "st", "a", SELL, STOP_MARKET, None, 10, IOC, False, STP_NONE,
            None, {"trigger": 100})  # fmt: skip
    assert _reject_code(eng.apply_many([spot])) is None


def test_margin_withdrawal_keeps_initial_margin() -> None:
    eng = Engine(_markets())
    eng.apply_many([*_funded("a", "b"), _new("s", "b", SELL, MARK, 1000),
                    _new("x", "a", BUY, MARK, 1000)])  # fmt: skip
    need = 1000 * MARK // 10
    free = 10**9 - need
    assert _reject_code(eng.apply_many([(OP_MARGIN, PERP, "a", -free - 1)])) \
        == REJ_INSUFFICIENT_MARGIN  # fmt: skip
    events = eng.apply_many([(OP_MARGIN, PERP, "a", -free)])
    assert events[-1][0] == EV_MARGIN and events[-1][5] == need
    assert _reject_code(eng.apply_many([(OP_MARGIN, PERP, "z", -1)])) == REJ_INSUFFICIENT_MARGIN
    assert "z" not in eng.books[PERP].positions.accounts  # (a refusal leaves no row)


def test_reduce_only_orders_only_shrink_a_position() -> None:
    eng = Engine(_markets())
    eng.apply_many([*_funded("a", "b", "mm"), _new("s", "b", SELL, MARK, 500),
                    _new("x", "a", BUY, MARK, 500), _new("q", "mm", BUY, MARK - 10, 5_000)])
    ro = {"reduce_only": 1}
    refused = [
        _new("r1", "a", BUY, None, 100, IOC, ro),  # grows the long
        _new("r2", "a", SELL, None, 501, IOC, ro),  # more than the position: would flip
        _new("r3", "c", SELL, None, 1, IOC, ro),  # no position
    ]
    for cmd in refused:
        assert _reject_code(eng.apply_many([cmd])) == REJ_REDUCE_ONLY_REJECTED, cmd
    assert _reject_code(eng.apply_many([_new("r4", "a", SELL, MARK, 1, GTC, ro)])) is not None
    # a reduce-only sell needs no margin: take all of a's margin but what the long needs
    row = eng.books[PERP].positions.accounts["a"]
    assert row[SIZE] == 500
    eng.apply_many([_new("r5", "a", SELL, None, 500, IOC, ro)])
    assert row[SIZE] == 0 and row[REALIZED] == -500 * 10 and row[COLLATERAL] == 10**9


# -- replay, snapshots, moves -------------------------------------------------------------------


def _session() -> list[tuple]:
    cmds = [*_funded("a", "b", "c")]
    prices = [MARK - 30, MARK + 20, MARK - 10, MARK + 40, MARK]
    for i, p in enumerate(prices):
        maker, taker = ACCOUNTS[i % 3], ACCOUNTS[(i + 1) % 3]
        cmds += [_new(f"m{i}", maker, i % 2, p, 300 + 7 * i),
                 _new(f"t{i}", taker, 1 - i % 2, p, 200 + 11 * i, IOC),
                 (OP_TIME, 2_000 + i), (OP_INDEX, PERP, p)]  # fmt: skip
    return cmds


def test_positions_replay_snapshot_and_move_byte_identically() -> None:
    cmds = _session()
    eng = Engine(_markets())
    events = eng.apply_many(cmds)
    assert Engine(_markets()).apply_many(cmds) == events
    rows = eng.books[PERP].positions.accounts
    assert sum(r[SIZE] for r in rows.values()) == 0 and any(r[REALIZED] for r in rows.values())
    restored = Engine.restore(eng.snapshot(), _markets())
    assert restored.snapshot() == eng.snapshot()
    more = [_new("z", "a", BUY, MARK + 50, 100, IOC), _new("y", "b", SELL, MARK - 50, 50)]
    assert restored.apply_many(more) == eng.apply_many(more)
    # a live move carries the positions: handed off here, adopted there, the same rows
    moved = eng.apply_many([(OP_HANDOFF, PERP, 1)])
    target = Engine(_markets())
    target.apply_many([(OP_ADOPT, PERP, 0, moved[-1][1], eng.handed[PERP])])
    assert target.books[PERP].positions.save() == restored.books[PERP].positions.save()
