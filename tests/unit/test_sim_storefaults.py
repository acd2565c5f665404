"""The simulated store's faults (``shardex.sim.storefaults``) are faults of a run's schedule:
listed in it, let through by ``--keep`` index like a crash, replayed by a ``Script``, and
kept by the shrinker when a failure needs them; a schedule kept or replayed whole is the run
itself, byte for byte (digest)."""

from __future__ import annotations

import functools

import pytest

from shardex.sim import worldrun
from shardex.sim.cli import shrink
from shardex.sim.faults import Faults
from shardex.sim.runner import quiet
from shardex.sim.script import KINDS
from shardex.sim.storefaults import STORE_KINDS, StoreFaults
from shardex.sim.world import World

pytestmark = pytest.mark.timeout(120)

OUTAGES_AND_CUTS = "down_per_s=1,down_s=0.3:1.0,cut_per_s=1"
REPLICATED = functools.partial(worldrun.run, replicas=True, store_faults=OUTAGES_AND_CUTS)


def _store(schedule: list) -> list[int]:
    return [i for i, ev in enumerate(schedule) if ev[1] in STORE_KINDS]


def test_store_faults_are_kept_by_index_and_the_whole_schedule_is_the_run() -> None:
    """Seed 2 draws store outages and a cut among pauses and connection cuts: all of them
    are in its schedule; kept whole it is the same run (digest); kept without the store's
    faults none of them happens (they used to happen whatever ``--keep`` said)."""
    full = REPLICATED(2, ["pause", "cut"], 1.5)  # ~0.9 s CPU each
    store = _store(full.schedule)
    assert {full.schedule[i][1] for i in store} >= {"store_down", "store_cut"}, full.schedule
    assert full.faults["store_down"] >= 1 and len(full.schedule) > len(store)
    whole = REPLICATED(2, ["pause", "cut"], 1.5, keep=list(range(len(full.schedule))))
    assert whole.digest == full.digest and whole.schedule == full.schedule
    others = [i for i in range(len(full.schedule)) if i not in store]
    without = REPLICATED(2, ["pause", "cut"], 1.5, keep=others)
    assert not set(without.faults) & set(STORE_KINDS), without.faults
    assert not [ev for ev in without.trace if ev[1] in ("store_up", "store_reach")]
    assert without.digest != full.digest


@pytest.mark.timeout(300)  # (7 runs, ~5 s of CPU: slow only on a crowded box)
def test_shrinking_a_lease_bug_keeps_the_store_outage_it_needs() -> None:
    """``write_past_lease`` shows only while the store is down (a paused leader's first turn
    renews otherwise and learns it was deposed): shrinking seed 2's six faults ends with the
    one store outage, named ``stale_writes`` (not the world's catch-all check)."""
    run = functools.partial(worldrun.run, replicas=True,
                            store_faults="down_per_s=1,down_s=0.8:1.5")  # fmt: skip
    res = run(2, ["pause", "cut"], 2.0, "write_past_lease")
    assert "stale_writes" in {v.check for v in res.violations}, res.violations
    lines: list[str] = []
    kept = shrink(run, res, ["pause", "cut"], 2.0, "write_past_lease", lines.append)
    assert kept and {res.schedule[i][1] for i in kept} == {"store_down"}, lines
    assert len(kept) < len(res.schedule)
    assert "store_down" in "\n".join(lines)


PLAN = {"shards": 1, "accounts": 1, "replicas": 2}
NODE = Faults(crash_per_s=1.0, down_s=(0.05, 0.3), pause_per_s=0.7, pause_s=(0.05, 1.2),
              cut_per_s=0.5, delay_p=0.1, crashable=("engine", "accounts"))  # fmt: skip
STORE = StoreFaults(down_per_s=1.0, down_s=(0.3, 1.0), cut_per_s=1.0, failover_per_s=1.5)


def test_a_replayed_schedule_applies_the_store_faults() -> None:
    """``World(schedule=...)``: the whole schedule of a seed with store outages, cuts and
    failovers is the run itself; the schedule without them has none (~1.8 s CPU)."""
    with quiet():
        drawn = World(3, dict(PLAN), NODE, store_faults=STORE).run(1.0)
        schedule = [ev for ev in drawn.trace if ev[1] in KINDS]
        assert {ev[1] for ev in schedule} >= {"store_failover", "crash"}, schedule
        replay = World(3, dict(PLAN), Faults(delay_p=0.1), store_faults=STORE,
                       schedule=schedule).run(1.0)  # fmt: skip
        assert replay.digest == drawn.digest and replay.trace == drawn.trace
        kept = [ev for ev in schedule if ev[1] not in STORE_KINDS]
        less = World(3, dict(PLAN), Faults(delay_p=0.1), store_faults=STORE,
                     schedule=kept).run(1.0)  # fmt: skip
    assert not [ev for ev in less.trace if ev[1].startswith("store_")], less.trace
    assert less.state["down"] == [] and less.orders


def test_a_balances_stream_cut_back_by_a_failover_is_resumed_not_gapped() -> None:
    """The bridge writes an account shard's balance changes to ``shardex:balances:J``; a
    store failover loses the last of them. The next batch must not be written above the hole
    (its tracker believed the lost ones written: a permanent gap the simulator found in the
    bridge world with failovers): nothing is written, the shard resumes from the stream's top
    and the lost entries come again from the shard."""
    import asyncio

    from shardex.accounts.assets import AssetTable
    from shardex.accounts.codes import AE_BALANCE
    from shardex.engine import DEFAULT_MARKETS
    from shardex.node.bridge import BridgeConfig, EntryFormatter, ShardState, ShardTracker
    from shardex.node.bridge.metrics import Alerts
    from shardex.node.bridge.redis_writer import RedisWriter
    from shardex.sim.store import SimStore

    events = [(AE_BALANCE, s, f"acct{s}", "USD", 1_000 * s, 0, "deposit", f"d{s}")
              for s in range(1, 10)]  # fmt: skip
    store = SimStore(lag=None)  # (the replica catches up only on ``sync``)
    cfg = BridgeConfig(router="mem://r", redis_url="redis://sim/0", markets=DEFAULT_MARKETS)
    key = "shardex:balances:0"

    async def main() -> int:
        w = RedisWriter(cfg, Alerts(), EntryFormatter(DEFAULT_MARKETS, AssetTable(DEFAULT_MARKETS)),
                        redis=store.async_connect)  # fmt: skip
        st = ShardState(0, ShardTracker(0, max_pending=100, hole_wait=0.1, stall_after=5.0),
                        kind="balances")  # fmt: skip
        w.accounts = [st]
        await w.sync_last()
        assert await w.write(st, events[0:3])
        store.sync()
        assert await w.write(st, events[3:6])
        assert store.failover() == [key.encode()] and st.tracker.last == 6  # (4..6 lost)
        assert await w.write(st, events[6:9])  # follows 6: gone
        return st.tracker.last

    last = asyncio.run(main())
    ids = [e[0] for e in store.client().xrange(key)]
    assert ids == [b"1-0", b"2-0", b"3-0"], ids  # no 7..9 above a hole
    assert last == 3  # resumed where the stream ends: 4.. are asked of the shard again


@pytest.mark.parametrize("seed", [2, 4])
def test_the_bridge_world_survives_its_store_failing_over(seed: int) -> None:
    """The bridge world (2 engine + 2 account shards, no replicas): the stream store fails
    over under the seed, losing what its replica had not copied, and once the run heals every
    stream is exact (``stream_exact``: no gap, no duplicate). Seeds 2 and 4 left holes in
    ``shardex:balances:1`` before the balances batches named their predecessor (~0.6 s CPU
    each)."""
    res = worldrun.run(seed, [], 1.0, bridge=True, store_faults="failover_per_s=3")
    assert res.violations == [], res.violations
    lost = [ev for ev in res.trace if ev[1] == "store_failover" and not ev[3].startswith("0 ")]
    assert lost and res.faults["store_failover"] >= len(lost), res.faults
    assert {ev[1] for ev in res.schedule} == {"store_failover"}
