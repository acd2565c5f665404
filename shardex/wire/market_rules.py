"""A pair's rules at the edge: decimal strings in and out, integers inside (``engine.admin``).

The engine keeps ``max_qty`` and ``min_qty`` in lots and ``max_notional`` in price ticks × lots;
people and the streams see the base asset's quantity and the quote asset's amount as exact
decimal strings ("0" for no limit). Pure (no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.engine.admin import MAX_BAND_BPS, STATES
from shardex.engine.markets import Market
from shardex.wire.layouts import (
    MARKET_BAND,
    MARKET_MAX_NOTIONAL,
    MARKET_MAX_QTY,
    MARKET_MIN_QTY,
    MARKET_STATE,
)


def qty_str(market: Market | None, lots: int) -> str:
    """A ``max_qty`` in lots → base asset decimal string ("0": no limit)."""
    if not lots or market is None:
        return str(lots)
    return market.qty_str(lots)


def notional_str(market: Market | None, units: int) -> str:
    """A ``max_notional`` in ticks × lots → quote asset decimal string ("0": no limit)."""
    if not units or market is None:
        return str(units)
    return str(units * market.tick * market.lot)


def market_event_json(ev: tuple, market: Market | None, seq: int) -> dict[str, Any]:
    """``(EV_MARKET, seq, symbol, state, band_bps, max_qty, max_notional, min_qty)`` → its
    JSON form."""
    return {
        "ev": "market",
        "symbol": ev[2],
        "state": ev[MARKET_STATE],
        "band_bps": ev[MARKET_BAND],
        "max_qty": qty_str(market, ev[MARKET_MAX_QTY]),
        "max_notional": notional_str(market, ev[MARKET_MAX_NOTIONAL]),
        "min_qty": qty_str(market, ev[MARKET_MIN_QTY]),
        "seq": seq,
    }


def rules_json(market: Market | None, rules: Mapping[str, Any]) -> dict[str, Any]:
    """A pair's rules as the engine gives them (``Rules.to_wire``) → decimal strings."""
    return {
        "state": rules.get("state", "open"),
        "band_bps": rules.get("band_bps", 0),
        "max_qty": qty_str(market, rules.get("max_qty", 0)),
        "max_notional": notional_str(market, rules.get("max_notional", 0)),
        "min_qty": qty_str(market, rules.get("min_qty", 0)),
    }


def _decimal(value: object, what: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what} must be a decimal, got {value!r:.40}") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{what} must be a decimal >= 0, got {value!r:.40}")
    return d


def _units(market: Market, key: str, d: Decimal) -> int:
    """A limit in the engine's units (lots; ticks x lots, rounded down); ValueError for one
    the decimal context cannot divide, off the lot grid, or positive but below one unit
    (it would become 0: no limit at all)."""
    lots = key in ("max_qty", "min_qty")
    unit = market.lot if lots else market.tick * market.lot
    try:
        if lots and d % unit:
            raise ValueError(f"{key} {d} is not on the lot grid {market.lot}")
        units = int(d / unit)
    except ArithmeticError:  # (decimal's InvalidOperation, Overflow: far out of range)
        raise ValueError(f"{key} {d:.6} is out of range") from None
    if d and not units:
        raise ValueError(f"{key} {d:.6} is below the smallest step {unit} (0 lifts the limit)")
    return units


def changes_from_json(market: Market, obj: Mapping[str, Any]) -> dict[str, Any]:
    """``{state?, band_bps?, max_qty?, max_notional?, min_qty?}`` with decimal strings → the
    changes map of ``OP_MARKET_RULE`` (ints); ValueError naming the field when one cannot be
    used. A ``max_qty`` or ``min_qty`` must lie on the lot grid; a ``max_notional`` is rounded
    down to ticks × lots (a limit is never raised by rounding)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if value is None:
            continue
        if key == "state":
            if value not in STATES:
                raise ValueError(f"state must be one of {', '.join(STATES)}, got {value!r:.40}")
            out["state"] = value
        elif key == "band_bps":
            if type(value) is not int or not 0 <= value <= MAX_BAND_BPS:
                raise ValueError(f"band_bps must be an int 0..{MAX_BAND_BPS}, got {value!r:.40}")
            out["band_bps"] = value
        elif key in ("max_qty", "max_notional", "min_qty"):
            out[key] = _units(market, key, _decimal(value, key))
        else:
            raise ValueError(f"unknown rule {key!r:.40}")
    if not out:
        raise ValueError("nothing to change")
    return out
