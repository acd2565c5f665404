"""A cancel that lands in the same loop iteration as the thing awaited must still cancel.

On Python 3.11, ``asyncio.wait_for`` returns the result instead when its future completes as
the cancel arrives: a stopping bridge's pump kept looping on the in-memory socket (an
in-process cluster hung at exit in about 1 run in 12 under load), and an SDK caller's cancel
of a request whose reply had just landed was lost. These tests make the race deterministic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

import shardex
from shardex.aio import within
from shardex.net import mem_transport
from shardex.net.memasync import MemAsyncContext


async def _cancel_as_it_completes(waiting: asyncio.Task, complete) -> None:
    """Let ``waiting`` block, then complete what it waits for and cancel it, back to back."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()
    complete()
    waiting.cancel()


def test_within_raises_the_cancel_that_lands_with_the_result() -> None:
    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(within(fut, 5.0))
        await _cancel_as_it_completes(task, lambda: fut.set_result("late"))
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_within_times_out_and_passes_results() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await within(loop.create_future(), 0.01)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 7)
        assert await within(fut, 5.0) == 7
        assert await within(asyncio.sleep(0, "x"), None) == "x"

    asyncio.run(main())


def test_an_in_memory_poll_cancelled_as_a_message_lands_is_cancelled() -> None:
    async def main() -> None:
        net = mem_transport()
        ctx = MemAsyncContext(net.hub)
        router, dealer = ctx.socket(zmq.ROUTER), net.Context().socket(zmq.DEALER)
        router.bind("tcp://127.0.0.1:5999")
        dealer.connect("tcp://127.0.0.1:5999")
        task = asyncio.ensure_future(router.poll(5000))
        await _cancel_as_it_completes(task, lambda: dealer.send_multipart([b"x"]))
        with pytest.raises(asyncio.CancelledError):
            await task
        router.close()
        dealer.close()

    asyncio.run(main())


def test_no_wait_for_in_the_package() -> None:
    """Every deadline goes through ``within`` (``asyncio.wait_for`` loses cancels on 3.11)."""
    root = Path(shardex.__file__).parent
    users = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))
             if "asyncio.wait_for(" in p.read_text()]  # fmt: skip
    assert users == []
