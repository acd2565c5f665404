"""The ``shardex feed`` process: index prices from its sources into the perp pairs' engine
shards (docs/perps.md). A thin loop around the pure parts (``sources``, ``combine``).

Every ``interval`` seconds (wall clock: this is a client process of its own, like the market
maker) it takes the latest quote of each source of each perp market, combines them
(``combine``: median of the fresh, non-outlying ones) and sends the index with
``AsyncClient.set_index`` (a ``feed`` key). A source left out is counted in
``shardex_feed_dropped_total{symbol, source, reason}`` and logged when its state changes.

Sources (``--source``, repeatable): ``walk`` (a seeded random walk, the default), ``file:PATH``
(a recorded file, replayed at ``--speed`` and looped), ``binance:URL`` (a WebSocket of
Binance's public trade / bookTicker stream format; ``--binance-symbol PERP=EXCHANGE`` maps
its symbols). Each source's name in metrics and logs is its spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

from shardex import metrics
from shardex.client import AsyncClient, ShardexError
from shardex.feed.combine import combine
from shardex.feed.sources import Quote, Walk, parse_binance, parse_record

log = logging.getLogger("shardex.feed")
SENT = Counter("shardex_feed_sent", "Index prices sent, by perp pair", ["symbol"])
DROPPED = Counter("shardex_feed_dropped", "Rounds a source was left out of a pair's index",
                  ["symbol", "source", "reason"])  # fmt: skip
REFUSED = Counter("shardex_feed_refused", "Index prices the engine shard refused, by code",
                  ["symbol", "code"])  # fmt: skip
INDEX = Gauge("shardex_feed_index_ticks", "The last index sent (ticks of the pair)", ["symbol"])


class FeedError(Exception):
    """A configuration the feed cannot run with (no perp market, a bad source)."""


@dataclass
class FeedConfig:
    endpoint: str
    key: Any = None
    sources: tuple[str, ...] = ("walk",)
    interval: float = 1.0
    seed: int = 1
    step_bps: int = 5
    prices: dict[str, Decimal] = field(default_factory=dict)
    binance_symbols: dict[str, str] = field(default_factory=dict)  # exchange symbol → perp
    stale_ms: int = 5_000
    outlier_bps: int = 200
    speed: float = 1.0
    metrics_port: int = 0
    wait: float = 60.0
    cycles: int = 0  # 0: until stopped


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Feed:
    """The latest quote per (perp pair, source), and the loop that sends the indexes."""

    def __init__(self, cfg: FeedConfig, perps: dict[str, Decimal]) -> None:
        self.cfg = cfg
        self.perps = perps  # symbol → tick
        self.latest: dict[str, dict[str, Quote]] = {s: {} for s in perps}
        self.flagged: dict[tuple[str, str], str] = {}
        self.sent = 0
        start = {s: cfg.prices.get(s, tick * 100_000) for s, tick in perps.items()}
        self.walk = Walk(start, perps, cfg.seed, cfg.step_bps)

    def put(self, q: Quote) -> None:
        if q.symbol in self.latest:
            self.latest[q.symbol][q.source] = q

    def round_prices(self, now: int) -> dict[str, Decimal]:
        """This round's index per pair (pairs with no usable source are left out)."""
        out = {}
        for symbol, quotes in self.latest.items():
            got = combine(quotes.values(), now, self.cfg.stale_ms, self.cfg.outlier_bps)
            for source in quotes:
                reason = got.dropped.get(source, "")
                if reason:
                    DROPPED.labels(symbol, source, reason).inc()
                if self.flagged.get((symbol, source), "") != reason:
                    self.flagged[(symbol, source)] = reason
                    if reason:
                        log.warning("feed: %s: source %s dropped (%s)", symbol, source, reason)
                    else:
                        log.info("feed: %s: source %s used again", symbol, source)
            if got.price is not None:
                out[symbol] = got.price
        return out


async def _replay(feed: Feed, path: str, source: str, speed: float) -> None:
    """A recorded file's quotes, at ``speed`` times their recorded pace, looped; each
    quote is stamped with the time it is replayed (it is fresh when it is sent)."""
    lines = Path(path).read_text().splitlines()
    quotes = [q for q in (parse_record(line, source) for line in lines) if q is not None]
    if not quotes:
        raise FeedError(f"{source}: no quote in the file")
    while True:
        t0, w0 = quotes[0].ts, time.monotonic()
        for q in quotes:
            delay = (q.ts - t0) / 1000 / speed - (time.monotonic() - w0)
            if delay > 0:
                await asyncio.sleep(delay)
            feed.put(q._replace(ts=now_ms()))
        await asyncio.sleep(max(feed.cfg.interval, 0.05))


async def _binance(feed: Feed, url: str, source: str) -> None:
    """A Binance-format WebSocket stream, reconnected with a back-off when it drops."""
    back = 0.5
    while True:
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
                back = 0.5
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    q = parse_binance(msg.data, feed.cfg.binance_symbols, now_ms(), source)
                    if q is not None:
                        feed.put(q)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("feed: %s: %s (reconnecting in %.1f s)", source, exc, back)
        await asyncio.sleep(back)
        back = min(back * 2, 10.0)


def source_task(feed: Feed, spec: str) -> Callable[[], Any] | None:
    """The coroutine factory of one ``--source`` (None: the walk, stepped by the loop)."""
    kind, _, arg = spec.partition(":")
    if kind == "walk" and not arg:
        return None
    if kind == "file" and arg:
        if not Path(arg).is_file():
            raise FeedError(f"source {spec}: no such file")
        return lambda: _replay(feed, arg, spec, feed.cfg.speed)
    if kind == "binance" and arg.startswith(("ws://", "wss://")):
        return lambda: _binance(feed, arg, spec)
    raise FeedError(f"source {spec!r}: expected walk, file:PATH or binance:ws://...")


async def perp_markets(c: AsyncClient, wait: float) -> dict[str, Decimal]:
    """The cluster's perp pairs (symbol → tick), waiting up to ``wait`` s for the cluster."""
    deadline = time.monotonic() + wait
    while True:
        try:
            rules = await c.market_rules()
            return {s: c.markets[s].tick for s, r in rules.items() if r.get("kind") == "perp"}
        except ShardexError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _send(c: AsyncClient, feed: Feed, prices: dict[str, Decimal]) -> None:
    for symbol, price in sorted(prices.items()):
        try:
            res = await c.set_index(symbol, str(price))
        except ShardexError as exc:
            log.warning("feed: %s: index not sent: %s", symbol, exc)
            continue
        if res["ok"]:
            SENT.labels(symbol).inc()
            INDEX.labels(symbol).set(int(Decimal(res["index"]) / feed.perps[symbol]))
            feed.sent += 1
        else:
            REFUSED.labels(symbol, res["code"]).inc()
            log.warning("feed: %s: index refused (%s): %s", symbol, res["code"], res["rejected"])


async def run(cfg: FeedConfig, stop: Callable[[], bool] = lambda: False) -> Feed:
    """Run the feed until ``stop()`` (or ``cfg.cycles`` rounds); the feed's state at the end."""
    async with AsyncClient(cfg.endpoint, key=cfg.key, timeout=5.0) as c:
        perps = await perp_markets(c, cfg.wait)
        if not perps:
            raise FeedError("the cluster has no perp market (kind = \"perp\" in the markets "
                            "file): nothing to feed")  # fmt: skip
        feed = Feed(cfg, perps)
        factories = [source_task(feed, spec) for spec in cfg.sources]
        tasks = [asyncio.ensure_future(f()) for f in factories if f is not None]
        walk = "walk" in cfg.sources
        if cfg.metrics_port:
            metrics.serve(cfg.metrics_port, "feed")
        log.info("feed: %d perp pairs (%s), sources %s", len(perps), ", ".join(sorted(perps)),
                 ", ".join(cfg.sources))  # fmt: skip
        rounds = 0
        try:
            while not stop() and not (cfg.cycles and rounds >= cfg.cycles):
                now = now_ms()
                if walk:
                    for q in feed.walk.step(now):
                        feed.put(q)
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise FeedError(f"a source failed: {t.exception()}")
                await _send(c, feed, feed.round_prices(now))
                rounds += 1
                await asyncio.sleep(cfg.interval)
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        return feed
