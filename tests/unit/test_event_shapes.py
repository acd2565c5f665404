"""The bridge (``shardex.wire.pub.check_event``) and the SDK (``ClientCore.event``) read one
description of the engine events' shapes (``shardex.wire.event_shapes``), so they agree on
every event: a well-formed one of each kind is accepted by both, and each near miss (a field
more or less, a negative or boolean int, a signed one past int64, a side of 2, bytes for a
string) refused by both.

Regression: the bridge checked the shapes by hand and let an event with extra fields, or a
negative quantity, price or code, through to the streams, while the SDK refused the same event
as malformed."""

from __future__ import annotations

from typing import Any

import pytest

from shardex.client import ClientCore, _Malformed
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_ADL,
    EV_ADOPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_FUNDING,
    EV_INDEX,
    EV_LIQUIDATION,
    EV_LISTED,
    EV_MARGIN,
    EV_MARKET,
    EV_MOVED,
    EV_POSITION,
    EV_REJECTED,
    EV_TRADE,
    EV_TRIGGERED,
)
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.wire.event_shapes import EVENT_SHAPES
from shardex.wire.pub import check_event

P = "BTC-USD"
GOOD: dict[int, tuple] = {
    EV_ACCEPTED: (EV_ACCEPTED, 1, P, "o1"),
    EV_TRADE: (EV_TRADE, 2, P, 5_000_000, 100, "t1", "m1", 0, 9),
    EV_CANCELLED: (EV_CANCELLED, 3, P, "o1", "user", 100),
    EV_REJECTED: (EV_REJECTED, 4, P, "o2", "no funds", 7),
    EV_AMENDED: (EV_AMENDED, 5, P, "o1", 50, 5_000_100),
    EV_MOVED: (EV_MOVED, 6, P, 1, 9, 3),
    EV_ADOPTED: (EV_ADOPTED, 7, P, 0, 6, 9, 3),
    EV_TRIGGERED: (EV_TRIGGERED, 8, P, "s1", 5_000_000, 4_999_900),
    EV_MARKET: (EV_MARKET, 9, P, "open", 0, 0, 0, 0),
    EV_LISTED: (EV_LISTED, 10, "NEWX-USD", "0.01", "0.001", "1000", "1000"),
    EV_INDEX: (EV_INDEX, 11, P, 5_000_000, 5_000_100),
    EV_POSITION: (EV_POSITION, 12, P, "alice", -5, -250_000, 10),
    EV_MARGIN: (EV_MARGIN, 13, P, "alice", -100, 5_000),
    EV_FUNDING: (EV_FUNDING, 14, P, -3, 12, 1),
    EV_LIQUIDATION: (EV_LIQUIDATION, 15, P, "alice", 5, 4_000_000, 20_000_000, -7, 2, 0),
    EV_ADL: (EV_ADL, 16, P, "bob", "alice", -5, 4_000_000),
}


def _near_misses(ev: tuple) -> list[tuple]:
    """``ev`` with one thing wrong: a field more, one less, and each field of another type
    or out of its range."""
    out = [(*ev, 1), ev[:-1]]
    for i, (value, letter) in enumerate(zip(ev, EVENT_SHAPES[ev[0]], strict=True)):
        if i == 0:
            continue  # (the kind: another kind is another event)
        if letter == "s":
            wrong: list[Any] = [value.encode(), 1]
        elif letter == "n":  # (signed: -1 is a size; out of int64 either way is not)
            wrong = [True, str(value), 1 << 63, -(1 << 63)]
        else:
            wrong = [-1, True, str(value), 1 << 63] + ([2] if letter == "d" else [])
        out += [(*ev[:i], w, *ev[i + 1 :]) for w in wrong]
    return out


def _sdk_accepts(ev: tuple) -> bool:
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    core.markets = dict(DEFAULT_MARKETS)
    try:
        core.event(ev)
    except _Malformed:
        return False
    return True


def test_every_kind_has_a_shape_and_an_example_here() -> None:
    assert set(GOOD) == set(EVENT_SHAPES)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_the_bridge_and_the_sdk_agree_on_each_kind_and_its_near_misses(kind: int) -> None:
    good = GOOD[kind]
    assert check_event(good, dict(DEFAULT_MARKETS)) and _sdk_accepts(good)
    for bad in _near_misses(good):
        bridge = check_event(bad, dict(DEFAULT_MARKETS))
        assert (bridge, _sdk_accepts(bad)) == (False, False), bad
