"""A deposed leader with a divergent tail rejoins, in one process: an ``InProcCluster`` with
``replicas=2`` on the simulated store and disk. The leader is crashed, its standby leads from
seq X (the new epoch's start), and the crashed leader's journal holds records past X that the
new leader never had (journaled, never replicated). Restarted, it cuts its journal back to X
(its prefix kept, the tail gone: no move aside, no copy from seq 0), follows the new leader
from X and is back in the in-sync set; its books then match the leader's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shardex.client import Retry
from shardex.clock import VirtualClock
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_NEW
from shardex.inproc import InProcCluster
from shardex.journal import Journal, read_commands, recover
from shardex.net import mem_transport
from shardex.sim.crash import Lifecycle, replica_name
from shardex.sim.disk import SimDisk
from shardex.sim.loop import run
from shardex.sim.sched import Scheduler
from shardex.sim.store import SimStore
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(60)

SYMBOL = "BTC-USD"


def _ids(directory: str, disk: SimDisk) -> list[str]:
    """Order ids of the new orders journaled in ``directory``, in journal order."""
    return [cmd[2] for _, cmd in read_commands(directory, disk) if cmd[0] == OP_NEW]


def _books(node: Any) -> dict[str, Any]:
    engine = node.standby.engine if node.leader is None else node.leader.core.engine
    return {s: sorted(b.orders) for s, b in engine.books.items()}


def _diverge(directory: str, disk: SimDisk, n: int) -> int:
    """Journal ``n`` orders past the end of the (crashed) replica's journal, as a leader
    does before it ships them: records nobody else has. The seq it ends at."""
    journal = Journal(directory, DEFAULT_MARKETS, disk=disk)
    engine = journal.recover().engine
    for k in range(n):
        cmd = (OP_NEW, SYMBOL, f"lost{k}", "alice", 0, 0, 90 + k, 1, 0, False, 0)
        before = engine.seq
        engine.apply(cmd, [])
        journal.add(before, cmd)
    journal.commit()
    journal.close()
    return engine.seq


def _replicated_on_a_simulated_disk(tmp_path: Path) -> tuple[VirtualClock, SimDisk, Any, Any]:
    """A virtual clock, a simulated disk, the in-memory transport on both, and the plan of
    one engine shard with two replicas whose leases live on the simulated store."""
    clock = VirtualClock()
    disk = SimDisk()
    net = mem_transport(clock=clock)
    net.disk = disk
    return clock, disk, net, plan(1, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))


@pytest.mark.parametrize("before_recovery", [True, False])
def test_deposed_leader_truncates_its_divergent_tail_and_rejoins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before_recovery: bool
) -> None:
    """On the simulator's seeded scheduler and virtual clock (a restarted node takes turns
    there); under a second of CPU each. The new epoch exists when it restarts, so the tail is
    cut before its recovery (``cut_before_recovery``); without that cut, its standby's
    start-up check cuts it after the recovery (``Standby.rejoin``: what a replica that
    restarted before the lease moved does when it sees the new leader)."""
    if not before_recovery:
        monkeypatch.setattr("shardex.node.failover.cut_before_recovery", lambda *a: None,
                            raising=False)  # (absent before the cut existed)
    clock, disk, net, p = _replicated_on_a_simulated_disk(tmp_path)

    async def main() -> dict[str, Any]:
        cluster = InProcCluster(p, net=net, store=SimStore(clock, seed=5))
        cluster.sched = Scheduler(5, hub=net.hub)
        async with cluster:
            life = Lifecycle(cluster)
            old = await cluster.until(lambda: cluster.leaders(), what="a leader")
            old = old[0]
            await cluster.until(lambda: len(old.leader.replica.isr) == 2, what="in sync")
            (new,) = [r for r in cluster.replicas if r is not old]
            name, where = replica_name(old), old.cfg.journal_dir
            async with cluster.client(account="alice", timeout=1.0, retry=Retry(10.0)) as c:
                for k in range(5):
                    assert (await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")).ok
                life.crash(name)
                await cluster.until(lambda: new.leader is not None, what="the standby to lead")
                start = new.lease.starts()[new.lease.epoch]
                for k in range(3):
                    assert (await c.place(SYMBOL, "sell", "1", str(200 + k), id=f"b{k}")).ok
                prefix = _ids(where, disk)
                diverged_to = _diverge(where, disk, 2)
                back = life.restart(name)  # (its standby checks its journal against the lease)
                at_restart = back.standby.engine.seq
                moved = [n for n in disk.listdir(str(tmp_path)) if ".diverged-" in n]
                await cluster.until(lambda: len(new.leader.replica.isr) == 2, what="rejoined")
                assert (await c.place(SYMBOL, "sell", "1", "300", id="c0")).ok
                seq = new.leader.core.engine.seq
                await cluster.until(lambda: back.standby.engine.seq == seq, what="caught up")
            return {"start": start, "diverged_to": diverged_to, "at_restart": at_restart,
                    "moved": moved, "prefix": prefix, "ids": _ids(where, disk),
                    "books": (_books(back), _books(new))}  # fmt: skip

    out = run(main(), clock)
    assert out["diverged_to"] > out["start"], "the test made no divergent tail"
    assert out["at_restart"] == out["start"], "not cut back to the new epoch's start"
    assert not out["moved"], "the journal was moved aside (a copy from seq 0)"
    assert out["ids"][: len(out["prefix"])] == out["prefix"], "its prefix was not kept"
    assert not {"lost0", "lost1"} & set(out["ids"]), "a divergent record survived"
    assert {"b0", "b1", "b2", "c0"} <= set(out["ids"])
    assert out["books"][0] == out["books"][1]


def test_a_standby_snapshots_so_its_restart_replays_a_bounded_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby snapshots on its own (half the leader's cadence: every 3 journaled commands
    here), so a restarted standby recovers from its newest snapshot plus a short tail instead
    of replaying its journal from seq 0; it rejoins with the leader's books. Under a second
    of CPU."""
    monkeypatch.setenv("SHARDEX_SNAPSHOT_EVERY", "6")
    clock, disk, net, p = _replicated_on_a_simulated_disk(tmp_path)

    async def main() -> dict[str, Any]:
        cluster = InProcCluster(p, net=net, store=SimStore(clock, seed=6))
        cluster.sched = Scheduler(6, hub=net.hub)
        async with cluster:
            life = Lifecycle(cluster)
            (leader,) = await cluster.until(lambda: cluster.leaders(), what="a leader")
            await cluster.until(lambda: len(leader.leader.replica.isr) == 2, what="in sync")
            (standby,) = [r for r in cluster.replicas if r is not leader]
            name, where = replica_name(standby), standby.cfg.journal_dir
            async with cluster.client(account="alice", timeout=1.0, retry=Retry(10.0)) as c:
                for k in range(20):
                    assert (await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")).ok
                seq = leader.leader.core.engine.seq
                await cluster.until(lambda: standby.standby.engine.seq == seq, what="applied")
                life.crash(name)
                recovered = recover(Path(where), DEFAULT_MARKETS, disk=disk)
                back = life.restart(name)
                await cluster.until(lambda: len(leader.leader.replica.isr) == 2, what="rejoined")
                assert (await c.place(SYMBOL, "sell", "1", "300", id="b0")).ok
                seq = leader.leader.core.engine.seq
                await cluster.until(lambda: back.standby.engine.seq == seq, what="caught up")
            return {"snap": recovered.snapshot_seq, "replayed": recovered.replayed,
                    "books": (_books(back), _books(leader))}  # fmt: skip

    out = run(main(), clock)
    assert out["snap"] is not None and out["snap"] > 0, "the standby took no snapshot"
    assert out["replayed"] < 6
    assert out["books"][0] == out["books"][1]
