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
        for st in (*self.shards, *self.accounts):
            assert st.link is not None
            tasks.append(asyncio.ensure_future(st.link.read()))
            tasks.append(asyncio.ensure_future(self.poller.run(st)))
            tasks.append(asyncio.ensure_future(self.pump.run(st)))
        try:
            await self._supervise(tasks)
        finally:
            await self._shut(tasks)

    def _states(self, kind: str, endpoints: Endpoints) -> list[ShardState]:
        """A fresh state per shard of ``kind``, at its registered leader epoch (0: none)."""
        cfg = self.cfg
        states = []
        for i, ep in enumerate(endpoints):
            tracker = ShardTracker(i, max_pending=cfg.max_pending, hole_wait=cfg.hole_wait,
                                   stall_after=cfg.stall_after)  # fmt: skip
            st = ShardState(i, tracker, repair_timeout=cfg.repair_timeout, kind=kind,
                            created=self.clock.monotonic())  # fmt: skip
            st.epoch = ep.get("epoch", 0)
            Alerts.register(st.label)
            states.append(st)
        return states

    def _connect(
        self, kind: str, states: list[ShardState], endpoints: Endpoints
    ) -> list[asyncio.Future]:
        """The SUB of ``kind`` on every PUB and a link per shard; their watches and reader."""
        cfg = self.cfg
        sub = event_sub(self.ctx, zmq, cfg.sub_hwm, self.key)
        self.leaders.subs[kind] = sub
        pubs = self.leaders.pub_peers[kind]
        pubs.update({t["pub"]: (st.label, f"{st.name}'s PUB")
                     for st, t in zip(states, endpoints, strict=True)})  # fmt: skip
        watches = [self.watches.watch(sub, pubs)]
        for st, t in zip(states, endpoints, strict=True):
            sub.connect(t["pub"])
            st.link = ShardLink(self.ctx, t["direct"], self.alerts.reply_malformed, self.key)
            st.peers[t["direct"]] = (st.label, f"{st.name}'s direct port")
            watches.append(self.watches.watch(st.link.sock, st.peers))
        self._say_up(kind, states)
        tasks = [w for w in watches if w is not None]
        tasks.append(asyncio.ensure_future(self._reader(sub, kind, states)))
        return tasks

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
        decode = self._decoder(kind, len(states))
        while True:
            frames = await sub.recv_multipart()
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
