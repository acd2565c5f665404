"""A perp pair's position, margin and funding events at the edge (pure): the check the bridge
and the PUB readers apply, and their public JSON form (decimal strings of the settle asset).
``shardex.engine.positions`` and ``shardex.engine.funding`` make them; docs/perps.md
describes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.codes import EV_FUNDING, EV_POSITION
from shardex.engine.funding import SCALE
from shardex.engine.markets import Market
from shardex.wire.layouts import (
    EV_KIND,
    EV_SEQ,
    EV_SYMBOL,
    FUNDING_EV_CUMULATIVE,
    FUNDING_EV_PER_LOT,
    FUNDING_EV_REMAINDER,
    FUNDING_WIDTH,
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
    """True if ``ev`` (an ``EV_POSITION``, ``EV_MARGIN`` or ``EV_FUNDING`` tuple) can be
    formatted."""
    if ev[EV_KIND] == EV_FUNDING:
        return (len(ev) == FUNDING_WIDTH and ev[EV_SYMBOL] in markets
                and all(type(v) is int for v in ev[FUNDING_EV_PER_LOT:]))  # fmt: skip
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
    ``EV_MARGIN`` → ``{"ev": "margin", symbol, account, amount, collateral, seq}``;
    ``EV_FUNDING`` → ``{"ev": "funding", symbol, per_lot, cumulative, remainder, seq}`` (per
    lot: of the settle asset per lot of the pair; > 0: longs paid)."""
    symbol = ev[EV_SYMBOL]
    m = markets[symbol]
    unit = m.tick * m.lot
    if ev[EV_KIND] == EV_FUNDING:
        return {"ev": "funding", "symbol": symbol,
                "per_lot": format(ev[FUNDING_EV_PER_LOT] * unit / SCALE, "f"),
                "cumulative": format(ev[FUNDING_EV_CUMULATIVE] * unit / SCALE, "f"),
                "remainder": str(ev[FUNDING_EV_REMAINDER] * unit), "seq": ev[EV_SEQ]}  # fmt: skip
    if ev[EV_KIND] == EV_POSITION:
        return {"ev": "position", "symbol": symbol, "account": ev[POSITION_ACCOUNT],
                "size": m.qty_str(ev[POSITION_SIZE]), "cost": str(ev[POSITION_COST] * unit),
                "realized": str(ev[POSITION_REALIZED] * unit), "seq": ev[EV_SEQ]}  # fmt: skip
    return {"ev": "margin", "symbol": symbol, "account": ev[MARGIN_EV_ACCOUNT],
            "amount": str(ev[MARGIN_EV_AMOUNT] * unit),
            "collateral": str(ev[MARGIN_EV_COLLATERAL] * unit), "seq": ev[EV_SEQ]}  # fmt: skip
