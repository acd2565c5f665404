"""Bridge process: shard event PUB streams → Redis Streams, in order, exactly once.

Correctness comes from sequence numbers, not from the socket (PUB drops silently at its
high-water mark):

* Every event carries its shard's ``seq``. Entries are written with the explicit stream ID
  ``<seq>-0``, so Redis itself refuses a second copy ("equal or smaller than the target stream top
  item") and a restarted bridge can never duplicate.
* The bridge resumes from the last ID in ``shardex:events:<shard>``. A hole in the seqs it
  receives, or a shard whose ``seq`` (polled every second) is ahead of what arrived, is repaired by
  asking that shard to re-send the range (``OP_EVENTS``: its in-memory ring, else its journal). A
  range that is gone is logged and counted (``shardex_bridge_lost_events_total``), never hidden.
* Writes are batched into one server-side script call per batch (``EVALSHA`` of a msgpack blob):
  the script does one ``XADD`` per event into ``shardex:events:<shard>`` and one per trade into
  ``shardex:trades:<SYMBOL>``, atomically. Encoding one blob instead of thousands of redis-py
  commands is what lifts the write rate past redis-py's own ~28k commands/s here.
* Redis down: the batch is retried with back-off; on reconnect the bridge re-reads the last
  written seq from Redis (an AOF may have lost its last second) and repairs from there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis.asyncio as aioredis
import zmq
import zmq.asyncio
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shardex.engine import Market
from shardex.engine.codes import EV_TRADE
from shardex.metrics import LATENCY_BUCKETS, serve
from shardex.protocol import (
    OP_EVENTS,
    OP_STATUS,
    decode_events,
    decode_reply,
    encode_request,
    event_to_json,
)

log = logging.getLogger("shardex.bridge")

PREFIX = "shardex:"

# One call writes a whole batch. ARGV: blob, events stream key, trades key prefix, maxlen.
# blob = msgpack [[id, [field, value, ...], symbol-or-nil, [trade fields...]], ...]
WRITE_SCRIPT = """
local evs = cmsgpack.unpack(ARGV[1])
local stream, tprefix, maxlen = ARGV[2], ARGV[3], ARGV[4]
local written, dups, trades = 0, 0, 0
for i = 1, #evs do
  local e = evs[i]
  local r
  if maxlen ~= '0' then
    r = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, e[1], unpack(e[2]))
  else
    r = redis.pcall('XADD', stream, e[1], unpack(e[2]))
  end
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'equal or smaller', 1, true) then
      dups = dups + 1
    else
      return redis.error_reply(r.err)
    end
  else
    written = written + 1
    if e[3] then
      trades = trades + 1
      if maxlen ~= '0' then
        redis.call('XADD', tprefix .. e[3], 'MAXLEN', '~', maxlen, e[1], unpack(e[4]))
      else
        redis.call('XADD', tprefix .. e[3], e[1], unpack(e[4]))
      end
    end
  end
end
return {written, dups, trades}
"""

WRITTEN = Counter("shardex_bridge_events_written_total", "Events written to Redis", ["shard"])
TRADES = Counter("shardex_bridge_trades_written_total", "Trades written to Redis", ["shard"])
DUPS = Counter(
    "shardex_bridge_duplicates_total", "Entries Redis refused as already written", ["shard"]
)
REPAIRED = Counter(
    "shardex_bridge_repaired_events_total", "Events fetched again to fill gaps", ["shard"]
)
LOST = Counter(
    "shardex_bridge_lost_events_total", "Events no longer available anywhere (ALERT)", ["shard"]
)
LAG = Gauge("shardex_bridge_lag_events", "Shard seq minus last seq written to Redis", ["shard"])
LAST = Gauge("shardex_bridge_last_seq", "Last seq written to Redis", ["shard"])
XADD_TIME = Histogram(
    "shardex_bridge_write_seconds", "Time of one batch write to Redis", buckets=LATENCY_BUCKETS
)
REDIS_UP = Gauge("shardex_bridge_redis_up", "1 when the last Redis call succeeded")


def event_fields(ev: tuple, markets: Mapping[str, Market], shard: int) -> list[str]:
    d = event_to_json(ev, markets)
    out = []
    for k, v in d.items():
        out.append(k)
        out.append(v if isinstance(v, str) else str(v))
    out.append("shard")
    out.append(str(shard))
    return out


@dataclass
class ShardState:
    index: int
    last: int = 0  # last seq known written to Redis
    pending: list[tuple] = field(default_factory=list)  # received, not yet written, seq order
    shard_seq: int = 0  # latest seq the shard reported or we saw
    repair_to: int = 0  # the shard's seq one poll ago: must be written by now
    prev_poll: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lost: int = 0


@dataclass
class BridgeConfig:
    router: str  # router endpoint: the topology (shard PUB and direct endpoints) comes from it
    redis_url: str
    markets: Mapping[str, Market]
    prefix: str = PREFIX
    maxlen: int = 0  # 0: no trimming; else approximate MAXLEN ~ per stream
    batch: int = 2000  # events per script call
    sub_hwm: int = 1_000_000
    max_pending: int = 2_000_000  # per shard; beyond this we drop and repair later
    metrics_port: int | None = None
    poll_interval: float = 0.5


class Bridge:
    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.ctx = zmq.asyncio.Context()
        self.redis = aioredis.from_url(cfg.redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.sha: str | None = None
        self.shards: list[ShardState] = []
        self.endpoints: list[dict[str, Any]] = []
        self.req_socks: list[zmq.asyncio.Socket] = []
        self.running = True
        self._req = 0
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._outage_lock = asyncio.Lock()
        self._fmt: dict[tuple[str, int, int], str] = {}

    # -- setup ------------------------------------------------------------------------------------

    async def topology(self) -> list[dict[str, Any]]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.cfg.router)
        try:
            while self.running:
                await sock.send_multipart([b"", b"t", encode_request([])])
                if await sock.poll(2000):
                    error, results = decode_reply((await sock.recv_multipart())[1])
                    info = results[0]
                    if all(t.get("pub") and t.get("direct") for t in info["topology"]):
                        return info["topology"]
                log.info("waiting for every shard to register with the router %s", self.cfg.router)
                await asyncio.sleep(0.5)
        finally:
            sock.close(0)
        return []

    async def last_written(self, shard: int) -> int:
        entries = await self.redis.xrevrange(self._events_key(shard), count=1)
        if not entries:
            return 0
        return int(entries[0][0].split(b"-", 1)[0])

    def _events_key(self, shard: int) -> str:
        return f"{self.cfg.prefix}events:{shard}"

    # -- main -----------------------------------------------------------------------------------

    async def run(self) -> None:
        self.endpoints = await self.topology()
        if not self.running:
            return
        n = len(self.endpoints)
        self.shards = [ShardState(i) for i in range(n)]
        await self._until_redis(self._sync_last)
        for st in self.shards:
            st.prev_poll = st.last
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.cfg.sub_hwm)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        for t in self.endpoints:
            sub.connect(t["pub"])
            req = self.ctx.socket(zmq.DEALER)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(t["direct"])
            self.req_socks.append(req)
        log.info(
            "bridge up: %d shards → %s (resuming at seqs %s)",
            n,
            self.cfg.redis_url,
            [s.last for s in self.shards],
        )
        tasks = [asyncio.ensure_future(self._reader(sub)), asyncio.ensure_future(self._poller())]
        tasks += [asyncio.ensure_future(self._writer(s)) for s in self.shards]
        while self.running:
            await asyncio.sleep(0.2)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        for t in tasks:
            t.cancel()
        sub.close(0)
        for s in self.req_socks:
            s.close(0)
        await self.redis.aclose()

    async def _sync_last(self) -> None:
        for s in self.shards:
            s.last = await self.last_written(s.index)
            LAST.labels(str(s.index)).set(s.last)

    async def _reader(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sub.recv_multipart()
            try:
                shard, events = decode_events(frames[1])
                st = self.shards[shard]
            except Exception:
                log.warning("ignoring a malformed event message")
                continue
            if len(st.pending) < self.cfg.max_pending:
                st.pending.extend(events)
            # else: dropped on purpose; the poller sees the shard ahead and repairs
            if events:
                st.shard_seq = max(st.shard_seq, events[-1][1])
            st.wake.set()

    async def _poller(self) -> None:
        """Each poll interval: ask every shard its seq (lag metric; gaps no later event shows)."""
        while True:
            for st in self.shards:
                res = await self._request(st.index, (OP_STATUS,), timeout=1.0)
                if res is not None and "seq" in res:
                    if res["seq"] < st.last:
                        log.error(
                            "shard %d is at seq %d but Redis already has %d: the shard "
                            "lost state (no journal?); its new events will be refused",
                            st.index,
                            res["seq"],
                            st.last,
                        )
                    # What the shard had one poll ago and we still have not written is lost
                    # in transit (e.g. the tail of a burst dropped by PUB): repair it.
                    if st.prev_poll > st.last:
                        st.repair_to = max(st.repair_to, st.prev_poll)
                        st.wake.set()
                    st.prev_poll = res["seq"]
                    st.shard_seq = max(st.shard_seq, res["seq"])
                LAG.labels(str(st.index)).set(max(0, st.shard_seq - st.last))
            await asyncio.sleep(self.cfg.poll_interval)

    async def _writer(self, st: ShardState) -> None:
        while True:
            await st.wake.wait()
            st.wake.clear()
            progressed = await self._drain(st)
            if progressed and not st.pending and st.repair_to > st.last:
                # nothing received beyond what is written, yet the shard was ahead a poll ago
                await self._repair(st, st.last + 1, st.repair_to)
            LAG.labels(str(st.index)).set(max(0, st.shard_seq - st.last))
            if not progressed or st.pending or st.repair_to > st.last:
                await asyncio.sleep(0.2)  # e.g. shard unreachable for a repair: retry soon
                st.wake.set()

    async def _drain(self, st: ShardState) -> bool:
        """Write pending events in seq order, repairing holes. False if stuck on a hole."""
        pending, st.pending = st.pending, []
        batch: list[tuple] = []
        i = 0
        while i < len(pending):
            ev = pending[i]
            seq = ev[1]
            expect = st.last + len(batch) + 1
            if seq < expect:
                i += 1  # already written, or a copy we fetched while repairing
                continue
            if seq > expect:
                await self._write(st, batch)
                batch = []
                await self._repair(st, st.last + 1, seq - 1)
                if seq > st.last + 1:
                    st.pending = pending[i:] + st.pending  # keep order; retry later
                    return False
                continue
            batch.append(ev)
            i += 1
            if len(batch) >= self.cfg.batch:
                await self._write(st, batch)
                batch = []
        await self._write(st, batch)
        return True

    async def _repair(self, st: ShardState, first: int, last: int) -> None:
        while first <= last and self.running:
            res = await self._request(st.index, (OP_EVENTS, first, last), timeout=5.0)
            if res is None:
                log.warning(
                    "shard %d did not answer a repair request for %d..%d", st.index, first, last
                )
                return
            if "error" in res:
                gone = last - first + 1
                log.error(
                    "ALERT shard %d events %d..%d cannot be repaired (%s): %d events "
                    "lost for Redis",
                    st.index,
                    first,
                    last,
                    res["error"],
                    gone,
                )
                LOST.labels(str(st.index)).inc(gone)
                st.lost += gone
                st.last = last  # move on: later events must still flow
                LAST.labels(str(st.index)).set(st.last)
                return
            evs = res["events"]
            if not evs:
                return
            REPAIRED.labels(str(st.index)).inc(len(evs))
            for k in range(0, len(evs), self.cfg.batch):
                await self._write(st, list(evs[k : k + self.cfg.batch]))
            first = evs[-1][1] + 1

    async def _request(self, shard: int, cmd: tuple, timeout: float) -> dict[str, Any] | None:
        sock = self.req_socks[shard]
        self._req += 1
        req = self._req.to_bytes(8, "little")
        await sock.send_multipart([b"bridge", req, encode_request([cmd])])
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not await sock.poll(int(left * 1000) + 1):
                break
            frames = await sock.recv_multipart()
            if frames[0] != req:
                continue  # a late answer to an earlier request
            error, results = decode_reply(frames[1])
            return None if error is not None else results[0]
        return None

    # -- Redis ----------------------------------------------------------------------------------

    async def _write(self, st: ShardState, batch: list[tuple]) -> None:
        """One script call for the batch (contiguous seqs starting at ``st.last + 1``)."""
        shard = st.index
        while batch:
            blob = self._pack([self._item(ev, shard) for ev in batch])
            args = (
                blob,
                self._events_key(shard),
                f"{self.cfg.prefix}trades:",
                str(self.cfg.maxlen),
            )
            t0 = time.perf_counter()
            try:
                written, dups, trades = await self._eval(args)
            except _TRANSIENT as exc:
                if not _transient(exc):
                    raise
                await self._outage(exc)
                # Redis is back and ``last`` re-read from it. Retry what it still lacks, if
                # that is contiguous; otherwise leave it to gap repair (Redis lost entries).
                batch = [ev for ev in batch if ev[1] > st.last]
                if batch and batch[0][1] != st.last + 1:
                    return
                continue
            XADD_TIME.observe(time.perf_counter() - t0)
            REDIS_UP.set(1)
            WRITTEN.labels(str(shard)).inc(written)
            TRADES.labels(str(shard)).inc(trades)
            DUPS.labels(str(shard)).inc(dups)
            st.last = max(st.last, batch[-1][1])
            LAST.labels(str(shard)).set(st.last)
            return

    def _item(self, ev: tuple, shard: int) -> tuple:
        if ev[0] != EV_TRADE:
            return (f"{ev[1]}-0", event_fields(ev, self.cfg.markets, shard))
        # Trades are the bulk: format them directly, with cached decimal strings (prices and
        # sizes repeat a lot, and Decimal formatting is the costliest step here).
        _, seq, symbol, price, qty, taker, maker, side, trade_id = ev
        cache = self._fmt
        p = cache.get((symbol, 0, price))
        if p is None:
            p = cache[(symbol, 0, price)] = self.cfg.markets[symbol].price_str(price)
        q = cache.get((symbol, 1, qty))
        if q is None:
            q = cache[(symbol, 1, qty)] = self.cfg.markets[symbol].qty_str(qty)
        if len(cache) > 200_000:
            cache.clear()
        tail = ["price", p, "qty", q, "taker", taker, "maker", maker,
                "taker_side", ("buy", "sell")[side], "trade_id", str(trade_id),
                "seq", str(seq), "shard", str(shard)]  # fmt: skip
        # the events stream entry is the trades stream entry plus what the stream key implies
        return (f"{seq}-0", ["ev", "trade", "symbol", symbol, *tail], symbol, tail)

    async def _outage(self, exc: Exception) -> None:
        """Wait until Redis answers again (one waiter for all shards), then re-sync ``last``."""
        async with self._outage_lock:
            delay = 0.1
            logged = False
            while True:
                try:
                    await self.redis.ping()
                    await self._sync_last()
                    break
                except _TRANSIENT as again:
                    if not _transient(again):
                        raise
                    REDIS_UP.set(0)
                    if not logged:
                        log.error("Redis unavailable (%s); retrying", exc)
                        logged = True
                    await asyncio.sleep(delay)
                    delay = min(2.0, delay * 2)
            self.sha = None
            if logged:
                log.info("Redis is back; resuming at seqs %s", [s.last for s in self.shards])

    async def _eval(self, args: tuple) -> tuple[int, int, int]:
        if self.sha is None:
            self.sha = await self.redis.script_load(WRITE_SCRIPT)
        try:
            res = await self.redis.evalsha(self.sha, 0, *args)
        except NoScriptError:
            self.sha = await self.redis.script_load(WRITE_SCRIPT)
            res = await self.redis.evalsha(self.sha, 0, *args)
        return int(res[0]), int(res[1]), int(res[2])

    async def _until_redis(self, call):
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                if not _transient(exc):
                    raise
                await self._outage(exc)


_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError, ResponseError)


def _transient(exc: Exception) -> bool:
    """Connection trouble, or a server that is still loading its AOF after a restart."""
    if isinstance(exc, ResponseError):
        return "LOADING" in str(exc) or "MASTERDOWN" in str(exc)
    return True


def run_bridge(cfg: BridgeConfig) -> None:
    import uvloop

    serve(cfg.metrics_port, "bridge")
    bridge_holder: dict[str, Bridge] = {}

    async def main() -> None:
        bridge = Bridge(cfg)
        bridge_holder["b"] = bridge
        loop = asyncio.get_running_loop()

        def stop() -> None:
            bridge.running = False

        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        await bridge.run()

    log.info("bridge starting (pid %d)", os.getpid())
    uvloop.run(main())
    log.info("bridge stopped")
