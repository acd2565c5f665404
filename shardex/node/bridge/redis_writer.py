"""The bridge's side of Redis: resume points, batched writes through ``WRITE_SCRIPT`` (with its
epoch fence), conflicts and trims reported, and outages waited out.

Every write is one ``EVALSHA`` of a msgpack blob. A batch that is not (or not surely) written
goes back to its tracker; copies written twice are recognised as duplicates by their IDs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shardex.aio import honour_cancel, within
from shardex.clock import REAL, Clock
from shardex.node.bridge.config import BridgeConfig
from shardex.node.bridge.entries import BALANCE_KINDS, EntryFormatter
from shardex.node.bridge.links import ShardState
from shardex.node.bridge.metrics import (
    CONFLICTS,
    DUPS,
    LAST,
    REDIS_UP,
    STALE_EPOCH,
    TRADES,
    WRITTEN,
    XADD_TIME,
    Alerts,
)
from shardex.node.bridge.script import WRITE_SCRIPT
from shardex.redisauth import mask_url, resolve_url, url_user
from shardex.wire.layouts import AE_KIND, AE_SEQ, EV_SEQ

log = logging.getLogger("shardex.bridge")

CLOSE_WAIT = 1.0  # seconds a stopping bridge waits to close its Redis connections
RESUME_SCAN = 1000  # entries looked at from a stream's top to find our last one

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError, ResponseError)
T = TypeVar("T")
# Where the bridge gets its Redis client, given the resolved URL: redis.asyncio's (a real
# Redis) unless a caller injects another (the simulator's store, ``shardex.sim.store``).
RedisConnect = Callable[[str], Any]


def connect(url: str) -> Any:
    """A real Redis's asyncio client, with the bridge's timeouts."""
    return aioredis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def _transient(exc: Exception) -> bool:
    """Connection trouble, or a server that is still loading its AOF after a restart."""
    if isinstance(exc, ResponseError):
        return "LOADING" in str(exc) or "MASTERDOWN" in str(exc)
    return True


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class RedisWriter:
    """Writes each shard's batches to its streams; ``shards``/``accounts`` are the states whose
    resume points an outage re-reads (set by the loop once it knows the topology). ``clock``:
    the bridge's (``shardex.clock``): the trackers' "now" and the write-time metric."""

    def __init__(self, cfg: BridgeConfig, alerts: Alerts, entries: EntryFormatter,
                 clock: Clock = REAL, *, redis: RedisConnect | None = None) -> None:  # fmt: skip
        """``redis``: the client factory (default ``connect``: a real Redis)."""
        self.mono, self.perf = clock.monotonic, clock.perf_counter
        self.cfg = cfg
        self.alerts = alerts
        self.entries = entries
        # the password (if it comes from the keys dir) lives only here and in redis-py
        url = resolve_url(cfg.redis_url, cfg.keys_dir, create=True)
        self.shown = mask_url(url)
        self._password = url_user(url)[1]
        self.redis = (redis or connect)(url)
        self.sha: str | None = None
        self.shards: list[ShardState] = []
        self.accounts: list[ShardState] = []
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._outage_lock = asyncio.Lock()
        self._deleted: dict[str, int] = {}  # stream → entries deleted, as last reported (ALERT)
        # events stream → the seq of the last entry this bridge knows is there (written, or read
        # back at a resume): a batch that follows it asks the script to check it still is
        self._top: dict[str, int] = {}

    # -- keys and resume points -------------------------------------------------------------------

    def events_key(self, shard: int) -> str:
        return f"{self.cfg.prefix}events:{shard}"

    def stream_key(self, st: ShardState) -> str:
        """``shardex:events:<i>`` for an engine shard, ``shardex:balances:<j>`` for an account
        shard (resuming after a restart reads the top of this stream)."""
        if st.kind == "balances":
            return f"{self.cfg.prefix}balances:{st.index}"
        return self.events_key(st.index)

    async def last_written(self, st: ShardState, at_most: int | None = None) -> int:
        """Seq of the highest entry of the shard's events stream that is ours (≤ ``at_most``).

        Our entries have ID ``<seq>-0`` and fields ``seq`` and ``shard`` that say the same; a
        foreign entry above them (forged, another writer) is skipped with an ALERT, so it can
        never make the bridge believe that events it never wrote are in Redis. Resuming lower
        than needed is safe: what is already there is recognised as a duplicate.
        """
        top = "+" if at_most is None else f"{at_most}-0"
        key = self.stream_key(st)
        entries = await self.redis.xrevrange(key, top, "-", count=RESUME_SCAN)
        want_shard = str(st.index).encode()
        for n, (eid, fields) in enumerate(entries):
            head, _, tail = eid.partition(b"-")
            if tail == b"0" and fields.get(b"seq") == head and fields.get(b"shard") == want_shard:
                if n:
                    self._foreign_top(st, n, entries[0][0])
                return int(head)
        if entries:
            self._foreign_top(st, len(entries), entries[0][0])
        return 0

    def _foreign_top(self, st: ShardState, n: int, top: bytes) -> None:
        self.alerts.alert(
            st.label,
            "conflict",
            "foreign top",
            "%s has %d foreign entries at its top (up to %s): not ours, resuming below them; "
            "our events at their IDs will be counted as conflicts",
            self.stream_key(st),
            n,
            _text(top),
        )

    async def sync_last(self) -> None:
        """Every shard's tracker resumes from what Redis holds (start-up, after an outage)."""
        for s in (*self.shards, *self.accounts):
            await self.sync_one(s)

    async def sync_one(self, s: ShardState) -> None:
        """Shard ``s``'s tracker resumes from what Redis holds for it (also a shard the bridge
        follows from a reshard on: ``shardex.node.bridge.follow``)."""
        last = await self.last_written(s)
        s.tracker.resume(last, self.mono())
        self._top[self.stream_key(s)] = last
        LAST.labels(s.label).set(s.tracker.last)

    # -- writes -----------------------------------------------------------------------------------

    async def write(self, st: ShardState, batch: list[tuple]) -> bool:
        """One script call for the batch (contiguous seqs starting at ``last + 1``). False when
        Redis holds a newer epoch than this batch's: nothing written, the batch is kept, and the
        caller follows the newer leader."""
        if st.kind == "balances":
            return await self._write_balances(st, batch)
        items, batch = self._items(st, batch)
        if not batch:
            return True
        tprefix = f"{self.cfg.prefix}trades:"
        keys = [self.events_key(st.index), *{tprefix + it[2] for it in items if len(it) > 2}]
        prev = batch[0][EV_SEQ] - 1
        follows = prev if prev > 0 and self._top.get(keys[0]) == prev else 0
        res = await self._script(st, batch, keys, self._pack(items), follows)
        if res is None:
            return True
        written, dups, trades, conflicts, newer = res
        if newer:
            return self._newer_in_redis(st, batch, newer)
        if written < 0:
            return await self._lost_in_redis(st, batch, prev)
        TRADES.labels(st.label).inc(trades)
        self._written(st, batch, written, dups, conflicts)
        if conflicts:  # (an entry Redis would not take, e.g. below a deleted top: the next
            self._top.pop(keys[0], None)  # batch must not ask for it, or it would loop)
        else:
            self._top[keys[0]] = batch[-1][EV_SEQ]
        return True

    async def _lost_in_redis(self, st: ShardState, batch: list[tuple], prev: int) -> bool:
        """The stream lacks entry ``prev``, written before: Redis lost writes without
        an error this bridge saw (a failover of an asynchronously replicated Redis; redis-py's
        retries reconnect unseen). Nothing of the batch was written: ALERT, keep the batch,
        and every shard resumes from what Redis holds, as after an outage (it likely lost the
        other streams' last writes too); the shards repair what is missing."""
        st.tracker.putback(batch)
        try:
            await self.sync_last()
        except _TRANSIENT as exc:  # (down again: wait it out, which re-reads them too)
            await self.outage(exc)
        self.alerts.alert(st.label, "redis", "lost writes",
                          "%s lacks entries up to seq %d that this bridge wrote (Redis lost "
                          "them: a failover of an asynchronously replicated Redis?); resumed "
                          "at seq %d, repairing from the shard", self.stream_key(st), prev,
                          st.tracker.last)  # fmt: skip
        return True

    def _items(self, st: ShardState, batch: list[tuple]) -> tuple[list[tuple], list[tuple]]:
        """(entries, the batch they cover): an event the checks let through but formatting
        refused ends the batch there (counted malformed; what follows goes back)."""
        item, ts_of, i = self.entries.item, st.tracker.times.get, st.index
        try:
            return [item(ev, i, ts_of(ev[EV_SEQ], 0)) for ev in batch], batch
        except Exception:  # find the one that fails below
            pass
        items: list[tuple] = []
        for ev in batch:
            try:
                items.append(item(ev, i, ts_of(ev[EV_SEQ], 0)))
            except Exception as exc:
                seq = ev[EV_SEQ]
                self.alerts.malformed("pub", 1, f"event {seq} cannot be formatted: {exc!r}")
                st.tracker.putback([e for e in batch if e[EV_SEQ] > seq])
                return items, batch[: len(items)]
        return items, batch

    async def _write_balances(self, st: ShardState, batch: list[tuple]) -> bool:
        """An account shard's batch (contiguous seqs): its balance and fee-ledger changes go to
        ``shardex:balances:<j>`` with ID ``<seq>-0`` (so Redis refuses a second copy, as for
        trades); its other events (forwards, refusals...) only advance the seq."""
        items = self._account_items(st, batch)
        if not items:  # nothing for Redis: only the seq moves
            st.tracker.written(batch[-1][AE_SEQ], self.mono())
            LAST.labels(st.label).set(st.tracker.last)
            return True
        key = self.stream_key(st)
        keys = [key]
        if any(not it[1] for it in items):  # new orders: their stream is declared too
            keys.append(f"{self.cfg.prefix}orders:{st.index}")
        # the stream's entries are the balance changes only (their seqs skip the rest): the
        # batch follows the newest one this bridge knows is there, which a failover may lose
        follows = self._top.get(key, 0)
        res = await self._script(st, batch, keys, self._pack(items), follows, "orders:")
        if res is None:
            return True
        written, dups, _, conflicts, newer = res
        if newer:
            return self._newer_in_redis(st, batch, newer)
        if written < 0:
            return await self._lost_in_redis(st, batch, follows)
        self._written(st, batch, written, dups, conflicts)
        if conflicts:  # (as for the events stream: never ask for an entry gone for good)
            self._top.pop(key, None)
        else:
            tops = [int(it[0].partition("-")[0]) for it in items if it[1]]
            self._top[key] = max([follows, *tops])
        return True

    def _account_items(self, st: ShardState, batch: list[tuple]) -> list[tuple]:
        """An account shard batch's entries: each balance or fee change for the balances
        stream, each new order it forwarded for ``shardex:orders:<j>`` (no balances-stream
        fields, the orders stream as the script's second stream)."""
        items: list[tuple] = []
        orders = str(st.index)
        ts_of = st.tracker.times.get  # (each entry's exchange time)
        for ev in batch:
            if ev[AE_KIND] in BALANCE_KINDS:
                items.append(self.entries.balance_item(ev, st.index, ts_of(ev[AE_SEQ], 0)))
            else:
                order = self.entries.order_item(ev, st.index, ts_of(ev[AE_SEQ], 0))
                if order is not None:
                    items.append((order[0], [], orders, order[1]))
        return items

    async def _script(
        self,
        st: ShardState,
        batch: list[tuple],
        keys: list[str],
        blob: bytes,
        follows: int = 0,
        second: str = "trades:",
    ) -> tuple[int, int, int, list, int] | None:
        """Run WRITE_SCRIPT for one batch (under the shard's epoch, if replicated; checking
        that entry ``follows`` is still there, if not 0); None when Redis failed or refused
        it (the batch went back to the tracker). ``written`` is -1 when entry ``follows`` is
        missing (nothing written)."""
        args: tuple = (blob, f"{self.cfg.prefix}{second}", str(self.cfg.maxlen))
        if st.epoch:  # a replicated shard: written only under the newest epoch (WRITE_SCRIPT)
            keys.append(keys[0] + ":epoch")
            args += (str(st.epoch),)
        if follows:
            args += ("0",) * (4 - len(args)) + (str(follows),)
        tr = st.tracker
        t0 = self.perf()
        try:
            res = await self._eval(keys, args, st.label)
        except _TRANSIENT as exc:
            if not _transient(exc):
                if not isinstance(exc, ResponseError):
                    raise
                # a Redis refusal the script did not expect (OOM, read-only replica...):
                # the batch may be partly written; retry it whole after a pause (copies are
                # recognised as duplicates), never crash
                self.alerts.alert(st.label, "redis", "redis", "Redis refused a write: %s",
                                  self.scrub(str(exc)))  # fmt: skip
                tr.putback(batch)
                await asyncio.sleep(1.0)
                return None
            await self.outage(exc)
            tr.putback([ev for ev in batch if ev[EV_SEQ] > tr.last])
            return None
        XADD_TIME.observe(self.perf() - t0)
        REDIS_UP.set(1)
        return res

    def _written(
        self, st: ShardState, batch: list[tuple], written: int, dups: int, conflicts: list
    ) -> None:
        WRITTEN.labels(st.label).inc(written)
        if dups:
            DUPS.labels(st.label).inc(dups)
        if conflicts:
            self._conflicts(st, conflicts)
        st.tracker.written(batch[-1][EV_SEQ], self.mono())
        LAST.labels(st.label).set(st.tracker.last)

    def _newer_in_redis(self, st: ShardState, batch: list[tuple], newer: int) -> bool:
        """WRITE_SCRIPT wrote nothing: Redis holds entries of a newer epoch than the one this
        batch was received under (another bridge follows a newer leader). Count it, take the
        newer epoch and keep the batch for later (it is re-checked under the newer epoch;
        repairs from the new leader fill the rest)."""
        STALE_EPOCH.labels(st.label).inc()
        self.alerts.alert(st.label, "conflict", "stale epoch write",
                          "%s: Redis has entries of epoch %d, this bridge follows epoch %d: "
                          "the batch is not written; following the newer leader", st.name,
                          newer, st.epoch)  # fmt: skip
        st.epoch = max(st.epoch, newer)
        st.tracker.putback(batch)
        return False

    def _conflicts(self, st: ShardState, flat: list) -> None:
        by_stream: dict[str, list[str]] = {}
        why: dict[str, str] = {}
        for k in range(0, len(flat) - 2, 3):
            key = _text(flat[k])
            by_stream.setdefault(key, []).append(_text(flat[k + 1]))
            why[key] = _text(flat[k + 2])
        for key, ids in by_stream.items():
            CONFLICTS.labels(st.label, key).inc(len(ids))
            st.tracker.conflicted += len(ids)
            self.alerts.alert(
                st.label,
                "conflict",
                f"conflict {key}",
                "%s: %d entries not stored in %s (ids %s..%s): %s; counted in "
                "shardex_bridge_conflicts_total",
                st.name,
                len(ids),
                key,
                ids[0],
                ids[-1],
                why[key],
            )

    async def _eval(
        self, keys: list[str], args: tuple, label: str = "redis"
    ) -> tuple[int, int, int, list, int]:
        """(written, dups, trades, conflicts, newer epoch in Redis or 0) of one batch;
        ``label``: the shard an ALERT about its streams is counted for."""
        if self.sha is None:
            self.sha = await self.redis.script_load(WRITE_SCRIPT)
        try:
            res = await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.sha = await self.redis.script_load(WRITE_SCRIPT)
            res = await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        # the script's reply: {written, dups, trades, conflicts[, newer epoch[, trimmed[,
        # predecessor missing]]]}
        written, dups, trades, conflicts, newer, trimmed, missing = (*res, 0, None, 0)[:7]
        if trimmed:
            self._trimmed(label, trimmed)
        if missing:
            return -1, 0, 0, [], 0
        return int(written), int(dups), int(trades), conflicts, int(newer)

    def _trimmed(self, label: str, flat: list) -> None:
        """ALERT once per stream and count: entries vanished from a stream the bridge never
        trims (a holder of write access ran XADD MAXLEN/MINID, XTRIM or XDEL)."""
        for k in range(0, len(flat) - 1, 2):
            key, gone = _text(flat[k]), int(flat[k + 1])
            if self._deleted.get(key) != gone:
                self._deleted[key] = gone
                self.alerts.alert(label, "conflict", f"deleted {key}",
                                  "%d entries were deleted from %s although this bridge never "
                                  "trims it (no --maxlen): someone with write access to Redis "
                                  "trimmed it (XADD MAXLEN/MINID, XTRIM, XDEL); readers miss "
                                  "them, the shard's journal still has them", gone,
                                  key)  # fmt: skip

    # -- outages ----------------------------------------------------------------------------------

    async def until_redis(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` once Redis takes it, however long that is (outages waited out)."""
        while True:
            honour_cancel()
            try:
                return await call()
            except _TRANSIENT as exc:
                if not _transient(exc):
                    # Redis answers but refuses this (ACL, wrong type): say so, pace the retry
                    self._trouble(exc)
                    await asyncio.sleep(1.0)
                await self.outage(exc)

    async def outage(self, exc: Exception) -> None:
        """Wait until Redis answers again (one waiter for all shards), then re-sync ``last``."""
        async with self._outage_lock:
            delay = 0.1
            logged = False
            while True:
                honour_cancel()
                try:
                    await self.redis.ping()
                    await self.sync_last()
                    break
                except _TRANSIENT as again:
                    # whatever Redis says (down, loading, wrong password, an ACL refusal, a
                    # wrong-type key): report once, retry with a pause, never crash
                    REDIS_UP.set(0)
                    if not logged:
                        self._trouble(again if _transient(exc) else exc)
                        logged = True
                    await asyncio.sleep(delay)
                    delay = min(2.0, delay * 2)
            self.sha = None
            self._back(exc, logged)

    def _back(self, exc: Exception, logged: bool) -> None:
        if logged:
            log.info(
                "Redis is back; resuming at seqs %s",
                [s.tracker.last for s in (*self.shards, *self.accounts)],
            )
        else:  # a call failed but Redis answered at once (e.g. restarted within ~0.1 s):
            # nothing is lost (last seqs re-read), but an outage must never go unseen
            self.alerts.alert("redis", "redis", "blip",
                              "a Redis call failed (%s) but %s answered again at once; "
                              "resuming at seqs %s", self.scrub(str(exc))[:200], self.shown,
                              [s.tracker.last for s in self.shards])  # fmt: skip

    def _trouble(self, exc: Exception) -> None:
        """One ALERT line saying what Redis refused, with the URL's password masked."""
        why = self.scrub(str(exc))
        alert = self.alerts.alert
        if isinstance(exc, RedisAuthenticationError):
            alert("redis", "redis", "auth",
                  "Redis %s refused the bridge's credentials (%s): check the user and "
                  "password (KEYS_DIR/redis.json for the embedded server); retrying",
                  self.shown, why)  # fmt: skip
        elif isinstance(exc, NoPermissionError):
            alert("redis", "redis", "acl",
                  "Redis %s denies the bridge a command or key (ACL): %s; the bridge "
                  "user needs its rules (docs/redis.md, Redis >= 7.0) on %s* keys; "
                  "retrying", self.shown, why, self.cfg.prefix)  # fmt: skip
        elif isinstance(exc, ResponseError) and not _transient(exc):
            alert("redis", "redis", "refused", "Redis %s refused a command: %s; retrying",
                  self.shown, why)  # fmt: skip
        else:
            REDIS_UP.set(0)
            log.error("Redis unavailable at %s (%s); retrying", self.shown, why)

    def scrub(self, text: str) -> str:
        """``text`` without the Redis password, should any library ever echo it."""
        return text.replace(self._password, "***") if self._password else text

    async def close(self) -> None:
        """Drop the Redis connections without waiting on a server that is gone or stuck."""
        try:
            await within(self.redis.aclose(), CLOSE_WAIT)
        except (TimeoutError, *_TRANSIENT):
            pass
