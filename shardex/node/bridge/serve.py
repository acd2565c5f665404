"""The bridge process: the asyncio loop that wires the parts together and runs until stopped.

Per shard it runs a link reader, a status poller (``status``) and a writer (``pump``); per
tier (engine shards, account shards) one SUB reader feeds the trackers from the PUB streams.
No task ever dies of input: whatever a shard sends is decoded by ``shardex.wire.pub`` or counted
as malformed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from functools import partial
from typing import Any

import zmq
import zmq.asyncio

from shardex.accounts.assets import AssetTable
from shardex.auth import AuthError, KeyFile, KeyStore
from shardex.health import gauge_probe, registry_gauge
from shardex.metrics import serve
from shardex.net import ZMQ, Transport
from shardex.net.roles import event_sub
from shardex.node.bridge.config import BridgeConfig
from shardex.node.bridge.entries import EntryFormatter
from shardex.node.bridge.follow import FOLLOW_S, added, retirable
from shardex.node.bridge.links import ShardLink, ShardState, Watches
from shardex.node.bridge.metrics import Alerts
from shardex.node.bridge.pump import ShardPump
from shardex.node.bridge.redis_writer import RedisConnect, RedisWriter
from shardex.node.bridge.status import Follower, StatusPoller
from shardex.node.bridge.topology import Endpoints, fetch_topology
from shardex.node.bridge.tracker import ShardTracker
from shardex.redisauth import RedisAuthError
from shardex.wire.listed import learn_tables
from shardex.wire.pub import Malformed, decode_account_pub_stamped, decode_pub_stamped

log = logging.getLogger("shardex.bridge")

KINDS = {"events": "shard", "balances": "account shard"}  # ShardState.kind → what it is


class Bridge:
    """One bridge process: shard event PUB streams → Redis Streams, in order, exactly once."""

    def __init__(self, cfg: BridgeConfig, net: Transport = ZMQ, *,
                 redis: RedisConnect | None = None) -> None:  # fmt: skip
        """``net``: the transport (``shardex.net``; the in-memory twin in one-process runs);
        the bridge reads the time through its clock (``net.clock``) and waits on the event
        loop's timers (the simulator runs it on a loop whose time is that clock); ``redis``:
        the Redis client factory (``RedisWriter``'s; the simulator's store)."""
        self.cfg = cfg
        self.clock = clock = net.clock
        self.key: KeyFile | None = None
        if cfg.keys_dir:
            self.key = KeyStore(cfg.keys_dir).process_key("bridge", "bridge")
        self.ctx = net.AsyncContext()
        self.running = True
        self.alerts = Alerts(clock)
        self.assets = AssetTable(cfg.markets)
        self.store = RedisWriter(cfg, self.alerts, EntryFormatter(cfg.markets, self.assets),
                                 clock, redis=redis)  # fmt: skip
        self.watches = Watches(self.key, self.alerts.alert)
        self.leaders = Follower(self.topology)
        self.poller = StatusPoller(cfg, self.alerts, self.leaders.follow, clock)
        self.pump = ShardPump(cfg, self.store, self.alerts, self.assets, self.leaders.follow,
                              clock)  # fmt: skip
        self.shards: list[ShardState] = []
        self.accounts: list[ShardState] = []  # their balance changes go to shardex:balances:<j>
        self.tasks: list[asyncio.Future] = []  # what ``_supervise`` watches (shards added too)
        self.owned: dict[str, list[asyncio.Future]] = {}  # a shard's label → its own tasks

    async def topology(self) -> tuple[Endpoints, Endpoints]:
        """(engine shards, account shards) as the router sees them (``fetch_topology``); the
        pairs listed at runtime that their HELLOs name are learnt (a restarted bridge resumes
        after their listing events)."""
        return await fetch_topology(
            self.ctx, self.cfg.router, self.key, self.watches, lambda: self.running,
            lambda tables: learn_tables(self.cfg.markets, self.assets, tables),
        )  # fmt: skip

    async def run(self) -> None:
        """Bridge until stopped. However it ends (``running`` cleared, or cancelled by a stop
        while it waits for Redis or the router), its Redis connections are closed."""
        try:
            await self._serve()
        finally:
            await self.store.close()

    async def _serve(self) -> None:
        endpoints, account_endpoints = await self.topology()
        if not self.running:
            return
        self.leaders.endpoints = {"events": endpoints, "balances": account_endpoints}
        self.shards = self._states("events", endpoints)
        self.accounts = self._states("balances", account_endpoints)
        self.store.shards, self.store.accounts = self.shards, self.accounts
        await self.store.until_redis(self.store.sync_last)
        tasks = self._connect("events", self.shards, endpoints)
        if self.accounts:
            tasks += self._connect("balances", self.accounts, account_endpoints)
        tasks.append(asyncio.ensure_future(self._follow_count()))
        self.tasks = tasks
        try:
            await self._supervise(tasks)
        finally:
            await self._shut(tasks)

    def _states(self, kind: str, endpoints: Endpoints) -> list[ShardState]:
        """A fresh state per shard of ``kind``, at its registered leader epoch (0: none)."""
        return [self._state(kind, i, ep) for i, ep in enumerate(endpoints)]

    def _state(self, kind: str, i: int, ep: dict[str, Any]) -> ShardState:
        cfg = self.cfg
        tracker = ShardTracker(i, max_pending=cfg.max_pending, hole_wait=cfg.hole_wait,
                               stall_after=cfg.stall_after)  # fmt: skip
        st = ShardState(i, tracker, repair_timeout=cfg.repair_timeout, kind=kind,
                        created=self.clock.monotonic())  # fmt: skip
        st.epoch = ep.get("epoch", 0)
        Alerts.register(st.label)
        return st

    def _connect(
        self, kind: str, states: list[ShardState], endpoints: Endpoints
    ) -> list[asyncio.Future]:
        """The SUB of ``kind`` on every PUB and a link per shard; their watches and tasks."""
        sub = event_sub(self.ctx, zmq, self.cfg.sub_hwm, self.key)
        self.leaders.subs[kind] = sub
        watch = self.watches.watch(sub, self.leaders.pub_peers[kind])
        tasks = [] if watch is None else [watch]
        for st, t in zip(states, endpoints, strict=True):
            tasks += self._link(st, t)
        self._say_up(kind, states)
        tasks.append(asyncio.ensure_future(self._reader(sub, kind, states)))
        return tasks

    def _link(self, st: ShardState, t: dict[str, Any]) -> list[asyncio.Future]:
        """Shard ``st``'s PUB on its tier's SUB, its link (DEALER) and watch, and its tasks:
        the link's reader, the status poller and the writer (kept in ``owned`` by label, so
        a shard the bridge lets go stops its own)."""
        self.leaders.pub_peers[st.kind][t["pub"]] = (st.label, f"{st.name}'s PUB")
        self.leaders.subs[st.kind].connect(t["pub"])
        st.link = ShardLink(self.ctx, t["direct"], self.alerts.reply_malformed, self.key)
        st.peers[t["direct"]] = (st.label, f"{st.name}'s direct port")
        watch = self.watches.watch(st.link.sock, st.peers)
        own: list[asyncio.Future] = [asyncio.ensure_future(c) for c in (
            st.link.read(), self.poller.run(st), self.pump.run(st))]  # fmt: skip
        if watch is not None:
            own.append(watch)
        self.owned[st.label] = own
        return own

    async def _follow_count(self) -> None:
        """Forever: the engine shards the router lists now (``shardex.node.bridge.follow``):
        new ones followed from what Redis holds for them, dropped ones let go once written."""
        while self.running:
            await asyncio.sleep(FOLLOW_S)
            endpoints, _ = await self.topology()
            if not self.running or not endpoints:
                return
            for i in added(len(self.shards), endpoints):
                st = self._state("events", i, endpoints[i])
                await self.store.until_redis(partial(self.store.sync_one, st))
                self.shards.append(st)
                self.leaders.endpoints["events"].append(endpoints[i])
                self.tasks += self._link(st, endpoints[i])
                log.info("following shard %d (resuming at seq %d): the router lists it now",
                         i, st.tracker.last)  # fmt: skip
            while len(self.shards) > len(endpoints) and retirable(self.shards[-1].tracker):
                await self._let_go(self.shards[-1])

    async def _let_go(self, st: ShardState) -> None:
        """Stop following shard ``st`` (the last one): the router no longer lists it and
        everything it sent is written."""
        own = self.owned.pop(st.label, [])
        self.tasks[:] = [t for t in self.tasks if t not in own]  # (before: not a failure)
        self.shards.pop()
        for t in own:
            await self.watches.drop(t)  # (a watch's monitor closed too; the rest cancelled)
        eps = self.leaders.endpoints["events"]
        if len(eps) > st.index:
            pub = eps[st.index]["pub"]
            del eps[st.index:]
            try:
                self.leaders.subs["events"].disconnect(pub)
            except zmq.ZMQError:
                pass
        if st.link is not None:
            st.link.close()
        log.info("let go of shard %d: the router no longer lists it and its events are written "
                 "up to seq %d", st.index, st.tracker.last)  # fmt: skip

    def _say_up(self, kind: str, states: list[ShardState]) -> None:
        seqs = [s.tracker.last for s in states]
        if kind == "events":
            log.info("bridge up: %d shards → %s%s (resuming at seqs %s)", len(states),
                     self.store.shown, "" if self.key is None else ", authenticated as bridge",
                     seqs)  # fmt: skip
        else:
            log.info("balances of %d account shards → %sbalances:<j> (resuming at seqs %s)",
                     len(states), self.cfg.prefix, seqs)  # fmt: skip

    async def _supervise(self, tasks: list[asyncio.Future]) -> None:
        """Until stopped; a task that died of an exception takes the bridge down with it."""
        while self.running:
            await asyncio.sleep(0.2)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]

    async def _shut(self, tasks: list[asyncio.Future]) -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.watches.close()
        for sub in self.leaders.subs.values():
            sub.close(0)
        for st in (*self.shards, *self.accounts):
            if st.link is not None:
                st.link.close()

    def _decoder(self, kind: str, n: int
                 ) -> Callable[[Any], tuple[int, list, int, int | None, int | None]]:  # fmt: skip
        if kind == "balances":
            return lambda payload: decode_account_pub_stamped(payload, n, self.assets)
        return lambda payload: decode_pub_stamped(payload, n, self.cfg.markets)

    async def _reader(self, sub: zmq.asyncio.Socket, kind: str, states: list[ShardState]) -> None:
        """One tier's PUBs → its trackers. A message of an epoch older than the newest seen for
        its shard (a deposed leader's) is dropped and counted; the leader re-sends its events."""
        n = len(states)
        decode = self._decoder(kind, n)
        while True:
            frames = await sub.recv_multipart()
            if len(states) != n:  # (the bridge follows more or fewer shards now: ``follow``)
                n = len(states)
                decode = self._decoder(kind, n)
            try:
                if len(frames) != 2:
                    raise Malformed(f"{len(frames)} frames, expected [topic, payload]")
                i, events, bad, epoch, ts = decode(frames[1])
            except Malformed as exc:
                self.alerts.malformed("pub", 1, str(exc))
                continue
            st = states[i]
            if epoch is not None and epoch != st.epoch:
                if epoch < st.epoch:
                    self.alerts.stale_epoch(st, epoch)
                    continue
                st.epoch = epoch
            if bad:
                self.alerts.malformed("pub", bad, f"{bad} malformed events from {st.name}")
            if events:
                st.tracker.accept(events, ts)
                st.wake.set()


def run_bridge(cfg: BridgeConfig) -> None:
    """The ``shardex bridge`` process: metrics, signals, and the loop until SIGTERM/SIGINT."""
    import uvloop

    serve(cfg.metrics_port, "bridge", gauge_probe(
        registry_gauge("shardex_bridge_redis_up"), "redis_down",
        "the bridge's last Redis call failed (or none has succeeded yet)"))
    log.info("bridge starting (pid %d)", os.getpid())
    try:
        uvloop.run(_main(cfg))
    except (AuthError, RedisAuthError) as exc:
        log.error("bridge cannot start: %s", exc)  # a configuration error, one line
        raise SystemExit(2) from None
    log.info("bridge stopped")


async def _main(cfg: BridgeConfig) -> None:
    bridge = Bridge(cfg)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def stop() -> None:
        # Cancel whatever the bridge awaits (a Redis retry loop, the topology wait, a
        # write): a flag alone is not seen by a loop waiting for Redis to come back, and
        # the process then outlived its supervisor's grace period, metrics port and all.
        if bridge.running:
            bridge.running = False
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    try:
        await bridge.run()
    except asyncio.CancelledError:
        if bridge.running:
            raise  # not our stop: let it propagate
