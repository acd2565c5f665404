"""The simulated lease/stream store (``shardex.sim.store``): the lease's and the bridge's own
Lua scripts run on it, keys expire in virtual time, and its failover loses the writes its
replica had not received — enough to show what the lease's safety argument assumes (one
Redis, never failed over)."""

from __future__ import annotations

import asyncio
import random

import msgpack
import pytest
import redis

from shardex.clock import VirtualClock
from shardex.lease import Lease, LeaseLost
from shardex.node.bridge.redis_writer import RedisWriter
from shardex.node.bridge.script import WRITE_SCRIPT
from shardex.sim.store import SimStore

TTL_S = 0.8  # the lease's default ttl (``lease.TTL_MS``)


def _store(lag: tuple[float, float] | None = None) -> tuple[VirtualClock, SimStore]:
    clock = VirtualClock()
    return clock, SimStore(clock, seed=1, lag=lag)


def _lease(store: SimStore, clock: VirtualClock, node: str) -> Lease:
    return Lease(store.client(), 0, node, f"mem://repl-{node}", clock=clock, thread=False)


def test_lease_expires_in_virtual_time() -> None:
    """The lease's Lua scripts run on the store; its key expires after the ttl of virtual
    time (no real time passes), and the leader's deadline is on the same clock."""
    clock, store = _store()
    a, b = _lease(store, clock, "a"), _lease(store, clock, "b")
    assert a.try_acquire(0, 0) == (1, "ok")
    assert a.deadline == pytest.approx(TTL_S * (1 - a.margin))
    clock.advance(TTL_S - 0.01)
    assert a.valid() is False  # past its own deadline (the margin) ...
    holder, pttl = b.holder_ttl()
    assert holder is not None and holder.node == "a" and 0 < pttl <= 10  # ... before the key
    assert b.try_acquire(0, 0) == (0, "held")
    clock.advance(0.02)
    assert b.holder_ttl() == (None, -2)
    assert b.try_acquire(0, 0) == (0, "not in the in-sync set (a)")  # b never joined the set


def test_renewal_by_the_turn_and_lease_lost() -> None:
    """Without a renewer thread the node's turn renews (``Lease.tick``) once a period has
    passed, moving the deadline; a lease someone else took raises LeaseLost there."""
    clock, store = _store()
    a = _lease(store, clock, "a")
    a.try_acquire(0, 0)
    first = a.deadline
    clock.advance(0.1)
    a.tick(clock.monotonic())  # not due (renew period 150 ms): nothing sent
    assert a.deadline == first
    clock.advance(0.1)
    a.tick(clock.monotonic())
    assert a.deadline == pytest.approx(first + 0.2)
    store.client().set(a.keys[0], "9|z|mem://z")  # someone else's now
    clock.advance(0.2)
    with pytest.raises(LeaseLost):
        a.tick(clock.monotonic())
    assert not a.valid()


def test_outage_stalls_the_deadline_and_recovers() -> None:
    """Store down: a renewal fails without moving the deadline (the leader stalls at it), a
    standby's look raises ConnectionError; up again, nothing was lost."""
    clock, store = _store()
    a = _lease(store, clock, "a")
    a.try_acquire(0, 0)
    store.down()
    clock.advance(0.2)
    before = a.deadline
    assert a.renew() is False and a.deadline == before
    with pytest.raises(redis.ConnectionError):
        a.holder_ttl()
    store.up()
    assert a.renew() is True and a.holder() is not None and a.holder().node == "a"


def test_bridge_write_script_runs_on_the_store() -> None:
    """The bridge's WRITE_SCRIPT (cmsgpack, pcall errors, XRANGE) through ``RedisWriter``'s
    own call, on the async client of the same server the leases use: written once, then
    recognised as duplicates; an older epoch writes nothing."""
    _, store = _store()

    async def main() -> list[tuple]:
        writer = RedisWriter.__new__(RedisWriter)
        writer.redis, writer.sha, writer._deleted = store.async_client(), None, {}
        blob = msgpack.packb([["1-0", ["seq", "1", "shard", "0"]],
                              ["2-0", ["seq", "2", "shard", "0"], "BTC", ["p", "7"]]],
                             use_bin_type=True)  # fmt: skip
        keys = ["shardex:events:0", "shardex:trades:BTC", "shardex:events:0:epoch"]
        args = (blob, "shardex:trades:", "0")
        first = await writer._eval(list(keys), (*args, "2"))
        again = await writer._eval(list(keys), (*args, "2"))
        older = await writer._eval(list(keys), (*args, "1"))
        return [first, again, older]

    first, again, older = asyncio.run(main())
    assert first == (2, 0, 1, [], 0) and again == (0, 2, 0, [], 0) and older[4] == 2
    r = store.client()
    assert [e[0] for e in r.xrange("shardex:events:0")] == [b"1-0", b"2-0"]
    assert store.client().script_exists(store.client().script_load(WRITE_SCRIPT)) == [True]


def test_replica_lags_by_a_seeded_delay() -> None:
    """``turn`` syncs the replica once its seeded lag has passed: the same seed gives the
    same sync instants."""

    def instants(seed: int) -> list[float]:
        clock = VirtualClock()
        store = SimStore(clock, seed=seed, lag=(0.01, 0.05))
        seen = []
        for _ in range(200):
            clock.advance(0.001)
            before = store.syncs
            store.turn()
            if store.syncs != before:
                seen.append(round(clock.now, 6))
        return seen

    seen = instants(5)
    assert seen == instants(5) and seen != instants(6)
    assert all(0.01 <= b - a <= 0.051 for a, b in zip(seen, seen[1:], strict=False))


def test_failover_loses_the_unsynced_renewal_two_leaders_at_once() -> None:
    """The danger the lease's safety argument rules out by assuming one Redis: the leader's
    last renewal is lost in a store failover, so the key expires at the *previous* renewal's
    ttl while the leader's own deadline still runs from the lost one: a standby takes the
    lease and, for a while, two nodes believe they lead."""
    clock, store = _store()
    a, b = _lease(store, clock, "a"), _lease(store, clock, "b")
    a.try_acquire(0, 0)
    a.set_isr(["a", "b"])
    store.sync()  # the replica has the lease as acquired at t=0
    clock.advance(0.5)
    assert a.renew()  # on the primary only: the key now lives until t=1.3
    assert store.failover(random.Random(3)) == [b"shardex:lease:0"]
    clock.advance(0.31)  # t=0.81: the replica's key (t=0 + 0.8) is gone
    epoch, why = b.try_acquire(0, 0)
    assert (epoch, why) == (2, "ok")
    assert a.valid() and b.valid()  # a's deadline 0.5 + 0.76 = 1.26: both "lead"
    # the deposed leader learns it only at its next renewal
    with pytest.raises(LeaseLost):
        a.renew()


def test_one_store_keeps_the_leaders_apart() -> None:
    """Control: the same schedule without the failover: the renewal holds, b cannot take the
    lease, and at any instant at most one node's lease is valid."""
    clock, store = _store()
    a, b = _lease(store, clock, "a"), _lease(store, clock, "b")
    a.try_acquire(0, 0)
    a.set_isr(["a", "b"])
    clock.advance(0.5)
    assert a.renew()
    clock.advance(0.31)
    assert b.try_acquire(0, 0) == (0, "held")
    clock.advance(0.76 - 0.31 + 0.001)  # a stops at its deadline (t=1.26) ...
    assert not a.valid()
    clock.advance(0.04)  # ... before the key goes (t=1.3)
    assert b.try_acquire(0, 0) == (2, "ok") and not a.valid()


def test_failover_loses_the_isr_shrink_a_lagging_standby_takes_over() -> None:
    """The other danger: the leader dropped a silent standby from the in-sync set (and then
    acked writes it alone has); the store fails over and the shrink is lost: the dropped
    standby is a member again and may take the lease when the leader dies, without the acked
    writes. With one store it is refused."""
    for failover in (False, True):
        clock, store = _store()
        a, b = _lease(store, clock, "a"), _lease(store, clock, "b")
        a.try_acquire(0, 0)
        a.set_isr(["a", "b"])
        store.sync()
        assert a.set_isr(["a"])  # b stopped acking; a goes on alone (acks what b lacks)
        if failover:
            assert b"shardex:lease:0:isr" in store.failover()
        clock.advance(TTL_S + 0.01)  # a dies: no more renewals
        epoch, why = b.try_acquire(0, 0)
        if failover:
            assert (epoch, why) == (2, "ok"), "the lost shrink let the lagging standby lead"
        else:
            assert (epoch, why) == (0, "not in the in-sync set (a)")


def test_failover_empties_the_script_cache() -> None:
    """A promoted replica never ran SCRIPT LOAD: EVALSHA is NOSCRIPT there, and the lease's
    scripts (redis-py's ``Script``) load themselves again."""
    clock, store = _store()
    a = _lease(store, clock, "a")
    a.try_acquire(0, 0)
    store.sync()
    sha = store.client().script_load("return 1")
    store.failover()
    assert store.client().script_exists(sha) == [False]
    clock.advance(0.2)
    assert a.renew() is True


def test_failover_cuts_a_stream_back_to_the_replica() -> None:
    """A stream's entries added since the replica's last sync are lost; those before stay,
    with the counters a replica has (no phantom deletions: XINFO's entries-added equals the
    length, so the bridge sees no trim), and the lost ids can be written again."""
    _, store = _store()
    r = store.client()
    for k in range(1, 6):
        r.xadd("shardex:events:0", {"seq": str(k)}, id=f"{k}-0")
    store.sync()
    for k in range(6, 9):
        r.xadd("shardex:events:0", {"seq": str(k)}, id=f"{k}-0")
    r.set("shardex:events:0:epoch", "2")
    lost = store.failover()
    assert lost == [b"shardex:events:0", b"shardex:events:0:epoch"]
    assert [e[0] for e in r.xrange("shardex:events:0")] == [f"{k}-0".encode() for k in range(1, 6)]
    info = r.xinfo_stream("shardex:events:0")
    assert info["length"] == info["entries-added"] == 5 and r.get("shardex:events:0:epoch") is None
    assert r.xadd("shardex:events:0", {"seq": "6"}, id="6-0") == b"6-0"


def test_sync_copies_only_what_changed() -> None:
    """The replica catches up key by key (what was written since its last sync): a key left
    alone keeps the very snapshot it had."""
    _, store = _store()
    r = store.client()
    r.set("a", "1")
    r.xadd("s", {"f": "v"}, id="1-0")
    store.sync()
    before = dict(store.replica[0])
    r.set("a", "2")
    store.sync()
    assert store.replica[0][b"s"] is before[b"s"] and store.replica[0][b"a"] is not before[b"a"]
    r.delete("a")
    store.sync()
    assert b"a" not in store.replica[0]


def test_write_script_refuses_a_batch_whose_predecessor_is_gone() -> None:
    """WRITE_SCRIPT with the seq of the entry the batch follows (ARGV[5]): written when that
    entry is there; when it is not (the store lost it), nothing is written and the reply says
    so (``written`` -1 from ``RedisWriter._eval``)."""
    _, store = _store()

    async def main() -> list[tuple]:
        writer = RedisWriter.__new__(RedisWriter)
        writer.redis, writer.sha, writer._deleted = store.async_client(), None, {}
        keys = ["shardex:events:0"]

        def blob(seq: int) -> bytes:
            return msgpack.packb([[f"{seq}-0", ["seq", str(seq)]]], use_bin_type=True)

        out = [await writer._eval(list(keys), (blob(1), "shardex:trades:", "0"))]
        out.append(await writer._eval(list(keys), (blob(2), "shardex:trades:", "0", "0", "1")))
        out.append(await writer._eval(list(keys), (blob(4), "shardex:trades:", "0", "0", "3")))
        return out

    first, follows, orphan = asyncio.run(main())
    assert first[0] == 1 and follows[0] == 1 and orphan == (-1, 0, 0, [], 0)
    assert [e[0] for e in store.client().xrange("shardex:events:0")] == [b"1-0", b"2-0"]


def test_cmsgpack_refuses_the_bin_type_as_redis_does() -> None:
    """Redis 7.0's ``cmsgpack.unpack`` cannot read msgpack's bin type ("Bad data format in
    input"): neither can the store's, so a blob a real Redis refuses is refused here too."""
    _, store = _store()
    r = store.client()
    script = "return cmsgpack.unpack(ARGV[1])[1]"
    assert r.eval(script, 0, msgpack.packb(["ab"], use_bin_type=True)) == b"ab"
    with pytest.raises(redis.ResponseError, match="Bad data format"):
        r.eval(script, 0, msgpack.packb([b"ab"], use_bin_type=True))


def test_bridge_goes_on_past_an_entry_it_cannot_write_again() -> None:
    """``RedisWriter`` on the store: its newest entry deleted (XDEL), the next batch finds it
    gone and resumes; the entry cannot be written again (Redis refuses an id below the
    stream's last: a conflict), and the batch after that must not ask for it again (it would
    find it gone forever: a loop that writes nothing)."""
    from shardex.accounts.assets import AssetTable
    from shardex.engine import DEFAULT_MARKETS, Engine
    from shardex.engine.codes import OP_NEW
    from shardex.node.bridge import BridgeConfig, EntryFormatter, ShardState, ShardTracker
    from shardex.node.bridge.metrics import Alerts

    engine, events = Engine(DEFAULT_MARKETS), []
    for k in range(8):
        engine.apply((OP_NEW, "BTC-USD", f"o{k}", "a", 0, 0, 100 + k, 1, 0, False, 0), events)
    assert [ev[1] for ev in events] == list(range(1, 9))  # one event per order here
    _, store = _store()
    cfg = BridgeConfig(router="mem://r", redis_url="redis://sim/0", markets=DEFAULT_MARKETS)

    async def main() -> list[bool]:
        w = RedisWriter(cfg, Alerts(), EntryFormatter(DEFAULT_MARKETS, AssetTable(DEFAULT_MARKETS)),
                        redis=store.async_connect)  # fmt: skip
        st = ShardState(0, ShardTracker(0, max_pending=100, hole_wait=0.1, stall_after=5.0))
        w.shards = [st]
        await w.sync_last()
        out = [await w.write(st, events[0:5])]
        await w.redis.xdel("shardex:events:0", "5-0")
        out.append(await w.write(st, events[5:6]))  # follows 5: gone, resumes at 4
        out.append(await w.write(st, events[4:5]))  # 5 again: refused (a conflict)
        out.append(await w.write(st, events[5:8]))  # must be written
        return out

    assert asyncio.run(main()) == [True] * 4
    ids = [e[0] for e in store.client().xrange("shardex:events:0")]
    assert ids == [b"1-0", b"2-0", b"3-0", b"4-0", b"6-0", b"7-0", b"8-0"]
