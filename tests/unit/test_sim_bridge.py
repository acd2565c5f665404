"""The bridge in the simulated world (``World(bridge=True)``): the cluster's bridge writes its
streams to a ``SimStore`` on the virtual clock, and ``stream_exact`` checks them once the run
healed -- every engine shard's events once and in order, every account shard's balance
changes -- under every safe fault; a bridge that silently skips one event is caught."""

from __future__ import annotations

from typing import Any

import pytest

from shardex.node.bridge.redis_writer import RedisWriter
from shardex.sim import worldrun
from shardex.sim.extract import read_streams

pytestmark = pytest.mark.timeout(120)


def _run(seed: int, faults: list[str]) -> tuple[worldrun.CheckedWorld, dict[str, list]]:
    world = worldrun.CheckedWorld(seed, dict(worldrun.PLAN), worldrun.faults_of(faults),
                                  bridge=True)  # fmt: skip
    with worldrun.quiet():
        world.run(1.0)
    assert world.store is not None
    return world, read_streams(world.store.client(), 2, 2)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_streams_hold_every_event_once_under_every_safe_fault(seed: int) -> None:
    world, streams = _run(seed, list(worldrun.SAFE))
    assert world.monitor.violations == [] and world.result.violations == []
    assert streams["shardex:events:0"] and streams["shardex:events:1"], streams.keys()
    assert any(streams[f"shardex:balances:{j}"] for j in (0, 1))
    assert world.monitor.checked > 100


def test_a_bridge_that_skips_an_event_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = RedisWriter._items
    skipped: list[Any] = []

    def _items(self: RedisWriter, st: Any, batch: list[tuple]) -> tuple[list, list]:
        items, covered = real(self, st, batch)
        if not skipped and len(items) > 1:  # the first event of a batch, not written
            skipped.append(items.pop(0))
        return items, covered

    monkeypatch.setattr(RedisWriter, "_items", _items)
    world, _ = _run(1, [])
    assert skipped
    assert "stream_exact" in {v.check for v in world.monitor.violations}, world.monitor.violations


def test_a_seed_with_the_bridge_is_one_run() -> None:
    """The bridge and its store draw nothing of their own: the same seed, the same trace."""
    first = worldrun.run(3, list(worldrun.SAFE), 1.0, bridge=True)
    again = worldrun.run(3, list(worldrun.SAFE), 1.0, bridge=True)
    assert first.violations == [] and first.trace == again.trace
    assert first.digest == again.digest
