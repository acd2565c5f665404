"""Candles in Redis: the keys, the atomic commit script, and the reads.

Keys, per pair (``PREFIX`` = ``shardex:candles:``):

* ``shardex:candles:<SYMBOL>:<interval>`` (interval 1m 5m 15m 1h 4h 1d): a sorted set, one
  member per candle (``fmt.member``: JSON, decimal strings), score = the bucket's start (ms UTC).
* ``shardex:candles:<SYMBOL>:pos``: a hash, how far the trades stream has been applied:
  ``entry`` (last stream entry ID read), ``trade_id``, ``ts`` and ``price`` of the last trade.

Exactly once: ``COMMIT_SCRIPT`` writes a batch's changed candles *and* the new position in one
server-side script, which Redis runs atomically, and only if the stored position is still the
one the batch started from (compare-and-set). A worker killed before the script ran wrote
nothing and resumes from the old position; after, both are written. A second worker on the same
pair (or one that lost its state) finds the position moved, writes nothing, and reloads.
Retention: after writing, each interval keeps its newest ``keep`` buckets' span: a candle
older than ``keep × interval`` before the newest one is dropped (by trade time, not the clock,
so the same trades always leave the same candles).
"""

from __future__ import annotations

from typing import Any

from shardex.candles.core import INTERVALS, Applied, BucketKey, Candle, Position
from shardex.candles.fmt import candle_of, member, position_fields, position_of
from shardex.engine import Market

PREFIX = "shardex:candles:"
TRADES_PREFIX = "shardex:trades:"
NAMES = tuple(INTERVALS)
DEFAULT_KEEP = 10_080  # buckets of each interval (1m: 7 days; 1d: 27 years)
MIN_KEEP = 1_440  # the ticker reads 24 h of 1m candles

# KEYS: the position hash, then the sorted set of each interval (in ``NAMES`` order).
# ARGV: expected entry, expected trade_id, new entry, new trade_id, new ts, new price,
# number of intervals N, N retention spans (ms, 0 keeps all), then triples
# (interval index 1..N, bucket start, member) of every changed candle.
# Returns {1} when written, {0, stored entry, stored trade_id} when the position had moved.
COMMIT_SCRIPT = """
local pos = KEYS[1]
local entry = redis.call('HGET', pos, 'entry') or '0-0'
local tid = redis.call('HGET', pos, 'trade_id') or '0'
if entry ~= ARGV[1] or tid ~= ARGV[2] then
  return {0, entry, tid}
end
local n = tonumber(ARGV[7])
local touched = {}
local i = 8 + n
while i <= #ARGV do
  local j = tonumber(ARGV[i])
  local key = KEYS[1 + j]
  redis.call('ZREMRANGEBYSCORE', key, ARGV[i + 1], ARGV[i + 1])
  redis.call('ZADD', key, ARGV[i + 1], ARGV[i + 2])
  touched[j] = true
  i = i + 3
end
for j = 1, n do
  local span = tonumber(ARGV[7 + j])
  if touched[j] and span > 0 then
    local top = redis.call('ZREVRANGE', KEYS[1 + j], 0, 0, 'WITHSCORES')
    if #top == 2 then
      redis.call('ZREMRANGEBYSCORE', KEYS[1 + j], '-inf', tonumber(top[2]) - span)
    end
  end
end
redis.call('HSET', pos, 'entry', ARGV[3], 'trade_id', ARGV[4], 'ts', ARGV[5], 'price', ARGV[6])
return {1}
"""


def interval_key(symbol: str, interval: str) -> str:
    return f"{PREFIX}{symbol}:{interval}"


def position_key(symbol: str) -> str:
    return f"{PREFIX}{symbol}:pos"


def trades_key(symbol: str) -> str:
    return f"{TRADES_PREFIX}{symbol}"


class CandleStore:
    """One Redis connection's view of the candles (redis-py client, ``decode_responses``)."""

    def __init__(self, r: Any, keep: int = DEFAULT_KEEP) -> None:
        if keep < MIN_KEEP:
            raise ValueError(f"keep must be >= {MIN_KEEP} (the ticker reads 24 h of 1m candles)")
        self.r = r
        self.spans = [keep * INTERVALS[n] for n in NAMES]
        self._commit = r.register_script(COMMIT_SCRIPT)

    def position(self, market: Market) -> Position:
        return position_of(self.r.hgetall(position_key(market.symbol)), market)

    def load(self, market: Market, keys: set[BucketKey]) -> dict[BucketKey, Candle | None]:
        """The stored candle of each bucket (None where there is none), in one round trip."""
        order = sorted(keys)
        pipe = self.r.pipeline(transaction=False)
        for name, start in order:
            pipe.zrangebyscore(interval_key(market.symbol, name), start, start)
        out: dict[BucketKey, Candle | None] = {}
        for key, found in zip(order, pipe.execute(), strict=True):
            out[key] = candle_of(found[0], market) if found else None
        return out

    def newest(self, market: Market) -> dict[BucketKey, Candle]:
        """The newest stored candle of every interval (what a restarted worker folds into)."""
        pipe = self.r.pipeline(transaction=False)
        for name in NAMES:
            pipe.zrevrange(interval_key(market.symbol, name), 0, 0)
        out = {}
        for name, found in zip(NAMES, pipe.execute(), strict=True):
            if found:
                c = candle_of(found[0], market)
                out[(name, c.start)] = c
        return out

    def commit(self, market: Market, before: Position, done: Applied) -> bool:
        """Write ``done``'s candles and position if the stored one is still ``before``;
        False (nothing written) if it moved."""
        p = position_fields(done.position, market)
        argv: list[Any] = [before.entry, str(before.trade_id), p["entry"], p["trade_id"],
                           p["ts"], p["price"], len(NAMES), *self.spans]  # fmt: skip
        index = {n: i + 1 for i, n in enumerate(NAMES)}
        for (name, start), candle in done.changed.items():
            argv += [index[name], start, member(candle, market)]
        keys = [position_key(market.symbol)] + [interval_key(market.symbol, n) for n in NAMES]
        res = self._commit(keys=keys, args=argv)
        return bool(int(res[0]))


def read_candles(r: Any, symbol: str, interval: str, limit: int,
                 end: int | None = None) -> list[str]:  # fmt: skip
    """The newest ``limit`` stored candles (raw members) starting at or before ``end`` (ms;
    None: the newest), oldest first."""
    hi = "+inf" if end is None else str(end)
    got = r.zrevrangebyscore(interval_key(symbol, interval), hi, "-inf", start=0, num=limit)
    return list(reversed(got))


def read_window(r: Any, symbol: str, first: int, last: int) -> tuple[list[str], dict[str, str]]:
    """The 1m members with starts in [first, last] and the pair's position hash."""
    pipe = r.pipeline(transaction=False)
    pipe.zrangebyscore(interval_key(symbol, "1m"), first, last)
    pipe.hgetall(position_key(symbol))
    members, pos = pipe.execute()
    return members, pos
