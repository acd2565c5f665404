"""``python -m shardex.sim`` (``shardex.sim.cli``): per-seed report with a replay line, the
shrink of a failing seed, the summary and exit status, on a synthetic runner; and the
simulated world's own failures (a node that raises, a run that cannot go on) as failed seeds."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from shardex.sim import cli
from shardex.sim.invariants import Violation
from shardex.sim.runner import RunResult

pytestmark = pytest.mark.timeout(60)


class FakeWorld:
    """Seeds divisible by 3 fail iff their faults 2 and 5 both run (of 8 per seed)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, seed, faults, duration, mutation=None, keep=None) -> RunResult:
        self.calls.append((seed, tuple(faults), duration, mutation, keep))
        schedule = [f"{faults[0]} #{i}" for i in range(8)]
        kept = list(range(8)) if keep is None else keep
        bad = seed % 3 == 0 and {2, 5} <= set(kept)
        violations = [Violation("acked_once", "engine-0: order x lost")] if bad else []
        trace = [(0.1 * k, "engine-0" if k % 2 else "router", f"step {k}") for k in range(40)]
        return RunResult(seed, violations, trace, [schedule[i] for i in kept], 7, "d" * 16,
                         duration, Counter({faults[0]: len(kept)}))  # fmt: skip


def _run(monkeypatch, *args: str) -> tuple[FakeWorld, object]:
    world = FakeWorld()
    monkeypatch.setattr(cli, "world_run", world)
    return world, CliRunner().invoke(cli.main, list(args))


def test_seeds_summary_and_replay_line(monkeypatch):
    world, res = _run(monkeypatch, "--seeds", "4", "--seed", "1", "--faults", "cut",
                      "--duration", "3")  # fmt: skip
    assert res.exit_code == 1, res.output
    assert [c[0] for c in world.calls] == [1, 2, 3, 4]
    out = res.output
    assert "seed 1: ok (7 checks" in out and "seed 3: 1 violations" in out
    assert "VIOLATION acked_once: engine-0: order x lost" in out
    assert "engine-0" in out.split("trace, the lead-up:")[1]
    assert ("replay: PYTHONHASHSEED=" in out and "python -m shardex.sim --seed 3 --seeds 1 "
            "--faults cut --duration 3" in out)  # fmt: skip
    assert (
        "summary: 4 seeds, 1 failed (3); faults injected: {'cut': 32}; 28 invariant checks" in out
    )


def test_shrink_prints_the_minimal_schedule_and_its_replay(monkeypatch):
    world, res = _run(monkeypatch, "--seeds", "1", "--seed", "6", "--faults", "pause",
                      "--mutation", "double_release", "--shrink")  # fmt: skip
    assert res.exit_code == 1
    assert "shrunk: 8 faults -> 2 in" in res.output
    assert "[2] pause #2" in res.output and "[5] pause #5" in res.output
    assert "--mutation double_release --keep 2,5" in res.output
    assert all(c[3] == "double_release" for c in world.calls)
    assert len(world.calls) <= 1 + cli.MAX_SHRINK_RUNS


def test_keep_and_a_clean_run(monkeypatch):
    world, res = _run(monkeypatch, "--seeds", "2", "--seed", "3", "--keep", "1,2")
    assert res.exit_code == 0, res.output
    assert world.calls[0][4] == [1, 2]
    _, res = _run(monkeypatch, "--mutation", "nope")
    assert res.exit_code == 2 and "double_release" in res.output


def test_stop_on_failure(monkeypatch):
    world, res = _run(monkeypatch, "--seeds", "9", "--seed", "1", "--stop-on-failure")
    assert [c[0] for c in world.calls] == [1, 2, 3]
    assert "summary: 3 seeds, 1 failed (3)" in res.output


def test_a_node_that_raises_fails_its_seed_on_the_world(monkeypatch):
    """The world's own violation (an account shard's turn raised: its process would have
    died) fails the seed and is printed, though every invariant still holds after the
    supervisor restarted it; the summary says how much was simulated per CPU second."""
    from shardex.node.accounts import AccountNode

    real = AccountNode.after_links
    raised: list[str] = []

    def after_links(self: AccountNode) -> None:
        if not raised and self.mono() > 0.3:
            raised.append("once")
            raise ZeroDivisionError("a bug in an account shard's turn")
        real(self)

    monkeypatch.setattr(AccountNode, "after_links", after_links)
    res = CliRunner().invoke(cli.main, ["--seeds", "1", "--faults", "none", "--duration", "0.5"])
    assert raised and res.exit_code == 1, res.output
    assert "VIOLATION world: accounts-" in res.output and "ZeroDivisionError" in res.output
    assert "summary: 1 seeds, 1 failed (1)" in res.output
    assert " s simulated (" in res.output and " per CPU s)" in res.output


def test_the_default_faults_are_every_safe_kind():
    from shardex.sim import worldrun

    assert [p.default for p in cli.main.params if p.name == "faults"] == ["safe"]
    f = worldrun.faults_of(["safe"])
    for field_, kind in (("delay_p", "delay"), ("cut_per_s", "cut"),
                         ("partition_per_s", "partition"), ("crash_per_s", "crash"),
                         ("pause_per_s", "pause"), ("slow_per_s", "slow"),
                         ("power_per_s", "power")):  # fmt: skip
        assert getattr(f, field_) > 0 and kind in worldrun.SAFE, field_


def test_bridge_runs_the_world_with_its_streams_and_replays_with_it(monkeypatch):
    calls: list[bool] = []
    world = FakeWorld()

    def run(seed, faults, duration, mutation=None, keep=None, bridge=False) -> RunResult:
        calls.append(bridge)
        return world(seed, faults, duration, mutation, keep)

    monkeypatch.setattr(cli, "world_run", run)
    res = CliRunner().invoke(cli.main, ["--seeds", "1", "--seed", "3", "--bridge"])
    assert calls == [True] and res.exit_code == 1
    assert "--faults safe --duration 2 --bridge" in res.output


def test_a_run_that_cannot_go_on_fails_its_seed_with_a_replay_line(monkeypatch):
    """An account shard that raises on every turn: funding fails, the run stops there; the
    seed fails (the node's raise, and the run that could not go on), the command goes on."""
    from shardex.node.accounts import AccountNode

    def after_links(self: AccountNode) -> None:
        raise ZeroDivisionError("every turn")

    monkeypatch.setattr(AccountNode, "after_links", after_links)
    res = CliRunner().invoke(cli.main, ["--seeds", "2", "--faults", "none", "--duration", "0.2"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert "VIOLATION world: accounts-" in res.output
    assert "VIOLATION simulation: seed 1: the run stopped" in res.output, res.output
    assert "summary: 2 seeds, 2 failed (1, 2)" in res.output


def test_replicas_and_store_faults_reach_the_world_and_its_replay_line(monkeypatch):
    calls: list[dict] = []
    world = FakeWorld()

    def run(seed, faults, duration, mutation=None, keep=None, **kw) -> RunResult:
        calls.append(kw)
        return world(seed, faults, duration, mutation, keep)

    monkeypatch.setattr(cli, "world_run", run)
    res = CliRunner().invoke(cli.main, ["--seeds", "1", "--seed", "3", "--replicas",
                                        "--store-faults", "down_per_s=1"])  # fmt: skip
    assert calls == [{"replicas": True, "store_faults": "down_per_s=1"}] and res.exit_code == 1
    assert "--replicas --store-faults down_per_s=1" in res.output
    res = CliRunner().invoke(cli.main, ["--store-faults", "down_per_s=1"])
    assert res.exit_code == 2 and "--store-faults needs a store" in res.output
    # the bridge's stream store has faults of its own too (no replicas needed)
    res = CliRunner().invoke(cli.main, ["--seeds", "1", "--seed", "3", "--bridge",
                                        "--store-faults", "failover_per_s=1"])  # fmt: skip
    assert calls[-1] == {"bridge": True, "store_faults": "failover_per_s=1"}, calls
    assert "--bridge --store-faults failover_per_s=1" in res.output


def test_store_faults_parse_and_refuse_what_they_do_not_know():
    from shardex.sim.worldha import StoreFaults

    f = StoreFaults.parse("down_per_s=1,down_s=0.8:1.5,cut_per_s=0.5")
    assert (f.down_per_s, f.down_s, f.cut_per_s, f.failover_per_s) == (1.0, (0.8, 1.5), 0.5, 0.0)
    with pytest.raises(ValueError, match="bad store fault setting 'flood=1'"):
        StoreFaults.parse("flood=1")
