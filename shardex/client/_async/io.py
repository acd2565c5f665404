"""The asyncio flavour's I/O (hand-written; its sync counterpart is ``shardex.client._sync.io``).

Only what genuinely differs between the flavours lives here: sockets of a
``zmq.asyncio.Context``, one reader task per socket handing each reply to the future of its
request id (so many tasks can share one client), a semaphore for the window of frames in
flight, and ``asyncio.sleep``. ``AsyncClient`` (``shardex.client._async.client``) is built on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zmq
import zmq.asyncio

from shardex.aio import within
from shardex.client.core import ClientCore
from shardex.client.errors import TIMEOUT_PREFIX, UNREACHABLE_PREFIX, RequestTimeout
from shardex.engine.codes import Command
from shardex.wire import codes
from shardex.wire.protocol import decode_reply, encode_request
from shardex.wire.transport import AsyncReplies, dealer

ZmqContext = zmq.asyncio.Context


class AsyncIO(ClientCore):
    """Frames in and out over asyncio sockets (the shared logic calls only these methods)."""

    _sock: Any  # (``AsyncClient._sock``)
    _ready: Any  # (``AsyncClient._ready``)

    def _open(self, context: ZmqContext | None) -> None:
        self.ctx = context or zmq.asyncio.Context.instance()
        self._router = dealer(
            self.ctx, self.endpoint, self.timeout, key=self.key, watch=self._watches
        )
        self._shard_socks: list[zmq.asyncio.Socket] = []
        self._replies = AsyncReplies()
        self._readers: list[asyncio.Task] = []
        self._shard_readers: list[asyncio.Task] = []  # one per direct socket, in shard order
        self._lock: asyncio.Lock | None = None

    def _start(self) -> None:
        """Start the router socket's reader task (needs the running loop: not in __init__)."""
        if not self._readers:
            self._readers.append(asyncio.ensure_future(self._replies.read(self._router)))

    def _guard(self) -> asyncio.Lock:
        """What ``_ready`` holds so that many tasks connect once."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _enter(self) -> None:
        """``async with``: connect now (topology, direct sockets), in the caller's loop."""
        await self._ready(markets=False)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def _connect_direct(self, ep: str) -> None:
        sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
        self._shard_socks.append(sock)
        self.direct_eps.append(ep)
        reader = asyncio.ensure_future(self._replies.read(sock))
        self._readers.append(reader)
        self._shard_readers.append(reader)

    def _reconnect_direct(self, s: int, ep: str) -> None:
        self._shard_readers[s].cancel()
        self._shard_socks[s].close(0)
        sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
        self._shard_socks[s] = sock
        self.direct_eps[s] = ep
        reader = self._shard_readers[s] = asyncio.ensure_future(self._replies.read(sock))
        self._readers.append(reader)

    def _close_sockets(self) -> None:
        for t in self._readers:
            t.cancel()
        for s in (self._router, *self._shard_socks):
            s.close(0)

    async def _send(self, sock: Any, key: bytes, cmds: list) -> tuple[bytes, asyncio.Future]:
        """Send one frame now (so frames leave in call order); return its reply future."""
        req = self.ids.next()
        fut = self._replies.expect(req)
        try:
            await within(sock.send_multipart([key, req, encode_request(cmds)]), self.timeout)
        except (TimeoutError, zmq.Again):
            self._replies.forget(req)
            raise self.no_reply(
                f"{UNREACHABLE_PREFIX} {self.endpoint} within {self.timeout}s", codes.UNREACHABLE
            ) from None
        return req, fut

    async def _reply(self, req: bytes, fut: asyncio.Future, what: str) -> tuple[Any, Any]:
        try:
            payload = await within(fut, self.timeout)
        except TimeoutError:
            self._replies.forget(req)
            raise self.no_reply(
                f"{TIMEOUT_PREFIX} {self.timeout}s (no reply from {what or 'the cluster'})"
            ) from None
        return decode_reply(payload)

    async def _request(self, sock: Any, key: bytes, cmd: tuple, what: str) -> tuple[Any, Any]:
        """One read command → its reply's ``(error, results)``; ``RequestTimeout`` if none."""
        req, fut = await self._send(sock, key, [cmd])
        return await self._reply(req, fut, what)

    async def _topology_reply(self) -> tuple[Any, Any]:
        self._start()
        req, fut = await self._send(self._router, b"", [])
        return await self._reply(req, fut, "router topology")

    async def _exchange(
        self, tuples: list[Command], batch: int, window: int, via_accounts: bool = False
    ) -> list:
        """Send ``tuples`` in planned frames with ``window`` in flight; ``store``'s outcomes."""
        out: list[Any] = [None] * len(tuples)
        self.edge_rejects(tuples, out)
        gate = asyncio.Semaphore(max(1, window))

        async def finish(req: bytes, fut: asyncio.Future, s: int, idx: list[int]) -> None:
            try:
                error, results = await self._reply(req, fut, f"shard {s}")
            except RequestTimeout as exc:
                error, results = exc.error, None
            finally:
                gate.release()
            self.store(idx, error, results, out)

        tasks = []
        for s, key, idx in self.plan(tuples, batch, via_accounts):
            await gate.acquire()
            try:
                req, fut = await self._send(self._sock(s), key, [tuples[i] for i in idx])
            except RequestTimeout as exc:
                gate.release()
                self.store(idx, exc.error, None, out)
                continue
            tasks.append(asyncio.ensure_future(finish(req, fut, s, idx)))
        await asyncio.gather(*tasks)
        return out
