"""A perp pair's ``(EV_INDEX, seq, symbol, index, mark)`` at the edge (pure): the check the
bridge and the PUB readers apply, and its public JSON form (decimal strings).
``shardex.engine.perps`` makes the event; docs/perps.md describes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.markets import Market
from shardex.wire.layouts import (
    EV_SEQ,
    EV_SYMBOL,
    INDEX_EV_MARK,
    INDEX_EV_PRICE,
    INDEX_WIDTH,
)


def check_index_event(ev: tuple, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` (an ``EV_INDEX`` tuple) can be formatted: a known symbol, int prices."""
    return (
        len(ev) == INDEX_WIDTH
        and ev[EV_SYMBOL] in markets
        and type(ev[INDEX_EV_PRICE]) is int
        and type(ev[INDEX_EV_MARK]) is int
    )


def index_event_json(ev: tuple, markets: Mapping[str, Market]) -> dict[str, Any]:
    """``EV_INDEX`` → ``{"ev": "index", symbol, index, mark, seq}`` (decimal strings)."""
    symbol = ev[EV_SYMBOL]
    m = markets[symbol]
    return {"ev": "index", "symbol": symbol, "index": m.price_str(ev[INDEX_EV_PRICE]),
            "mark": m.price_str(ev[INDEX_EV_MARK]), "seq": ev[EV_SEQ]}  # fmt: skip
