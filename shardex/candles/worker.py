"""The candles worker: reads every pair's trades stream, folds it into candles, commits.

A thin loop around the pure core (``PairCandles``): one ``XREAD BLOCK`` over all pairs'
streams from each pair's stored position, then per pair: parse, load the buckets the batch
needs that are not in memory, apply, and commit candles + position in one atomic script
(``CandleStore.commit``). Nothing is ever acknowledged apart from that commit, so a crash at any
point resumes exactly where the last commit left off. Any Redis error or a moved position
drops the pair's in-memory state: it is reloaded from Redis, the truth.

Refused entries (no ``ts``, a price off the grid, ...) are counted
(``shardex_candles_anomalies_total{symbol,kind}``), logged (at most one line per pair and kind
every ``LOG_EVERY`` seconds, with the count since), and skipped; the worker never stops on
input.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis
from prometheus_client import Counter, Gauge, Histogram

from shardex import health
from shardex.candles.core import ANOMALIES, Anomaly, PairCandles
from shardex.candles.listings import TIMEOUT as LISTINGS_TIMEOUT
from shardex.candles.listings import ListingWatcher, learn_pairs
from shardex.candles.store import DEFAULT_KEEP, TRADES_PREFIX, CandleStore, trades_key
from shardex.clock import REAL, Clock
from shardex.engine import Market
from shardex.metrics import LATENCY_BUCKETS
from shardex.redisauth import mask_url, resolve_url

log = logging.getLogger("shardex.candles")
LOG_EVERY = 5.0  # seconds between two log lines of one (pair, anomaly kind)
LAG_EVERY = 1.0  # seconds between two looks at each stream's top (the lag gauges)
STALL_RETRY = 10.0  # seconds before a stalled pair's stored state is read again

TRADES = Counter("shardex_candles_trades_total", "Trades folded into candles", ["symbol"])
ANOMALY = Counter(
    "shardex_candles_anomalies_total",
    "Trades-stream entries refused (no_ts, bad_*), skipped as repeats, or after a gap",
    ["symbol", "kind"],
)
MOVED = Counter(
    "shardex_candles_position_moved_total",
    "Commits refused because the stored position had moved (another worker): state reloaded",
    ["symbol"],
)
LAG_ENTRIES = Gauge(
    "shardex_candles_lag_entries", "Trades in the stream not yet in the candles", ["symbol"]
)
LAG_MS = Gauge(
    "shardex_candles_lag_ms",
    "Exchange time of the stream's newest trade minus that of the newest trade applied",
    ["symbol"],
)
DELAY_MS = Gauge(
    "shardex_candles_delay_ms",
    "At the last commit: wall-clock time minus the exchange time of its newest trade",
    ["symbol"],
)
COMMIT_TIME = Histogram(
    "shardex_candles_commit_seconds", "Time of one batch commit to Redis", buckets=LATENCY_BUCKETS
)
STALLED = Gauge(
    "shardex_candles_stalled",
    "1 while a pair's stored candles or position cannot be read (ALERT): nothing is written",
    ["symbol"],
)
REDIS_UP = Gauge("shardex_candles_redis_up", "1 when the last Redis call succeeded")


@dataclass
class CandlesConfig:
    redis_url: str
    markets: Mapping[str, Market]
    batch: int = 1000  # entries per pair per read
    keep: int = DEFAULT_KEEP
    block_ms: int = 1000
    metrics_port: int | None = None
    keys_dir: str | None = None  # the password of a URL naming a user comes from here
    endpoint: str | None = None  # the router: pairs listed at runtime (None: the file's only)
    key: Any = None  # the CURVE key to ask it with (``Client(key=...)``; False: insecure)


class CandleWorker:
    """Every pair of ``markets``: its state, read, apply, commit (``step``). Pairs listed at
    runtime join through ``learn`` (the engine shards' market tables)."""

    def __init__(self, cfg: CandlesConfig, r: Any, clock: Clock = REAL) -> None:
        self.cfg = cfg
        self.r = r
        self.clock = clock
        self.markets: dict[str, Market] = dict(cfg.markets)
        self.tables: Any = None  # () -> the shards' newest market tables, or None (no news)
        self.store = CandleStore(r, cfg.keep)
        self.pairs: dict[str, PairCandles] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        self._lag_at = 0.0
        self.stalled: dict[str, float] = {}  # symbol → when its stored state was unreadable
        self.sleep = time.sleep  # (when every pair is stalled: no XREAD to block in)
        for symbol in self.markets:  # every series exported from the start (0), not on first use
            self._export(symbol)

    @staticmethod
    def _export(symbol: str) -> None:
        for kind in ANOMALIES:
            ANOMALY.labels(symbol, kind)
        STALLED.labels(symbol).set(0)

    def learn(self, tables: list[Any]) -> list[str]:
        """Add the pairs the engine shards' market tables (wire form) name and this worker
        lacks (a pair listed at runtime); the symbols added. A known pair is never changed."""
        added = learn_pairs(self.markets, tables)
        for symbol in added:
            self._export(symbol)
            log.info("%s: listed at runtime, its candles are kept from now on", symbol)
        return added

    def pair(self, symbol: str) -> PairCandles:
        """The pair's state, loaded from Redis when not in memory."""
        pc = self.pairs.get(symbol)
        if pc is None:
            market = self.markets[symbol]
            pc = PairCandles(market, self.store.position(market))
            newest = self.store.newest(market)
            if newest and not pc.position.trade_id:  # folding the stream in again: twice
                raise ValueError("candles without a position (delete all or none of its keys)")
            for key, candle in newest.items():
                pc.seed(key, candle)
            self.pairs[symbol] = pc
        return pc

    def positions(self) -> dict[str, str]:
        """Each pair's stream key → its position, leaving out a pair whose stored state is
        unreadable (``STALLED``, looked at again every ``STALL_RETRY`` seconds)."""
        out = {}
        news = self.tables() if self.tables is not None else None
        if news:
            self.learn(news)
        for s in self.markets:
            since = self.stalled.get(s)
            if since is not None and self.clock.monotonic() - since < STALL_RETRY:
                continue
            try:
                out[trades_key(s)] = self.pair(s).position.entry
            except (ValueError, KeyError, redis.exceptions.ResponseError) as exc:
                self.stall(s, exc)
                continue
            if self.stalled.pop(s, None) is not None:  # readable again
                STALLED.labels(s).set(0)
                log.warning("%s: stored candles readable again, resuming", s)
        return out

    def stall(self, symbol: str, exc: Exception) -> None:
        """A pair whose stored candles or position are not ours to fold into: an ALERT, and
        nothing written for it (overwriting could destroy candles) until they are readable."""
        self.pairs.pop(symbol, None)
        self.stalled[symbol] = self.clock.monotonic()
        STALLED.labels(symbol).set(1)
        log.error("ALERT %s: stored candles unreadable, pair stalled (%s)", symbol, exc)

    def step(self) -> int:
        """One read over every pair's stream and its commits; the entries handled."""
        streams = self.positions()
        if not streams:
            self.sleep(self.cfg.block_ms / 1000)
            return 0
        resp = self.r.xread(streams, count=self.cfg.batch, block=self.cfg.block_ms)
        n = 0
        for key, entries in resp or ():
            symbol = key.removeprefix(TRADES_PREFIX)
            try:
                self.handle(symbol, entries)
            except (ValueError, KeyError, redis.exceptions.ResponseError) as exc:
                self.stall(symbol, exc)  # (WRONGTYPE, NOPERM: a key of this pair only)
                continue
            except Exception:
                self.pairs.pop(symbol, None)  # half-applied: reload from Redis, the truth
                raise
            n += len(entries)
        if self.clock.monotonic() - self._lag_at >= LAG_EVERY:
            self.measure_lag()
        return n

    def handle(self, symbol: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Apply and commit one pair's batch."""
        pc = self.pair(symbol)
        before = replace(pc.position)
        parsed = pc.parse(entries)
        missing = pc.missing(parsed)
        if missing:
            for key, candle in self.store.load(pc.market, missing).items():
                pc.seed(key, candle)
        done = pc.apply([e for e, _ in entries], parsed)
        t0 = self.clock.perf_counter()
        if not self.store.commit(pc.market, before, done):
            MOVED.labels(symbol).inc()
            log.warning("%s: the stored position moved (another worker?): reloading", symbol)
            self.pairs.pop(symbol, None)
            return
        COMMIT_TIME.observe(self.clock.perf_counter() - t0)
        pc.prune()
        TRADES.labels(symbol).inc(done.trades)
        if done.trades:
            DELAY_MS.labels(symbol).set(self.clock.time() * 1000 - done.position.ts)
        for a in done.anomalies:
            self.anomaly(symbol, a)

    def anomaly(self, symbol: str, a: Anomaly) -> None:
        """Count it; log it unless this pair logged this kind less than LOG_EVERY ago."""
        ANOMALY.labels(symbol, a.code).inc()
        now = self.clock.monotonic()
        last, quiet = self._logged.get((symbol, a.code), (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._logged[(symbol, a.code)] = (last, quiet + 1)
            return
        more = f" (+{quiet} more since)" if quiet else ""
        log.warning("ANOMALY %s %s entry %s: %s%s", symbol, a.code, a.entry, a.detail, more)
        self._logged[(symbol, a.code)] = (now, 0)

    def measure_lag(self) -> None:
        """Set the lag gauges from each stream's newest entry (one pipelined round trip)."""
        self._lag_at = self.clock.monotonic()
        symbols = list(self.markets)
        pipe = self.r.pipeline(transaction=False)
        for s in symbols:
            pipe.xrevrange(trades_key(s), "+", "-", count=1)
        for s, top in zip(symbols, pipe.execute(), strict=True):
            pc = self.pairs.get(s)
            if pc is None:
                continue
            fields = top[0][1] if top else {}
            tid, ts = _num(fields.get("trade_id")), _num(fields.get("ts"))
            LAG_ENTRIES.labels(s).set(max(0, tid - pc.position.trade_id) if top else 0)
            LAG_MS.labels(s).set(max(0, ts - pc.position.ts) if ts and pc.position.ts else 0)


def _num(raw: Any) -> int:
    return int(raw) if isinstance(raw, str) and raw.isdigit() and len(raw) < 20 else 0


def connect(cfg: CandlesConfig) -> Any:
    """A redis-py client for the worker (a URL naming a user gets its password from the keys
    dir: never on a command line)."""
    url = resolve_url(cfg.redis_url, cfg.keys_dir, create=cfg.keys_dir is not None)
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=3,
                                socket_timeout=cfg.block_ms / 1000 + 10)  # fmt: skip


def run_worker(cfg: CandlesConfig, clock: Clock = REAL) -> None:
    """Run until SIGTERM/SIGINT. Redis errors: pause (growing to 5 s), reload, go on."""
    health.HEALTH.set("candles-worker", health.gauge_probe(
        health.registry_gauge("shardex_candles_redis_up"), "redis_down",
        "the worker's last Redis call failed (or none has succeeded yet)"))
    health.start(cfg.metrics_port, addr="0.0.0.0")  # (all interfaces, as it always bound)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    worker = CandleWorker(cfg, connect(cfg), clock)
    log.info("candles worker: %d pairs from %s", len(cfg.markets), mask_url(cfg.redis_url))
    watcher = None
    if cfg.endpoint:
        watcher = ListingWatcher(cfg.endpoint, cfg.key)
        worker.tables = watcher.take
        watcher.start()
    try:
        _loop(worker, stop)
    finally:
        if watcher is not None:  # (its sockets closed before the interpreter's exit)
            watcher.stop()
            watcher.join(LISTINGS_TIMEOUT + 1)


def _loop(worker: CandleWorker, stop: list[int]) -> None:
    """Step until ``stop``; Redis errors pause (growing to 5 s) and reload."""
    pause = 0.2
    while not stop:
        try:
            worker.step()
            REDIS_UP.set(1)
            pause = 0.2
        except redis.exceptions.RedisError as exc:
            REDIS_UP.set(0)
            log.warning("redis: %s; retrying in %.1f s", exc, pause)
            worker.pairs.clear()
            time.sleep(pause)
            pause = min(5.0, pause * 2)
        except KeyboardInterrupt:
            break
