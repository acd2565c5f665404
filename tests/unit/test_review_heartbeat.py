"""``CancelOnDisconnect`` leaves the dead-man switch armed when the session's code fails: an
exception (or a cancelled task) unwinding out of the ``async with`` is not a clean exit, so the
orders must go at the timeout, as for a killed process; a clean exit disarms."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardex.client.heartbeat import CancelOnDisconnect
from shardex.client.results import CancelAll


class _Client:
    """The one SDK call the heartbeat makes, recorded: its ``timeout_ms`` per call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def cancel_after(self, timeout_ms: int, symbol: Any, *, account: Any) -> CancelAll:
        self.calls.append(timeout_ms)
        return CancelAll([])


class _StrategyBug(Exception):
    pass


def test_a_clean_exit_disarms() -> None:
    client = _Client()

    async def main() -> None:
        async with CancelOnDisconnect(client, 30_000, account="al", every_s=60):
            pass

    asyncio.run(main())
    assert client.calls == [30_000, 0]


@pytest.mark.parametrize("failure", [_StrategyBug, asyncio.CancelledError])
def test_a_failing_session_leaves_the_switch_armed(failure: type[BaseException]) -> None:
    client = _Client()

    async def main() -> None:
        async with CancelOnDisconnect(client, 30_000, account="al", every_s=60):
            raise failure("the strategy died")

    with pytest.raises(failure):
        asyncio.run(main())
    assert client.calls == [30_000]  # armed, never disarmed: the shards cancel at the timeout
