"""An asyncio event loop on virtual time: it never sleeps, it jumps.

``VirtualLoop(clock)`` is a ``SelectorEventLoop`` whose ``time()`` is ``clock.monotonic()``
(a ``shardex.clock.VirtualClock``) and whose selector never waits: when no callback is ready,
asyncio asks the selector to wait until the next timer, and ``VirtualSelector`` advances the
clock to that timer instead. So ``asyncio.sleep(800)``, a lease of 800 ms, a client timeout
and ``wait_for`` all cost no real time, and a run's timing is a function of its code and
seed, not of the machine or its load.

A loop with nothing ready and no timer (every task waits on a future nothing will resolve)
would block forever in a real loop: here ``select(None)`` raises ``Stalled`` at once, naming
the deadlock instead of hanging the test.

Real file descriptors still work (the loop's self-pipe; a thread's
``call_soon_threadsafe``): the selector looks at them without waiting before it jumps. A
simulated run must use none -- anything outside the loop (a real Redis, a thread) makes the
run depend on the machine again.

Why not ``looptime`` (PyPI, 0.9): it does the same jump (a patched selector) but keeps its
own integer time inside the loop, is built as a pytest plugin that patches loops per test,
and steps real time while executor futures run. Here the time must *be* the shared
``VirtualClock`` every node reads through ``net.clock`` (and the faults' delivery times),
so one class of 30 lines over the stdlib loop is simpler than syncing two clocks, and adds
no dependency.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

from shardex.clock import VirtualClock

T = TypeVar("T")


class Stalled(RuntimeError):
    """The loop has nothing to run and no timer: every task waits for something that only
    another task could do (a deadlock in a simulated run)."""


class VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform selector, except that a wait advances ``clock`` instead of blocking."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise Stalled(f"virtual loop: nothing to run and no timer at t={self.clock.now:.6f}")
        self.clock.advance_to(self.clock.now + timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """The asyncio loop of a simulated run: ``time()`` is ``clock.monotonic()``."""

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self.clock = clock or VirtualClock()
        super().__init__(VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now


def run(main: Coroutine[Any, Any, T], clock: VirtualClock | None = None) -> T:
    """``asyncio.run(main)`` on a new ``VirtualLoop`` over ``clock`` (a new one if None)."""
    with asyncio.Runner(loop_factory=lambda: VirtualLoop(clock)) as runner:
        return runner.run(main)


__all__ = ["Stalled", "VirtualLoop", "VirtualSelector", "run"]
