"""A whole cluster in one process and one thread, over the in-memory transport.

``InProcCluster(plan)`` builds the router(s), engine shards, account shards and the bridge
that ``shardex up`` would start for ``plan`` — from the same process descriptions
(``shardex.kinds``: each child's option values, parsed by its own ``shardex <kind>`` command
into its config) — but as objects on one ``shardex.net`` in-memory hub instead of processes
on ports. Their production loops run unchanged: a scheduler task calls every sync node's
``turn`` in rounds on the asyncio loop where the bridge and the SDK's ``AsyncClient`` run, and
sleeps a millisecond when a round moved no message.

Faults a logic test needs without processes: ``freeze(node, seconds)`` stops one node's turns
(a SIGSTOP: what is sent to it queues and is read after the ``thaw``), and a plan with a
``data_dir`` gives the shards their journals on disk (``shardex replay --journal`` reads them).

What it is for: logic tests of the whole cluster (every ack once, conservation of money,
exactly-once streams) in a fraction of a second per scenario, with no port and no process to
leak; and the base a deterministic simulator builds on. What it is not: a replacement for the
process tests, which prove the real sockets, CURVE, signals, journals on disk and kill -9.

Replicated shards (``plan.replicas`` 2, with a ``data_dir``): each replica is a
``FailoverNode`` (``shardex.inproc_replicas``): a standby, then the leader it becomes, with the
lease renewed by its turns; the lease and the bridge use ``store`` (``shardex.sim.store``'s
``SimStore``: an in-memory Redis on the cluster's clock) or, without one, the real Redis the plan
names. Not covered here (yet): CURVE (the in-memory transport has no handshake: the cluster
runs ``--insecure``), metrics ports.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import click

from shardex.cli.accounts import accounts as accounts_cmd
from shardex.cli.accounts import accounts_config
from shardex.cli.bridge import bridge as bridge_cmd
from shardex.cli.bridge import bridge_config
from shardex.cli.engine import engine as engine_cmd
from shardex.cli.engine import engine_config
from shardex.cli.router import router as router_cmd
from shardex.cli.router import router_config
from shardex.client import AsyncClient
from shardex.clock import Clock
from shardex.inproc_replicas import account_replica, engine_replica
from shardex.kinds import Kind, Plan, spawns
from shardex.lease import connect
from shardex.net import Transport, mem_transport
from shardex.node.accounts import AccountNode
from shardex.node.bridge import Bridge
from shardex.node.router import RouterNode
from shardex.node.shard import ShardNode

log = logging.getLogger("shardex.inproc")

IDLE_S = 0.001  # a round that moved nothing sleeps this long (timers still run on real time)
COMMANDS: dict[str, click.Command] = {
    "router": router_cmd,
    "engine": engine_cmd,
    "accounts": accounts_cmd,
    "bridge": bridge_cmd,
}


def parse(kind: Kind, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` through ``shardex <kind>``'s own options (defaults, callbacks, checks), as
    the child process would see them: the same argv ``shardex up`` would give it."""
    argv = kind.argv(values)[1:]
    with COMMANDS[kind.name].make_context(kind.name, argv) as ctx:
        return dict(ctx.params)


class InProcCluster:
    """The cluster of ``plan`` in this process (``async with`` starts and stops it)."""

    def __init__(self, plan: Plan, net: Transport | None = None,
                 clock: Clock | None = None, store: Any = None) -> None:  # fmt: skip
        """``net``: the in-memory transport (a new one if None); ``clock``: the time every
        node (and ``client()``) reads, e.g. a ``VirtualClock`` that moves only when advanced
        (None: ``net``'s, ``REAL`` for a new one; given with ``net``, it must be ``net.clock``);
        ``store``: the Redis of the leases and the bridge (a ``SimStore``; None: the real one
        the plan names)."""
        if plan.keys_dir is not None:
            raise ValueError("an in-process cluster runs --insecure (no CURVE in memory)")
        self.plan = plan
        self.net = net or (mem_transport() if clock is None else mem_transport(clock=clock))
        if clock is not None and self.net.clock is not clock:
            raise ValueError("clock: the nodes read net.clock; give one or the other")
        self.routers: list[RouterNode] = []
        self.engines: list[ShardNode] = []
        self.accounts: list[AccountNode] = []
        self.bridge: Bridge | None = None
        self.replicas: list[Any] = []  # ``FailoverNode``s: both replicas of each shard
        self.store = store
        for kind, spawn in spawns(plan):
            if kind.name in COMMANDS:
                self._build(kind.name, parse(kind, spawn.values))
        self._tasks: list[asyncio.Task] = []
        self._frozen: dict[int, float] = {}  # id(node) -> loop time its turns resume
        self.rounds = 0

    def _build(self, name: str, o: dict[str, Any]) -> None:
        net = self.net
        if name == "router":
            cfg = router_config(**o)
            cfg.metrics_port = None
            self.routers.append(RouterNode(cfg, net))
        elif name == "engine":
            cfg, rep = engine_config(**o)
            cfg.metrics_port = None
            if rep is not None:
                self.replicas.append(engine_replica(cfg, rep, net, self._lease_redis()))
            else:
                self.engines.append(ShardNode(cfg, net=net))
        elif name == "accounts":
            built = accounts_config(**o)
            if built is not None:
                built[0].metrics_port = None
                if built[1] is not None:
                    self.replicas.append(account_replica(*built, net, self._lease_redis()))
                else:
                    self.accounts.append(AccountNode(built[0], net=net))
        elif name == "bridge":
            bcfg = bridge_config(**o)
            bcfg.metrics_port = None
            store = self.store
            self.bridge = Bridge(bcfg, net, redis=store.async_connect if store else None)

    def _lease_redis(self) -> Any:
        """Where the replicas' leases connect: the store, else the real Redis."""
        return self.store.connect if self.store is not None else connect

    @property
    def nodes(self) -> list[Any]:
        """Every sync node, in start order (routers first: shards register with them); with
        a ``store``, it too (its turn: the replica catching up with the primary)."""
        store = [self.store] if self.store is not None else []
        return [*self.routers, *self.engines, *self.accounts, *self.replicas, *store]

    def leaders(self) -> list[Any]:
        """The replicas leading now (promoted and not exited), in the order of ``replicas``."""
        return [r for r in self.replicas if r.leader is not None and r.exited is None]

    @property
    def endpoint(self) -> str:
        return self.plan.layout.frontend

    def client(self, **kw: Any) -> AsyncClient:
        """An SDK client of this cluster on the in-memory transport."""
        kw.setdefault("clock", self.net.clock)  # (the cluster's time, not the process's)
        return AsyncClient(self.endpoint, context=self.net.AsyncContext(), key=False, **kw)

    async def __aenter__(self) -> InProcCluster:
        for node in self.nodes:
            node.start()
        self._tasks.append(asyncio.ensure_future(self._schedule()))
        if self.bridge is not None:
            self._tasks.append(asyncio.ensure_future(self.bridge.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    sched: Any = None  # the simulator's seeded scheduler (None: every node, in order)

    async def _schedule(self) -> None:
        """Every node's turn, round after round; an idle round yields for ``IDLE_S``. With a
        ``sched`` (``shardex.sim.sched.Scheduler``) it decides instead: the order of turns,
        when messages in the air land, and how far (virtual) time moves after each step."""
        if self.sched is not None:
            await self._schedule_seeded(self.sched)
            return
        hub = self.net.hub  # type: ignore[attr-defined]
        nodes = self.nodes
        loop = asyncio.get_running_loop()
        while True:
            moved = hub.moved
            frozen = self._frozen
            now = loop.time() if frozen else 0.0
            for node in nodes:
                if frozen and frozen.get(id(node), 0.0) > now:
                    continue
                node.turn()
            self.rounds += 1
            await asyncio.sleep(IDLE_S if hub.moved == moved else 0)

    async def _schedule_seeded(self, sched: Any) -> None:
        """The simulator's rounds: ``sched`` picks the turns (of the nodes alive now: a crash
        or a restart changes them) and the pause after each step; time moves only by it.
        A step counts as idle once every node has had a turn since a message last moved. A
        turn that raises goes to ``sched.failed`` (which re-raises unless told otherwise)."""
        hub = self.net.hub  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        quiet = 0
        while True:
            now = loop.time()
            moved = hub.moved
            sched.tick(now)
            nodes = self.nodes
            frozen = self._frozen
            turns = sched.order(nodes)
            for node in turns:
                if frozen and frozen.get(id(node), 0.0) > now:
                    continue
                try:
                    node.turn()
                except Exception as exc:  # (a process would die of it: the simulator decides)
                    sched.failed(node, exc)
            self.rounds += 1
            quiet = 0 if hub.moved != moved else quiet + len(turns)
            await asyncio.sleep(sched.pause(quiet < len(nodes), now))

    def freeze(self, node: Any, seconds: float | None = None) -> None:
        """``node`` takes no turn for ``seconds`` (None: until ``thaw``), as a SIGSTOPped
        process, a long GC pause or a wedged disk: what is sent to it queues in its sockets
        (within their HWMs) and is read when it runs again. A client's timeout meanwhile is
        the real one: the scheduler keeps running every other node."""
        resume = float("inf") if seconds is None else asyncio.get_running_loop().time() + seconds
        self._frozen[id(node)] = resume

    def thaw(self, node: Any) -> None:
        """``node`` takes its turns again (SIGCONT)."""
        self._frozen.pop(id(node), None)

    async def until(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Run until ``pred()`` is truthy (its value), or raise TimeoutError after
        ``timeout`` seconds; a scheduler that died raises its own error instead. ``pred`` may
        return an awaitable (a client's read, e.g. a balance that settles after the reply):
        it is awaited each time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            failure = self.failure()
            if failure is not None:
                raise failure
            value = pred()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            if loop.time() >= deadline:
                raise TimeoutError(f"in-process cluster: no {what or 'progress'} in {timeout}s")
            await asyncio.sleep(0.005)

    def failure(self) -> BaseException | None:
        """The error a task of the cluster (its scheduler: a node's turn raised; the bridge)
        died of, if one did."""
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None

    async def stop(self) -> None:
        """Stop the bridge and the scheduler, then close every node (journals, snapshots)."""
        if self.bridge is not None:
            self.bridge.running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for node in reversed(self.nodes):
            node.close()
