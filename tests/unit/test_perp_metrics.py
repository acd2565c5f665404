"""A perp pair's Prometheus numbers, read from an in-process engine's state the way the shard's
collector reads them (``shardex.node.shard_metrics``): open interest, index and mark, the
funding rate the interval pays so far and the cumulative index, the insurance fund, and the
liquidations and deleveraged lots counted from the events the node publishes, the take-overs
a stale oracle held back; none for a spot-only engine."""

from __future__ import annotations

from decimal import Decimal

from shardex.engine.codes import (
    BUY,
    EV_ADL,
    EV_LIQUIDATION,
    OP_FUNDING,
    OP_INDEX,
    OP_MARGIN,
    OP_TIME,
    SELL,
)
from shardex.engine.engine import Engine
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.node.shard_metrics import count_liquidations, perp_families
from tests.support.perps import PERP, markets, order

MARKETS = markets()


def _values(eng: Engine, liquidations: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for fam in perp_families(eng, "0", liquidations):
        for sample in fam.samples:
            assert sample.labels == {"shard": "0", "symbol": PERP}
            out[sample.name] = sample.value
    return out


def test_the_perp_gauges_follow_the_engine_state_and_liquidations_are_counted() -> None:
    eng = Engine(MARKETS)
    counts: dict[str, list[int]] = {}
    assert list(perp_families(Engine(DEFAULT_MARKETS), "0", counts)) == []  # spot: none
    assert "shardex_perp_index" not in _values(eng, counts)  # (no index yet: no price)
    events = eng.apply_many([
        (OP_TIME, 1_000), (OP_INDEX, PERP, 300_000),
        (OP_MARGIN, PERP, "short", 10**9), (OP_MARGIN, PERP, "mm", 10**9),
        (OP_MARGIN, PERP, "long", 400_000),
        order("s", "short", SELL, 300_000, 10), order("b", "long", BUY, 300_000, 10),
        order("m", "mm", BUY, 270_000, 10), (OP_TIME, 4_000), (OP_INDEX, PERP, 301_000),
    ])  # fmt: skip
    count_liquidations(counts, events)
    got = _values(eng, counts)
    assert got["shardex_perp_open_interest_lots"] == 10
    assert got["shardex_perp_index"] == 30100.0
    assert got["shardex_perp_liquidations_total"] == 0
    assert got["shardex_perp_insurance_fund"] == 0
    assert got["shardex_perp_index_age_seconds"] == 0
    assert abs(got["shardex_perp_funding_rate"]) <= 0.04  # (capped at the default 4 %)
    step = eng.apply_many([(OP_TIME, 9_000), (OP_INDEX, PERP, 270_000)])  # the long breaches
    count_liquidations(counts, step)
    count_liquidations(counts, [(0,)] * 3)  # (a batch without one: nothing)
    got = _values(eng, counts)
    assert counts == {PERP: [1, 0]} and got["shardex_perp_liquidations_total"] == 1
    pos = eng.books[PERP].positions
    fund = float(pos.fund * Decimal("0.0001"))
    assert pos.fund > 0 and got["shardex_perp_insurance_fund"] == fund
    assert got["shardex_perp_open_interest_lots"] == 10  # (mm bought what the long sold)
    assert got["shardex_perp_mark"] == eng.books[PERP].oracle.mark / 10
    # the payment time (the index stale by then: frozen, nothing paid): no sample since
    eng.apply_many([(OP_TIME, 3_600_000), (OP_FUNDING, 3_600_000)])
    got = _values(eng, counts)
    assert "shardex_perp_funding_rate" not in got and got["shardex_perp_index_age_seconds"] > 10


def _opened(collateral: int) -> list[tuple]:
    """An index at 30,000; ``long`` 10 lots long at 30,000 with ``collateral``, mm bids below."""
    return [(OP_TIME, 1_000), (OP_INDEX, PERP, 300_000),
            (OP_MARGIN, PERP, "short", 10**9), (OP_MARGIN, PERP, "mm", 10**9),
            (OP_MARGIN, PERP, "long", collateral),
            order("s", "short", SELL, 300_000, 10), order("b", "long", BUY, 300_000, 10),
            order("m", "mm", BUY, 270_000, 10)]  # fmt: skip


def test_deleveraged_lots_and_frozen_take_overs_are_counted_per_pair() -> None:
    """Each ``EV_ADL`` adds its lots (either sign) to the pair's deleveraged counter; a crash
    index after a feed gap (the index before it stale) takes nothing over and the pair's
    ``frozen`` count, a counter from its state, shows it."""
    eng = Engine(MARKETS)
    counts: dict[str, list[int]] = {}
    eng.apply_many(_opened(400_000))
    got = _values(eng, counts)
    assert got["shardex_perp_deleveraged_lots_total"] == 0
    assert got["shardex_perp_frozen_takeovers_total"] == 0
    step = eng.apply_many([(OP_TIME, 30_000), (OP_INDEX, PERP, 270_000)])  # (20 s gap: stale)
    assert not any(ev[0] == EV_LIQUIDATION for ev in step)
    got = _values(eng, counts)
    assert eng.books[PERP].positions.frozen == 1 == got["shardex_perp_frozen_takeovers_total"]
    batch = [(EV_LIQUIDATION, 9, PERP, "L", 25, 1, 1, 0, 0, 0), (EV_ADL, 7, PERP, "s3", "L",
             -10, 1), (EV_ADL, 8, PERP, "l2", "S", 15, 1)]  # fmt: skip
    count_liquidations(counts, batch)
    count_liquidations(counts, batch[1:])  # (no take-over in the batch: nothing counted)
    got = _values(eng, counts)
    assert counts == {PERP: [1, 25]} and got["shardex_perp_deleveraged_lots_total"] == 25
    assert got["shardex_perp_liquidations_total"] == 1
