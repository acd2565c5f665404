"""``MarketData``: a pair's candles and 24 h ticker, read from the cluster's Redis.

The candles worker (``shardex candles-worker``) keeps them in Redis (docs/candles.md); this is
the SDK's reader of them, and what ``shardex candles`` and ``shardex ticker`` print. Money comes
back as ``Decimal`` (``CandleView``, ``Ticker``), times as integer ms since the Unix epoch UTC.

Credentials: a secure cluster's Redis has ACL users; without ``redis_url`` this reads as user
``reader`` of the local cluster (password in ``DATA_DIR/keys/redis.json``, ``shardex up``
wrote it), a ``redis_url`` naming a user without a password gets it from ``keys_dir``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from shardex.candles.core import INTERVALS
from shardex.candles.fmt import CandleView
from shardex.candles.store import position_key, read_candles, read_window, trades_key
from shardex.candles.ticker import Ticker, fill, ticker, window
from shardex.endpoints import find_redis
from shardex.engine.listing import SYMBOL_RE
from shardex.redisauth import REDIS_FILE, RedisUsers, resolve_url

MAX_LIMIT = 10_080  # candles per request (a stored interval's default retention)


class MarketDataError(ValueError):
    """A request that cannot be answered as asked (unknown interval, bad limit); one line."""


def reader_url(redis_url: str | None, data_dir: str | None, keys_dir: str | None) -> str:
    """The URL to read with (credentials inside: never print it; ``mask_url``)."""
    keys = keys_dir or (str(Path(data_dir or "data") / "keys"))
    if redis_url:
        return resolve_url(redis_url, keys)
    url = find_redis(None, None, data_dir).endpoint
    if (Path(keys) / REDIS_FILE).exists():
        return RedisUsers.load(keys).url(url, "reader")
    return url


class MarketData:
    """Candles and tickers of a cluster (``r``: a redis-py client, else one is made from
    ``redis_url`` / the local cluster as user ``reader``)."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        data_dir: str | None = None,
        keys_dir: str | None = None,
        r: Any = None,
        markets: Mapping[str, Any] | None = None,
    ) -> None:
        self.r = r or redis.Redis.from_url(
            reader_url(redis_url, data_dir, keys_dir), decode_responses=True,
            socket_connect_timeout=3,
        )  # fmt: skip
        self.markets = markets

    def _check(self, symbol: str) -> None:
        """A symbol of the table, or one Redis has trades or candles of (a pair listed at
        runtime is in no markets file); else ``unknown symbol``."""
        if self.markets is None or symbol in self.markets:
            return
        if SYMBOL_RE.fullmatch(symbol) and self.r.exists(position_key(symbol), trades_key(symbol)):
            return
        raise MarketDataError(f"unknown symbol {symbol!r}")

    def candles(
        self,
        symbol: str,
        interval: str = "1m",
        limit: int = 100,
        end: int | None = None,
        flat: bool = False,
    ) -> list[CandleView]:
        """The newest ``limit`` candles of ``interval`` starting at or before ``end`` (ms
        UTC; None: now), oldest first. Stored candles exist only for buckets with trades;
        ``flat=True`` fills the empty ones between (and up to ``end``/now) with flat candles."""
        if interval not in INTERVALS:
            raise MarketDataError(f"interval must be one of {', '.join(INTERVALS)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise MarketDataError(f"limit must be 1..{MAX_LIMIT}")
        self._check(symbol)
        got = [CandleView.parse(m) for m in read_candles(self.r, symbol, interval, limit, end)]
        if not flat:
            return got
        until = end if end is not None else int(time.time() * 1000)
        return fill(got, INTERVALS[interval], until)[-limit:]

    def ticker(self, symbol: str, at: int | None = None) -> Ticker:
        """The rolling 24 h ticker at ``at`` (ms UTC; None: now)."""
        self._check(symbol)
        now = int(time.time() * 1000) if at is None else at
        first, last = window(now)
        members, pos = read_window(self.r, symbol, first, last)
        # the last trade's price, if it is not after ``at`` (a ticker of the past)
        known = bool(pos.get("price")) and int(pos.get("ts") or 0) <= now
        price = Decimal(pos["price"]) if known else None
        return ticker(symbol, [CandleView.parse(m) for m in members], price, now)
