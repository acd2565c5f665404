"""The lease ttl as an option (``--lease-ms``) and the accounting of how late renewals run.

``LeaseTiming`` derives the renew period and refuses absurd ttls; ``RenewStats`` keeps the
renewals' lateness and the longest gap between successful ones (the quantity a shorter ttl
must survive); the lease fills it from the times it read (virtual clock here); ``shardex
up --lease-ms`` (and ``--durability``) reach the replicas' command lines.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from shardex.cli import up as up_cli
from shardex.clock import VirtualClock
from shardex.kinds import Plan
from shardex.layout import Layout
from shardex.lease import RENEW_MS, TTL_MS, Lease
from shardex.leasetime import MAX_SAMPLES, LeaseTiming, RenewStats, percentile
from shardex.node.supervisor import children_of
from shardex.sim.store import SimStore


def test_the_renew_period_is_derived_from_the_ttl_and_the_default_is_unchanged():
    assert LeaseTiming.of(TTL_MS) == LeaseTiming(800, 150) and RENEW_MS == 150
    assert LeaseTiming.of(300) == LeaseTiming(300, 56)
    assert LeaseTiming.of(250).renew_ms * 3 <= 250  # (the lease's own rule: >= 3 per ttl)
    # a stall longer than this budget is a failover: ttl·0.95 - renew
    assert LeaseTiming.of(800).stall_budget_ms(0.05) == pytest.approx(610.0)
    assert LeaseTiming.of(300).stall_budget_ms(0.05) == pytest.approx(229.0)


@pytest.mark.parametrize("bad", [0, 50, 99, 60_001, True, 300.0, "300", None])
def test_an_absurd_ttl_is_refused(bad: Any):
    with pytest.raises(ValueError, match="lease ttl"):
        LeaseTiming.of(bad)


def test_lateness_and_the_longest_gap_between_successful_renews():
    s = RenewStats()
    s.granted(10.0)
    assert s.renewed(10.15, 10.15, 10.151, ok=True) == pytest.approx(0.15)
    assert s.renewed(10.30, 10.42, 10.43, ok=False) is None  # store unreachable: no gap closed
    assert s.renewed(10.57, 10.60, 10.61, ok=True) == pytest.approx(0.45)  # since 10.15
    assert (s.renews, s.failed) == (3, 1)
    assert s.max_lateness == pytest.approx(0.12) and s.max_gap == pytest.approx(0.45)
    assert s.max_silence == pytest.approx(0.45)
    assert s.renewed(11.5, 11.5, 11.5, ok=False) is None  # the one that found it gone
    assert s.max_silence == pytest.approx(0.9) and s.max_gap == pytest.approx(0.45)
    assert s.max_round_trip == pytest.approx(0.01)
    assert s.renewed(10.7, 10.6, 10.6, ok=True) is not None  # early: lateness 0, not negative
    assert min(s.lateness) == 0.0
    line = s.summary()
    assert "5 renews (2 failed)" in line and "max 120.0 ms" in line and "renews 450.0 ms" in line


def test_samples_are_bounded_and_percentiles_are_nearest_rank():
    s = RenewStats()
    for i in range(MAX_SAMPLES * 3):
        s.renewed(float(i), float(i) + 0.001, float(i) + 0.002, ok=True)
    assert len(s.lateness) <= MAX_SAMPLES and s.renews == MAX_SAMPLES * 3
    assert percentile([], 0.99) == 0.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([float(v) for v in range(1, 101)], 0.99) == 99.0


def test_the_lease_accounts_its_renewals_on_its_clock():
    clock = VirtualClock()
    store = SimStore(clock, lag=None)
    timing = LeaseTiming.of(300)
    lease = Lease(store.client(), 0, "a", "tcp://a:1", timing.ttl_ms, timing.renew_ms,
                  clock=clock, thread=False)  # fmt: skip
    assert lease.try_acquire(0, 0)[0] == 1
    clock.advance(0.056)
    lease.tick(clock.monotonic())  # on time
    clock.advance(0.056 + 0.1)  # the node's turn came 100 ms late
    lease.tick(clock.monotonic())
    assert lease.stats.renews == 2 and lease.stats.failed == 0
    assert lease.stats.max_lateness == pytest.approx(0.1)
    assert lease.stats.max_gap == pytest.approx(0.156)
    assert lease.valid()
    lease.release()


def _argv(children: list) -> dict[str, list[str]]:
    return {c.name: c.argv for c in children}


def test_the_plan_s_lease_ttl_and_durability_reach_both_tiers_replicas(tmp_path):
    layout = Layout("127.0.0.1", 40100, 1, accounts=1)
    plan = Plan(layout, data_dir=str(tmp_path), replicas=2, durability="replicated",
                lease_ms=300)  # fmt: skip
    argv = _argv(children_of(plan))
    replicas = [n for n in argv if n.startswith(("engine.", "accounts."))]
    assert len(replicas) == 4
    for name in replicas:
        words = argv[name]
        assert words[words.index("--lease-ms") + 1] == "300", name
        assert words[words.index("--durability") + 1] == "replicated", name


class _Started(Exception):
    """Raised by the stand-in supervisor: ``shardex up`` got as far as starting children."""


def test_up_passes_lease_ms_and_durability_to_its_children(tmp_path, monkeypatch):
    """``shardex up --durability X`` used to stop at the plan: the children were built from
    a list of the plan's fields that left it out, so every replica ran ``both``."""
    seen: dict[str, list[str]] = {}

    class Supervisor:
        def __init__(self, children: list) -> None:
            seen.update(_argv(children))
            raise _Started

    monkeypatch.setattr(up_cli, "Supervisor", Supervisor)
    monkeypatch.setattr(up_cli, "ensure_build", lambda say: None)
    monkeypatch.setattr(up_cli, "_check_free", lambda *a: None)  # (nothing is bound here)
    result = CliRunner().invoke(up_cli.up, [
        "--shards", "1", "--replicas", "2", "--accounts", "1", "--insecure", "--no-pin",
        "--base-port", "40200", "--data-dir", str(tmp_path / "d"), "--durability",
        "replicated", "--lease-ms", "400",
    ])  # fmt: skip
    assert isinstance(result.exception, _Started), result.output
    words = seen["engine.0"]
    assert words[words.index("--durability") + 1] == "replicated"
    assert words[words.index("--lease-ms") + 1] == "400"


def test_up_refuses_a_lease_below_the_minimum(tmp_path):
    result = CliRunner().invoke(up_cli.up, [
        "--replicas", "2", "--insecure", "--data-dir", str(tmp_path), "--lease-ms", "20",
    ])  # fmt: skip
    assert result.exit_code == 2 and "--lease-ms" in result.output
