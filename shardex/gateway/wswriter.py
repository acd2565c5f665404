"""One WebSocket connection's writer: its queue (``Outbox``) to its socket, in order.

The hub's ``flush`` queues a step's chunks to every subscriber, then ``kick``s each once:
when the socket takes bytes (the transport is not paused) the kick writes what is queued at
once, in as few writes as ``drain_into`` makes, with no task switch; only a connection whose
kernel buffer is full waits, in its own task, for the transport to drain (as ``send_str``
does), while its queue fills and it falls behind (``Outbox``). So a step costs one write per
ready connection, not a task wake-up per connection per message (docs/gateway.md#measured).
"""

from __future__ import annotations

from typing import Any

from shardex.gateway.hub import Conn
from shardex.gateway.wsframe import FrameCache, drain_into


class Writer:
    """The only writer of one connection's frames."""

    def __init__(self, ws: Any, conn: Conn, request: Any, cache: FrameCache) -> None:
        self.ws, self.conn, self.cache = ws, conn, cache
        self.transport, self.protocol = request.transport, request.protocol
        self.draining = False  # the task waits for the transport to take bytes again

    def open(self) -> bool:
        return not self.ws.closed and self.transport is not None and not self.transport.is_closing()

    def pump(self) -> None:
        """Write what is queued while the transport takes it."""
        while not self.protocol.writing_paused and self.open():
            if not drain_into(self.conn.outbox, self.cache, self.transport):
                return

    def kick(self) -> None:
        """Something was queued: written now if the socket takes it, else the task's."""
        if self.draining or not self.open():
            self.conn.wake.set()
            return
        self.pump()
        if self.conn.outbox:
            self.conn.wake.set()

    async def run(self) -> None:
        """Wait for frames (or for a paused transport to drain) and write them."""
        conn = self.conn
        try:
            while self.open():
                self.pump()
                if conn.outbox and self.protocol.writing_paused:
                    self.draining = True
                    try:
                        await self.protocol._drain_helper()  # (aiohttp's own writer waits so)
                    finally:
                        self.draining = False
                    continue
                conn.wake.clear()
                await conn.wake.wait()
        except (ConnectionError, RuntimeError):
            pass
