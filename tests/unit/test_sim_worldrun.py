"""The invariants on the simulated world (``shardex.sim.worldrun``): a clean run passes every
check; known bugs put back (``shardex.sim.mutations``) are caught within a bounded number of
seeds; the command line runs the world once it exists. Skipped until ``shardex.sim.world``
is there (it is built alongside)."""

from __future__ import annotations

import pytest

pytest.importorskip("shardex.sim.world")

from shardex.sim import cli, worldrun  # noqa: E402 - after the skip

pytestmark = pytest.mark.timeout(120)


def test_the_command_line_runs_the_world():
    assert cli.world_run is worldrun.run


def test_a_clean_world_keeps_every_invariant():
    res = worldrun.run(1, [], 1.0)
    assert res.violations == [] and res.checked > 100
    assert not res.faults and len(res.digest) == 16


def test_faults_by_kind_and_by_field():
    f = worldrun.faults_of(["crash", "pause_s=2:3", "delay_p=0.5"])
    assert f.crash_per_s == worldrun.PRESETS["crash"]["crash_per_s"]
    assert f.pause_s == (2.0, 3.0) and f.delay_p == 0.5 and f.pause_per_s == 0.0
    with pytest.raises(ValueError, match="unknown fault kind"):
        worldrun.faults_of(["meteor"])


def test_a_subset_of_the_faults_replays():
    kinds = ["crash", "pause", "partition", "cut"]
    full = worldrun.run(5, kinds, 1.5)
    assert len(full.schedule) >= 2, full.schedule
    none = worldrun.run(5, kinds, 1.5, keep=[])
    assert none.schedule == [] and not set(none.faults) & set(worldrun.INJECTED)
    first = worldrun.run(5, kinds, 1.5, keep=[0])
    assert first.schedule[:1] == full.schedule[:1] and len(first.schedule) == 1


def _first_failing(mutation: str, faults: list[str], duration: float, seeds: int) -> tuple:
    for seed in range(1, seeds + 1):
        res = worldrun.run(seed, faults, duration, mutation)
        if res.violations:
            return seed, {v.check for v in res.violations}
    return None, set()


def test_account_link_takeover_is_caught_without_faults():
    seed, checks = _first_failing("link_identity_takeover", [], 1.0, 3)
    assert seed is not None and "acked_once" in checks, checks


def test_a_queued_order_counted_not_executed_is_caught_under_long_pauses():
    """Pauses longer than the client's timeout and its fate question's (1 s each)."""
    faults = ["pause_per_s=1", "pause_s=2.5:4"]
    seed, checks = _first_failing("queued_not_executed", faults, 6.0, 5)
    assert seed is not None and "ran_at_most_once" in checks, checks
    assert worldrun.run(seed, faults, 6.0).violations == []  # the same seed, the bug fixed
