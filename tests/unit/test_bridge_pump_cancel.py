"""A bridge shard pump stops when its task is cancelled, also when the cancel lands in the same
loop turn as the wake-up it was waiting for.

Regression: the pump waited with ``asyncio.wait_for(wake.wait(), hole_wait)``; on Python 3.11
``wait_for`` returns the inner result and drops the cancel when both happen at once, so the pump
went on looping and the bridge (and an in-process cluster closing it) never stopped:
tests/process/test_orders_stream.py hung at its cluster's exit in about half of its runs under
load. The wait is now ``asyncio.timeout``, which keeps the cancel."""

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
