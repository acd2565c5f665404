"""``shardex.sim.crash`` in an in-process cluster on virtual time: a crashed node's sockets
vanish and it takes no turn, a restart recovers the same state from its journal and serves
again; a pause stops a node for virtual seconds and it resumes where it stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.sim.crash import Lifecycle, StartFailed
from shardex.sim.loop import run
from shardex.sim.sched import Scheduler, Trace
from tests.support.inproc import plan
from tests.support.simclock import virtual_nodes


def _sim(tmp_path, body: Callable[[InProcCluster, Lifecycle, Any], Awaitable[Any]]) -> Trace:
    """``body(cluster, lifecycle, client)`` on a 1 engine + 1 account shard cluster with
    journals under ``tmp_path``, seeded, on virtual time; the trace."""
    clock = VirtualClock()
    net = mem_transport(clock=clock)
    trace = Trace()

    async def main() -> None:
        cluster = InProcCluster(plan(1, 1, data_dir=str(tmp_path), fsync="none"), net=net)
        cluster.sched = Scheduler(2, hub=net.hub, trace=trace)
        life = Lifecycle(cluster, trace)
        async with cluster, cluster.client(timeout=1.0) as cl:
            for acct in ("a", "b"):
                for asset, amount in (("USD", "100000"), ("BTC", "100")):
                    assert (await cl.deposit(acct, asset, amount, ref=f"{acct}{asset}")).ok
            await body(cluster, life, cl)

    run(main(), clock)
    return trace


async def _rest(cl, prefix: str, n: int) -> None:
    """``n`` resting orders (bids below the asks: nothing trades), all executed."""
    results = await asyncio.gather(*[
        cl.place("BTC-USD", "buy" if k % 2 else "sell", "0.01", str(95 if k % 2 else 105),
                 account="ab"[k % 2], id=f"{prefix}{k}")
        for k in range(n)])  # fmt: skip
    assert all(r.fate == "executed" for r in results), [r.error for r in results]


def test_a_crashed_engine_vanishes_and_restarts_with_its_journal(tmp_path):
    async def body(cluster: InProcCluster, life: Lifecycle, cl: Any) -> None:
        await _rest(cl, "o", 10)
        engine = await cluster.until(lambda: cluster.engines[0].core.engine.resting() == 10
                                     and cluster.engines[0], what="ten resting orders")  # fmt: skip
        before = engine.core.engine.snapshot()
        life.crash("engine-0")
        assert cluster.engines == [] and "engine-0" in life.down
        assert all(s.closed for s in engine.ctx.socks)  # its sockets vanished ...
        assert not any(p.a.owner == "engine-0" for s in net_socks(cluster) for p in s.pipes)
        rounds = cluster.rounds
        await cluster.until(lambda: cluster.rounds > rounds + 10, what="rounds")
        assert engine.core.engine.snapshot() == before  # ... and it took no turn since
        again = life.restart("engine-0")
        assert cluster.engines == [again] and again is not engine
        assert again.core.engine.snapshot() == before  # recovered from its journal
        await _rest(cl, "p", 4)  # and it serves again
        await cluster.until(lambda: again.core.engine.resting() == 14, what="4 more")

    trace = _sim(tmp_path, body)
    assert [ev[1:3] for ev in trace.events] == [("crash", "engine-0"), ("restart", "engine-0")]


def net_socks(cluster: InProcCluster) -> list:
    """The bound sockets of the cluster's hub."""
    return list(cluster.net.hub.bound.values())  # type: ignore[attr-defined]


def test_a_crashed_account_shard_restarts_with_every_balance(tmp_path):
    async def body(cluster: InProcCluster, life: Lifecycle, cl: Any) -> None:
        await _rest(cl, "o", 6)
        before = await cl.audit()
        machine = cluster.accounts[0].machine
        life.crash("accounts-0")
        again = life.restart("accounts-0")
        assert again.machine is not machine and again.machine.seq == machine.seq
        after = await cl.audit()
        assert after == before
        assert after[0]["integrity"] == "ok" and after[0]["open_orders"] == 6

    _sim(tmp_path, body)


def test_a_paused_node_takes_no_turn_for_virtual_seconds_then_resumes(tmp_path):
    async def body(cluster: InProcCluster, life: Lifecycle, cl: Any) -> None:
        engine = cluster.engines[0]
        clock = cluster.net.clock
        life.pause("engine-0", 5.0)  # longer than the client's timeout
        t0 = clock.monotonic()
        place = asyncio.ensure_future(_rest(cl, "o", 2))
        await asyncio.sleep(4.0)
        assert engine.core.engine.resting() == 0  # still frozen: the orders wait for it
        await place
        await cluster.until(lambda: engine.core.engine.resting() == 2, what="after the pause")
        assert clock.monotonic() - t0 >= 5.0

    trace = _sim(tmp_path, body)
    assert trace.events[0][1:] == ("pause", "engine-0", "5.0s")


@virtual_nodes
def test_a_crashed_router_restarts_and_the_shards_register_again(tmp_path):
    async def body(cluster: InProcCluster, life: Lifecycle, cl: Any) -> None:
        await _rest(cl, "o", 2)
        life.crash("router-0")
        life.restart("router-0")
        await _rest(cl, "p", 2)  # (the shards' next HELLO, a virtual second later)

    _sim(tmp_path, body)


def test_a_restart_that_fails_half_way_leaves_nothing_bound_and_the_node_down(tmp_path):
    async def body(cluster: InProcCluster, life: Lifecycle, cl: Any) -> None:
        await _rest(cl, "o", 2)
        life.crash("engine-0")
        kind, good = life.options["engine-0"]
        # its PUB endpoint taken by the router: the start fails after binding its direct port
        life.options["engine-0"] = (kind, {**good, "pub": cluster.plan.layout.frontend})
        with pytest.raises(StartFailed):
            life.restart("engine-0")
        assert "engine-0" in life.down and cluster.engines == []
        assert life.failures and "failed to start" in life.failures[0]
        life.options["engine-0"] = (kind, good)
        again = life.restart("engine-0")  # its direct port is free again: nothing leaked
        assert again.core.engine.resting() == 2 and "engine-0" not in life.down

    trace = _sim(tmp_path, body)
    assert [ev[1] for ev in trace.events] == ["crash", "failure", "restart"]
