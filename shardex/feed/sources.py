"""Where index prices come from, as pure parsers and generators (no sockets, no clock).

A ``Quote`` is one source's price of one perp market at a time (ms): the node keeps the latest
quote per (market, source) and combines them (``shardex.feed.combine``).

* ``Walk``: a seeded random walk per market (the default source): integer steps of at most
  ``step_bps`` basis points, so the same seed gives the same prices on every machine.
* ``parse_record``: one line of a recorded file, ``{"ts": ms, "symbol": ..., "price": "..."}``
  (JSON, the price a decimal string); the node replays a file at a chosen speed.
* ``parse_binance``: one message of Binance's public market streams, raw or combined
  (``{"stream": ..., "data": {...}}``): a ``trade`` event (``e`` = ``trade``, ``s`` symbol,
  ``p`` price, ``T`` trade time) or a ``bookTicker`` (``s``, best bid ``b``, best ask ``a``:
  the mid; it carries no time, the caller's receive time is used).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

MAX_LINE = 4096  # a recorded line or a stream message longer than this is not a quote


class Quote(NamedTuple):
    """One source's price (exact decimal) of one perp market at ``ts`` (ms, UTC)."""

    source: str
    symbol: str
    price: Decimal
    ts: int


def _price(raw: Any) -> Decimal | None:
    """A positive finite decimal from a string (never a float), else None."""
    if type(raw) is not str or not 0 < len(raw) <= 40:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value > 0 else None


class Walk:
    """A seeded random walk per market (``start`` prices, exact decimals): each ``step``
    moves every price by a whole number of basis points in [-step_bps, step_bps], rounded to
    ``grid`` (the market's tick)."""

    def __init__(self, start: Mapping[str, Decimal], grid: Mapping[str, Decimal], seed: int,
                 step_bps: int = 5) -> None:  # fmt: skip
        self.prices = dict(start)
        self.grid = dict(grid)
        self.rng = random.Random(seed)
        self.step_bps = step_bps

    def step(self, ts: int, source: str = "walk") -> list[Quote]:
        out = []
        for symbol in sorted(self.prices):
            bps = self.rng.randint(-self.step_bps, self.step_bps)
            tick = self.grid[symbol]
            moved = self.prices[symbol] * (10_000 + bps) / 10_000
            price = max((moved / tick).to_integral_value() * tick, tick)
            self.prices[symbol] = price
            out.append(Quote(source, symbol, price, ts))
        return out


def parse_record(line: str, source: str = "file") -> Quote | None:
    """One recorded line → its quote; None for a blank, comment or unusable line."""
    line = line.strip()
    if not line or line.startswith("#") or len(line) > MAX_LINE:
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    ts, symbol, price = obj.get("ts"), obj.get("symbol"), _price(obj.get("price"))
    if type(ts) is not int or ts < 0 or type(symbol) is not str or price is None:
        return None
    return Quote(source, symbol, price, ts)


def parse_binance(text: str | bytes, symbols: Mapping[str, str], now: int,
                  source: str = "binance") -> Quote | None:  # fmt: skip
    """One Binance stream message → a quote of the perp market ``symbols`` maps its symbol
    to (``{"BTCUSDT": "BTCPERP-USD"}``), or None (another symbol, another event, garbage)."""
    if len(text) > MAX_LINE:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
        obj = obj["data"]  # (a combined stream's envelope)
    if not isinstance(obj, dict):
        return None
    market = symbols.get(obj.get("s")) if type(obj.get("s")) is str else None
    if market is None:
        return None
    if obj.get("e") == "trade":
        price, ts = _price(obj.get("p")), obj.get("T")
        if price is None or type(ts) is not int or ts < 0:
            return None
        return Quote(source, market, price, ts)
    if "e" not in obj:  # a bookTicker (no event type field in the raw stream)
        bid, ask = _price(obj.get("b")), _price(obj.get("a"))
        if bid is None or ask is None or bid > ask:
            return None
        return Quote(source, market, (bid + ask) / 2, now)
    return None
