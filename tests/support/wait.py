"""Wait on progress, not on the clock: a bounded poll of a predicate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    what: str = "",
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise
    ``TimeoutError`` naming ``what`` (and the last value seen) after ``timeout`` seconds.
    Exceptions of the predicate propagate (a broken probe fails at once, not at the deadline);
    a predicate that may fail transiently catches that itself."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what or predicate!r} (last: {last!r})")
        time.sleep(interval)
        last = predicate()
    return last
