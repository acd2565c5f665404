"""A perp pair's liquidation and auto-deleveraging events at the edge (pure): the bridge's
check and their public JSON form (decimal strings: lots of the pair, prices and amounts of
the settle asset). ``shardex.engine.liquidation`` and ``shardex.engine.adl`` make them;
docs/perps.md describes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.codes import EV_ADL, EV_LIQUIDATION
from shardex.engine.markets import Market
from shardex.wire.layouts import (
    ADL_ACCOUNT,
    ADL_BANKRUPT,
    ADL_CLOSED,
    ADL_PRICE,
    ADL_WIDTH,
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


def _sane(account: object) -> bool:
    return type(account) is str and 0 < len(account) <= _MAX_ACCOUNT


def check_liquidation_event(ev: tuple, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` (a liquidation or ADL event, shape already checked) names a known pair
    and sane accounts."""
    if ev[EV_KIND] == EV_ADL:
        return (len(ev) == ADL_WIDTH and ev[EV_SYMBOL] in markets and _sane(ev[ADL_ACCOUNT])
                and _sane(ev[ADL_BANKRUPT]))  # fmt: skip
    account = ev[LIQ_ACCOUNT] if len(ev) == LIQ_WIDTH else None
    return ev[EV_SYMBOL] in markets and _sane(account)


def adl_event_json(ev: tuple, markets: Mapping[str, Market]) -> dict[str, Any]:
    """``{"ev": "adl", symbol, account, bankrupt, closed, price, seq}``: ``account``'s
    position closed by ``closed`` (signed: < 0 a short bought back) at ``price`` against the
    ``bankrupt`` account's."""
    m = markets[ev[EV_SYMBOL]]
    return {"ev": "adl", "symbol": ev[EV_SYMBOL], "account": ev[ADL_ACCOUNT],
            "bankrupt": ev[ADL_BANKRUPT], "closed": m.qty_str(ev[ADL_CLOSED]),
            "price": m.price_str(ev[ADL_PRICE]), "seq": ev[EV_SEQ]}  # fmt: skip


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
    """Any perp event's JSON (a liquidation or ADL here, a position, margin or funding one in
    ``position_event``)."""
    if ev[EV_KIND] == EV_LIQUIDATION:
        return liquidation_event_json(ev, markets)
    if ev[EV_KIND] == EV_ADL:
        return adl_event_json(ev, markets)
    return position_event_json(ev, markets)
