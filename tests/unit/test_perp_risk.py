"""The perp pair's risk rules past a plain take-over (pure, ``shardex.engine.liquidation``,
docs/perps.md): a stale oracle freezes liquidations, partial liquidation back to initial
margin, and auto-deleveraging when the insurance fund cannot cover a bankrupt position."""

from __future__ import annotations

from shardex.engine.codes import BUY, OP_INDEX, OP_TIME
from shardex.engine.engine import Engine
from shardex.engine.perps import perp_read
from shardex.engine.positions import SIZE
from tests.support.perps import (
    LOTS,
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
