"""A perp pair's liquidation event at the edge (pure): the bridge's check and its public JSON
form (decimal strings: lots of the pair, prices and amounts of the settle asset).
``shardex.engine.liquidation`` makes it; docs/perps.md describes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.codes import EV_LIQUIDATION
from shardex.engine.markets import Market
from shardex.wire.layouts import (
    EV_KIND,
    EV_SEQ,
    EV_SYMBOL,
    LIQ_ACCOUNT,
    LIQ_BANKRUPTCY,
    LIQ_CLOSED,
    LIQ_FUND,
    LIQ_NOTIONAL,
    LIQ_SETTLED,
    LIQ_UNCOVERED,
    LIQ_WIDTH,
)
from shardex.wire.position_event import position_event_json

_MAX_ACCOUNT = 64


def check_liquidation_event(ev: tuple, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` (shape already checked) names a known pair and a sane account."""
    account = ev[LIQ_ACCOUNT] if len(ev) == LIQ_WIDTH else None
    return ev[EV_SYMBOL] in markets and type(account) is str and 0 < len(account) <= _MAX_ACCOUNT


def liquidation_event_json(ev: tuple, markets: Mapping[str, Market]) -> dict[str, Any]:
    """``{"ev": "liquidation", symbol, account, closed, bankruptcy, notional, settled,
    uncovered, fund, seq}``: settled > 0 went to the insurance fund, < 0 the fund paid;
    ``uncovered`` is the deficit it could not pay."""
    symbol = ev[EV_SYMBOL]
    m = markets[symbol]
    unit = m.tick * m.lot
    return {"ev": "liquidation", "symbol": symbol, "account": ev[LIQ_ACCOUNT],
            "closed": m.qty_str(ev[LIQ_CLOSED]), "bankruptcy": m.price_str(ev[LIQ_BANKRUPTCY]),
            "notional": str(ev[LIQ_NOTIONAL] * unit), "settled": str(ev[LIQ_SETTLED] * unit),
            "uncovered": str(ev[LIQ_UNCOVERED] * unit), "fund": str(ev[LIQ_FUND] * unit),
            "seq": ev[EV_SEQ]}  # fmt: skip


def perp_event_json(ev: tuple, markets: Mapping[str, Market]) -> dict[str, Any]:
    """Any perp event's JSON (a liquidation here, a position, margin or funding one in
    ``position_event``)."""
    if ev[EV_KIND] == EV_LIQUIDATION:
        return liquidation_event_json(ev, markets)
    return position_event_json(ev, markets)
