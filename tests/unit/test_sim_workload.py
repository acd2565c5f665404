"""``shardex.sim.workload``: after the heal, an order whose fate is still open is settled the
way the SDK settles one (``AsyncClient._ask_fates``: the account shard first), so an order
queued at a stopped account shard is not counted "not executed" -- it runs once the shard
resumes. On virtual time, in one process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardex.client.results import EXECUTED, UNKNOWN
from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.sim.crash import Lifecycle
from shardex.sim.loop import run
from shardex.sim.sched import Scheduler, Trace
from shardex.sim.workload import Workload
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(60)


def test_an_order_queued_at_a_paused_account_shard_settles_executed(tmp_path):
    clock = VirtualClock()
    net = mem_transport(clock=clock)
    rec: dict[str, Any] = {"client": "client-0", "id": "q1", "symbol": "BTC-USD",
                           "account": "a", "side": "buy", "qty": "0.01", "price": "95",
                           "fate": UNKNOWN}  # fmt: skip

    async def main() -> list[str]:
        cluster = InProcCluster(plan(1, 1, data_dir=str(tmp_path), fsync="none"), net=net)
        cluster.sched = Scheduler(3, hub=net.hub, trace=Trace())
        life = Lifecycle(cluster, cluster.sched.trace)
        async with cluster, cluster.client(timeout=1.0) as cl:
            assert (await cl.deposit("a", "USD", "100000", ref="aUSD")).ok
            life.pause("accounts-0", 4.0)  # longer than the client's timeout
            placed = asyncio.ensure_future(cl.place("BTC-USD", "buy", "0.01", "95",
                                                    account="a", id="q1"))  # fmt: skip
            await asyncio.sleep(0.1)  # (the order waits in the stopped shard's inbox)
            await Workload(1, 1).settle(cl, [rec], tries=20)
            await placed
            engine = cluster.engines[0]
            await cluster.until(lambda: engine.core.engine.resting() == 1, what="the order")
            return [str(rec["fate"])]

    assert run(main(), clock) == [EXECUTED], rec
