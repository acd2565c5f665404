"""The blocking flavour's I/O (hand-written; its asyncio counterpart is
``shardex.client._async.io``).

Only what genuinely differs between the flavours lives here: sockets of a ``zmq.Context``, one
poller over all of them with a ``Pending`` table of requests in flight (by request id, each
with its deadline), and ``time.sleep``. ``Client`` (``shardex.client._sync.client``, generated
from the asyncio source) is built on it.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import zmq

from shardex.client.core import ClientCore
from shardex.client.errors import UNREACHABLE_PREFIX, RequestTimeout, timeout_error
from shardex.engine.codes import Command
from shardex.wire import codes
from shardex.wire.protocol import decode_reply, encode_request
from shardex.wire.transport import Pending, dealer, topology_frames

ZmqContext = zmq.Context


class SyncIO(ClientCore):
    """Frames in and out over blocking sockets (the shared logic calls only these methods)."""

    _sock: Any  # (``Client._sock``)

    def _open(self, context: ZmqContext | None) -> None:
        self.ctx = context or zmq.Context.instance()
        self._router = dealer(
            self.ctx, self.endpoint, self.timeout, key=self.key, watch=self._watches
        )
        self._shard_socks: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)

    def _start(self) -> None:
        """(Nothing to start: replies are read by whoever waits for one.)"""

    def _guard(self) -> AbstractContextManager:
        return nullcontext()  # one thread per client: nothing to guard

    def _enter(self) -> None:
        """``with``: nothing yet (the client connects lazily, on its first call)."""

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _connect_direct(self, ep: str) -> None:
        sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
        self._poller.register(sock, zmq.POLLIN)
        self._shard_socks.append(sock)
        self.direct_eps.append(ep)

    def _reconnect_direct(self, s: int, ep: str) -> None:
        old = self._shard_socks[s]
        self._poller.unregister(old)
        old.close(0)
        sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
        self._poller.register(sock, zmq.POLLIN)
        self._shard_socks[s] = sock
        self.direct_eps[s] = ep

    def _close_sockets(self) -> None:
        for s in (self._router, *self._shard_socks):
            s.close(0)

    def _request(self, sock: zmq.Socket, key: bytes, cmd: tuple, what: str) -> tuple[Any, Any]:
        """One read command → its reply's ``(error, results)``; ``RequestTimeout`` if none."""
        req = self.ids.next()
        self._send(sock, [key, req, encode_request([cmd])])
        return self._wait(req, self.clock.monotonic() + self.timeout, what)

    def _topology_reply(self) -> tuple[Any, Any]:
        req = self.ids.next()
        self._send(self._router, topology_frames(req))
        return self._wait(req, self.clock.monotonic() + self.timeout, "router topology")

    def _exchange(
        self, tuples: list[Command], batch: int, window: int, via_accounts: bool = False
    ) -> list:
        """Send ``tuples`` in planned frames with ``window`` in flight; ``store``'s outcomes."""
        out: list[Any] = [None] * len(tuples)
        self.edge_rejects(tuples, out)
        queue = list(reversed(self.plan(tuples, batch, via_accounts)))
        pending = Pending(self.timeout, self.clock.monotonic)
        window = max(1, window)
        while queue or pending:
            while queue and len(pending) < window:
                s, key, idx = queue.pop()
                req = self.ids.next()
                try:
                    self._send(self._sock(s), [key, req, encode_request([tuples[i] for i in idx])])
                except RequestTimeout as exc:
                    self.store(idx, exc.error, None, out)
                    continue
                pending.add(req, idx)
            if not pending:
                continue
            got = self._recv(pending.next_deadline() or 0.0)
            if got is None:
                for idx in pending.expire():
                    self.store(idx, timeout_error(self.timeout), None, out)
                continue
            idx = pending.pop(got[0])
            if idx is None:
                continue  # a late reply to a request that already timed out
            self.store(idx, *decode_reply(got[1]), out)
        return out

    def _send(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        """Send, waiting at most ``timeout`` for a connected peer (IMMEDIATE: never queue a
        request toward a peer that is down, where it could run long after we gave up)."""
        try:
            sock.send_multipart(frames)
        except zmq.Again:
            raise self.no_reply(
                f"{UNREACHABLE_PREFIX} "
                f"{sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint} "
                f"within {self.timeout}s (not running?)", codes.UNREACHABLE
            ) from None

    def _wait(self, req: bytes, deadline: float, what: str) -> tuple[Any, Any]:
        """Wait for the reply to ``req`` → ``(error, results)``; ``RequestTimeout`` if none."""
        while True:
            got = self._recv(deadline)
            if got is None:
                raise self.no_reply(
                    f"no reply from {what or 'the cluster'} within {self.timeout}s "
                    f"(is the cluster running at {self.endpoint}?)"
                )
            if got[0] == req:
                return decode_reply(got[1])

    def _recv(self, deadline: float) -> tuple[bytes, bytes] | None:
        while True:
            wait = deadline - self.clock.monotonic()
            if wait <= 0:
                return None
            for sock, _ in self._poller.poll(max(1, int(wait * 1000))):
                frames = sock.recv_multipart()
                if len(frames) == 2:
                    return frames[0], frames[1]
