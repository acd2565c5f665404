"""The perp pair's risk rules past a plain take-over (pure, ``shardex.engine.liquidation``,
docs/perps.md): a stale oracle freezes liquidations, partial liquidation back to initial
margin, and auto-deleveraging when the insurance fund cannot cover a bankrupt position; then
scenarios: a liquidation cascade, and one feed source's flash crash among three."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from click.testing import CliRunner

from shardex.cli import positions as cli_positions
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_ADL,
    EV_POSITION,
    EV_REJECTED,
    EV_TRADE,
    OP_INDEX,
    OP_MARGIN,
    OP_TIME,
    SELL,
)
from shardex.engine.engine import Engine
from shardex.engine.liquidation import breaching
from shardex.engine.perps import perp_read
from shardex.engine.positions import COST, SIZE, equity
from shardex.feed.combine import OUTLIER, combine, to_ticks
from shardex.feed.sources import Quote
from shardex.wire.pub import check_event
from shardex.wire.schema import event_to_json
from tests.support.perps import (
    LOTS,
    OPEN,
    PERP,
    check_conservation,
    liquidations,
    markets,
    opened,
    order,
    start,
)

# -- a stale oracle ------------------------------------------------------------------------


def test_an_index_after_a_feed_gap_freezes_liquidations_until_the_next_fresh_one() -> None:
    """The feed stops for longer than ``oracle_staleness_ms`` (10 s) and comes back with a
    crash: that first index only re-anchors the mark (the breaching long is counted in
    ``frozen``, not taken over); the next index, 1 s later, liquidates. Regression: the
    first index after the gap liquidated at once, on a mark whose other inputs were as old
    as the gap."""
    eng = Engine(markets())
    events = eng.apply_many([*start(), *opened("long", 400_000),
                             order("m1", "mm", BUY, 270_000, LOTS)])  # fmt: skip
    step = eng.apply_many([(OP_TIME, 1_000 + 10_001), (OP_INDEX, PERP, 270_000)])
    events += step
    pos = eng.books[PERP].positions
    assert not liquidations(step) and pos.frozen == 1 and pos.accounts["long"][SIZE] == LOTS
    assert perp_read(eng, PERP)["funding"]["frozen"] == 1  # (shown: ``shardex funding``)
    step = eng.apply_many([(OP_TIME, 12_001), (OP_INDEX, PERP, 270_000)])
    events += step
    (ev,) = liquidations(step)
    assert ev[3] == "long" and ev[4] == LOTS and pos.frozen == 1
    check_conservation(eng, events)
    restored = Engine.restore(eng.snapshot(), markets())
    assert restored.books[PERP].positions.frozen == 1
    assert restored.snapshot() == eng.snapshot()


def test_a_feed_within_the_staleness_limit_liquidates_at_once() -> None:
    """Indexes exactly ``oracle_staleness_ms`` apart are fresh: no freeze."""
    eng = Engine(markets())
    eng.apply_many([*start(), *opened("long", 400_000), order("m1", "mm", BUY, 270_000, LOTS)])
    step = eng.apply_many([(OP_TIME, 1_000 + 10_000), (OP_INDEX, PERP, 270_000)])
    assert len(liquidations(step)) == 1 and eng.books[PERP].positions.frozen == 0


# -- partial liquidation ---------------------------------------------------------------------

BIG = 100  # lots: above WHOLE_LOTS, so taken over partly


def _big_long(collateral: int) -> list[tuple]:
    """``long`` buys ``BIG`` lots at ``OPEN``; mm bids a deep ladder 1,000 ticks apart."""
    bids = [order(f"m{k}", "mm", BUY, 269_000 - 1_000 * k, 40) for k in range(8)]
    return [*start(), *opened("long", collateral, lots=BIG), *bids]


def _reference_lots(row: list[int], mark: int) -> int:
    """The fewest lots whose close at ``δ = E // 2n`` ticks from the mark leaves equity of
    at least the initial margin (1/10) of the rest at the mark (exact rationals)."""
    n, e = abs(row[SIZE]), equity(row, mark)
    delta = e // (2 * n)
    return next(k for k in range(1, n + 1)
                if e - k * delta >= Fraction(1, 10) * (n - k) * mark)  # fmt: skip


def test_a_large_position_is_closed_only_back_to_initial_margin() -> None:
    """100 lots with 14 % margin, the mark falls 10 %: equity 1.2M units against a
    maintenance margin of 1.35M. The take-over closes just the lots that bring the rest back
    to initial margin (10 %) at the mark, at no worse than half its equity a lot from the
    mark; the rest stays open and is no longer below maintenance. Regression: the whole
    position was closed (at a limit of the bankruptcy price)."""
    eng = Engine(markets())
    events = eng.apply_many(_big_long(4_200_000))
    row = eng.books[PERP].positions.accounts["long"]
    step = eng.apply_many([(OP_INDEX, PERP, 270_000)])
    events += step
    mark = eng.books[PERP].oracle.mark
    assert mark == 270_000
    (ev,) = liquidations(step)
    before = [BIG, BIG * OPEN, 0, 4_200_000, 0]
    want = _reference_lots(before, mark)
    assert 0 < ev[4] == want < BIG and row[SIZE] == BIG - want
    assert ev[5] == mark - equity(before, mark) // (2 * BIG)  # (the partial's limit)
    fills = [e for e in step if e[0] == EV_TRADE]
    assert sum(e[4] for e in fills) == want and all(e[3] >= ev[5] for e in fills)
    assert equity(row, mark) >= Fraction(1, 10) * row[SIZE] * mark  # (initial margin)
    assert not breaching(eng.books[PERP].positions.accounts, mark, 1, 20)
    assert ev[7] == ev[8] == 0  # (still open: nothing settled with the fund)
    check_conservation(eng, events)


def test_a_partial_the_book_cannot_fill_falls_back_to_the_whole_position() -> None:
    """No bid within the partial's limit (264,000): the partial fills nothing and the whole
    position is sent at the bankruptcy price (258,000); the one bid lies between the two."""
    eng = Engine(markets())
    events = eng.apply_many([*start(), *opened("long", 4_200_000, lots=BIG),
                             order("d1", "mm", BUY, 260_000, BIG)])  # fmt: skip
    step = eng.apply_many([(OP_INDEX, PERP, 270_000)])
    events += step
    (ev,) = liquidations(step)
    assert ev[4] == BIG and eng.books[PERP].positions.accounts["long"][SIZE] == 0
    taker_ids = {e[5] for e in step if e[0] == EV_TRADE}
    assert len(taker_ids) == 1 and ev[6] == BIG * 260_000 and ev[7] > 0
    check_conservation(eng, events)


def test_a_partial_larger_than_the_pairs_max_qty_is_cut_to_it() -> None:
    """The partial would close 72 lots; the pair takes at most 50 in one order: the partial
    order is 50 lots (regression: it was sent as 72 and refused ``out_of_range``), and here
    its fills, better than its limit, are enough to end the take-over."""
    mkts = markets(max_qty="0.05")
    eng = Engine(mkts)
    opening = [*start(), (OP_MARGIN, PERP, "long", 4_200_000), (OP_INDEX, PERP, OPEN)]
    for k in range(2):  # (50 lots an order)
        opening += [order(f"s{k}", "short", SELL, OPEN, 50), order(f"b{k}", "long", BUY, OPEN, 50)]
    bids = [order(f"m{k}", "mm", BUY, 269_000 - 1_000 * k, 40) for k in range(8)]
    events = eng.apply_many([*opening, *bids])
    assert eng.books[PERP].positions.accounts["long"][SIZE] == BIG
    step = eng.apply_many([(OP_INDEX, PERP, 270_000)])
    events += step
    assert not [e for e in step if e[0] == EV_REJECTED]
    (ev,) = liquidations(step)
    orders = [e for e in step if e[0] == EV_ACCEPTED and e[3].startswith("liq:")]
    assert len(orders) == 1 and ev[4] == 50  # (its fills beat the limit: 50 were enough)
    assert not breaching(eng.books[PERP].positions.accounts, 270_000, 1, 20)
    check_conservation(eng, events)


# -- auto-deleveraging ------------------------------------------------------------------------


def _adl_book() -> list[tuple]:
    """``L`` buys 25 lots from three shorts: ``s1`` 5 of its 10 at 300,000 (the other 5 to
    the well-funded ``L2``), ``s2`` 10 at 310,000 (more profit), ``s3`` 10 at 300,000 on
    little collateral (more leverage). The book is then empty."""
    margin = [(OP_MARGIN, PERP, a, c) for a, c in
              (("L", 1_100_000), ("L2", 10**8), ("s1", 2_000_000), ("s2", 2_000_000),
               ("s3", 320_000))]  # fmt: skip
    return [(OP_TIME, 1_000), (OP_INDEX, PERP, OPEN), *margin,
            order("a1", "s1", SELL, OPEN, 10), order("b0", "L2", BUY, OPEN, 5),
            order("a2", "s2", SELL, 310_000, 10), order("a3", "s3", SELL, OPEN, 10),
            order("b1", "L", BUY, 310_000, 25)]  # fmt: skip


def _binance_rank(row: list[int], mark: int) -> Fraction:
    """Binance's ADL score: PnL % × effective leverage for a profit (÷ for a loss)."""
    pnl, e = row[SIZE] * mark - row[COST], equity(row, mark)
    ratio, leverage = Fraction(pnl, abs(row[COST])), Fraction(abs(row[SIZE]) * mark, e)
    return ratio * leverage if pnl >= 0 else ratio / leverage


def test_an_empty_fund_and_an_empty_book_deleverage_by_profit_times_leverage() -> None:
    """The index crashes to 200,000: ``L`` is bankrupt at the mark, no bid exists and the
    fund is empty. Its 25 lots are closed against the shorts at its bankruptcy price
    (rounded toward it: the fund is empty), most profitable × leveraged first (Binance's
    order, computed here from its formula): ``s3``, ``s2``, then 5 of ``s1``'s 10. Nothing is
    left unpaid; replay and a restored snapshot are identical."""
    eng = Engine(markets())
    cmds = [*_adl_book(), (OP_TIME, 2_000), (OP_INDEX, PERP, 200_000)]
    before = None
    events: list = []
    for cmd in cmds:
        if cmd[0] == OP_INDEX and cmd[2] == 200_000:
            accounts = eng.books[PERP].positions.accounts
            before = {a: list(r) for a, r in accounts.items()}
        events += eng.apply_many([cmd])
    mark = eng.books[PERP].oracle.mark
    assert mark == 200_000 and before is not None
    shorts = sorted((a for a, r in before.items() if r[SIZE] < 0),
                    key=lambda a: (-_binance_rank(before[a], mark), a))  # fmt: skip
    assert shorts == ["s3", "s2", "s1"]
    limit = -(-(before["L"][COST] - 1_100_000) // 25)  # (the bankruptcy price, rounded up)
    adl = [e for e in events if e[0] == EV_ADL]
    assert [e[3:] for e in adl] == [("s3", "L", -10, limit), ("s2", "L", -10, limit),
                                    ("s1", "L", -5, limit)]  # fmt: skip
    (ev,) = liquidations(events)
    pos = eng.books[PERP].positions
    assert ev[4] == 25 and ev[5] == limit and ev[6] == 25 * limit and ev[8] == 0
    assert pos.accounts["L"][SIZE] == 0 and pos.uncovered == 0 and ev[7] == pos.fund >= 0
    assert pos.accounts["s1"][SIZE] == -5 and pos.accounts["L2"][SIZE] == 5
    positions = [e for e in events if e[0] == EV_POSITION and e[1] > adl[0][1]]
    assert [e[3] for e in positions] == ["s3", "s2", "s1", "L"]
    assert all(check_event(e, markets()) for e in events)
    assert event_to_json(adl[0], markets())["closed"] == "-0.010"
    check_conservation(eng, events)
    assert Engine(markets()).apply_many(cmds) == events
    assert Engine.restore(eng.snapshot(), markets()).snapshot() == eng.snapshot()


# -- scenarios --------------------------------------------------------------------------------


def test_a_cascade_each_take_over_filling_the_next_accounts_resting_bid() -> None:
    """Three longs of 10 lots; ``x2`` and ``x3`` also bid 5 lots more above the coming
    mark. At 270,000 only ``x1`` is below maintenance; its take-over sells into their bids,
    which puts both below it (15 lots each now), and both are taken over in the same index,
    each partly (the market maker's bid at the mark takes their partial orders): each
    account once, nobody left below maintenance, the fund taking ``x1``'s surplus,
    conservation exact."""
    eng = Engine(markets())
    cmds = [*start()]
    for n, (who, collateral) in enumerate((("x1", 330_000), ("x2", 500_000), ("x3", 520_000))):
        cmds += opened(who, collateral, n)
    cmds += [order("bx2", "x2", BUY, 285_000, 5), order("bx3", "x3", BUY, 284_000, 5),
             order("floor", "mm", BUY, 270_000, 100)]  # fmt: skip
    events = eng.apply_many(cmds)
    step = eng.apply_many([(OP_TIME, 2_000), (OP_INDEX, PERP, 270_000)])
    events += step
    taken = [ev[3] for ev in liquidations(step)]
    assert taken[0] == "x1" and sorted(taken) == ["x1", "x2", "x3"]  # (x2, x3: the cascade)
    pos = eng.books[PERP].positions
    assert pos.accounts["x1"][SIZE] == 0 and 0 < pos.accounts["x2"][SIZE] < 15
    assert 0 < pos.accounts["x3"][SIZE] < 15  # (partly: back to initial margin)
    assert not breaching(pos.accounts, 270_000, 1, 20)
    assert pos.fund == sum(ev[7] for ev in liquidations(step)) > 0
    check_conservation(eng, events)
    assert Engine(markets()).apply_many([*cmds, (OP_TIME, 2_000), (OP_INDEX, PERP, 270_000)]) \
        == events  # fmt: skip


def test_a_flash_crash_of_one_feed_source_among_three_liquidates_nobody() -> None:
    """Three sources quote ~30,000; one crashes to 20,000 for a round. The feed's combiner
    (``shardex.feed.combine``) drops it as an outlier, so the index the engine gets stays
    at the others' median and the 10x long survives. Fed that source alone (no combiner),
    the same round would have liquidated it."""
    mkts = markets()
    tick = mkts[PERP].tick

    def rounds(crash: Decimal) -> list[tuple]:
        quotes = [Quote("walk", PERP, Decimal("30000.0"), 5_000),
                  Quote("file", PERP, Decimal("30000.4"), 5_000),
                  Quote("binance", PERP, crash, 5_000)]  # fmt: skip
        got = combine(quotes, 5_000, stale_ms=3_000, outlier_bps=200)
        assert got.dropped == ({"binance": OUTLIER} if crash < 29_000 else {})
        return [(OP_TIME, 5_000), (OP_INDEX, PERP, to_ticks(got.price, tick))]

    base = [*start(), *opened("long", 330_000), order("bid", "mm", BUY, 290_000, LOTS)]
    eng = Engine(mkts)
    step = eng.apply_many([*base, *rounds(Decimal("20000.0"))])
    assert not liquidations(step) and eng.books[PERP].oracle.index == 300_002
    alone = Engine(mkts)
    crashed = alone.apply_many([*base, (OP_TIME, 5_000), (OP_INDEX, PERP, 200_000)])
    assert [ev[3] for ev in liquidations(crashed)] == ["long"]


def test_shardex_funding_shows_the_fund_and_the_frozen_take_overs(monkeypatch) -> None:
    """``shardex funding SYMBOL`` prints the pair's read: after a feed gap's frozen index
    and a surplus taken by the fund, the fund and the frozen count as the engine has them."""
    eng = Engine(markets())
    eng.apply_many([*start(), *opened("long", 400_000), order("m1", "mm", BUY, 270_000, LOTS),
                    (OP_TIME, 20_000), (OP_INDEX, PERP, 270_000),
                    (OP_TIME, 21_000), (OP_INDEX, PERP, 270_000)])  # fmt: skip
    pair = perp_read(eng, PERP)

    class Fake:
        def __enter__(self) -> Fake:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def market_rules(self) -> dict:
            return {PERP: pair}

    monkeypatch.setattr(cli_positions, "_client", lambda *a: Fake())
    got = CliRunner().invoke(cli_positions.funding, [PERP])
    assert got.exit_code == 0, got.output
    fund = eng.books[PERP].positions.fund * markets()[PERP].tick * markets()[PERP].lot
    assert fund > 0
    assert f"{PERP}: insurance fund {fund}, take-overs held back by a stale oracle: 1" in \
        got.output  # fmt: skip
