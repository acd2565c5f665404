"""``shardex.sim.world``: seeded runs of the whole cluster under network and node faults on
virtual time -- 20 seeds, each a couple of virtual seconds -- every order learns its fate,
every node is back up and consistent at the end; one seed is one run (the same trace, the
same orders, the same digest); continuous checks record violations in the trace."""

from __future__ import annotations

from collections import Counter

import pytest

from shardex.client.results import EXECUTED, NOT_EXECUTED
from shardex.sim.faults import Faults
from shardex.sim.world import SimulationFailed, World
from tests.support.simclock import REAL_TIME_NODES, virtual_nodes

# (a restarted router learns its shards from their next HELLO: while nodes time it on the
# real clock, that never comes within a run's virtual seconds, so routers do not crash then)
CRASHABLE = ("engine", "accounts") if REAL_TIME_NODES else ("router", "engine", "accounts")
FAULTS = Faults(delay_p=0.1, cut_per_s=1.0, partition_per_s=0.7, partition_s=(0.05, 0.6),
                crash_per_s=0.7, down_s=(0.05, 0.3), pause_per_s=0.7,
                pause_s=(0.05, 1.2), slow_per_s=2.0, slow_s=(0.01, 0.2),
                crashable=CRASHABLE, power_per_s=0.5)  # fmt: skip
SEEDS = range(20)


def _run(seed: int, **kw) -> object:
    return World(seed, {"shards": 1, "accounts": 1}, FAULTS, **kw).run(1.5)


@pytest.mark.timeout(120)
def test_twenty_seeds_under_faults_end_healed_with_every_fate_known():
    injected: Counter = Counter()
    cancels = 0
    for seed in SEEDS:
        r = _run(seed)
        assert r.orders, seed
        assert {o["fate"] for o in r.orders} <= {EXECUTED, NOT_EXECUTED}, (seed, r.trace)
        assert {c["fate"] for c in r.cancels} <= {EXECUTED, NOT_EXECUTED}, (seed, r.cancels)
        cancels += len(r.cancels)
        assert r.state["down"] == [] and not r.violations
        (audit,) = r.state["audit"]
        assert audit["integrity"] == "ok" and audit["anomalies"] == 0, (seed, audit)
        (engine,) = r.state["engines"].values()
        assert engine["seq"] > 0
        injected.update(r.counts)
        kinds = [ev[1] for ev in r.trace if ev[1] == "phase"]
        assert kinds == ["phase"] * 4
    assert cancels > 0
    # the rates above make every kind of fault happen across the seeds
    kinds = ["delayed", "cut", "partition", "heal", "crash", "restart", "pause", "slow", "power"]
    for kind in kinds:
        assert injected[kind] > 0, (kind, injected)


@virtual_nodes
@pytest.mark.parametrize("seed", [7, 13])
def test_one_seed_is_one_run(seed):
    first, again = _run(seed), _run(seed)
    assert first.trace == again.trace
    assert first.orders == again.orders and first.cancels == again.cancels
    assert first.digest == again.digest
    assert first.state["audit"] == again.state["audit"]
    assert _run(seed + 1).digest != first.digest


def test_a_failing_check_is_a_violation_in_the_trace_and_the_run_goes_on():
    seen: list[float] = []

    def never_past_half_a_second(world: World) -> None:
        seen.append(world.clock.now)
        assert world.clock.now < 0.5, "past half a second"

    r = World(3, {"shards": 1, "accounts": 1}, checks=[never_past_half_a_second]).run(1.0)
    assert r.violations and all("past half a second" in v for v in r.violations)
    first = next(ev for ev in r.trace if ev[1] == "violation")
    assert first[0] >= 0.5 and r.orders and len(seen) > 10


def test_a_node_whose_turn_raises_is_a_violation_and_crashes_and_restarts():
    broken: list[float] = []

    def break_the_engine_once(world: World) -> None:
        if world.clock.now > 0.3 and not broken:
            broken.append(world.clock.now)

            def turn() -> None:
                raise ZeroDivisionError("a bug in a turn")

            world.cluster.engines[0].turn = turn

    r = World(4, {"shards": 1, "accounts": 1}, checks=[break_the_engine_once]).run(1.0)
    assert r.violations == ["engine-0 raised ZeroDivisionError('a bug in a turn')"]
    events = [ev[1:3] for ev in r.trace if ev[1] in ("failure", "crash", "restart")]
    assert events == [("failure", "engine-0"), ("crash", "engine-0"), ("restart", "engine-0")]
    assert r.state["down"] == [] and r.orders


def test_a_scheduler_that_dies_fails_the_run_with_its_error_and_the_time():
    def broken_check(world: World) -> None:  # (not an AssertionError: a bug in the check)
        if world.clock.now > 0.3:
            raise KeyError("a bug in a check")

    world = World(4, {"shards": 1, "accounts": 1}, checks=[broken_check])
    with pytest.raises(SimulationFailed, match=r"seed 4: the scheduler died at virtual t=0\.3"):
        world.run(1.0)
    assert world.trace.events[-1][1] == "failure"


def test_the_workload_settings_shape_the_run():
    busy = World(2, {"shards": 1, "accounts": 1}, workload={"think_s": 0.005}).run(0.5)
    calm = World(2, {"shards": 1, "accounts": 1},
                 workload={"think_s": 0.05, "cancel_p": 0.0}).run(0.5)  # fmt: skip
    assert len(busy.orders) > 2 * len(calm.orders) > 0
    assert busy.cancels and not calm.cancels


def test_one_node_at_a_time_scheduling_also_ends_healed():
    for seed in range(3):
        r = World(seed, {"shards": 2, "accounts": 1}, FAULTS, mode="one").run(1.0)
        assert r.orders and {o["fate"] for o in r.orders} <= {EXECUTED, NOT_EXECUTED}
        assert r.state["down"] == [] and not r.violations
        assert all(a["integrity"] == "ok" for a in r.state["audit"])


def test_the_journals_are_on_the_simulated_disk_unless_asked_for_a_real_one():
    sim = World(5, {"shards": 1, "accounts": 1}, Faults(power_per_s=3.0))
    r = sim.run(1.0)
    assert r.counts["power"] > 0 and r.state["down"] == []
    names = sim.disk.listdir(r.state["engines"]["engine-0"]["journal_dir"])
    assert any(n.startswith("journal-") and n.endswith(".log") for n in names), names
    real = World(5, {"shards": 1, "accounts": 1}, real_disk=True)
    assert real.disk is None and real.run(0.5).orders
