"""``shardex.sim.sched``: the seeded scheduler decides the order of turns and the pauses, the
same way for the same seed; ``InProcCluster`` runs under it on virtual time; and a whole
cluster run is the same byte for byte for one seed (every delivered message digested)."""

from __future__ import annotations

import asyncio
import os
import random

import msgpack
import pytest

from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.sim.loop import run
from shardex.sim.sched import Scheduler, Trace
from tests.support.inproc import plan
from tests.support.simclock import virtual_nodes


def _decisions(seed: int, mode: str) -> list:
    s = Scheduler(seed, mode=mode)
    nodes = ["router-0", "engine-0", "engine-1", "accounts-0"]
    return [(s.order(nodes), s.pause(k % 3 == 0, 0.0)) for k in range(200)]


@pytest.mark.parametrize("mode", ["all", "one"])
def test_the_same_seed_makes_the_same_choices_and_another_seed_others(mode):
    assert _decisions(5, mode) == _decisions(5, mode)
    assert _decisions(5, mode) != _decisions(6, mode)
    orders = [o for o, _ in _decisions(5, mode)]
    if mode == "all":
        assert all(sorted(o) == sorted(orders[0]) for o in orders)  # every node, every step
        assert len({tuple(o) for o in orders}) > 1  # in varying order
    else:
        assert all(len(o) == 1 for o in orders)


def test_a_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Scheduler(1, mode="fair")


def _cluster_run(seed: int, mode: str = "all") -> tuple[str, int, list[str], float]:
    """A cluster (1 engine, 1 account shard) under the seeded scheduler on virtual time, with
    one client placing 60 seeded orders: (digest, messages delivered, fates, virtual end)."""
    clock = VirtualClock()
    net = mem_transport(clock=clock)
    trace = Trace()
    net.hub.on_deliver = trace.message

    async def main() -> list[str]:
        cluster = InProcCluster(plan(1, 1), net=net)
        cluster.sched = Scheduler(seed, mode=mode, hub=net.hub, trace=trace)
        async with cluster, cluster.client() as cl:
            cl._prefix = "c0"  # (the SDK draws a random id prefix: make it the seed's)
            for acct in ("a", "b"):
                for asset, amount in (("USD", "100000"), ("BTC", "100")):
                    assert (await cl.deposit(acct, asset, amount, ref=f"{acct}{asset}")).ok
            rng = random.Random(seed)
            orders = [dict(symbol="BTC-USD", side=rng.choice(("buy", "sell")), qty="0.01",
                           price=str(100 + rng.randint(-2, 2)), account=rng.choice("ab"),
                           id=f"o{k}") for k in range(60)]  # fmt: skip
            results = await asyncio.gather(*[cl.place(**o) for o in orders])
        return [r.fate for r in results]

    fates = run(main(), clock)
    return trace.digest, trace.delivered, fates, clock.now


@pytest.mark.parametrize("mode", ["all", "one"])
def test_a_cluster_runs_on_virtual_time_under_the_seeded_scheduler(mode):
    _, delivered, fates, end = _cluster_run(3, mode)
    assert len(fates) == 60 and set(fates) <= {"executed", "not_executed"}
    assert delivered > 120  # (each order at least a request and a reply)
    assert 0 < end < 60  # virtual seconds moved, and no client timed out


@virtual_nodes
def test_one_seed_is_one_run_byte_for_byte():
    first, again, other = _cluster_run(11), _cluster_run(11), _cluster_run(12)
    assert first == again
    assert first[0] != other[0]


class _Sock:
    owner = "router-0"


def _digest(*frames: bytes) -> str:
    t = Trace()
    t.message(_Sock(), list(frames))
    return t.digest


def test_the_digest_reads_this_process_id_as_zero_and_nothing_else():
    ours = msgpack.packb({"shard": 0, "pid": os.getpid()})
    zero = msgpack.packb({"shard": 0, "pid": 0})
    other = msgpack.packb({"shard": 0, "pid": os.getpid() + 1})
    assert _digest(b"HELLO", ours) == _digest(b"HELLO", zero)  # another process: same digest
    assert _digest(b"HELLO", other) != _digest(b"HELLO", zero)
    assert _digest(b"HELLO", zero) != _digest(b"HELLO!", zero)
