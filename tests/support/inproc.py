"""A whole cluster in the test's own process (``shardex.inproc``): the plan ``shardex up`` would
make, and a runner for a test body on it. No port, no process: for tests/unit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shardex.inproc import InProcCluster
from shardex.kinds import Plan
from shardex.layout import Layout


def plan(shards: int = 1, accounts: int = 0, redis: str | None = None, **kw: Any) -> Plan:
    """``shardex up --shards N --accounts M``'s plan, without a bridge unless ``redis`` names a
    (real) Redis for it (``kw``: its other options, e.g. ``data_dir``, ``max_backlog``,
    ``markets_file``). The layout only names endpoints: the in-memory hub binds no port, so
    any base port does."""
    return Plan(layout=Layout(base_port=20000, shards=shards, accounts=accounts), pin=False,
                redis=redis, **kw)  # fmt: skip


def published(node: Any) -> list[tuple]:
    """Engine shard ``node``'s events 1..seq from its ring, as a subscriber repairing from the
    start would read them (a ring of the default size still holds a test's every event)."""
    core = node.core
    events = core.ring.get(1, core.engine.seq) if core.engine.seq else []
    assert events is not None
    return events


def run(p: Plan, body: Callable[[InProcCluster], Awaitable[Any]]) -> Any:
    """``body(cluster)`` on the cluster of ``p``, started before and stopped after; its value."""

    async def main() -> Any:
        async with InProcCluster(p) as cluster:
            return await body(cluster)

    return asyncio.run(main())


def run_virtual(p: Plan, body: Callable[[InProcCluster], Awaitable[Any]], store: Any = None,
                disk: Any = None) -> Any:  # fmt: skip
    """``run`` on the simulator's virtual loop: one ``VirtualClock`` for every node, the
    transport, ``store`` (a ``SimStore`` on that clock; a new one if None, reachable as
    ``cluster.store``) and ``disk`` (a ``SimDisk``, if given). For replicated clusters on the
    real clock a loaded box (CI's three workers on two cores) can stall the one loop past a
    leader's lease ttl: the leader then loses its lease although alive, and a test that
    expects it (or its successor) to lead fails. In virtual time every timer counts rounds of
    the scheduler, so that cannot happen, and the test runs faster too."""
    from shardex.clock import VirtualClock
    from shardex.net import mem_transport
    from shardex.sim.loop import run as loop_run
    from shardex.sim.store import SimStore

    clock = store.clock if store is not None else VirtualClock()
    if not isinstance(clock, VirtualClock):
        raise ValueError("run_virtual: the store must run on a VirtualClock")
    store = store if store is not None else SimStore(clock)
    net = mem_transport(clock=clock)
    if disk is not None:
        net.disk = disk

    async def main() -> Any:
        async with InProcCluster(p, net=net, store=store) as cluster:
            return await body(cluster)

    return loop_run(main(), clock)


class Hold:
    """A ``MemHub.shaper`` (the in-memory transport's air) that keeps the messages
    ``holds(sender socket, receiving socket)`` picks in the air while ``held``, everything
    else landing at once; ``hub.release(0.0)`` lands the held ones once ``held`` is False. A
    test uses it to make an order of arrival happen on purpose (a message read late)."""

    def __init__(self, holds: Callable[[Any, Any], bool], held: bool = False) -> None:
        self.holds = holds
        self.held = held

    def now(self) -> float:
        return 0.0

    def due(self, sender: Any, peer: Any) -> float:  # noqa: ARG002 - the shaper's signature
        return 0.0

    def blocked(self, sender: Any, peer: Any) -> bool:
        return self.held and self.holds(sender, peer)
