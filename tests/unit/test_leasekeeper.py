"""The lease keeper's decisions (``shardex.leasekeeper``) and the leader's use of them.

A keeper process renews the leader's lease outside its GIL; here its logic (``KeeperCore``)
runs in-process on the simulator's store (``SimStore``) and a virtual clock, over a real
shared page (an mmap of a temp file), so every decision is checked without real time: the
deadline rule is the thread's, a stale heartbeat stops the renewals, a store that cannot be
asked keeps the deadline, a store that says "not yours" ends the lease in the leader, and a
dead keeper hands the renewals back to the leader's thread.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from shardex.clock import VirtualClock
from shardex.coord.connect import lease_store
from shardex.lease import MARGIN, Lease, LeaseLost
from shardex.leasekeeper import (
    BEAT,
    LOST,
    READY,
    RENEWING,
    STATE,
    VALID,
    KeeperCore,
    KeeperView,
    Slots,
    deadline_after,
    keeper_mode,
)
from shardex.sim.store import SimStore
from tests.support.wait import wait_until

TTL_MS, RENEW_MS, STALL_S = 300, 56, 0.5
BOUND_S = 20.0  # how long a waited-for event may take (polled; never reached)


class TwinKeeper(KeeperView):
    """A keeper in-process: the ``KeeperHandle`` interface over a ``KeeperCore``."""

    def __init__(self, core: KeeperCore) -> None:
        super().__init__(core.slots)
        self.core = core
        self.dead = False
        self.proc = SimpleNamespace(pid=0, returncode=None)

    def ready(self) -> bool:
        return not self.dead

    def alive(self) -> bool:
        return not self.dead

    def take(self, token: Any, sent: float, beat: float, epoch: int = 0) -> bool:
        self.gen += 1
        self.beat(beat)
        self.core.take(self.gen, token, sent, epoch)
        return True

    def stop(self) -> None:
        self.core.stop()


class FlakyStore:
    """A lease store whose ``renew`` raises while ``down`` (Redis unreachable)."""

    def __init__(self, store: Any) -> None:
        self.store, self.down = store, False

    def renew(self, token: Any, ttl_ms: int) -> bool:
        if self.down:
            raise ConnectionError("store down")
        return self.store.renew(token, ttl_ms)


@pytest.fixture
def world() -> Iterator[SimpleNamespace]:
    """A lease held by "n0" on a SimStore, and a keeper core for it on a real shared page."""
    clock = VirtualClock()
    sim = SimStore(clock, lag=None)
    lease = Lease(sim.client(), 0, "n0", "tcp://127.0.0.1:9", TTL_MS, RENEW_MS, clock=clock)
    assert lease.try_acquire(0, 0)[0] == 1
    with tempfile.TemporaryFile() as f:
        f.truncate(64)
        slots = Slots(f.fileno())
        store = FlakyStore(lease_store(sim.client(), "0"))
        core = KeeperCore(store, slots, lease.ttl_ms, RENEW_MS / 1000, MARGIN, STALL_S,
                          "shard 0")  # fmt: skip
        yield SimpleNamespace(clock=clock, sim=sim, lease=lease, slots=slots, core=core,
                              store=store)  # fmt: skip


def test_mode_is_thread_unless_asked() -> None:
    assert keeper_mode({}) == "thread"
    assert keeper_mode({"SHARDEX_LEASE_KEEPER": "process"}) == "process"
    with pytest.raises(ValueError, match="SHARDEX_LEASE_KEEPER"):
        keeper_mode({"SHARDEX_LEASE_KEEPER": "proces"})


def test_deadline_rule_is_the_threads(world: SimpleNamespace) -> None:
    """The keeper's valid_until for a renew sent at t is what the thread's renew at t gives:
    t + ttl·(1 − margin), from the send time, never from the reply."""
    w = world
    w.clock.advance(0.05)
    sent = w.clock.monotonic()
    w.lease.renew()
    assert w.lease.deadline == deadline_after(sent, TTL_MS, MARGIN) == sent + 0.3 * 0.95
    w.core.take(1.0, w.lease.value, sent)
    w.slots.put(BEAT, sent)
    w.clock.advance(RENEW_MS / 1000)
    sent = w.clock.monotonic()
    ticks = iter([sent, sent + 0.2])  # (the reply 200 ms later changes nothing)
    assert w.core.step(sent, lambda: next(ticks)) == "renewed"
    assert w.slots.get(VALID) == deadline_after(sent, TTL_MS, MARGIN)
    assert w.sim.client().pttl("shardex:lease:0") == TTL_MS


def test_stale_heartbeat_stops_renewals(world: SimpleNamespace) -> None:
    w = world
    w.core.take(1.0, w.lease.value, w.clock.monotonic())
    w.slots.put(BEAT, w.clock.monotonic())
    w.clock.advance(STALL_S + 0.01)  # the loop has not ticked for longer than stall_s
    now = w.clock.monotonic()
    assert w.core.step(now, w.clock.monotonic) == "stalled"
    assert w.slots.get(VALID) == 0.0 and w.core.stats.renews == 0
    assert w.sim.client().pttl("shardex:lease:0") < 0  # (not renewed: expired by now)
    w.slots.put(BEAT, now)  # it ticks again: renewals resume (and find the lease gone)
    assert w.core.step(now, w.clock.monotonic) == "lost"
    assert w.slots.get(STATE) == LOST


def test_store_down_keeps_the_deadline(world: SimpleNamespace) -> None:
    w = world
    w.core.take(1.0, w.lease.value, w.clock.monotonic())
    w.slots.put(BEAT, w.clock.monotonic())
    assert w.core.step(w.clock.monotonic(), w.clock.monotonic) == "renewed"
    before = w.slots.get(VALID)
    w.store.down = True
    w.clock.advance(0.1)
    w.slots.put(BEAT, w.clock.monotonic())
    assert w.core.step(w.clock.monotonic(), w.clock.monotonic) == "failed"
    assert w.slots.get(VALID) == before and w.slots.get(STATE) == RENEWING
    w.core.stop()
    assert w.slots.get(STATE) == READY and w.core.due_in(0.0) is None


def _hand_over(w: SimpleNamespace) -> TwinKeeper:
    """The lease's renewer thread hands the token to an in-process keeper."""
    twin = TwinKeeper(w.core)
    w.lease.use_keeper(twin)  # type: ignore[arg-type]
    w.lease.start_renewer(w.clock.monotonic, STALL_S)
    wait_until(lambda: w.lease._kept, BOUND_S, "the thread never handed over")
    assert w.core.token == w.lease.value
    return twin


def test_leader_acts_only_within_the_keepers_deadline(world: SimpleNamespace) -> None:
    w = world
    _hand_over(w)
    own = w.lease.deadline
    w.clock.advance(own - w.clock.monotonic() - 0.001)
    w.lease.tick(w.clock.monotonic())  # (writes the heartbeat)
    assert w.core.step(w.clock.monotonic(), w.clock.monotonic) == "renewed"
    w.clock.advance(0.002)  # past the thread's deadline, within the keeper's
    assert w.lease.valid()
    assert w.lease.deadline == w.slots.get(VALID) > own
    w.clock.advance(w.lease.deadline - w.clock.monotonic())  # no renew since: fenced
    assert not w.lease.valid()


def test_older_tokens_deadline_is_ignored(world: SimpleNamespace) -> None:
    w = world
    twin = _hand_over(w)
    w.slots.put(VALID, w.clock.monotonic() + 100)  # a deadline written under another gen
    twin.gen += 1
    assert twin.valid_until() == 0.0
    w.clock.advance(1.0)
    assert not w.lease.valid()


def test_store_says_not_ours_ends_the_lease(world: SimpleNamespace) -> None:
    w = world
    _hand_over(w)
    w.sim.client().delete("shardex:lease:0")  # (someone else's now: not ours)
    w.lease.tick(w.clock.monotonic())
    assert w.core.step(w.clock.monotonic(), w.clock.monotonic) == "lost"
    with pytest.raises(LeaseLost):
        w.lease.tick(w.clock.monotonic())
    assert not w.lease.valid()


def test_dead_keeper_hands_back_to_the_thread(world: SimpleNamespace) -> None:
    w = world
    twin = _hand_over(w)
    assert not [t for t in threading.enumerate() if t.name == "lease-0" and t.is_alive()]
    twin.dead = True
    w.clock.advance(RENEW_MS / 1000)
    w.lease.tick(w.clock.monotonic())
    assert w.lease.keeper is None and not w.lease._kept
    wait_until(lambda: any(t.name == "lease-0" for t in threading.enumerate()), BOUND_S)
    renews = w.lease.stats.renews
    wait_until(lambda: w.lease.stats.renews > renews, BOUND_S, "the thread does not renew")
    w.lease.release()
