"""Standbys, leases and the lease store in the simulated world (``World`` with ``replicas`` 2,
``shardex.sim.worldha``): the replicas are named, crashed, paused and partitioned like any
node, the store has outages (and opt-in failovers), the checks see the replicated leaders,
and three known bugs of the replicated path are caught within a bounded number of seeds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.sim.disk import SimDisk
from shardex.sim.faults import Faults
from shardex.sim.mutations import applied
from shardex.sim.runner import quiet
from shardex.sim.store import SimStore
from shardex.sim.world import World
from shardex.sim.worldha import StoreFaults
from shardex.sim.worldrun import CheckedWorld
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(120)

PLAN = {"shards": 1, "accounts": 1, "replicas": 2}
NODE_FAULTS = Faults(crash_per_s=2.0, down_s=(0.05, 0.3), pause_per_s=0.7, pause_s=(0.05, 1.2),
                     partition_per_s=0.5, cut_per_s=0.5, crashable=("engine", "accounts"))
NO_STORE_FAULT = StoreFaults()
OUTAGES = StoreFaults(down_per_s=1.0, down_s=(0.8, 1.5))  # each past what a lease survives


def _checked(seed: int, faults: Faults, store: StoreFaults = NO_STORE_FAULT,
             mutation: str | None = None, duration: float = 2.0) -> tuple[list[str], Any]:
    """Every violation of one checked seed (the checks' and the world's own), its result."""
    world = CheckedWorld(seed, dict(PLAN), faults)
    assert world.ha is not None
    world.ha.faults = store
    with quiet(), applied(mutation):
        result = world.run(duration)
    result.state["writes"] = list(world.monitor.writes.values())  # (what the checks saw)
    return [str(v) for v in world.monitor.violations] + result.violations, result


def test_replicas_are_named_crashed_and_promoted() -> None:
    """Leaders and standbys of both tiers are nodes of the world: crashes, pauses and
    partitions hit them, a standby is promoted, and the healed run breaks no invariant."""
    found, r = _checked(1, NODE_FAULTS)
    assert found == []
    hit = {e[2] for e in r.trace if e[1] in ("crash", "pause")}
    assert hit & {"engine-0a", "engine-0b"} and hit & {"accounts-0a", "accounts-0b"}, hit
    promoted = [e for e in r.trace if e[1] == "promote"]
    assert any(not e[3].startswith("epoch 1") for e in promoted), promoted
    assert r.orders and all(o["fate"] in ("executed", "not executed") for o in r.orders)
    # the checks were fed the replicated leaders: writes under their epochs, by lease node
    writers = {(w.tier, w.node, w.epoch) for w in r.state["writes"]}
    assert {t for t, _, e in writers if e >= 2} >= {"engine"}, writers
    assert {n for _, n, _ in writers} <= {"shard-0.r0", "shard-0.r1", "accounts-0.r0",
                                          "accounts-0.r1"}, writers  # fmt: skip
    assert r.state["engines"], "the collected state has no leading engine replica"


def test_store_outage_fences_leaders_and_heals() -> None:
    """An outage past the lease ttl: the leaders fence at their deadline, exit once the
    store answers that the lease is gone, are restarted as standbys; nothing is violated."""
    found, r = _checked(2, Faults(), OUTAGES)
    assert found == []
    assert r.counts["store_down"] >= 1
    assert [e for e in r.trace if e[1] == "exit"], "no leader lost its lease"


def test_leader_cut_off_from_the_store_hands_over() -> None:
    """One replica at a time cut off from the store (the store answers the others): a
    leader cut past its ttl fences at its deadline, its standby takes the lease, the run
    heals and breaks no invariant."""
    found, r = _checked(5, Faults(), StoreFaults(cut_per_s=1.0, cut_s=(0.8, 1.5)))
    assert found == []
    assert r.counts["store_cut"] >= 1
    assert any(e[1] == "promote" and not e[3].startswith("epoch 1") for e in r.trace)


def test_store_failover_is_opt_in() -> None:
    """A failover of the store (loses its unsynced writes, lease keys too) is off unless
    asked for; asked for, it happens and the run goes on to its end."""
    assert StoreFaults().failover_per_s == 0
    world = World(3, dict(PLAN), store_faults=StoreFaults(failover_per_s=2.0))
    with quiet():
        r = world.run(1.0)
    assert r.counts["store_failover"] >= 1
    assert [e for e in r.trace if e[1] == "store_failover"]


# Each known bug of the replicated path, put back: (mutation, node faults, store faults, K:
# some seed of 1..K must fail, the checks that may name it).
CAUGHT = [
    ("skip_hwm_wait",
     Faults(partition_per_s=3, partition_s=(0.1, 0.6), one_way_p=0.5, crash_per_s=3,
            down_s=(0.05, 0.3), crashable=("accounts",)),
     NO_STORE_FAULT, 8, ("acked_once", "holds_match_books", "no_anomalies")),
    ("restart_takes_lease",
     Faults(power_per_s=2, crash_per_s=1, down_s=(0.05, 0.4), crashable=("engine", "accounts")),
     NO_STORE_FAULT, 6, ("cold_failover",)),
    ("write_past_lease", Faults(), OUTAGES, 6, ("stale_writes",)),
]  # fmt: skip


@pytest.mark.parametrize(("mutation", "faults", "store", "k", "checks"), CAUGHT,
                         ids=[c[0] for c in CAUGHT])  # fmt: skip
def test_mutation_caught_within_k_seeds(mutation: str, faults: Faults, store: StoreFaults,
                                        k: int, checks: tuple[str, ...]) -> None:  # fmt: skip
    """The mutation makes a seed of the first K fail with an expected check; the same seeds
    up to that one, unmutated, pass."""
    failing = None
    for seed in range(1, k + 1):
        found, _ = _checked(seed, faults, store, mutation)
        if found:
            failing = seed
            break
    assert failing is not None, f"{mutation} not caught in seeds 1..{k}"
    assert any(v.split(":")[0] in checks or v.startswith(f"_continuous: {checks[0]}")
               for v in found), found  # fmt: skip
    for seed in range(1, failing + 1):
        clean, _ = _checked(seed, faults, store)
        assert clean == [], (seed, clean)


def test_standby_starts_over_on_the_simulated_disk(tmp_path: Path) -> None:
    """A standby whose journal diverged moves it aside through the node's disk: on a SimDisk
    (no real files) the move happens there and the standby goes on from an empty journal
    (``shutil.move`` on the real path raised FileNotFoundError and killed the run)."""
    store, disk = SimStore(), SimDisk()
    net = mem_transport()
    net.disk = disk
    p = plan(1, 0, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))

    async def main() -> tuple[str, int]:
        async with InProcCluster(p, net=net, store=store) as cluster:
            await cluster.until(cluster.leaders, what="a leader")
            (standby,) = [r for r in cluster.replicas if r.leader is None]
            standby.standby.start_over("a test")
            return standby.standby.journal_dir, standby.standby.engine.seq

    where, seq = asyncio.run(main())
    aside = [n for n in disk.listdir(str(tmp_path)) if ".diverged-" in n]
    assert aside and disk.isdir(f"{tmp_path}/{aside[0]}") and disk.isdir(where)
    assert seq == 0
    assert not list(tmp_path.glob("*diverged*"))  # (nothing moved on the real disk)


def test_replicated_seed_is_the_same_run() -> None:
    """One seed with replicas, node faults and store outages, run twice: the same digest
    (every message and event), and the standby's ``[PID, pid]`` to its leader digests as 0,
    so a replay in another process (another pid) digests the same."""
    import os

    import msgpack

    from shardex.sim.sched import Trace

    def once() -> str:
        with quiet():
            world = World(1, dict(PLAN), NODE_FAULTS, store_faults=OUTAGES)
            return world.run(1.0).digest

    assert once() == once()
    here, elsewhere = Trace(), Trace()

    class Sock:
        owner = "engine-0a"

    here.message(Sock(), [b"PID", msgpack.packb(os.getpid())])
    elsewhere.message(Sock(), [b"PID", msgpack.packb(0)])
    assert here.digest == elsewhere.digest


def test_leader_losses_count_only_failovers_with_a_cause() -> None:
    """``no_needless_failover`` is fed the failovers whose old leader the world impaired
    (crashed, paused, cut off, the store down) during its term, and only those."""
    from shardex.clock import VirtualClock
    from shardex.sim.sched import Trace
    from shardex.sim.worldha import HA

    clock = VirtualClock()
    ha = HA(1, clock, Trace(), StoreFaults(), SimStore(clock))
    ha._failover("engine-0a", 1)  # (the first election: nobody lost)
    clock.advance(1.0)
    ha._failover("engine-0b", 2)  # engine-0a was never impaired: needless
    assert ha.losses[("engine", 0)] == 0
    clock.advance(0.5)
    ha._impair("engine-0b", clock.now + 0.2)  # paused in its term ...
    clock.advance(3.0)
    ha._failover("engine-0a", 3)  # ... so losing it later is explained
    assert ha.losses[("engine", 0)] == 1
    ha._impair("", clock.now + 1.0)  # the store down: every leader impaired
    ha._failover("engine-0b", 4)
    assert ha.losses[("engine", 0)] == 2


def test_replicated_world_with_its_bridge() -> None:
    """Replicas and the bridge on one store (as on one Redis): through the failovers every
    event of the engine shard is in its stream once, in order (``stream_exact``)."""
    world = CheckedWorld(1, dict(PLAN), NODE_FAULTS, bridge=True)
    with quiet():
        r = world.run(1.5)
    assert [str(v) for v in world.monitor.violations] + r.violations == []
    assert any(e[1] == "promote" and not e[3].startswith("epoch 1") for e in r.trace)
    assert world.store is not None and world.store.client().xrange("shardex:events:0")


def test_a_fail_stop_is_restarted_and_only_an_injected_disk_error_excuses_it() -> None:
    """A standby that exited on its journal (exit code 4) is restarted like one that lost
    its lease; on an error the world injected (``SimDisk``'s) that is all, on any other it is
    a violation too: a fail-stop must not hide a bug."""
    from types import SimpleNamespace

    from shardex.clock import VirtualClock
    from shardex.node.failstop import EXIT_JOURNAL_FAILED
    from shardex.sim.sched import Trace
    from shardex.sim.worldha import HA

    def replica(reason: str) -> Any:
        return SimpleNamespace(exited=EXIT_JOURNAL_FAILED, exit_reason=reason, leader=None,
                               standby=object(), lease=SimpleNamespace(r=SimpleNamespace()))

    class Life:
        def __init__(self) -> None:
            self.nodes = {"engine-0b": replica("Input/output error (simulated, write)"),
                          "accounts-0a": replica("Bad file descriptor")}
            self.gone: list[str] = []

        def named(self) -> dict[str, Any]:
            return dict(self.nodes)

        def exited(self, name: str) -> None:
            self.gone.append(name)
            del self.nodes[name]

    clock = VirtualClock()
    ha = HA(1, clock, Trace(), StoreFaults(), SimStore(clock))
    ha.life = life = Life()  # type: ignore[assignment]
    restart_at: dict[str, float] = {}
    ha.tick(0.0, True, restart_at, (0.1, 0.2))
    assert sorted(life.gone) == sorted(restart_at) == ["accounts-0a", "engine-0b"]
    assert ha.counts["fail_stop"] == 2
    assert [v.split(":")[0] for v in ha.violations] == ["fail_stop"]
    assert "accounts-0a" in ha.violations[0] and "Bad file descriptor" in ha.violations[0]
