"""Where every node reads the time: one seam, a real clock and a virtual one.

A node reads time through its transport's ``clock`` (``net.clock``): ``monotonic()`` for
timers, deadlines, leases and heartbeats, ``time()`` for wall-clock stamps (logs, reports),
``perf_counter()`` for measured durations (metrics). In a process that is ``REAL``: the
``time`` module's own functions bound as attributes, so a hot path that caches
``mono = self.clock.monotonic`` pays exactly what calling ``time.monotonic`` did.

In the simulator every node of the cluster shares one ``VirtualClock`` (or a ``NodeClock``
view of it, ``shardex.sim.skew``: the same virtual time run faster or slower and offset, as
a drifting crystal or a stepped wall clock would be): time moves only when the simulator
advances it, so a run is a function of its seed, and a lease of 800 ms costs no real time.

Why not patch the ``time`` module: a patch is process-wide (the test runner, Redis client
libraries and asyncio would all see it), invisible in the code that depends on it, and cannot
give two nodes in one process two different clocks.
"""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    """What a node may ask of the time (all in seconds, floats)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def perf_counter(self) -> float: ...


class RealClock:
    """The process's clocks (the ``time`` module's functions, unwrapped)."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    perf_counter = staticmethod(_time.perf_counter)

    def __repr__(self) -> str:
        return "<RealClock>"


REAL = RealClock()

# Where virtual wall-clock time starts: a fixed instant, so a simulated run's timestamps are
# the same on every machine (2026-01-01T00:00:00Z).
VIRTUAL_EPOCH = 1_767_225_600.0


class VirtualClock:
    """Time that moves only when ``advance`` is called: the simulator's one source of time.

    ``monotonic`` and ``perf_counter`` start at 0; ``time`` at ``VIRTUAL_EPOCH``. Time never
    goes backwards (``advance`` refuses a negative step)."""

    def __init__(self, start: float = 0.0, epoch: float = VIRTUAL_EPOCH) -> None:
        self.now = start
        self.epoch = epoch

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot go backwards (advance by {seconds})")
        self.now += seconds

    def advance_to(self, when: float) -> None:
        """Move to ``when`` if that is later (a timer due in the past runs now)."""
        if when > self.now:
            self.now = when

    def __repr__(self) -> str:
        return f"<VirtualClock t={self.now:.6f}>"


__all__ = ["REAL", "VIRTUAL_EPOCH", "Clock", "RealClock", "VirtualClock"]
