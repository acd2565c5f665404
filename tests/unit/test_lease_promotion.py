"""A promoted standby renews its lease from the moment it takes it, not after its promotion.

A process's new leader started its renewer thread only when its ``Replicator`` was built, at
the end of the promotion's work (standby closed, leader node built: journal, sockets, rings);
under load that work delayed the first renew by 0.5–1.4 s and a 300 ms lease taken was lost
again. Now ``Standby._check_lease`` starts the renewer at the take (its beat: the take, so a
wedged promotion still hands over), and the leader loop's ``start_renewer`` only rebinds the
beat of that one thread. The store is the simulator's (``SimStore``), the lease's clock a
virtual one that never moves: no real time is asserted, only what the store was asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shardex.clock import VirtualClock
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import Journal
from shardex.lease import Lease
from shardex.node.replica import START_GRACE_S, Standby
from shardex.sim.store import SimStore

BOUND_S = 20.0  # how long a waited-for event may take before the test fails (never reached)


def _until(cond: Callable[[], bool]) -> bool:
    """Whether ``cond`` became true within ``BOUND_S`` (polled: the renewer is a thread)."""
    end = time.monotonic() + BOUND_S
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def _renewers(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"lease-{name}" and t.is_alive()]


@pytest.fixture
def taken(tmp_path: Path):
    """A standby (real ``Standby``, a journal in ``tmp_path``) that just took the lease of
    shard 0 in an empty store, with a renewer thread as a process's lease has."""
    clock = VirtualClock()
    lease = Lease(SimStore(clock, lag=None).client(), 0, "shard-0.r0", "tcp://127.0.0.1:9",
                  ttl_ms=300, renew_ms=56, clock=clock)  # fmt: skip
    d = str(tmp_path / "shard-0")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(lease, d, DEFAULT_MARKETS, "none", journal, journal.recover().engine)
    standby.started -= START_GRACE_S  # (not just started: a free lease is taken at once)
    try:
        assert standby._look(clock.monotonic()) is None, "the lease was not taken"
        assert lease.epoch == 1
        yield lease
    finally:
        standby.close()
        lease.release()
        journal.close()


def test_the_renewals_start_when_the_lease_is_taken_not_after_the_promotion(
    taken: Lease,
) -> None:
    """Regression (failed on main: no renew until the leader's ``Replicator`` existed): the
    standby has taken the lease and done none of its promotion's work (no leader node, no
    loop, no ``Replicator``); the store is asked to renew anyway, by one renewer thread."""
    assert _until(lambda: taken.stats.renews >= 2), "no renew before the promotion's work"
    assert taken.stats.failed == 0 and taken.valid()
    assert len(_renewers(taken.name)) == 1


def test_the_loops_beat_takes_over_the_same_thread(
    taken: Lease, caplog: pytest.LogCaptureFixture
) -> None:
    """The leader's loop starts the renewer again with its own beat (as ``Replicator``
    does): no second thread, and from then on the loop's beat is the one watched, so a loop
    that stops ticking stops the renewals (the standby takes over)."""
    assert _until(lambda: taken.stats.renews >= 1)
    wedged = taken.clock.monotonic() - 10.0  # a loop whose last tick was 10 s ago
    with caplog.at_level(logging.ERROR, logger="shardex.lease"):
        taken.start_renewer(lambda: wedged, stall_s=3.0)
        assert len(_renewers(taken.name)) == 1
        assert _until(lambda: "has not ticked" in caplog.text), "the loop's beat is not watched"
    renews = taken.stats.renews
    taken.start_renewer(taken.clock.monotonic)  # (the loop ticks again: renewals resume)
    assert _until(lambda: taken.stats.renews > renews)


def test_a_renewer_that_ended_is_started_again(taken: Lease) -> None:
    """After a release the thread ends; a lease taken again renews from a new thread."""
    assert _until(lambda: taken.stats.renews >= 1)
    taken.release()
    assert _until(lambda: not _renewers(taken.name))
    assert taken.try_acquire(taken.epoch, 0)[0] == 2
    taken.start_renewer(taken.clock.monotonic)
    before = taken.stats.renews
    assert _until(lambda: taken.stats.renews > before)
    assert len(_renewers(taken.name)) == 1


def test_a_promotion_wedged_past_the_stall_bound_stops_renewing(
    taken: Lease, caplog: pytest.LogCaptureFixture
) -> None:
    """Until the leader's loop rebinds it, the renewer's beat is the take: a promotion that
    never reaches its loop (3 s on the lease's clock) stops the renewals, so the other
    replica takes over, as a wedged loop does."""
    assert _until(lambda: taken.stats.renews >= 1)
    with caplog.at_level(logging.ERROR, logger="shardex.lease"):
        taken.clock.advance(3.5)  # type: ignore[attr-defined]
        assert _until(lambda: "has not ticked" in caplog.text), "a wedged promotion renews"
