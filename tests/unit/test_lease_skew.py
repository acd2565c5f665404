"""Clock skew and the lease: a node whose wall clock is off (ahead, behind, stepped while it
leads) keeps no lease it lost, because the lease never reads a wall clock: the leader's
deadline is on its own monotonic clock, the store expires the key on the store's clock, the
standby waits for the store's ``PTTL``. Run on the simulator's Redis twin (its expiries on the
shared virtual clock) with one ``NodeClock`` per node; and the startup check that compares a
node's wall clock with the store's (``shardex.coord.skew``)."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from shardex.clock import VirtualClock
from shardex.coord.etcd import EtcdClient
from shardex.coord.skew import SKEW_WARN_MS, check_store_clock, offset_ms, skewed, store_time
from shardex.lease import Lease, LeaseLost
from shardex.sim.skew import NodeClock
from shardex.sim.store import SimStore

STEP_S = 0.01  # (finer than the 40 ms margin between the deadline and the expiry)


@pytest.mark.parametrize(("a_off", "a_step", "b_off", "rate"), [
    (3600.0, 0.0, -3600.0, 1.0),    # a an hour ahead, b an hour behind
    (-3600.0, 0.0, 3600.0, 1.0),    # the other way round
    (0.0, -7200.0, 0.0, 1.0),       # a's wall clock stepped back two hours while it leads
    (0.0, 7200.0, 0.0, 1.0),        # ... or forward
    (86_400.0, 0.0, 0.0, 0.98),     # a a day ahead and its crystal 2 % slow (within MARGIN)
])  # fmt: skip
def test_a_skewed_leader_stops_before_anyone_can_take_its_lease(a_off, a_step, b_off, rate):
    base = VirtualClock()
    store = SimStore(base, lag=None)
    a_clock = NodeClock(base, rate=rate, origin=123.0, offset=a_off)
    b_clock = NodeClock(base, origin=7.0, offset=b_off)
    a = Lease(store.client(), 0, "a", "tcp://a:1", clock=a_clock, thread=False)
    b = Lease(store.client(), 0, "b", "tcp://b:1", clock=b_clock, thread=False)
    assert a.try_acquire(0, 0)[0] == 1 and a.set_isr(["a", "b"])
    a_clock.step(a_step)  # (NTP steps a's wall clock; its monotonic clock does not jump)
    # a is cut off from the store from now on: it renews no more
    seen_valid_after_expiry = False
    for _ in range(int(2 * a.ttl_ms / 1000 / STEP_S)):
        base.advance(STEP_S)
        if b.holder() is None and a.valid():
            seen_valid_after_expiry = True  # the store let go while a still thought it led
        epoch, _ = b.try_acquire(0, 0)
        if epoch:
            assert not a.valid(), "two leaders: b took the lease while a still acts on it"
            break
    else:
        raise AssertionError("b never took the expired lease")
    assert not seen_valid_after_expiry
    assert epoch == 2
    with pytest.raises(LeaseLost):  # the cut heals: the store says the lease is b's
        a.renew()
    assert not a.valid()


def test_the_offset_is_the_stores_time_minus_the_midpoint_of_our_reads():
    off, unc = offset_ms(100.0, 100.2, 100.7)
    assert off == pytest.approx(600.0) and unc == pytest.approx(100.0)
    assert skewed(off, unc)
    assert not skewed(*offset_ms(100.0, 100.2, 100.1 + SKEW_WARN_MS / 1000))
    assert not skewed(*offset_ms(100.0, 100.0, 101.0, resolution_s=1.0))  # (etcd: 1 s Date)


class _TimeStore:
    """A Redis client whose TIME is ``at`` (seconds), or fails."""

    def __init__(self, at: float | None) -> None:
        self.at = at

    def time(self) -> tuple[int, int]:
        if self.at is None:
            raise ConnectionError("down")
        return int(self.at), int(self.at % 1 * 1e6)


def test_a_node_warns_at_start_when_its_clock_is_off_the_stores(caplog):
    clock = VirtualClock()  # (its time() is the node's wall clock)
    caplog.set_level(logging.INFO, "shardex.lease")
    near = check_store_clock(_TimeStore(clock.time() + 0.05), clock)
    assert near == pytest.approx(50.0, abs=0.01)
    assert "CLOCK" not in caplog.text
    far = check_store_clock(_TimeStore(clock.time() - 2.0), clock)
    assert far == pytest.approx(-2000.0, abs=0.01)
    assert "wall clock is +2000 ms off the lease store's" in caplog.text
    assert check_store_clock(_TimeStore(None), clock) is None  # (down: no check, no failure)
    assert "could not compare" in caplog.text


class _Version(BaseHTTPRequestHandler):
    """etcd's ``/version`` as far as the check reads it: the HTTP ``Date`` header."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)  # (adds Date: now, whole seconds)
        self.end_headers()
        self.wfile.write(b'{"etcdserver":"3.4.23"}')

    def log_message(self, *args: object) -> None:
        pass


def test_etcds_time_is_its_http_date_give_or_take_half_a_second():
    server = HTTPServer(("127.0.0.1", 0), _Version)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        before = time.time()
        at, unc = store_time(EtcdClient([("127.0.0.1", server.server_address[1])]))
        after = time.time()
    finally:
        server.shutdown()
        server.server_close()
    assert unc == 0.5 and int(before) + 0.5 <= at <= int(after) + 0.5
