"""A bridge shard pump stops when its task is cancelled, also when the cancel lands in the same
loop turn as the wake-up it was waiting for.

Regression: the pump waited with ``asyncio.wait_for(wake.wait(), hole_wait)``; on Python 3.11
``wait_for`` returns the inner result and drops the cancel when both happen at once, so the pump
went on looping and the bridge (and an in-process cluster closing it) never stopped:
tests/process/test_orders_stream.py hung at its cluster's exit in about half of its runs under
load. The wait is now ``shardex.aio.within`` (``asyncio.timeout``), which keeps the cancel;
a cancel a Redis client swallows is honoured at the next turn (``honour_cancel``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from shardex.node.bridge.pump import ShardPump


def _pump_and_state() -> tuple[ShardPump, SimpleNamespace]:
    cfg = SimpleNamespace(hole_wait=5.0, batch=100)
    pump = ShardPump(cfg, None, None, None, None)  # type: ignore[arg-type]
    tracker = SimpleNamespace(behind_at=None, take=lambda n: [], gap=lambda now: None, lag=0)
    return pump, SimpleNamespace(tracker=tracker, wake=asyncio.Event(), kind="events",
                                 label="0")  # fmt: skip


def test_a_cancel_with_the_wake_up_in_the_same_turn_stops_the_pump() -> None:
    async def main() -> bool:
        pump, st = _pump_and_state()
        task = asyncio.ensure_future(pump.run(st))
        await asyncio.sleep(0.01)  # the pump waits for news
        st.wake.set()  # news and the cancel in the same turn of the loop
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:
            task.cancel()  # (this test's own clean-up if the pump kept going)
            await asyncio.wait({task}, timeout=2)
        return bool(done) and task.cancelled()

    assert asyncio.run(main())


def test_a_cancel_a_library_swallows_still_stops_the_pump() -> None:
    """Redis clients wait with ``asyncio.wait_for`` too (redis-py with a socket timeout,
    fakeredis for every reply), and lose a cancel that lands with the reply: the pump must
    still stop, at its next turn (an in-process cluster's exit hung in ~1 run in 20)."""

    async def swallowing_write(st: object, batch: list) -> bool:
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        reply = loop.create_future()

        def both() -> None:
            reply.set_result(True)  # the reply lands ...
            me.cancel()  # ... with the stop

        loop.call_soon(both)
        try:
            await reply
        except asyncio.CancelledError:
            assert reply.done()  # (as wait_for on 3.11: the reply wins, the cancel is lost)
        return True

    async def main() -> bool:
        pump, st = _pump_and_state()
        batches = [[("e",)]]
        st.tracker.take = lambda n: batches.pop() if batches else []
        pump.store = SimpleNamespace(write=swallowing_write, shards=[])
        st.wake.set()
        task = asyncio.ensure_future(pump.run(st))
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=2)
        return bool(done) and task.cancelled()

    assert asyncio.run(main())
