"""``shardex.sim.loop``: an asyncio loop on a VirtualClock jumps to its next timer (no real
sleep), runs timers in virtual-time order, and raises ``Stalled`` instead of hanging."""

from __future__ import annotations

import asyncio
import time

import pytest

from shardex.clock import VirtualClock
from shardex.sim.loop import Stalled, VirtualLoop, run


def test_an_hour_of_sleeps_costs_no_real_time_and_lands_exactly():
    clock = VirtualClock()
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        order.append((name, asyncio.get_running_loop().time()))

    async def main() -> float:
        await asyncio.gather(sleeper("late", 3600.0), sleeper("early", 0.25), sleeper("mid", 60))
        return clock.monotonic()

    t0 = time.process_time()
    end = run(main(), clock)
    assert end == pytest.approx(3600.0)
    assert [n for n, _ in order] == ["early", "mid", "late"]
    assert [t for _, t in order] == pytest.approx([0.25, 60.0, 3600.0])
    assert time.process_time() - t0 < 5.0  # (CPU, not wall: an hour was never slept)


def test_wait_for_times_out_on_virtual_time():
    clock = VirtualClock(start=10.0)

    async def main() -> float:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.get_running_loop().create_future(), 5.0)
        return clock.now

    assert run(main(), clock) == pytest.approx(15.0)


def test_a_loop_with_nothing_scheduled_raises_instead_of_hanging():
    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nothing will ever resolve it

    with pytest.raises(Stalled, match="nothing to run"):
        run(main())


def test_loop_time_is_the_clock_and_call_later_follows_it():
    loop = VirtualLoop(VirtualClock(start=2.0))
    try:
        seen: list[float] = []
        loop.call_later(1.5, lambda: (seen.append(loop.time()), loop.stop()))
        loop.run_forever()
        assert seen == [pytest.approx(3.5)]
        assert loop.clock.now == pytest.approx(3.5)
    finally:
        loop.close()
