"""Waiting with a deadline without losing a cancel.

Python 3.11's ``asyncio.wait_for`` returns the awaited result when the cancel of its caller
lands in the same loop iteration as that result: the caller goes on as if never cancelled (a
stopping bridge kept pumping; a cancelled SDK request returned). ``asyncio.timeout`` (3.11+)
counts cancel requests and re-raises the caller's, so every deadline in shardex goes
through ``within``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw``, raising ``TimeoutError`` after ``timeout`` seconds (None: no deadline);
    a cancel of the caller always propagates, even if ``aw`` completed at the same moment."""
    async with asyncio.timeout(timeout):
        return await aw


def honour_cancel() -> None:
    """Raise ``CancelledError`` if this task has a cancel pending that an awaited library
    swallowed (redis-py waits with ``wait_for`` when it has a socket timeout, fakeredis for
    every reply): a loop that runs until cancelled calls it once per turn, so a stop that
    landed with a reply is honoured at the next turn instead of never. Not for use inside an
    expired ``asyncio.timeout`` block (its own cancel is pending there)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
