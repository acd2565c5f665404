"""The market maker's pure decisions (``shardex.tools.mmcore``) and its bookkeeping of one pair
(``shardex.tools.mmpair``): given a reference, an inventory and resting quotes, the actions;
given what the cluster says, what the bot believes. No I/O."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardex.accounts.assets import AssetTable
from shardex.engine import DEFAULT_MARKETS
from shardex.tools.mm import MMConfig, MMError, parse_prices
from shardex.tools.mmcore import (
    BUY,
    SELL,
    Amend,
    Cancel,
    New,
    ParamsError,
    QuoteParams,
    RandomWalk,
    Resting,
    inventory_lots,
    others_mid,
    plan,
    pnl_units,
    quote,
    skew_ticks,
    targets,
)
from shardex.tools.mmpair import PairState, command, reconcile, settle
from tests.support.mmstate import pair_state

P = QuoteParams(levels=3, size=10, spread=20, spacing=5, max_inventory=25, skew=4,
                max_price=1_000_000)  # fmt: skip


def _apply(resting: dict[str, Resting], actions: list, fresh: list[str]) -> dict[str, Resting]:
    """What the book holds after ``actions`` all succeeded (new ids from ``fresh``)."""
    out = dict(resting)
    for a in actions:
        if isinstance(a, Cancel):
            del out[a.id]
        elif isinstance(a, Amend):
            r = out[a.id]
            out[a.id] = r._replace(price=r.price if a.price is None else a.price,
                                   qty=r.qty if a.qty is None else a.qty)  # fmt: skip
        else:
            oid = fresh.pop()
            out[oid] = Resting(oid, a.side, a.level, a.price, a.qty)
    return out


def test_flat_inventory_quotes_a_symmetric_ladder() -> None:
    got = targets(P, 10_000, 0)
    bids = [(t.price, t.qty) for t in got if t.side == BUY]
    asks = [(t.price, t.qty) for t in got if t.side == SELL]
    assert bids == [(9_990, 10), (9_985, 10), (9_980, 5)]  # the third: 25 - 20 lots of room
    assert asks == [(10_010, 10), (10_015, 10), (10_020, 5)]


def test_inventory_skews_both_sides_against_it_rounding_towards_zero() -> None:
    assert skew_ticks(P, 10) == 4 and skew_ticks(P, -10) == -4
    assert skew_ticks(P, 7) == 2 and skew_ticks(P, -7) == -2  # 2.8 → 2, never 3
    long = targets(P, 10_000, 10)
    assert min(t.price for t in long if t.side == SELL) == 10_006  # cheaper asks to sell
    assert max(t.price for t in long if t.side == BUY) == 9_986


def test_a_side_at_the_inventory_limit_is_not_quoted() -> None:
    assert {t.side for t in targets(P, 10_000, 25)} == {SELL}
    assert {t.side for t in targets(P, 10_000, -25)} == {BUY}
    near = targets(P, 10_000, 22)  # 3 lots of room left to buy: one small bid
    assert [(t.level, t.qty) for t in near if t.side == BUY] == [(0, 3)]


@given(
    reference=st.integers(1, 2_000),
    inventory=st.integers(-40, 40),
    levels=st.integers(1, 5),
    size=st.integers(1, 20),
    spread=st.integers(1, 30),
    skew=st.integers(0, 50),
)
def test_targets_never_cross_leave_the_market_or_pass_the_limit(
    reference: int, inventory: int, levels: int, size: int, spread: int, skew: int
) -> None:
    p = QuoteParams(levels, size, spread, 3, 30, skew, 1_000)
    got = targets(p, reference, inventory)
    bids = [t for t in got if t.side == BUY]
    asks = [t for t in got if t.side == SELL]
    assert sum(t.qty for t in bids) <= max(0, 30 - inventory)
    assert sum(t.qty for t in asks) <= max(0, 30 + inventory)
    assert all(1 <= t.price <= 1_000 and 1 <= t.qty <= size for t in got)
    if bids and asks:
        assert max(t.price for t in bids) < min(t.price for t in asks)


def test_a_moved_reference_is_followed_with_amends_keeping_every_id() -> None:
    resting = {f"q{i}": Resting(f"q{i}", t.side, t.level, t.price, t.qty)
               for i, t in enumerate(targets(P, 10_000, 0))}  # fmt: skip
    actions = quote(P, 10_040, 0, resting.values())
    assert actions and all(isinstance(a, Amend) for a in actions)
    after = _apply(resting, actions, [])
    assert set(after) == set(resting)
    assert sorted((r.side, r.price, r.qty) for r in after.values()) == sorted(
        (t.side, t.price, t.qty) for t in targets(P, 10_040, 0))  # fmt: skip
    # up: the asks move away first, then the bids follow (a bid first would cross an ask)
    sides = [a.side for a in actions]
    assert sides == sorted(sides, key=lambda s: s == BUY)
    assert quote(P, 10_040, 0, after.values()) == []  # nothing left to do


def test_refill_cancel_for_a_missing_target_and_new_for_a_free_level() -> None:
    resting = [
        Resting("far", SELL, 7, 11_000, 10),  # a level no longer quoted: cancelled
        Resting("small", BUY, 0, 9_990, 3),  # a second, smaller quote on one level: cancelled
        Resting("full", BUY, 0, 9_990, 10),
        Resting("low", BUY, 1, 9_985, 4),  # filled below half its size: replaced
    ]
    actions = plan(P, targets(P, 10_000, 0), resting)
    cancels = [a.id for a in actions if isinstance(a, Cancel)]
    assert sorted(cancels) == ["far", "low", "small"]
    assert actions[: len(cancels)] == [a for a in actions if isinstance(a, Cancel)]
    news = sorted((a.side, a.level, a.qty) for a in actions if isinstance(a, New))
    assert news == [(BUY, 1, 10), (BUY, 2, 5), (SELL, 0, 10), (SELL, 1, 10), (SELL, 2, 5)]
    assert not [a for a in actions if isinstance(a, Amend)]


@given(
    inventory=st.integers(-25, 25),
    moves=st.lists(st.integers(-60, 60), min_size=1, max_size=6),
    fills=st.lists(st.integers(0, 10), min_size=6, max_size=6),
)
def test_rounds_of_plans_reach_the_targets_and_never_rest_past_the_room(
    inventory: int, moves: list[int], fills: list[int]
) -> None:
    resting: dict[str, Resting] = {}
    fresh = [f"n{i}" for i in range(1000)]
    ref = 10_000
    for move in moves:
        ref += move
        # some quotes partly filled since the last round (their inventory is not modelled)
        for r, f in zip(sorted(resting.values()), fills, strict=False):
            resting[r.id] = r._replace(qty=max(1, r.qty - f))
        resting = _apply(resting, quote(P, ref, inventory, resting.values()), fresh)
        bids = sum(r.qty for r in resting.values() if r.side == BUY)
        asks = sum(r.qty for r in resting.values() if r.side == SELL)
        assert bids <= max(0, 25 - inventory) and asks <= max(0, 25 + inventory)
        want = {(t.side, t.level, t.price) for t in targets(P, ref, inventory)}
        assert {(r.side, r.level, r.price) for r in resting.values()} == want


def test_the_walk_is_the_same_for_the_same_seed_and_bounded() -> None:
    def path(seed: int, symbol: str) -> list[int]:
        w = RandomWalk(seed, symbol, 3_000_000, 5, 10_000_000)
        return [w.step() for _ in range(200)]

    assert path(7, "BTC-USD") == path(7, "BTC-USD")
    assert path(7, "BTC-USD") != path(8, "BTC-USD") != path(7, "ETH-USD")
    prev = 3_000_000
    for ticks in path(7, "BTC-USD"):
        assert abs(ticks - prev) <= prev * 5 // 10_000
        prev = ticks
    low = RandomWalk(1, "X-Y", 1, 1000, 5)  # at the edges it stays inside 1..max
    assert all(1 <= low.step() <= 5 for _ in range(500))
    with pytest.raises(ParamsError):
        RandomWalk(1, "X-Y", 6, 10, 5)


def test_the_mid_leaves_the_bots_own_quotes_out() -> None:
    bids = [(100, 5), (99, 7)]
    asks = [(104, 2), (110, 1)]
    assert others_mid(bids, asks, {}) == 102
    # the best bid is all the bot's; at 104 the bot has 1 of 2 lots: the others' best ask
    assert others_mid(bids, asks, {(BUY, 100): 5, (SELL, 104): 1}) == 101
    assert others_mid(bids, asks, {(SELL, 104): 2, (SELL, 110): 1}) is None


def test_inventory_and_profit_are_exact_integers() -> None:
    table = AssetTable(DEFAULT_MARKETS)
    pair = table.pairs["BTC-USD"]  # 1 lot = 10_000 BTC units; 1 tick × 1 lot = 1 USD unit
    assert inventory_lots(1_000_000 + 30_000, 1_000_000, pair.base_per_lot) == 3
    assert inventory_lots(1_000_000 - 30_000, 1_000_000, pair.base_per_lot) == -3
    # bought 3 lots (0.0003 BTC) at 30000.00 (90.00 USD... in units: 3 × 3_000_000 × 1)
    spent = -3 * 3_000_000 * pair.quote_per_tick_lot
    assert pnl_units(30_000, spent, 3_000_000, pair.base_per_lot, pair.quote_per_tick_lot) == 0
    assert pnl_units(30_000, spent, 3_000_100, pair.base_per_lot, pair.quote_per_tick_lot) == 300


def _state() -> PairState:
    return pair_state(DEFAULT_MARKETS["BTC-USD"], P)


def _row(oid: str, price: str, qty: str, pending: int = 0) -> dict:
    return {"symbol": "BTC-USD", "id": oid, "side": "buy", "price": Decimal(price),
            "open": Decimal(qty), "pending_amends": pending}  # fmt: skip


def test_reconcile_counts_fills_and_finds_strays() -> None:
    s = _state()
    s.resting = {"a": Resting("a", BUY, 0, 2_999_990, 10), "b": Resting("b", BUY, 1, 2_999_980, 10),
                 "c": Resting("c", BUY, 2, 2_999_970, 4)}  # fmt: skip
    rows = [
        _row("a", "29999.90", "0.0006"),  # 4 lots filled
        _row("c", "29999.70", "0.0004", pending=1),  # an amend in flight: left as asked
        _row("old", "29000.00", "0.0010"),  # not the bot's (an earlier run): a stray
        {"truncated": True},
    ]
    reconcile(s, rows)
    assert s.fills == 4 + 10  # "b" vanished: filled
    assert set(s.resting) == {"a", "c"} and s.resting["a"].qty == 6
    assert s.strays == ["old"]


def test_answers_change_the_view_only_when_done_and_count_refusals_by_code() -> None:
    s = _state()
    new = New(BUY, 0, 2_999_990, 10)
    cmd = command(s, new, "id-1")
    assert cmd == {"symbol": "BTC-USD", "account": "mm-BTC-USD", "op": "new", "id": "id-1",
                   "side": "buy", "type": "limit", "price": "29999.90", "qty": "0.0010",
                   "post_only": True}  # fmt: skip
    settle(s, new, cmd, False, "insufficient_funds")
    assert not s.resting and s.rejects == Counter(insufficient_funds=1)
    settle(s, new, cmd, True, None)
    amend = Amend("id-1", BUY, 0, 2_999_995, None)
    assert command(s, amend, "x") == {"symbol": "BTC-USD", "account": "mm-BTC-USD",
                                      "op": "amend", "id": "id-1", "price": "29999.95"}  # fmt: skip
    settle(s, amend, command(s, amend, "x"), True, None)
    assert s.resting["id-1"].price == 2_999_995 and (s.quotes, s.amends) == (1, 1)
    settle(s, Cancel("id-1", BUY, 0), {}, False, "not_live")  # filled first: reconcile sees it
    assert "id-1" in s.resting and s.rejects["not_live"] == 1
    settle(s, Cancel("id-1", BUY, 0), {}, True, None)
    assert not s.resting and s.cancels == 1


def test_options_that_cannot_work_are_one_line_errors() -> None:
    assert parse_prices("BTC-USD=30000, ETH-USD=2000.5") == {"BTC-USD": "30000",
                                                             "ETH-USD": "2000.5"}  # fmt: skip
    for bad in ("BTC-USD", "BTC-USD=abc", "=5", "BTC-USD=-1", "BTC-USD=NaN"):
        with pytest.raises(MMError, match="SYMBOL=PRICE"):
            parse_prices(bad)
    with pytest.raises(MMError, match="levels"):
        MMConfig(levels=0)
    with pytest.raises(MMError, match="reference"):
        MMConfig(reference="last")
    with pytest.raises(MMError, match="interval"):
        MMConfig(interval=0)
