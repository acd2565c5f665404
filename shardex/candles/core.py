"""Candles from trades: the pure core (no Redis, no clock, no sockets).

A trades-stream entry (``shardex:trades:<SYMBOL>``, written by the bridge) becomes a ``Trade``
of integers (price in ticks, quantity in lots, exchange time ``ts`` in ms) or an ``Anomaly``
with a stable code; ``PairCandles`` folds trades into OHLCV candles of every interval.

Why the rules are what they are:

* **The stream is the truth, trade_id the check.** trade_id is per pair and contiguous, so a
  trade_id at or below the last applied one is a *repeat* (skipped: it was counted once) and
  one beyond the next is a *gap* (applied, and the missing range reported: the candles then
  lack exactly what the stream lacks). The same trades in give the same candles out, whatever
  shard or leader wrote them.
* **A candle is a function of its set of trades**: open is the price of its lowest trade_id,
  close of its highest, high/low/volumes/count commute. So a trade whose ``ts`` falls in an
  older bucket (a pair moved to a shard whose clock is behind) lands in that bucket.
* **Integers inside**: price ticks, quantity lots, quote volume in tick*lot units; decimal
  strings only at the edge (``shardex.candles.fmt``). Nothing here is ever a float.
* **Buckets** are aligned to the Unix epoch in UTC: a 1d candle runs 00:00-24:00 UTC, a 4h one
  starts at 00, 04, 08... UTC. An interval without trades has no candle (readers may fill it
  with a flat one, ``shardex.candles.ticker.fill``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from shardex.engine import Market

INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond is not a time
MAX_FIELD = 40  # characters of a number field we even try to parse

# Anomaly codes (stable: metric labels and log lines; only ever appended)
NO_TS = "no_ts"
BAD_TS = "bad_ts"
BAD_PRICE = "bad_price"
BAD_QTY = "bad_qty"
BAD_TRADE_ID = "bad_trade_id"
REPEAT = "repeat"
GAP = "gap"
ANOMALIES = (NO_TS, BAD_TS, BAD_PRICE, BAD_QTY, BAD_TRADE_ID, REPEAT, GAP)


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade in integers: what a candle is made of."""

    trade_id: int
    ts: int  # exchange time, ms since the Unix epoch UTC
    price: int  # ticks
    qty: int  # lots


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An entry that is not applied (or applied with a warning: ``gap``), and why."""

    code: str
    entry: str  # the stream entry ID
    detail: str


@dataclass(slots=True)
class Candle:
    """OHLCV of one bucket, in integers (price ticks, volume lots, quote ticks*lots)."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    trades: int
    first_id: int
    last_id: int

    @classmethod
    def of(cls, start: int, t: Trade) -> Candle:
        return cls(start, t.price, t.price, t.price, t.price, t.qty, t.price * t.qty, 1,
                   t.trade_id, t.trade_id)  # fmt: skip

    def add(self, t: Trade) -> None:
        """Fold one trade in (open/close by trade_id, so the order of adding is irrelevant)."""
        if t.price > self.high:
            self.high = t.price
        if t.price < self.low:
            self.low = t.price
        if t.trade_id < self.first_id:
            self.first_id, self.open = t.trade_id, t.price
        if t.trade_id > self.last_id:
            self.last_id, self.close = t.trade_id, t.price
        self.volume += t.qty
        self.quote += t.price * t.qty
        self.trades += 1


def _int_field(fields: Mapping[str, str], name: str) -> int | None:
    """A positive decimal integer field, or None (absent, not digits, too long)."""
    raw = fields.get(name)
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if value > 0 else None


def _units(raw: object, unit: Decimal, bound: Decimal) -> int | None:
    """A decimal string on the grid ``unit``, 0 < value <= bound, as units; else None."""
    if not isinstance(raw, str) or not raw.isascii() or len(raw) > MAX_FIELD:
        return None
    try:
        value = Decimal(raw)
        if not value.is_finite() or value <= 0 or value > bound or value % unit:
            return None
        return int(value / unit)
    except (InvalidOperation, ValueError):
        return None


def parse_trade(entry: str, fields: Mapping[str, str], market: Market) -> Trade | Anomaly:
    """A trades-stream entry → a ``Trade``, or the ``Anomaly`` that refuses it."""
    if "ts" not in fields:
        return Anomaly(NO_TS, entry, "entry has no ts (exchange time)")
    ts = _int_field(fields, "ts")
    if ts is None or ts > MAX_TS:
        return Anomaly(BAD_TS, entry, f"ts {str(fields.get('ts'))[:MAX_FIELD]!r} is not ms")
    trade_id = _int_field(fields, "trade_id")
    if trade_id is None:
        return Anomaly(BAD_TRADE_ID, entry, "trade_id is not a positive integer")
    price = _units(fields.get("price"), market.tick, market.max_price)
    if price is None:
        return Anomaly(BAD_PRICE, entry, f"price not on the {market.symbol} tick grid / range")
    qty = _units(fields.get("qty"), market.lot, market.max_qty)
    if qty is None:
        return Anomaly(BAD_QTY, entry, f"qty not on the {market.symbol} lot grid / range")
    return Trade(trade_id, ts, price, qty)


def bucket(ts: int, ms: int) -> int:
    """The start (ms, UTC epoch-aligned) of the bucket of length ``ms`` holding ``ts``."""
    return ts - ts % ms


BucketKey = tuple[str, int]  # (interval name, bucket start ms)


@dataclass
class Position:
    """How far a pair's stream has been applied: the last entry ID read, the last trade_id
    applied, and that trade's time and price (ticks). Stored with the candles, atomically."""

    entry: str = "0-0"
    trade_id: int = 0
    ts: int = 0
    price: int = 0


@dataclass
class Applied:
    """What one batch did: the candles it changed, what it refused, where it got to."""

    changed: dict[BucketKey, Candle] = field(default_factory=dict)
    anomalies: list[Anomaly] = field(default_factory=list)
    trades: int = 0
    position: Position = field(default_factory=Position)


class PairCandles:
    """One pair's candles as far as they are known here, and its position in the stream.

    ``known`` maps (interval, start) to the candle, or None for "known to have no candle".
    The worker seeds it from Redis (``missing`` says which buckets a batch needs that are not
    known) and prunes it to the newest buckets after each batch (``prune``)."""

    def __init__(self, market: Market, position: Position | None = None) -> None:
        self.market = market
        self.position = position or Position()
        self.known: dict[BucketKey, Candle | None] = {}

    def seed(self, key: BucketKey, candle: Candle | None) -> None:
        self.known[key] = candle

    def parse(self, entries: Iterable[tuple[str, Mapping[str, str]]]) -> list[Trade | Anomaly]:
        return [parse_trade(entry, fields, self.market) for entry, fields in entries]

    def missing(self, parsed: Iterable[Trade | Anomaly]) -> set[BucketKey]:
        """The buckets the trades of ``parsed`` fall in that are not known yet."""
        out = set()
        for t in parsed:
            if isinstance(t, Trade):
                for name, ms in INTERVALS.items():
                    key = (name, bucket(t.ts, ms))
                    if key not in self.known:
                        out.add(key)
        return out

    def apply(self, entries: list[str], parsed: list[Trade | Anomaly]) -> Applied:
        """Fold a batch in (``entries``: their stream IDs, ``parsed``: ``parse``'s results).

        Every bucket a trade falls in must be known (``missing`` empty): a KeyError otherwise,
        never a silently new candle over an existing one."""
        out = Applied()
        pos = self.position
        for entry, t in zip(entries, parsed, strict=True):
            pos.entry = entry  # consumed, applied or not: an entry is never read twice
            if isinstance(t, Anomaly):
                out.anomalies.append(t)
                continue
            if t.trade_id <= pos.trade_id:
                out.anomalies.append(Anomaly(REPEAT, entry, f"trade_id {t.trade_id} <= "
                                             f"{pos.trade_id} already applied"))  # fmt: skip
                continue
            if t.trade_id != pos.trade_id + 1:
                lost = f"{pos.trade_id + 1}..{t.trade_id - 1}"
                out.anomalies.append(Anomaly(GAP, entry, f"trade_ids {lost} missing"))
            self._fold(t, out.changed)
            pos.trade_id, pos.ts, pos.price = t.trade_id, t.ts, t.price
            out.trades += 1
        out.position = Position(pos.entry, pos.trade_id, pos.ts, pos.price)
        return out

    def _fold(self, t: Trade, changed: dict[BucketKey, Candle]) -> None:
        for name, ms in INTERVALS.items():
            key = (name, bucket(t.ts, ms))
            candle = self.known[key]
            if candle is None:
                candle = self.known[key] = Candle.of(key[1], t)
            else:
                candle.add(t)
            changed[key] = candle

    def prune(self, keep: int = 2) -> None:
        """Forget all but the newest ``keep`` known buckets of each interval (the worker
        reloads an older one from Redis if a late trade needs it)."""
        for name in INTERVALS:
            starts = sorted((s for (n, s) in self.known if n == name), reverse=True)
            for start in starts[keep:]:
                del self.known[(name, start)]
