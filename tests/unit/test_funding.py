"""Funding of perp pairs (pure, and the leader's sweep that journals it): premium samples, the
capped per-lot payment, payments and the rounding remainder (into the insurance fund) summing
to zero exactly, a stale oracle freezing it, and replay (``shardex.engine.funding``,
docs/perps.md)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.engine.codes import (
    BUY,
    EV_FUNDING,
    GTC,
    IOC,
    LIMIT,
    OP_FUNDING,
    OP_INDEX,
    OP_MARGIN,
    OP_NEW,
    OP_TIME,
    SELL,
    STP_NONE,
)
from shardex.engine.engine import Engine
from shardex.engine.funding import SCALE, per_lot, sample, settle
from shardex.engine.markets import DEFAULT_MARKETS, markets_from_table
from shardex.engine.positions import FUNDING, SIZE, WIDTH, Positions, equity
from shardex.node.expiry_sweep import sweep
from shardex.wire.pub import check_event
from shardex.wire.schema import event_to_json

PERP = "BTCPERP-USD"
SPEC = {"kind": "perp", "tick": "0.1", "lot": "0.001", "initial_margin": "0.1",
        "maintenance_margin": "0.05", "funding_interval_s": 60, "funding_cap": "0.001",
        "oracle_staleness_ms": 5000}  # fmt: skip
INDEX = 300_000
HOUR = 60_000  # (the interval: 60 s)


def _markets() -> dict:
    return {**DEFAULT_MARKETS, **markets_from_table({PERP: SPEC})}


def _new(oid: str, account: str, side: int, price: int, qty: int, tif: int = GTC) -> tuple:
    return (OP_NEW, PERP, oid, account, side, LIMIT, price, qty, tif, False, STP_NONE)


def _open(long_qty: int = 1000) -> list[tuple]:
    """Exchange time 1 s, an index, margin for a, b and mm; a long ``long_qty`` for a, short
    for b, and mm's resting bid and ask around the index (the book's mid: the premium)."""
    return [(OP_TIME, 1_000), (OP_INDEX, PERP, INDEX),
            *((OP_MARGIN, PERP, who, 10**10) for who in ("a", "b", "mm")),
            _new("s", "b", SELL, INDEX, long_qty), _new("l", "a", BUY, INDEX, long_qty, IOC),
            _new("bid", "mm", BUY, INDEX + 40, 1), _new("ask", "mm", SELL, INDEX + 60, 1)]


class _Journal:
    def __init__(self) -> None:
        self.cmds: list[tuple] = []

    def add(self, seq: int, cmd: tuple) -> None:
        self.cmds.append(cmd)


def test_longs_pay_shorts_the_capped_average_premium() -> None:
    eng = Engine(_markets())
    cmds = _open()
    for t in range(5_000, HOUR, 5_000):  # the feed's indexes: premium samples
        cmds += [(OP_TIME, t), (OP_INDEX, PERP, INDEX)]
    eng.apply_many(cmds)
    pos = eng.books[PERP].positions
    assert pos.due == HOUR and pos.samples == 12
    journal, out = _Journal(), []
    sweep(eng, journal, HOUR - 1, out)
    assert journal.cmds == [] and out == []  # (not due yet)
    sweep(eng, journal, HOUR, out)
    assert journal.cmds == [(OP_FUNDING, HOUR)]
    (ev,) = [e for e in out if e[0] == EV_FUNDING]
    # the mark climbs toward the book's mid (50 ticks over); the cap (0.1 % of the index:
    # 300 ticks) is far: the average premium per lot, in millionths of a unit
    assert 0 < ev[3] == pos.cumulative < 300 * SCALE
    rows = pos.accounts
    assert rows["a"][FUNDING] == (-1000 * ev[3]) // SCALE < 0  # the long paid, rounded up
    assert rows["b"][FUNDING] == 1000 * ev[3] // SCALE  # the short got it, rounded down
    assert rows["a"][FUNDING] + rows["b"][FUNDING] + pos.remainder == 0
    assert pos.due == 2 * HOUR and pos.samples == 0
    assert check_event(ev, _markets())
    shown = event_to_json(ev, _markets())
    assert shown["ev"] == "funding" and "E" not in shown["per_lot"]
    # replay: the same payment at the same seq
    assert Engine(_markets()).apply_many([*cmds, (OP_FUNDING, HOUR)]) == \
        Engine(_markets()).apply_many(cmds) + out  # fmt: skip


def test_the_rounding_remainder_goes_to_the_insurance_fund() -> None:
    """Regression: the remainder was kept apart from the fund, so Σ equity + fund fell short
    of Σ margin moved in by it. Now it is in the fund, and the identity holds exactly."""
    eng = Engine(_markets())
    cmds = _open(long_qty=997)
    for t in range(5_000, HOUR, 5_000):
        cmds += [(OP_TIME, t), (OP_INDEX, PERP, INDEX)]
    eng.apply_many([*cmds, (OP_TIME, HOUR), (OP_FUNDING, HOUR)])
    pos, mark = eng.books[PERP].positions, eng.books[PERP].oracle.mark
    assert pos.fund == pos.remainder > 0
    assert sum(equity(r, mark) for r in pos.accounts.values()) + pos.fund == 3 * 10**10
    assert Engine.restore(eng.snapshot(), _markets()).books[PERP].positions.fund == pos.fund


def test_a_stale_oracle_or_no_sample_freezes_funding() -> None:
    eng = Engine(_markets())
    eng.apply_many(_open())
    out: list = []
    eng.apply_many([(OP_TIME, HOUR)])  # the last index is 59 s old: stale (limit 5 s)
    sweep(eng, _Journal(), HOUR, out)
    assert [e for e in out if e[0] == EV_FUNDING] == []
    pos = eng.books[PERP].positions
    assert pos.cumulative == 0 and pos.due == 2 * HOUR and pos.samples == 0
    assert all(row[FUNDING] == 0 for row in pos.accounts.values())
    # the next interval has no sample at all: nothing again
    assert [e for e in eng.apply_many([(OP_TIME, 2 * HOUR), (OP_FUNDING, 2 * HOUR)])
            if e[0] == EV_FUNDING] == []  # fmt: skip


def test_the_cap_clamps_the_payment() -> None:
    pos = Positions()
    cap = Decimal("0.001")  # of the index: 300 ticks a lot at 300000
    for premium in (1_000, 2_000):  # average 1500 ticks over the index
        sample(pos, premium, 1_000, HOUR)
    assert per_lot(pos, INDEX, cap) == 300 * SCALE
    pos.premium = -3_001
    assert per_lot(pos, INDEX, cap) == -300 * SCALE
    pos.premium, pos.samples = 7, 3  # (inside the cap: the exact average, floored)
    assert per_lot(pos, INDEX, cap) == 7 * SCALE // 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-10**6, 10**6), max_size=12), st.integers(-10**9, 10**9))
def test_payments_and_remainder_sum_to_zero_exactly(sizes: list[int], rate: int) -> None:
    pos = Positions()
    for i, size in enumerate([*sizes, -sum(sizes)]):  # (the sizes of a pair sum to zero)
        pos.row(f"acct{i}")[SIZE] = size
    kept = settle(pos, rate)
    assert kept >= 0 and kept <= len(pos.accounts)  # (under one unit per position)
    assert sum(r[FUNDING] for r in pos.accounts.values()) + kept == 0
    for row in pos.accounts.values():  # against the account: payers round up, receivers down
        exact = -row[SIZE] * rate
        assert row[FUNDING] * SCALE <= exact < (row[FUNDING] + 1) * SCALE
    assert all(len(r) == WIDTH for r in pos.accounts.values())
