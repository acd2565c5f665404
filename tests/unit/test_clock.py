"""The clock seam: the real clock is the time module's, the virtual one moves only when told."""

from __future__ import annotations

import time

import pytest

from shardex.clock import REAL, VIRTUAL_EPOCH, VirtualClock
from shardex.net import ZMQ, mem_transport


def test_real_clock_is_the_time_modules_functions() -> None:
    assert REAL.monotonic is time.monotonic
    assert REAL.time is time.time
    assert REAL.perf_counter is time.perf_counter
    assert ZMQ.clock is REAL


def test_virtual_clock_moves_only_when_advanced() -> None:
    v = VirtualClock()
    assert (v.monotonic(), v.time()) == (0.0, VIRTUAL_EPOCH)
    v.advance(0.25)
    v.advance_to(0.1)  # earlier than now: no move
    assert v.monotonic() == v.perf_counter() == 0.25
    v.advance_to(2.0)
    assert v.time() == VIRTUAL_EPOCH + 2.0
    with pytest.raises(ValueError, match="backwards"):
        v.advance(-1)


def test_a_transport_carries_the_clock_its_nodes_read() -> None:
    v = VirtualClock()
    assert mem_transport(clock=v).clock is v
    assert mem_transport().clock is REAL
