"""Perp markets (pure): the markets file's ``kind = "perp"``, the journaled index command, the
mark price (``shardex.engine.perps``), its replay and snapshot."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shardex.engine.codes import (
    BUY,
    EV_INDEX,
    EV_REJECTED,
    GTC,
    LIMIT,
    OP_INDEX,
    OP_NEW,
    OP_TIME,
    REJ_NOT_PERP,
    REJ_OUT_OF_RANGE,
    SELL,
    STP_NONE,
)
from shardex.engine.engine import Engine
from shardex.engine.markets import DEFAULT_MARKETS, MarketError, markets_from_table
from shardex.engine.perps import EMA_MS, Oracle, book_price, next_mark

PERP = "BTCPERP-USD"
SPEC = {"kind": "perp", "tick": "0.1", "lot": "0.001", "initial_margin": "0.1",
        "maintenance_margin": "0.05", "funding_interval_s": 3600, "funding_cap": "0.04",
        "oracle_staleness_ms": 5000}  # fmt: skip


def _markets() -> dict:
    return {**DEFAULT_MARKETS, **markets_from_table({PERP: SPEC})}


def _new(oid: str, side: int, price: int, qty: int = 1000) -> tuple:
    return (OP_NEW, PERP, oid, "alice", side, LIMIT, price, qty, GTC, False, STP_NONE)


def test_perp_market_parses_with_exact_fractions() -> None:
    m = _markets()[PERP]
    assert m.perp is not None
    assert m.perp.settle == "USD"
    assert m.perp.initial_margin == Decimal("0.1")
    assert m.perp.maintenance_margin == Decimal("0.05")
    assert (m.perp.funding_interval_s, m.perp.oracle_staleness_ms) == (3600, 5000)
    assert DEFAULT_MARKETS["BTC-USD"].perp is None  # spot stays spot
    defaults = markets_from_table({PERP: {"kind": "perp", "tick": "0.1", "lot": "1"}})[PERP]
    assert defaults.perp is not None and defaults.perp.initial_margin == Decimal("0.05")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"kind": "future"}, "kind must be one of"),
        ({"maintenance_margin": "0.2"}, "must be below initial_margin"),
        ({"initial_margin": 0.1}, "not a float"),
        ({"initial_margin": "1.5"}, "fraction in (0, 1]"),
        ({"funding_cap": "x"}, "not a decimal"),
        ({"funding_interval_s": 5}, "funding_interval_s must be a whole number"),
        ({"oracle_staleness_ms": "5000"}, "oracle_staleness_ms must be a whole number"),
        ({"settle": "USDC"}, "settle must be the quote asset USD"),
        ({"wobble": 1}, "unknown keys ['wobble']"),
    ],
)
def test_bad_perp_definitions_are_refused_clearly(change: dict, words: str) -> None:
    with pytest.raises(MarketError) as err:
        markets_from_table({PERP: {**SPEC, **change}}, "markets file m.toml")
    assert f"markets file m.toml: markets.{PERP}" in str(err.value)
    assert words in str(err.value)


def test_perp_keys_on_a_spot_market_are_unknown() -> None:
    with pytest.raises(MarketError, match="unknown keys"):
        markets_from_table({"BTC-USD": {"tick": "0.01", "lot": "1", "funding_cap": "0.1"}})


def test_book_price_is_the_median_of_what_is_present() -> None:
    assert book_price(None, None, 0, 500) == 500
    assert book_price(490, 510, 0, 500) == 490  # two: the lower
    assert book_price(490, 510, 530, 500) == 510
    assert book_price(None, 700, 0, 500) == 700


def test_mark_is_the_median_of_index_smoothed_mid_and_book() -> None:
    o = Oracle()
    next_mark(o, 1000, 0, None, None, 0)  # empty book: the index
    assert (o.index, o.mark, o.ema) == (1000, 1000, 0)
    # a book 20 ticks above the index for a whole EMA window: c1 = c2 = 1020
    next_mark(o, 1000, EMA_MS, 1018, 1022, 1020)
    assert o.ema == 20 * 1_000_000 and o.mark == 1020
    # a book far away for 1.5 s: the average moves by 1 % of the gap (3981 * 1500 / 150000
    # ticks), c2 is 5000, and the mark is the median of 1000, 1059 and 5000
    next_mark(o, 1000, EMA_MS + 1500, 5000, 5002, 1020)
    assert o.ema == 59_810_000 and o.mark == 1059


def test_index_command_is_journaled_state_and_replays_exactly() -> None:
    cmds = [
        (OP_TIME, 1_000),
        (OP_INDEX, PERP, 300_000),
        _new("b1", BUY, 299_900),
        _new("a1", SELL, 300_500),
        (OP_TIME, 61_000),
        (OP_INDEX, PERP, 300_100),
        (OP_TIME, 200_000),
        (OP_INDEX, PERP, 299_000),
    ]
    eng = Engine(_markets())
    events = eng.apply_many(cmds)
    marks = [ev for ev in events if ev[0] == EV_INDEX]
    assert [ev[3] for ev in marks] == [300_000, 300_100, 299_000]
    assert all(ev[4] > 0 for ev in marks)
    assert Engine(_markets()).apply_many(cmds) == events  # replay: the same marks
    # a snapshot carries the oracle: the next index gives the same mark as without one
    restored = Engine.restore(eng.snapshot(), _markets())
    more = [(OP_TIME, 230_000), (OP_INDEX, PERP, 299_500)]
    assert restored.apply_many(more) == eng.apply_many(more)
    assert restored.books[PERP].oracle.save() == eng.books[PERP].oracle.save()


@pytest.mark.parametrize(
    "cmd, code",
    [
        ((OP_INDEX, "BTC-USD", 100), REJ_NOT_PERP),
        ((OP_INDEX, "NOPE-USD", 100), REJ_NOT_PERP),
        ((OP_INDEX, PERP, 0), REJ_OUT_OF_RANGE),
        ((OP_INDEX, PERP, "300000"), REJ_OUT_OF_RANGE),
        ((OP_INDEX, PERP, 10**12), REJ_OUT_OF_RANGE),
    ],
)
def test_bad_index_commands_are_rejected_with_a_code(cmd: tuple, code: int) -> None:
    eng = Engine(_markets())
    (ev,) = eng.apply_many([cmd])
    assert ev[0] == EV_REJECTED and ev[-1] == code
    assert PERP not in eng.books or eng.books[PERP].oracle is None
