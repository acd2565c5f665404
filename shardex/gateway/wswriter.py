"""One WebSocket connection's writer: its queue (``Outbox``) to its socket, in order.

The hub's ``flush`` queues a step's chunks to every subscriber, then ``kick``s each once; any
other message queued (an answer, a heartbeat, the user channel's) kicks too. A kick marks the
connection ready in the ``Flusher``, which writes every ready connection once, a short window
after the first kick (the steps meanwhile join the same write): when the socket takes bytes
(the transport is not paused) what is queued goes out in as few writes as ``drain_into``
makes, with no task switch; only a connection whose kernel buffer is full waits, in its own
task, for the transport to drain (as ``send_str`` does), while its queue fills and it falls
behind (``Outbox``). So a window costs one write per ready connection, not a task wake-up
per connection per message, nor a write per step (docs/gateway.md#measured).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shardex.gateway import metrics as m
from shardex.gateway.hub import Conn
from shardex.gateway.wsframe import FrameCache, drain_into, write_all

WINDOW = 0.01  # seconds from a connection's first kick to its write (what comes meanwhile joins)


class Flusher:
    """The connections kicked since the last flush, written once each, in one callback,
    ``window`` seconds after the first kick: a step's trades and the book deltas read right
    after it (each pair's read is its own step, a few ms later) go out in one write per
    connection instead of one each. Writes, each a syscall per client, were most of the
    gateway's CPU at 1,000 clients (docs/gateway.md#measured); the window bounds them to
    ``1 / window`` per client per second, whatever the rate, for at most ``window`` of
    latency. ``window`` 0: written right after the step (``call_soon``)."""

    def __init__(self, window: float = WINDOW, stamps: list[tuple[int, float]] | None = None
                 ) -> None:  # fmt: skip
        self.ready: dict[Writer, None] = {}  # (in kick order)
        self.scheduled = False
        self.window = window
        self.stamps = stamps if stamps is not None else []  # the hub's (``Hub.stamps``)

    def mark(self, writer: Writer) -> None:
        self.ready[writer] = None
        if not self.scheduled:
            self.scheduled = True
            loop = asyncio.get_running_loop()
            if self.window > 0:
                loop.call_later(self.window, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        ready, self.ready = self.ready, {}
        for writer in ready:
            writer.write_now()
        m.WRITES.inc(len(ready))
        m.WRITE_ROUNDS.inc()
        if self.stamps:  # this round's trades: exchange time → written, and read → written
            now = time.time()
            for ts, read_at in self.stamps:
                m.TRADE_WRITTEN.observe(max(0.0, now - ts / 1000))
                m.STEP_WRITTEN.observe(max(0.0, now - read_at))
            self.stamps.clear()


class Writer:
    """The only writer of one connection's frames."""

    def __init__(self, ws: Any, conn: Conn, request: Any, cache: FrameCache,
                 flusher: Flusher) -> None:  # fmt: skip
        self.ws, self.conn, self.cache, self.flusher = ws, conn, cache, flusher
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
        """Something was queued: written with the step's other connections."""
        self.flusher.mark(self)

    def spill(self) -> None:
        """The queue is about to overflow before the round: written now, if the socket takes
        it (``Conn.spill``)."""
        if not self.draining and self.open():
            self.pump()

    def write_now(self) -> None:
        """Written now if the socket takes it, else by the task once it drained."""
        if self.draining or not self.open():
            self.conn.wake.set()
            return
        if not self.protocol.writing_paused and write_all(self.conn.outbox, self.cache,
                                                          self.transport):  # fmt: skip
            return  # (the round's common case: everything queued, one write)
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
