"""The simulated world with timed orders (``--timed-orders``, ``workload.TIMED``): the clients
also place gtd orders that expire a few hundred virtual ms later and cancel-all an account's
orders in a pair now and then, under every safe fault; every invariant holds (holds equal to
the books' live orders, money conserved, books equal to their journals' replay...), and the
runs did sweep expired orders and cancel-all some (not a mix that never reached the engine)."""

from __future__ import annotations

from collections import Counter

import pytest

from shardex.engine.codes import EV_CANCELLED
from shardex.sim import worldrun
from shardex.sim.cli import replay_line
from shardex.sim.extract import cluster_state
from shardex.sim.runner import quiet
from shardex.sim.workload import TIMED
from shardex.wire.layouts import EV_KIND

SEEDS = range(3000, 3008)
DURATION = 0.5
FAULTS = list(worldrun.SAFE)


@pytest.mark.timeout(240)
def test_timed_orders_keep_every_invariant_under_every_safe_fault() -> None:
    reasons: Counter[str] = Counter()
    failures = []
    for seed in SEEDS:
        world = worldrun.CheckedWorld(seed, dict(worldrun.PLAN), worldrun.faults_of(FAULTS),
                                      workload=TIMED)  # fmt: skip
        with quiet():
            res = world.run(DURATION)
        found = world.monitor.violations + worldrun.world_violations(world, res)
        if found:
            again = replay_line(seed, FAULTS, DURATION, None, None, ("--timed-orders",))
            failures.append(f"seed {seed}: {found[:3]}\n  replay: {again}")
        for shard in cluster_state(world.cluster, replay=False).engines:
            reasons.update(ev[4] for ev in shard.events or () if ev[EV_KIND] == EV_CANCELLED)
    assert not failures, "\n".join(failures)
    assert reasons["expired"] > 0 and reasons["cancel_all"] > 0, reasons
