"""``shardex.sim.script``: a run's fault schedule replayed instead of drawn -- the whole of it
is the same run, any subset (what a shrinker keeps) runs and heals, and an event that no
longer applies is skipped."""

from __future__ import annotations

import pytest

from shardex.sim.faults import Faults, Partition
from shardex.sim.script import KINDS, parse_partition
from shardex.sim.world import World
from tests.support.simclock import REAL_TIME_NODES, virtual_nodes

FAULTS = Faults.parse(
    "delay_p=0.2,cut_per_s=2,partition_per_s=1,partition_s=0.05:0.8,"
    "crash_per_s=1,down_s=0.05:0.5,pause_per_s=1,pause_s=0.05:1,"
    # (a restarted router waits for HELLOs timed on the real clock until nodes read net.clock)
    + ("crashable=engine:accounts" if REAL_TIME_NODES else "")
)
PLAN = {"shards": 1, "accounts": 1}


def _schedule(trace: list) -> list:
    return [ev for ev in trace if ev[1] in KINDS]


@virtual_nodes
def test_the_whole_schedule_replayed_is_the_run_itself():
    drawn = World(5, PLAN, FAULTS).run(1.5)
    assert len(_schedule(drawn.trace)) >= 3
    replay = World(5, PLAN, Faults(delay_p=0.2), schedule=_schedule(drawn.trace)).run(1.5)
    assert replay.trace == drawn.trace and replay.digest == drawn.digest
    assert replay.orders == drawn.orders


def test_a_subset_of_the_schedule_runs_and_heals_and_skips_what_no_longer_applies():
    drawn = World(6, PLAN, FAULTS).run(1.5)
    schedule = _schedule(drawn.trace)
    crashes = [ev for ev in schedule if ev[1] == "crash"]
    assert crashes, schedule
    # keep the restarts but not the crashes: every restart is skipped
    kept = [ev for ev in schedule if ev[1] != "crash"]
    replay = World(6, PLAN, Faults(delay_p=0.2), schedule=kept).run(1.5)
    kinds = [ev[1] for ev in replay.trace]
    assert "crash" not in kinds and "restart" not in kinds
    assert replay.state["down"] == [] and replay.orders
    assert {o["fate"] for o in replay.orders} <= {"executed", "not executed"}
    # keep one crash and nothing else: the heal phase restarts the node
    one = World(6, PLAN, Faults(), schedule=crashes[:1]).run(1.5)
    assert [ev[1:3] for ev in one.trace if ev[1] in KINDS] == [
        ("crash", crashes[0][2]), ("restart", crashes[0][2])]  # fmt: skip
    assert one.state["down"] == []


@pytest.mark.parametrize("p", [
    Partition(frozenset({"a", "b"})),
    Partition(frozenset({"a"}), frozenset({"c", "d"}), one_way=True),
])  # fmt: skip
def test_a_partition_reads_back_from_its_trace_detail(p):
    side, other, one_way = parse_partition(str(p))
    assert Partition(frozenset(side), None if other is None else frozenset(other), one_way) == p
    with pytest.raises(ValueError, match="not a partition"):
        parse_partition("a => b")
