"""A perp pair's position and margin events at the edge (pure): the check the bridge and the
PUB readers apply, and their public JSON form (decimal strings of the settle asset).
``shardex.engine.positions`` makes them; docs/perps.md describes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.codes import EV_POSITION
from shardex.engine.markets import Market
from shardex.wire.layouts import (
    EV_KIND,
    EV_SEQ,
    EV_SYMBOL,
    MARGIN_EV_ACCOUNT,
    MARGIN_EV_AMOUNT,
    MARGIN_EV_COLLATERAL,
    MARGIN_WIDTH,
    POSITION_ACCOUNT,
    POSITION_COST,
    POSITION_REALIZED,
    POSITION_SIZE,
    POSITION_WIDTH,
)

_MAX_ACCOUNT = 64


def check_position_event(ev: tuple, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` (an ``EV_POSITION`` or ``EV_MARGIN`` tuple) can be formatted."""
    width = POSITION_WIDTH if ev[EV_KIND] == EV_POSITION else MARGIN_WIDTH
    account = ev[POSITION_ACCOUNT] if len(ev) == width else None
    return (
        ev[EV_SYMBOL] in markets
        and type(account) is str
        and 0 < len(account) <= _MAX_ACCOUNT
        and all(type(v) is int for v in ev[POSITION_ACCOUNT + 1 :])
    )


def position_event_json(ev: tuple, markets: Mapping[str, Market]) -> dict[str, Any]:
    """``EV_POSITION`` → ``{"ev": "position", symbol, account, size, cost, realized, seq}``;
    ``EV_MARGIN`` → ``{"ev": "margin", symbol, account, amount, collateral, seq}``."""
    symbol = ev[EV_SYMBOL]
    m = markets[symbol]
    unit = m.tick * m.lot
    if ev[EV_KIND] == EV_POSITION:
        return {"ev": "position", "symbol": symbol, "account": ev[POSITION_ACCOUNT],
                "size": m.qty_str(ev[POSITION_SIZE]), "cost": str(ev[POSITION_COST] * unit),
                "realized": str(ev[POSITION_REALIZED] * unit), "seq": ev[EV_SEQ]}  # fmt: skip
    return {"ev": "margin", "symbol": symbol, "account": ev[MARGIN_EV_ACCOUNT],
            "amount": str(ev[MARGIN_EV_AMOUNT] * unit),
            "collateral": str(ev[MARGIN_EV_COLLATERAL] * unit), "seq": ev[EV_SEQ]}  # fmt: skip
