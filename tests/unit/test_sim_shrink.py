"""The fault-schedule shrinker (``shardex.sim.shrink.ddmin``) on synthetic predicates: it finds
the minimal failing subset, keeps the schedule's order, stays within a bound on runs, and
stops at a budget with a subset that still fails. And the trace (``shardex.sim.trace``):
a stable digest, and the lead-up a reader sees first."""

from __future__ import annotations

import math
import random

import pytest

from shardex.sim.shrink import ddmin
from shardex.sim.trace import Event, Trace, as_event, lead_up, render, run_hash


def _needs(*culprits: int):
    """A run fails iff every one of ``culprits`` is in the schedule."""
    calls: list[list[int]] = []

    def fails(subset: list[int]) -> bool:
        calls.append(subset)
        return set(culprits) <= set(subset)

    return fails, calls


def test_one_culprit_of_many():
    fails, calls = _needs(13)
    got = ddmin(list(range(100)), fails)
    assert got.items == [13] and got.indexes == [13] and not got.exhausted
    assert got.runs == len(calls) <= 2 + 2 * math.ceil(math.log2(100))  # halving


def test_two_culprits_found_in_order_within_a_bound():
    fails, _ = _needs(71, 4)
    got = ddmin(list(range(100)), fails)
    assert got.items == [4, 71]
    assert got.runs <= 60, got.runs  # k log n territory, not 2^n


def test_random_conjunctions_shrink_to_exactly_their_culprits():
    rng = random.Random(5)
    for _ in range(30):
        n = rng.randint(1, 60)
        culprits = rng.sample(range(n), rng.randint(1, min(4, n)))
        fails, _ = _needs(*culprits)
        items = [f"fault-{i}" for i in range(n)]
        got = ddmin(items, lambda sub, f=fails: f([int(x.split("-")[1]) for x in sub]))
        assert got.items == [f"fault-{i}" for i in sorted(culprits)]
        assert got.runs <= 4 + 8 * len(culprits) * math.ceil(math.log2(n + 1)), (n, got.runs)


def test_a_failure_without_faults_shrinks_to_nothing():
    got = ddmin(list(range(10)), lambda sub: True)
    assert got.items == [] and got.runs == 2


def test_the_result_is_one_minimal_for_a_non_monotone_predicate():
    def fails(sub: list[int]) -> bool:  # needs 3 and an odd number of faults
        return 3 in sub and len(sub) % 2 == 1

    got = ddmin(list(range(11)), fails)
    assert fails(got.items)
    for k in range(len(got.items)):
        assert not fails(got.items[:k] + got.items[k + 1 :])


def test_budget_returns_the_smallest_failing_subset_seen():
    fails, _ = _needs(2, 7, 30)
    got = ddmin(list(range(100)), fails, max_runs=6)
    assert got.exhausted and got.runs == 6
    assert fails(got.items) and len(got.items) < 100


def test_a_schedule_that_passes_is_refused():
    with pytest.raises(ValueError, match="does not fail"):
        ddmin([1, 2, 3], lambda sub: False)


def test_each_subset_runs_once():
    fails, calls = _needs(9, 10)
    ddmin(list(range(32)), fails)
    assert len({tuple(c) for c in calls}) == len(calls)


def _events(seed: int) -> list[Event]:
    rng = random.Random(seed)
    return [Event(k * 0.001 + rng.random() / 1e4, rng.choice(["engine-0", "router", "accounts-1"]),
                  rng.choice(["crash", "deliver 3 frames", "pause 1.2s", "heal"]))
            for k in range(200)]  # fmt: skip


def test_trace_digest_is_stable_and_sensitive():
    assert run_hash(_events(1)) == run_hash(_events(1))
    assert run_hash(_events(1)) != run_hash(_events(2))
    evs = _events(1)
    evs[100] = Event(evs[100].t, evs[100].node, evs[100].what + "!")
    assert run_hash(evs) != run_hash(_events(1))
    t = Trace(keep=5)
    t.extend(_events(1))
    assert t.count == 200 and len(t.events) == 5 and t.digest() == run_hash(_events(1))


def test_lead_up_prefers_the_nodes_a_violation_names():
    evs = _events(3)
    got = lead_up(evs, until=0.1, mentions="accounts-1: USD appeared", n=10)
    assert len(got) == 10 and all(e.t <= 0.1 for e in got)
    assert [e.t for e in got] == sorted(e.t for e in got)
    assert all(e.node == "accounts-1" for e in got)
    text = render(got, skipped=90)
    assert "90 earlier events" in text and "accounts-1" in text


def test_trace_reads_the_shapes_a_world_records():
    assert as_event((1.5, "engine-0", "crash")) == Event(1.5, "engine-0", "crash")
    assert as_event((1.5, "crash", "engine-0", "")) == Event(1.5, "engine-0", "crash")
    assert as_event((2.0, "pause", "router", "1.2s")) == Event(2.0, "router", "pause 1.2s")
    assert as_event({"time": 2, "node": "r", "kind": "partition"}) == Event(2.0, "r", "partition")
