"""The durability modes' release rule (``--durability``, ``leader.Replicator.hw``) on an
in-memory cluster with a hot standby per shard, its journals on a ``SimDisk`` (whose files
know which of their writes are durable): ``local`` replies once the leader's own write is
synced, without waiting for the standby; ``replicated`` once the in-sync standby acked the
batch, the leader's own sync after; ``both`` after both. ~3 CPU s for the three modes."""

from __future__ import annotations

from typing import Any

import pytest

from shardex.client import Retry
from shardex.inproc import InProcCluster
from shardex.sim.disk import SimDisk
from tests.support.inproc import plan, run_virtual

pytestmark = pytest.mark.timeout(90)


def _unsynced(disk: SimDisk, journal: Any) -> bool:
    """Whether the leader's current journal segment holds writes not yet durable (the
    simulated file's writes since its last sync)."""
    inode = disk._names.get(str(journal._path))  # (the test's window into the simulated file)
    return inode is not None and bool(inode.pending)


def _releases(mode: str, alone: bool = False) -> list[dict[str, Any]]:
    """Place 20 orders one by one on a replicated engine shard in ``mode``; for every batch
    its leader released: its seq, whether the leader's journal had writes not synced, what the
    standby had acked (the leader's view) and applied, the in-sync set's size and the seq the
    leader had synced. ``alone``: the standby is frozen first (dropped from the set)."""
    disk = SimDisk()
    p = plan(1, 0, redis="redis://sim/0", replicas=2, data_dir="/sim/data", durability=mode)

    async def body(cluster: InProcCluster) -> list[dict[str, Any]]:
        (old,) = await cluster.until(cluster.leaders, what="a leader")
        node = old.leader
        await cluster.until(lambda: len(node.replica.isr) == 2, what="the standby in sync")
        (other,) = [r for r in cluster.replicas if r is not old]
        seen: list[dict[str, Any]] = []
        release = node.release_acked

        def watched() -> None:
            waiting = [w[0] for w in node.repl_wait]
            (peer,) = node.replica.peers.values()
            state = {"unsynced": _unsynced(disk, node.journal), "acked": peer.acked,
                     "applied": other.standby.engine.seq, "isr": len(node.replica.isr),
                     "synced": node.replica.synced}  # fmt: skip
            release()
            left = {w[0] for w in node.repl_wait}
            seen.extend({"seq": s, **state} for s in waiting if s not in left)

        node.release_acked = watched
        if alone:
            cluster.freeze(other)
        async with cluster.client(account="alice", timeout=2.0, retry=Retry(10.0)) as c:
            for k in range(20):
                r = await c.place("BTC-USD", "buy", "1", str(100 + k), id=f"o{k}")
                assert r.ok, r
        # the first leader led throughout (alone before its standby joined, too)
        assert old.exited is None and node.replica.epoch == 1, (old.exited, node.replica.epoch)
        return seen

    seen = run_virtual(p, body, disk=disk)
    assert len(seen) >= 20, seen  # (every order's batch was released through the rule)
    return seen


def test_local_replies_after_its_own_sync_not_waiting_for_the_standby() -> None:
    seen = _releases("local")
    assert not any(r["unsynced"] for r in seen), "a reply left before the leader's fsync"
    assert any(r["seq"] > r["applied"] for r in seen), "local waited for the standby"


def test_replicated_replies_after_the_standby_ack_before_its_own_sync() -> None:
    seen = _releases("replicated")
    assert all(r["seq"] <= r["acked"] <= r["applied"] for r in seen), "left before the ack"
    assert any(r["unsynced"] for r in seen), "replicated waited for the leader's own fsync"


def test_replicated_alone_replies_after_its_own_sync() -> None:
    """With no standby in the in-sync set, ``replicated`` waits for the leader's own sync."""
    seen = [r for r in _releases("replicated", alone=True) if r["isr"] == 1]
    assert seen and all(r["seq"] <= r["synced"] for r in seen), seen


def test_both_replies_after_its_own_sync_and_the_standby_ack() -> None:
    seen = _releases("both")
    assert all(r["seq"] <= r["acked"] <= r["applied"] for r in seen), "left before the ack"
    assert not any(r["unsynced"] for r in seen), "a reply left before the leader's fsync"


def _journal(disk: SimDisk) -> tuple[Any, Any, list[Any]]:
    from shardex.engine import DEFAULT_MARKETS, Engine
    from shardex.journal import Journal
    from shardex.tools.workload import Workload

    journal = Journal("/sim/shard-0", DEFAULT_MARKETS, fsync="batch", disk=disk)
    journal.sync_behind = True
    return journal, Engine(DEFAULT_MARKETS), Workload(symbols=("BTC-USD",), seed=1).warmup(6)


def _recovered_seq(disk: SimDisk) -> int:
    from shardex.engine import DEFAULT_MARKETS
    from shardex.journal import Journal

    disk.crash()
    return Journal("/sim/shard-0", DEFAULT_MARKETS, disk=disk).recover().engine.seq


def test_sync_behind_commits_write_and_sync_pending_makes_them_durable() -> None:
    """``--durability replicated``'s journal: a commit writes and returns; what a power loss
    keeps is what ``sync_pending`` synced."""
    disk = SimDisk()
    journal, engine, cmds = _journal(disk)
    for cmd in cmds[:3]:
        journal.add(engine.seq, cmd)
        engine.apply(cmd, [])
    journal.commit()
    synced_at = engine.seq
    assert journal.sync_pending() and not journal.sync_pending()  # (then nothing is pending)
    for cmd in cmds[3:]:
        journal.add(engine.seq, cmd)
        engine.apply(cmd, [])
    journal.commit()  # written, not synced: a power loss may keep any prefix of it
    assert synced_at <= _recovered_seq(disk) <= engine.seq


def test_a_failed_background_sync_writes_the_batches_again(monkeypatch) -> None:
    """After a failed sync the kernel may drop the writes (``SimDisk`` does): the journal cuts
    them off and writes them again before syncing, never just syncs again."""
    disk = SimDisk()
    journal, engine, cmds = _journal(disk)
    for cmd in cmds:
        journal.add(engine.seq, cmd)
        engine.apply(cmd, [])
        journal.commit()
    real, failed = disk.fsync, []

    def once(fd: int) -> None:
        if not failed:
            failed.append(fd)
            disk.eio_rate = 1.0  # this one sync fails: its writes are lost for good
            try:
                real(fd)
            finally:
                disk.eio_rate = 0.0
        real(fd)

    monkeypatch.setattr(disk, "fsync", once)
    monkeypatch.setattr(disk, "fdatasync", once)
    assert journal.sync_pending() and failed
    assert _recovered_seq(disk) == engine.seq  # every commit survives the power loss


def test_local_is_refused_with_the_account_tier() -> None:
    """``local`` would let settlements and forwards leave before the standby has them."""
    import click

    from shardex.cli.options import check_durability

    with pytest.raises(click.UsageError, match="account tier"):
        check_durability("local", 1)
    check_durability("local", 0)
    check_durability("replicated", 1)
