"""The asyncio face of the in-memory transport (``zmq.asyncio``'s subset the bridge and the
SDK's ``AsyncClient`` use): ``recv_multipart`` and ``poll`` await a delivery instead of
blocking, ``send_multipart`` retries a full pipe until it can send (as ``zmq.asyncio`` waits
for POLLOUT) unless ``NOBLOCK`` is given. Deliveries come from the same thread (every node and
task of an in-memory cluster runs on one event loop), so a wake-up is a plain future."""

from __future__ import annotations

import asyncio
from typing import Any

import zmq

from shardex.aio import within
from shardex.net.mem import MemContext, MemHub, MemSocket, Pipe
from shardex.wire.transport import IN_MEMORY

RETRY_S = 0.001  # a blocking send to a full pipe tries again this often


class MemAsyncSocket(MemSocket):
    """A ``MemSocket`` whose receive and send are awaitable."""

    def __init__(self, hub: MemHub, kind: int, owner: str = "") -> None:
        super().__init__(hub, kind, owner)
        self.waiters: list[asyncio.Future] = []

    def _land(self, pipe: Pipe, msg: list[bytes]) -> None:
        super()._land(pipe, msg)
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _readable(self, timeout: float | None) -> bool:
        while not self.inbox:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await within(fut, timeout)
            except TimeoutError:
                return bool(self.inbox)
        return True

    async def recv_multipart(self, flags: int = 0, copy: bool = True) -> list[Any]:  # type: ignore[override]
        if not flags & zmq.NOBLOCK:
            await self._readable(None)
        return MemSocket.recv_multipart(self, flags, copy)

    async def send_multipart(self, frames: list[Any], flags: int = 0, copy: bool = True) -> None:  # type: ignore[override]
        while True:
            try:
                MemSocket.send_multipart(self, frames, flags, copy)
                return
            except zmq.Again:
                if flags & zmq.NOBLOCK:
                    raise
            await asyncio.sleep(RETRY_S)

    async def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:  # type: ignore[override]
        if not flags & zmq.POLLIN:
            return 0
        wait = None if timeout is None or timeout < 0 else timeout / 1000
        return zmq.POLLIN if await self._readable(wait) else 0

    def close(self, linger: int | None = None) -> None:
        super().close(linger)
        for fut in self.waiters:
            if not fut.done():
                fut.cancel()
        self.waiters = []


IN_MEMORY.add(MemAsyncSocket)


class MemAsyncContext(MemContext):
    """``zmq.asyncio.Context`` over one ``MemHub``."""

    def socket(self, kind: int) -> MemAsyncSocket:  # type: ignore[override]
        sock = MemAsyncSocket(self.hub, kind, self.owner)
        self.socks.append(sock)
        return sock
