"""A replica whose journal cannot write or sync fail-stops (docs/failover.md, "A replica's
disk fails"): a standby acks nothing it could not make durable and exits with
``EXIT_JOURNAL_FAILED`` (its leader drops it from the in-sync set and goes on alone); a
standby that took the lease but cannot record the new epoch gives the lease back and exits
the same way, instead of holding a lease it never leads with. Found by the simulator (an EIO
spell: the standby's turn raised ``JournalUnavailable``, which killed its process with a
traceback, or, on the epoch record after taking the lease, was logged as a failed lease check
while the shard had no leader until the lease expired).

On the in-memory cluster, on the simulator's virtual loop and clock: ~0.5 s of CPU each."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.journal import JournalUnavailable
from shardex.net import mem_transport
from shardex.node.failstop import EXIT_JOURNAL_FAILED
from shardex.sim.disk import CrashPoint, SimDisk
from shardex.sim.loop import run as run_virtual
from shardex.sim.store import SimStore
from shardex.wire.replication import ACK
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(60)

SYMBOL = "BTC-USD"


def _on_virtual_cluster(tmp_path: Path, body: Any, disk: SimDisk | None = None) -> Any:
    """``body(cluster)`` on a replicated engine shard (two replicas, the lease on a
    ``SimStore``, no bridge), everything on one ``VirtualClock`` (the journals on ``disk``
    if given)."""
    clock = VirtualClock()
    store = SimStore(clock, seed=1)
    p = plan(1, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))
    net = mem_transport(clock=clock)
    if disk is not None:
        net.disk = disk

    async def main() -> Any:
        cluster = InProcCluster(p, net=net, store=store)
        cluster.bridge = None  # (the store holds the lease only, as in the simulator's world)
        async with cluster:
            return await body(cluster)

    return run_virtual(main(), clock)


async def _in_sync(cluster: InProcCluster) -> tuple[Any, Any]:
    """The leader once its standby is in the in-sync set, and the standby."""
    (leader,) = await cluster.until(cluster.leaders, what="a leader")
    await cluster.until(lambda: len(leader.leader.replica.isr) == 2, what="standby in sync")
    (standby,) = [r for r in cluster.replicas if r is not leader]
    return leader, standby


def test_a_standby_whose_journal_cannot_write_acks_nothing_and_exits(tmp_path: Path) -> None:
    async def body(cluster: InProcCluster) -> dict[str, Any]:
        leader, standby = await _in_sync(cluster)
        acks: list[Any] = []
        send = standby.standby._send

        def watched(kind: bytes, msg: Any) -> None:
            if kind == ACK:
                acks.append(msg)
            send(kind, msg)

        def broken() -> None:
            raise JournalUnavailable("Input/output error (simulated: the disk fails)")

        standby.standby._send = watched
        standby.standby.journal.commit = broken  # its disk fails every write from now on
        async with cluster.client(account="alice", timeout=3.0) as c:
            r = await c.place(SYMBOL, "buy", "1", "100", id="a0")
            seq = leader.machine.seq
            await cluster.until(lambda: standby.exited is not None, what="the standby to exit")
        return {"ok": r.ok, "seq": seq, "acks": acks, "exited": standby.exited,
                "isr": list(leader.leader.replica.isr), "leader": leader.node}  # fmt: skip

    out = _on_virtual_cluster(tmp_path, body)
    assert out["exited"] == EXIT_JOURNAL_FAILED
    assert not [a for a in out["acks"] if a[1] >= out["seq"]], (
        "the standby acked a batch its journal never wrote",
        out["acks"],
        out["seq"],
    )
    assert out["ok"], "the leader did not go on without the failed standby"
    assert out["isr"] == [out["leader"]]


def test_a_promoted_standby_that_cannot_record_its_epoch_gives_the_lease_back(
        tmp_path: Path) -> None:  # fmt: skip
    async def body(cluster: InProcCluster) -> dict[str, Any]:
        leader, standby = await _in_sync(cluster)

        def broken(epoch: int) -> None:
            raise OSError(errno.EIO, "Input/output error (simulated: the epoch file)")

        standby.standby.journal.write_epoch = broken
        leader.kill()  # the standby takes the lease once it expires, then must record it
        await cluster.until(lambda: standby.exited is not None or standby.leader is not None,
                            timeout=5.0, what="the standby to lead or exit")  # fmt: skip
        holder, _ = standby.lease.holder_ttl()
        return {"exited": standby.exited, "led": standby.leader is not None, "holder": holder,
                "took": standby.standby.took_at}  # fmt: skip

    out = _on_virtual_cluster(tmp_path, body)
    assert out["exited"] == EXIT_JOURNAL_FAILED and not out["led"]
    assert out["holder"] is None, "the lease was kept by a replica that cannot lead"


def test_a_crash_while_recording_the_new_epoch_is_not_taken_for_a_lease_check_error(
        tmp_path: Path) -> None:  # fmt: skip
    """A process killed while it records the epoch of the lease it just took dies there: the
    simulator's crash point in that write leaves the standby's turn (the lease check's
    catch-all, meant for the store, swallowed it, and the standby went on to lead)."""
    disk = SimDisk()

    async def body(cluster: InProcCluster) -> None:
        leader, standby = await _in_sync(cluster)
        disk.trap(standby.standby.journal_dir, "write", 1)  # its next write: the epoch's
        leader.kill()
        await cluster.until(lambda: standby.leader is not None, timeout=5.0,
                            what="the standby to take the lease")  # fmt: skip

    with pytest.raises(CrashPoint) as caught:
        _on_virtual_cluster(tmp_path, body, disk)
    assert caught.value.path.endswith("epoch.tmp"), caught.value


def test_a_just_promoted_leader_whose_first_write_fails_holds_it_and_retries(
        tmp_path: Path) -> None:  # fmt: skip
    """Once its epoch is recorded a promoted standby is a leader like any other: its first
    batch that the journal cannot write is held (no reply), and written from memory and
    answered when the disk works again -- not a fail-stop (it is the copy clients wait on)."""

    async def body(cluster: InProcCluster) -> dict[str, Any]:
        old, standby = await _in_sync(cluster)
        old.kill()
        await cluster.until(lambda: standby.leader is not None, what="the standby to lead")
        journal = standby.leader.core.journal
        commit = journal.commit

        def broken() -> None:
            raise JournalUnavailable("Input/output error (simulated: the disk fails)")

        journal.commit = broken
        async with cluster.client(account="alice", timeout=5.0) as c:
            placing = asyncio.ensure_future(c.place(SYMBOL, "buy", "1", "100", id="a0"))
            await cluster.until(lambda: standby.leader.core.journal_down is not None,
                                what="the first batch held")  # fmt: skip
            held = not placing.done()
            journal.commit = commit  # the disk works again: the retry writes it
            r = await placing
        return {"held": held, "ok": r.ok, "exited": standby.exited,
                "ids": {o.id for b in standby.leader.core.engine.books.values()
                        for o in b.orders.values()}}  # fmt: skip

    out = _on_virtual_cluster(tmp_path, body)
    assert out["held"] and out["ok"] and out["exited"] is None
    assert "a0" in out["ids"]
