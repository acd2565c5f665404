"""Failover in one process: an ``InProcCluster`` with ``replicas=2`` on the simulated store
(``shardex.sim.store``): both replicas of each shard (a standby that becomes the leader, the
lease renewed by the leader's own turns), the router, the bridge and SDK clients, on the
in-memory transport. The leader is killed (its turns stop: no renewal), the standby takes the
lease after the ttl, clients follow it, and nothing acked is lost — in the journal, the books
and the stream store. tests/chaos/test_failover*.py keep what needs processes (kill -9, real
Redis, CURVE, ports)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shardex.client import Retry
from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.sim.store import SimStore
from tests.support.inproc import plan, run_virtual

pytestmark = pytest.mark.timeout(90)

SYMBOL = "BTC-USD"


def _replicated(tmp_path: Path, shards: int = 1, accounts: int = 0) -> Any:
    return plan(shards, accounts, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))


def _engine_ids(node: Any) -> set[str]:
    """Order ids resting in a leader's books."""
    books = node.leader.core.engine.books
    return {o.id for book in books.values() for o in book.orders.values()}


async def _in_sync(cluster: InProcCluster) -> Any:
    """The one leader, once its standby is in the in-sync set (acks then wait for it)."""
    leaders = await cluster.until(cluster.leaders, what="a leader")
    (leader,) = leaders
    await cluster.until(lambda: len(leader.leader.replica.isr) == 2, what="standby in sync")
    return leader


def test_leader_killed_standby_leads_nothing_acked_lost(tmp_path: Path) -> None:
    store = _virtual()

    async def body(cluster: InProcCluster) -> dict[str, Any]:
        old = await _in_sync(cluster)
        (standby,) = [r for r in cluster.replicas if r is not old]
        acked: list[str] = []
        async with cluster.client(account="alice", timeout=1.0, retry=Retry(10.0)) as c:
            for k in range(30):
                r = await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")
                assert r.ok, r
                acked.append(f"a{k}")
            cluster.freeze(old)  # killed: no more turns, so no more renewals
            await cluster.until(lambda: standby.leader is not None, what="the standby to lead")
            for k in range(30, 40):
                r = await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")
                assert r.ok, r  # the client follows the new leader
                acked.append(f"a{k}")
            epoch = standby.lease.epoch
            seq = standby.leader.core.engine.seq
            await cluster.until(lambda: _stream_top(store) >= seq, what="the stream to catch up")
        return {"acked": acked, "epoch": epoch, "seq": seq, "ids": _engine_ids(standby),
                "old_epoch": old.lease.epoch}  # fmt: skip

    out = _run(_replicated(tmp_path), store, body)
    assert out["epoch"] > out["old_epoch"]
    assert set(out["acked"]) <= out["ids"], "an acked order is missing from the new leader"
    seqs = _stream_seqs(store)
    assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] >= out["seq"]


def _run(p: Any, store: SimStore, body: Any) -> Any:
    """``body(cluster)`` on the cluster of ``p`` with ``store`` as its Redis: on the
    simulator's virtual loop when ``store`` runs on a ``VirtualClock`` (``_virtual``;
    ``tests.support.inproc.run_virtual`` says why), else on the real clock."""
    if isinstance(store.clock, VirtualClock):
        return run_virtual(p, body, store)

    async def main() -> Any:
        async with InProcCluster(p, store=store) as cluster:
            return await body(cluster)

    return asyncio.run(main())


def _virtual(**kw: Any) -> SimStore:
    """A store on a new ``VirtualClock``: ``_run`` then runs its cluster in virtual time."""
    return SimStore(VirtualClock(), **kw)


def _stream_seqs(store: SimStore) -> list[int]:
    entries = store.client().xrange("shardex:events:0")
    return [int(eid.split(b"-")[0]) for eid, _ in entries]


def _stream_top(store: SimStore) -> int:
    seqs = _stream_seqs(store)
    return seqs[-1] if seqs else 0


def test_replicated_tiers_trade_through_an_engine_failover(tmp_path: Path) -> None:
    """Both tiers replicated (engine and account shard, two replicas each, linked to both
    engine replicas): a trade's money settles exactly, the engine shard's leader is killed,
    the standby leads and settles the next trade; the audit balances."""
    from decimal import Decimal as D

    from shardex.client import audit_report

    store = _virtual()

    async def body(cluster: InProcCluster) -> Any:
        await cluster.until(lambda: len(cluster.leaders()) == 2, what="two leaders")
        async with cluster.client(timeout=1.0, retry=Retry(10.0)) as c:
            assert (await c.deposit("alice", "USD", "1000", ref="d1")).ok
            assert (await c.deposit("bob", "BTC", "2", ref="d2")).ok
            assert (await c.place(SYMBOL, "sell", "1", "100", account="bob", id="s1")).ok
            assert (await c.place(SYMBOL, "buy", "1", "100", account="alice", id="b1")).ok
            engine = next(r for r in cluster.leaders() if r.role == "shard")
            await cluster.until(lambda: len(engine.leader.replica.isr) == 2, what="in sync")
            engine.kill()  # (frozen only, its link would keep taking forwards: no heartbeats here)
            standby = next(r for r in cluster.replicas if r.role == "shard" and r is not engine)
            await cluster.until(lambda: standby.leader is not None, what="the standby to lead")
            assert (await c.place(SYMBOL, "sell", "1", "100", account="bob", id="s2")).ok
            assert (await c.place(SYMBOL, "buy", "1", "100", account="alice", id="b2")).ok

            async def settled() -> bool:
                return (await c.balance("bob")).get("USD", (D(0), D(0)))[0] > D("199")

            await cluster.until(settled, what="both trades settled")
            return await c.balance("alice"), await c.balance("bob"), audit_report(await c.audit())

    alice, bob, (lines, ok) = _run(_replicated(tmp_path, 1, 1), store, body)
    assert alice["BTC"][0] == D(2) and bob["BTC"][0] == D(0)
    assert ok, lines


async def _isr_shrunk_then_leader_killed(cluster: InProcCluster, store: SimStore,
                                         failover: bool) -> dict[str, Any]:  # fmt: skip
    """The standby stalls (frozen), the leader drops it from the in-sync set and acks orders
    alone; then (``failover``) the store fails over to a replica synced before the shrink;
    the leader is killed and the standby runs again."""
    old = await _in_sync(cluster)
    (standby,) = [r for r in cluster.replicas if r is not old]
    store.sync()  # the replica: lease held by old, in-sync set {old, standby}
    cluster.freeze(standby)
    acked = []
    async with cluster.client(account="alice", timeout=3.0) as c:
        for k in range(5):  # the first waits ISR_TIMEOUT_S for the stalled standby's ack
            r = await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")
            assert r.ok, r
            acked.append(f"a{k}")
    assert old.leader.replica.isr == [old.node]
    if failover:
        store.failover()
    seq = old.machine.seq
    old.kill()
    cluster.thaw(standby)
    lease = standby.lease
    await cluster.until(lambda: lease.holder_ttl()[0] is None, what="the lease to expire")
    rounds = cluster.rounds
    await cluster.until(lambda: standby.leader is not None or cluster.rounds > rounds + 200,
                        what="the standby's tries")  # fmt: skip
    ids = _engine_ids(standby) if standby.leader is not None else set()
    return {"acked": acked, "seq": seq, "led": standby.leader is not None, "ids": ids,
            "standby_seq": standby.machine.seq}  # fmt: skip


def test_store_failover_losing_the_isr_shrink_loses_acked_orders(tmp_path: Path) -> None:
    """What the lease's safety argument assumes away (one Redis, never failed over), shown end
    to end: the store's failover restores the in-sync set the leader had shrunk, so the
    lagging standby takes the lease and leads without the orders acked meanwhile. Control
    (same schedule, no store failover): the standby may not lead (the shard waits, safe)."""
    outcomes = {}
    for failover in (False, True):
        store = _virtual(lag=None)  # the replica syncs only when the test says

        async def body(c: InProcCluster, store: SimStore = store, failover: bool = failover) -> Any:
            return await _isr_shrunk_then_leader_killed(c, store, failover)

        outcomes[failover] = _run(_replicated(tmp_path / str(failover)), store, body)
    safe, lost = outcomes[False], outcomes[True]
    assert not safe["led"], "a standby outside the in-sync set took the lease"
    assert lost["led"] and lost["standby_seq"] < lost["seq"]
    assert not set(lost["acked"]) & lost["ids"], "the new leader has none of the acked orders"


def test_failover_in_virtual_time_standby_leads_after_the_deadline(tmp_path: Path) -> None:
    """The lease, the standby and the leader read only the cluster's clock: on a
    ``VirtualClock`` moved 1 ms per scheduler round (no real time in any timer), a frozen
    leader's standby takes the lease once the store expired it, after the old leader's own
    deadline (never two leaders at once with one store), and leads at a new epoch."""
    from shardex.clock import VirtualClock
    from shardex.net import mem_transport

    clock = VirtualClock()
    store = SimStore(clock, seed=7)
    p = plan(1, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))

    async def main() -> dict[str, float]:
        async with InProcCluster(p, net=mem_transport(clock=clock), store=store) as cluster:

            async def tick() -> None:  # virtual time moves with the rounds, 1 ms each
                while True:
                    rounds = cluster.rounds
                    while cluster.rounds == rounds:
                        await asyncio.sleep(0)
                    clock.advance(0.001)

            ticker = asyncio.ensure_future(tick())
            try:
                old = await _in_sync(cluster)
                (standby,) = [r for r in cluster.replicas if r is not old]
                frozen_at, deadline = clock.now, old.lease.deadline
                cluster.freeze(old)
                await cluster.until(lambda: standby.leader is not None, what="a new leader")
            finally:
                ticker.cancel()
            return {"frozen": frozen_at, "deadline": deadline, "took": standby.standby.took_at,
                    "epoch": standby.lease.epoch, "old_epoch": old.lease.epoch}  # fmt: skip

    out = asyncio.run(main())
    assert out["epoch"] == out["old_epoch"] + 1
    assert out["took"] > out["deadline"] > out["frozen"]
    assert out["took"] - out["frozen"] <= 0.8 + 0.2  # the ttl, and a lease check's period


def test_deposed_leader_exits_at_its_next_renewal(tmp_path: Path) -> None:
    """The store says the lease is someone else's (here: overwritten, as a store failover or a
    stray writer could): the leader learns it at its next renewal (its own turn), exits with
    EXIT_LEASE_LOST and closes its ports; once that holder's key expires the standby leads,
    and a client's orders go through it."""
    from shardex.node.replication import EXIT_LEASE_LOST

    store = _virtual()

    async def body(cluster: InProcCluster) -> tuple[Any, Any]:
        old = await _in_sync(cluster)
        (standby,) = [r for r in cluster.replicas if r is not old]
        store.client().set(old.lease.keys[0], "9|intruder|mem://nowhere", px=300)
        await cluster.until(lambda: old.exited is not None, what="the leader to exit")
        await cluster.until(lambda: standby.leader is not None, what="the standby to lead")
        async with cluster.client(account="alice", timeout=1.0, retry=Retry(10.0)) as c:
            r = await c.place(SYMBOL, "buy", "1", "100", id="after")
        return old, standby, r

    old, standby, r = _run(_replicated(tmp_path), store, body)
    assert old.exited == EXIT_LEASE_LOST and old.lease.value is None
    assert r.ok and "after" in _engine_ids(standby)
    assert standby.lease.epoch == old.lease.epoch + 1


def test_store_outage_longer_than_the_ttl(tmp_path: Path) -> None:
    """The store is down for longer than the ttl (as tests/chaos/test_failover.py's Redis
    stop, in one process): the leader's renewals fail, it stops answering at its deadline
    (fenced: never past it), and once the store is back its lease has expired there: one
    replica leads afterwards, with every order acked before the outage."""
    store = _virtual()

    async def body(cluster: InProcCluster) -> dict[str, Any]:
        old = await _in_sync(cluster)
        async with cluster.client(account="alice", timeout=1.0, retry=Retry(15.0)) as c:
            for k in range(10):
                assert (await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")).ok
            store.down()
            down_at = cluster.net.clock.monotonic()
            await cluster.until(lambda: old.leader.fenced, what="the leader to stop")
            fenced_at = cluster.net.clock.monotonic()
            deadline = old.lease.deadline
            ttl_end = down_at + old.lease.ttl_ms / 1000
            await cluster.until(lambda: cluster.net.clock.monotonic() > ttl_end + 0.1,
                                what="the key to expire")  # fmt: skip
            store.up()
            await cluster.until(lambda: len(cluster.leaders()) == 1
                                and cluster.leaders()[0].lease.epoch > old.lease.epoch,
                                what="a leader at a new epoch")  # fmt: skip
            assert (await c.place(SYMBOL, "buy", "1", "99", id="after")).ok
        (leader,) = cluster.leaders()
        return {"fenced_at": fenced_at, "deadline": deadline, "ids": _engine_ids(leader)}

    out = _run(_replicated(tmp_path), store, body)
    assert out["fenced_at"] >= out["deadline"]
    assert {f"a{k}" for k in range(10)} | {"after"} <= out["ids"]


def test_replicated_cluster_fails_over_on_the_virtual_loop(tmp_path: Path) -> None:
    """The whole replicated cluster (both tiers, the bridge, a client) on the simulator's
    virtual loop and clock, the store on the same clock: the engine leader is killed, the
    standby leads after the lease's ttl of *virtual* time, and the next trades settle. Needs
    the simulator's loop (``shardex.sim.loop``)."""
    loop = pytest.importorskip("shardex.sim.loop")
    from shardex.clock import VirtualClock
    from shardex.net import mem_transport

    clock = VirtualClock()
    store = SimStore(clock, seed=3)

    async def main() -> dict[str, Any]:
        p = _replicated(tmp_path, 1, 1)
        async with InProcCluster(p, net=mem_transport(clock=clock), store=store) as cluster:
            await cluster.until(lambda: len(cluster.leaders()) == 2, what="two leaders")
            engine = next(r for r in cluster.leaders() if r.role == "shard")
            await cluster.until(lambda: len(engine.leader.replica.isr) == 2, what="in sync")
            async with cluster.client(timeout=1.0, retry=Retry(10.0)) as c:
                assert (await c.deposit("alice", "USD", "1000", ref="d1")).ok
                assert (await c.deposit("bob", "BTC", "2", ref="d2")).ok
                for k in range(5):
                    r = await c.place(SYMBOL, "sell", "0.01", "100", account="bob", id=f"s{k}")
                    assert r.ok, r
                killed_at = clock.now
                engine.kill()
                standby = next(r for r in cluster.replicas
                               if r.role == "shard" and r is not engine)  # fmt: skip
                await cluster.until(lambda: standby.leader is not None, what="the standby")
                took = clock.now - killed_at
                for k in range(5):
                    r = await c.place(SYMBOL, "buy", "0.01", "100", account="alice", id=f"b{k}")
                    assert r.ok, r

                async def settled() -> bool:
                    return (await c.balance("alice")).get("BTC", (0, 0))[0] == Decimal("0.05")

                await cluster.until(settled, what="the trades settled")
        return {"took": took}

    out = loop.run(main(), clock)
    assert 0.5 < out["took"] <= 0.8 + 0.2  # what was left of the ttl, plus one lease check


def _gaps(store: SimStore) -> list[int]:
    """Seqs missing below the top of shard 0's events stream."""
    seqs = _stream_seqs(store)
    return sorted(set(range(1, seqs[-1] + 1)) - set(seqs)) if seqs else []


def test_stream_heals_after_a_store_failover_lost_entries(tmp_path: Path) -> None:
    """The store fails over and loses the last entries the bridge wrote to a shard's events
    stream, with no error the bridge sees: once the cluster runs on, the stream is contiguous
    again (the issue's "stream store exact once the run heals"). Before, the bridge re-read
    its resume point only after a Redis error, and its tracker believed the lost entries
    written: a permanent gap. Now each batch's script checks that the entry it follows is
    there; it is not, so the bridge resumes from the stream's top and the shard repairs."""
    store = SimStore(lag=None)

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="alice", timeout=2.0) as c:

            async def orders(prefix: str) -> None:
                for k in range(10):
                    assert (await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"{prefix}{k}")).ok
                seq = cluster.engines[0].core.engine.seq
                await cluster.until(lambda: _stream_top(store) >= seq, what="the stream")

            await orders("a")
            store.sync()
            await orders("b")
            assert store.failover() == [b"shardex:events:0"]  # b0..b9's events are gone
            await orders("c")
            await cluster.until(lambda: not _gaps(store), timeout=3.0, what="a gap-free stream")

    _run(plan(1, redis="redis://sim/0"), store, body)


def test_a_deleted_top_entry_does_not_stall_the_bridge(tmp_path: Path) -> None:
    """Someone XDELs the newest entry of an events stream: the bridge finds the entry its next
    batch follows gone, resumes, cannot write it again (Redis refuses an id below the stream's
    last: a conflict, counted) and goes on: every later event is written (no loop on the
    missing entry)."""
    store = SimStore(lag=None)

    async def body(cluster: InProcCluster) -> tuple[list[int], int]:
        async with cluster.client(account="alice", timeout=2.0) as c:

            async def orders(prefix: str) -> int:
                for k in range(5):
                    assert (await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"{prefix}{k}")).ok
                seq = cluster.engines[0].core.engine.seq
                await cluster.until(lambda: _stream_top(store) >= seq, what="the stream")
                return seq

            gone = await orders("a")
            store.client().xdel("shardex:events:0", f"{gone}-0")
            top = await orders("b")
        return _stream_seqs(store), top, gone

    seqs, top, gone = _run(plan(1, redis="redis://sim/0"), store, body)
    assert seqs == [s for s in range(1, top + 1) if s != gone]


def test_replicas_journal_on_the_transports_disk(tmp_path: Path) -> None:
    """Both replicas journal on the cluster's disk (``net.disk``: a SimDisk here), the standby
    too, and the one it becomes leader with: nothing under the real path."""
    from shardex.net import mem_transport
    from shardex.sim.disk import SimDisk

    store, disk = SimStore(), SimDisk()
    net = mem_transport()
    net.disk = disk

    async def main() -> int:
        async with InProcCluster(_replicated(tmp_path), net=net, store=store) as cluster:
            old = await _in_sync(cluster)
            (standby,) = [r for r in cluster.replicas if r is not old]
            async with cluster.client(account="alice", timeout=1.0, retry=Retry(10.0)) as c:
                for k in range(5):
                    assert (await c.place(SYMBOL, "buy", "1", str(100 + k), id=f"a{k}")).ok
                old.kill()
                await cluster.until(lambda: standby.leader is not None, what="the standby")
                assert (await c.place(SYMBOL, "buy", "1", "99", id="after")).ok
            return standby.machine.seq

    seq = asyncio.run(main())
    assert seq == 6
    assert disk.listdir(f"{tmp_path}/shard-0") and disk.listdir(f"{tmp_path}/shard-0.r1")
    assert not list(tmp_path.glob("**/journal-*.log"))
