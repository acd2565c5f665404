"""Candles at the edge: integers ↔ exact decimal strings, the stored JSON, and views.

A candle is stored in Redis as one JSON object (decimal strings for every price and volume,
integers for times, counts and trade ids), so dashboards and the gateway read it without the
market table. Conversions run in ``EXACT``, a decimal context that traps any rounding: a value
that cannot be represented exactly is an error, never a silently rounded number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from typing import Any

from shardex.candles.core import Candle, Position
from shardex.engine import Market

EXACT = Context(prec=200, traps=[Inexact, Rounded, InvalidOperation])


def dec(units: int, unit: Decimal) -> Decimal:
    """``units`` × ``unit``, exactly."""
    return EXACT.multiply(Decimal(units), unit)


def text(value: Decimal) -> str:
    """A plain ASCII decimal string (never exponent notation: '0.00000005', not '5E-8')."""
    return format(value, "f")


def to_units(raw: str, unit: Decimal) -> int:
    """A decimal string that is a whole number of ``unit`` → that number (ValueError if not)."""
    try:
        q = EXACT.divide(Decimal(raw), unit)
    except (InvalidOperation, ArithmeticError):
        raise ValueError(f"{raw!r} is not a whole number of {unit}") from None
    if q != q.to_integral_value():
        raise ValueError(f"{raw!r} is not a whole number of {unit}")
    return int(q)


def quote_unit(market: Market) -> Decimal:
    """The unit of a quote volume held as price ticks × quantity lots."""
    return EXACT.multiply(market.tick, market.lot)


def member(c: Candle, market: Market) -> str:
    """The stored form of a candle (one sorted-set member, score = its start)."""
    px, lot = market.tick, market.lot
    return json.dumps({
        "t": c.start, "open": text(dec(c.open, px)), "high": text(dec(c.high, px)),
        "low": text(dec(c.low, px)), "close": text(dec(c.close, px)),
        "volume": text(dec(c.volume, lot)), "quote_volume": text(dec(c.quote, quote_unit(market))),
        "trades": c.trades, "first_trade_id": c.first_id, "last_trade_id": c.last_id,
    }, separators=(",", ":"))  # fmt: skip


def candle_of(raw: str, market: Market) -> Candle:
    """A stored member back into integers (ValueError if it is not one of ours)."""
    try:
        d = json.loads(raw)
        px, lot = market.tick, market.lot
        return Candle(
            int(d["t"]), to_units(d["open"], px), to_units(d["high"], px),
            to_units(d["low"], px), to_units(d["close"], px), to_units(d["volume"], lot),
            to_units(d["quote_volume"], quote_unit(market)), int(d["trades"]),
            int(d["first_trade_id"]), int(d["last_trade_id"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a stored candle: {str(raw)[:80]!r} ({exc})") from None


def position_fields(p: Position, market: Market) -> dict[str, str]:
    """A position as the stored hash's fields (price as a decimal string)."""
    return {"entry": p.entry, "trade_id": str(p.trade_id), "ts": str(p.ts),
            "price": text(dec(p.price, market.tick)) if p.trade_id else ""}  # fmt: skip


def position_of(fields: dict[str, str], market: Market) -> Position:
    """The stored hash back into a ``Position`` (an empty hash: the stream's start)."""
    if not fields:
        return Position()
    price = fields.get("price") or ""
    return Position(
        fields["entry"],
        int(fields["trade_id"]),
        int(fields.get("ts") or 0),
        to_units(price, market.tick) if price else 0,
    )


@dataclass(frozen=True)
class CandleView:
    """A candle as readers get it: Decimals for money, ints for times (ms UTC), counts, ids."""

    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    first_trade_id: int
    last_trade_id: int

    @classmethod
    def parse(cls, raw: str) -> CandleView:
        d = json.loads(raw)
        return cls(int(d["t"]), Decimal(d["open"]), Decimal(d["high"]), Decimal(d["low"]),
                   Decimal(d["close"]), Decimal(d["volume"]), Decimal(d["quote_volume"]),
                   int(d["trades"]), int(d["first_trade_id"]), int(d["last_trade_id"]))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The public JSON form: decimal strings for money, numbers for the rest."""
        return {
            "start": self.start, "open": text(self.open), "high": text(self.high),
            "low": text(self.low), "close": text(self.close), "volume": text(self.volume),
            "quote_volume": text(self.quote_volume), "trades": self.trades,
            "first_trade_id": self.first_trade_id, "last_trade_id": self.last_trade_id,
        }  # fmt: skip
