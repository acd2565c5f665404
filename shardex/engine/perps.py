"""Perpetual-futures markets: their definition, and the index and mark price an engine keeps
for each (pure: no sockets, no clock, no I/O; part of the compiled engine build).

A perp market is a market of kind ``perp`` in the markets file (``Perp``: its settle asset,
margin fractions, funding interval and cap, oracle staleness limit). Its book matches like a
spot pair's; its positions and margin live in ``shardex.engine.positions``, its funding in
``shardex.engine.funding`` (docs/perps.md).

``(OP_INDEX, symbol, index)`` -- an index price in ticks, sent by a ``feed`` key and journaled
like any command -- sets the pair's index and recomputes its mark, deterministically, from the
index, the book and the exchange time (``OP_TIME``): ``(EV_INDEX, seq, symbol, index, mark)``.

The mark follows Hyperliquid's ("mark price is the median of: oracle + a 150 s EMA of (book
mid - oracle); the median of best bid, best ask and last trade; external perp mids"), with
the index standing in for the external mids (this venue has none):

* ``c1 = index + ema``: ``ema`` is an exponential moving average of ``mid - index`` weighted
  by exchange time (``w = min(dt, EMA_MS) / EMA_MS`` per update: the linear form of
  ``1 - exp(-dt/150 s)``), sampled only when both sides of the book exist; no mid: ``c1`` is
  the index plus the average so far.
* ``c2 = median(best bid, best ask, last trade)`` of those present (none: the index).
* ``mark = median(index, c1, c2)``: one side of a thin book cannot move it past the index
  alone. Every step is integer arithmetic (ticks; the average in millionths of a tick, floor
  division), so a replay gives the same mark byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.engine.codes import (
    EV_INDEX,
    OP_FUNDING,
    OP_INDEX,
    OP_MARGIN,
    REJ_MALFORMED,
    REJ_NOT_PERP,
    REJ_OUT_OF_RANGE,
    Event,
)
from shardex.engine.funding import funding_read, pay_funding, sample
from shardex.engine.positions import set_margin

KINDS = ("spot", "perp")
PERP_KEYS = frozenset(("settle", "initial_margin", "maintenance_margin", "funding_interval_s",
                       "funding_cap", "oracle_staleness_ms"))  # fmt: skip
# defaults of a perp's keys (dYdX v4's BTC-USD fractions; Hyperliquid's hourly 4 % cap)
DEFAULT_INITIAL, DEFAULT_MAINTENANCE = Decimal("0.05"), Decimal("0.03")
DEFAULT_INTERVAL_S, DEFAULT_CAP, DEFAULT_STALENESS_MS = 3600, Decimal("0.04"), 10_000
EMA_MS = 150_000  # Hyperliquid's 150 s
EMA_SCALE = 1_000_000  # the average is kept in millionths of a tick
_ASSET_RE = re.compile(r"[A-Z0-9]{1,12}")
Refusal = tuple[str, int]
EngineState = Any  # (``state.py`` imports ``book.py``, which imports this module: no cycle)


@dataclass(frozen=True)
class Perp:
    """A perp market's risk parameters (fractions are exact decimals, never floats).

    ``initial_margin`` / ``maintenance_margin``: fractions of the notional (dYdX v4's initial
    and maintenance margin fractions; 1 / initial is the maximum leverage);
    ``funding_interval_s``: seconds between funding payments; ``funding_cap``: the largest
    funding rate per interval (a fraction); ``oracle_staleness_ms``: an index older than this
    (exchange time) is stale."""

    settle: str
    initial_margin: Decimal
    maintenance_margin: Decimal
    funding_interval_s: int
    funding_cap: Decimal
    oracle_staleness_ms: int

    def to_wire(self) -> dict[str, Any]:
        """Plain strings and ints (msgpack/JSON): what ``shardex market list`` shows."""
        return {"kind": "perp", "settle": self.settle,
                "initial_margin": str(self.initial_margin),
                "maintenance_margin": str(self.maintenance_margin),
                "funding_interval_s": self.funding_interval_s,
                "funding_cap": str(self.funding_cap),
                "oracle_staleness_ms": self.oracle_staleness_ms}  # fmt: skip


def _fraction(spec: Mapping[str, Any], key: str, default: Decimal) -> Decimal:
    raw = spec.get(key, default)
    if isinstance(raw, float):
        raise ValueError(f"{key} must be a decimal string (\"0.05\"), not a float")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"{key} {str(raw)[:20]!r} is not a decimal") from None
    if not value.is_finite() or not 0 < value <= 1:
        raise ValueError(f"{key} must be a fraction in (0, 1], got {value}")
    return value


def _whole(spec: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = spec.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{key} must be a whole number {low}..{high}, got {str(value)[:20]}")
    return value


def perp_from_spec(symbol: str, spec: Mapping[str, Any]) -> Perp:
    """A markets-file entry of kind ``perp`` → its ``Perp``; ValueError saying which key and
    why. ``settle`` defaults to the quote asset and must be it (prices are quoted in it)."""
    quote = symbol.rsplit("-", 1)[-1] if "-" in symbol else ""
    settle = spec.get("settle", quote)
    if type(settle) is not str or not _ASSET_RE.fullmatch(settle) or settle != quote:
        raise ValueError(f"settle must be the quote asset {quote or '(none: BASE-QUOTE)'}, "
                         f"got {str(settle)[:20]!r}")  # fmt: skip
    initial = _fraction(spec, "initial_margin", DEFAULT_INITIAL)
    maintenance = _fraction(spec, "maintenance_margin", DEFAULT_MAINTENANCE)
    if not maintenance < initial:
        raise ValueError(f"maintenance_margin {maintenance} must be below initial_margin "
                         f"{initial}")  # fmt: skip
    return Perp(
        settle, initial, maintenance,
        _whole(spec, "funding_interval_s", DEFAULT_INTERVAL_S, 60, 86_400),
        _fraction(spec, "funding_cap", DEFAULT_CAP),
        _whole(spec, "oracle_staleness_ms", DEFAULT_STALENESS_MS, 100, 3_600_000),
    )  # fmt: skip


class Oracle:
    """One perp pair's index and mark (ticks), the average of ``mid - index`` (millionths of a
    tick) and the exchange time of the last index (ms). Part of the pair's state."""

    __slots__ = ("index", "mark", "ema", "ts")

    def __init__(self, index: int = 0, mark: int = 0, ema: int = 0, ts: int = 0) -> None:
        self.index = index
        self.mark = mark
        self.ema = ema
        self.ts = ts

    def save(self) -> list[int]:
        return [self.index, self.mark, self.ema, self.ts]

    def stale(self, now: int, limit_ms: int) -> bool:
        """No index yet, or the last one is older than ``limit_ms`` at exchange time ``now``."""
        return not self.index or now - self.ts > limit_ms


def load_oracle(state: Any) -> Oracle | None:
    """``Oracle.save``'s list back (None: none); ValueError when it does not fit."""
    if state is None:
        return None
    if (not isinstance(state, (list, tuple)) or len(state) != 4
            or any(type(v) is not int for v in state) or state[0] <= 0 or state[1] <= 0):
        raise ValueError(f"bad oracle state {state!r:.80}")  # fmt: skip
    return Oracle(state[0], state[1], state[2], state[3])


def _median3(a: int, b: int, c: int) -> int:
    return max(min(a, b), min(max(a, b), c))


def book_price(bid: int | None, ask: int | None, last: int, index: int) -> int:
    """``c2``: the median of best bid, best ask and last trade, of those present (none: the
    index; two: the lower, so that the answer is always one of the inputs, in ticks)."""
    present = sorted(p for p in (bid, ask, last or None) if p is not None)
    if not present:
        return index
    return present[(len(present) - 1) // 2]


def next_mark(o: Oracle, index: int, now: int, bid: int | None, ask: int | None,
              last: int) -> None:  # fmt: skip
    """Move ``o`` to a new ``index`` at exchange time ``now`` and recompute its mark."""
    if bid is not None and ask is not None:
        sample = ((bid + ask) * EMA_SCALE) // 2 - index * EMA_SCALE
        weight = min(max(now - o.ts, 0), EMA_MS) if o.index else EMA_MS
        o.ema += ((sample - o.ema) * weight) // EMA_MS
    c1 = index + o.ema // EMA_SCALE
    c2 = book_price(bid, ask, last, index)
    o.index, o.ts = index, now
    o.mark = max(_median3(index, c1, c2), 1)


def set_index(eng: EngineState, cmd: Any, out: list[Event]) -> Refusal | None:
    """Apply ``(OP_INDEX, symbol, index ticks)``: append ``EV_INDEX``, or return (reason,
    code) for the caller to reject with (nothing changed)."""
    if len(cmd) != 3:
        return "index: expected (op, symbol, index ticks)", REJ_MALFORMED
    symbol, index = cmd[1], cmd[2]
    market = eng.markets.get(symbol) if type(symbol) is str else None
    if market is None or market.perp is None:
        return f"index: {str(symbol)[:64]} is not a perpetual market", REJ_NOT_PERP
    if type(index) is not int or not 0 < index <= market.max_price_ticks:
        return f"index: price must be 1..{market.max_price_ticks} ticks", REJ_OUT_OF_RANGE
    book = eng.book(symbol)
    if book is None:  # (handed off: its oracle travelled with it)
        return eng.no_book(symbol)
    o = book.oracle
    if o is None:
        o = book.oracle = Oracle()
    next_mark(o, index, eng.ts, book.best(0), book.best(1), book.last)
    if book.positions is not None:  # (a premium sample for funding: ``engine.funding``)
        sample(book.positions, o.mark - o.index, eng.ts, market.perp.funding_interval_s * 1000)
    eng.seq = seq = eng.seq + 1
    out.append((EV_INDEX, seq, symbol, o.index, o.mark))
    return None


def perp_read(eng: EngineState, symbol: str) -> dict[str, Any] | None:
    """A perp pair's definition, index and mark (decimal strings; None: a spot pair) for the
    shard's market read."""
    market = eng.markets.get(symbol)
    if market is None or market.perp is None:
        return None
    out = market.perp.to_wire()
    book = eng.books.get(symbol)
    o = book.oracle if book is not None else None
    if o is not None:
        out["index"], out["mark"] = market.price_str(o.index), market.price_str(o.mark)
        out["index_ts"] = o.ts
    out["stale"] = o is None or o.stale(eng.ts, market.perp.oracle_staleness_ms)
    if book is not None:  # (cumulative funding index, next payment: ``engine.funding``)
        out["funding"] = funding_read(book)
    return out


# perp pairs' commands (``Engine.apply``'s admin table takes ``engine.liquidation``'s, where
# an index also liquidates)
PERP_OPS = {OP_INDEX: set_index, OP_MARGIN: set_margin, OP_FUNDING: pay_funding}
