"""The rolling 24 h ticker and flat fill, computed from stored candles (pure: no I/O, no clock).

The ticker is computed when it is asked for, from the pair's 1m candles and its position, so
its window always ends at the time asked (``at``), never at whenever the worker last ran: a
pair that stopped trading shows its volume fall to zero after 24 h, as on any venue. The window
is the 1440 one-minute buckets ending with the one holding ``at`` (one-minute granularity, like
the rolling windows of the large venues); ``last`` is the close of the newest of them, else the
pair's last trade price (however old).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from shardex.candles.core import INTERVALS, bucket
from shardex.candles.fmt import EXACT, CandleView, text

DAY_MS = 86_400_000
MINUTE_MS = INTERVALS["1m"]
PERCENT = Decimal("0.01")


def window(at: int) -> tuple[int, int]:
    """(first, last) 1m bucket start of the 24 h window ending with the bucket of ``at``."""
    last = bucket(at, MINUTE_MS)
    return last - DAY_MS + MINUTE_MS, last


@dataclass(frozen=True)
class Ticker:
    """24 h statistics of one pair at time ``at`` (ms UTC). Money as Decimal; ``open``,
    ``high``, ``low``, ``change`` and ``change_percent`` are None when nothing traded in the
    window; ``last`` is None only for a pair that never traded."""

    symbol: str
    at: int
    window_start: int
    last: Decimal | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    volume: Decimal
    quote_volume: Decimal
    trades: int
    change: Decimal | None
    change_percent: Decimal | None  # rounded half-even to 0.01 (the only rounded number)

    def to_json(self) -> dict[str, Any]:
        def s(v: Decimal | None) -> str | None:
            return None if v is None else text(v)

        return {
            "symbol": self.symbol, "at": self.at, "window_start": self.window_start,
            "last": s(self.last), "open": s(self.open), "high": s(self.high), "low": s(self.low),
            "volume": text(self.volume), "quote_volume": text(self.quote_volume),
            "trades": self.trades, "change": s(self.change),
            "change_percent": s(self.change_percent),
        }  # fmt: skip


def ticker(
    symbol: str, minutes: Iterable[CandleView], last_price: Decimal | None, at: int
) -> Ticker:
    """The ticker at ``at`` from 1m candles (any range: those outside the window are left
    out) and the pair's last trade price (its position; None if it never traded)."""
    first, end = window(at)
    inside = sorted((c for c in minutes if first <= c.start <= end), key=lambda c: c.start)
    zero = Decimal(0)
    if not inside:
        return Ticker(symbol, at, first, last_price, None, None, None, zero, zero, 0, None, None)
    volume, quote = zero, zero
    for c in inside:
        volume = EXACT.add(volume, c.volume)
        quote = EXACT.add(quote, c.quote_volume)
    opened, last = inside[0].open, inside[-1].close
    change = EXACT.subtract(last, opened)
    pct = (change * 100 / opened).quantize(PERCENT, rounding=ROUND_HALF_EVEN)
    pct = abs(pct) if pct.is_zero() else pct  # "0.00", never "-0.00"
    return Ticker(
        symbol, at, first, last, opened, max(c.high for c in inside),
        min(c.low for c in inside), volume, quote, sum(c.trades for c in inside), change, pct,
    )  # fmt: skip


def fill(candles: list[CandleView], ms: int, until: int | None = None) -> list[CandleView]:
    """``candles`` (oldest first) with every empty bucket between them, and up to the bucket
    of ``until``, as a flat candle: open = high = low = close = the previous close, no volume,
    no trades (trade ids 0). Stored candles are never flat: an empty interval has none."""
    out: list[CandleView] = []
    zero = Decimal(0)
    last_end = None if until is None else bucket(until, ms) + ms
    for k, c in enumerate(candles):
        out.append(c)
        nxt = candles[k + 1].start if k + 1 < len(candles) else last_end
        s = c.start + ms
        while nxt is not None and s < nxt:
            out.append(CandleView(s, c.close, c.close, c.close, c.close, zero, zero, 0, 0, 0))
            s += ms
    return out
