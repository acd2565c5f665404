"""Cancel-on-disconnect for an asyncio session: a heartbeat that keeps a dead-man switch armed.

``AsyncClient.cancel_after(timeout_ms)`` arms (or pushes back) the account's dead-man switches
(``shardex.engine.expiry``): unless it is called again within ``timeout_ms`` of exchange time,
the shards cancel the account's orders. ``CancelOnDisconnect`` is the session side of it::

    async with CancelOnDisconnect(client, 10_000, account="alice"):
        ...  # trade; every few seconds the switch is pushed back

It arms the switches on entry (raising ``ShardexError`` when a pair's shard refuses), refreshes
them every ``every_s`` seconds (a third of the timeout by default) in a task of the client's
loop, and disarms them on a clean exit (the orders stay). A process that is killed, or cut off
from the cluster, stops refreshing, so its orders go ``timeout_ms`` after the last refresh that
arrived: the point of the switch. So does a session whose code fails (an exception or a
cancellation leaving the ``async with``): it stops refreshing and does not disarm. A refresh
that fails is counted (``failed``) and tried again at the next beat; it cannot cancel anything
itself. Blocking clients call ``cancel_after``
themselves (from the thread that owns the client).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shardex.client.errors import ShardexError

log = logging.getLogger("shardex.client")


class CancelOnDisconnect:
    """An async context manager keeping ``client``'s dead-man switches armed (module docstring)."""

    def __init__(self, client: Any, timeout_ms: int, *, account: str | None = None,
                 symbol: str | None = None, every_s: float | None = None) -> None:  # fmt: skip
        if type(timeout_ms) is not int or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be an int > 0, not {timeout_ms!r}")
        self.client = client
        self.timeout_ms = timeout_ms
        self.account = account
        self.symbol = symbol
        self.every_s = every_s if every_s is not None else timeout_ms / 3000
        self.beats = 0  # refreshes the cluster took (arming included)
        self.failed = 0  # refreshes that did not get through (tried again at the next beat)
        self._task: asyncio.Task[None] | None = None

    async def beat(self, timeout_ms: int) -> bool:
        """One refresh (``timeout_ms`` 0: disarm); True when every pair's shard took it."""
        try:
            done = await self.client.cancel_after(timeout_ms, self.symbol, account=self.account)
        except ShardexError as exc:
            log.warning("cancel-on-disconnect refresh failed: %s", exc)
            self.failed += 1
            return False
        if not done.ok:
            self.failed += 1
            return False
        self.beats += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.beat(self.timeout_ms)

    async def __aenter__(self) -> CancelOnDisconnect:
        done = await self.client.cancel_after(self.timeout_ms, self.symbol, account=self.account)
        if not done.ok:
            bad = next(r for r in done.results if not r.ok)
            raise ShardexError(f"cancel-on-disconnect refused: {bad.reason} ({bad.code})")
        self.beats += 1
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if exc_type is None:  # a clean exit: the switches go, the orders stay
            await self.beat(0)
        # else the session's code failed (an exception, a cancelled task): the switches stay
        # armed and fire at the timeout, as for a killed process: the point of the switch
