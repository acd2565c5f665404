"""Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio) with the same API.

Money goes in and out as ``Decimal`` (or decimal strings); the client converts to integer
ticks/lots with the market table (the same one the shards use), so shards only see integers.
``submit_many`` batches commands per shard and keeps a window of batches in flight, which is
what makes the cluster fast: one ZeroMQ round trip per batch instead of per order.

``direct=True`` asks the router once for the topology, then talks straight to each shard's own
endpoint with the same ``shard_for`` hash, skipping the router hop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import zmq
import zmq.asyncio

from shardex.engine import DEFAULT_MARKETS, Market
from shardex.engine.codes import Command
from shardex.layout import Layout
from shardex.protocol import (
    OP_BOOK,
    OP_STATUS,
    command_from_json,
    decode_reply,
    encode_request,
    event_to_json,
    shard_for,
)

DEFAULT_ENDPOINT = Layout().frontend
_REQ = struct.Struct("<Q")


class ShardexError(Exception):
    """Base class of client errors (connection, timeout, bad reply)."""


class RequestTimeout(ShardexError):
    """No reply within the client's timeout (shard or router down, or overloaded)."""


@dataclass
class Result:
    """What happened to one command: its events (Decimal amounts) or a batch-level error."""

    command: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # overloaded / shard unavailable / timeout / malformed ...

    @property
    def rejected(self) -> bool:
        return self.error is not None or any(e["ev"] == "rejected" for e in self.events)

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def reason(self) -> str | None:
        if self.error is not None:
            return self.error
        for e in self.events:
            if e["ev"] == "rejected":
                return e["reason"]
        return None

    @property
    def trades(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "trade"]

    @property
    def filled(self) -> Decimal:
        return sum((e["qty"] for e in self.trades), Decimal(0))


def _money(value: Any, name: str) -> str:
    if isinstance(value, float):
        raise TypeError(f"{name}: use Decimal or str for money and size, never float")
    if isinstance(value, Decimal | int):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name}: expected Decimal, str or int, got {type(value).__name__}")


class _Codec:
    """Decimal ↔ ticks at the edge, JSON-schema dicts ↔ engine tuples."""

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self.markets = markets

    def command(self, obj: Mapping[str, Any]) -> Command:
        obj = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in obj.items()}
        return command_from_json(obj, self.markets)

    def event(self, ev: Any) -> dict[str, Any]:
        try:
            d = event_to_json(ev, self.markets)
        except (KeyError, IndexError, ValueError, TypeError):
            return {"ev": "unknown", "raw": ev}
        for k in ("price", "qty"):
            if k in d:
                d[k] = Decimal(d[k])
        return d


class _Base:
    def __init__(
        self,
        endpoint: str,
        markets: Mapping[str, Market] | None,
        timeout: float,
        direct: bool,
        shard_endpoints: list[str] | None,
        account: str | None,
    ) -> None:
        self.endpoint = endpoint
        self.markets = markets if markets is not None else DEFAULT_MARKETS
        self.codec = _Codec(self.markets)
        self.timeout = timeout
        self.direct = direct or shard_endpoints is not None
        self.shard_endpoints = shard_endpoints
        self.account = account
        self.shards: int | None = len(shard_endpoints) if shard_endpoints else None
        self._ids = itertools.count(1)
        self._req = itertools.count(1)
        self._prefix = os.urandom(4).hex()

    # -- command builders (JSON schema dicts) -----------------------------------------------

    def _acct(self, account: str | None) -> str:
        account = account or self.account
        if not account:
            raise ValueError("account is required (pass account= here or to the client)")
        return account

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def order(
        self,
        symbol: str,
        side: str,
        qty: Decimal | str | int,
        price: Decimal | str | int | None = None,
        *,
        type: str | None = None,  # noqa: A002 - the schema's field name
        tif: str | None = None,
        post_only: bool = False,
        stp: str | None = None,
        id: str | None = None,  # noqa: A002
        account: str | None = None,
    ) -> dict[str, Any]:
        """Build a ``new`` command dict (does not send it); type defaults from ``price``."""
        cmd: dict[str, Any] = {
            "op": "new",
            "symbol": symbol,
            "id": id or self.new_id(),
            "account": self._acct(account),
            "side": side,
            "type": type or ("market" if price is None else "limit"),
        }
        if price is not None:
            cmd["price"] = _money(price, "price")
        cmd["qty"] = _money(qty, "qty")
        if tif is not None:
            cmd["tif"] = tif
        if post_only:
            cmd["post_only"] = True
        if stp is not None:
            cmd["stp"] = stp
        return cmd

    def _cancel_cmd(self, symbol: str, id: str, account: str | None) -> dict[str, Any]:  # noqa: A002
        return {"op": "cancel", "symbol": symbol, "id": id, "account": self._acct(account)}

    def _amend_cmd(self, symbol, id, qty, price, account) -> dict[str, Any]:  # noqa: A002
        cmd: dict[str, Any] = {
            "op": "amend",
            "symbol": symbol,
            "id": id,
            "account": self._acct(account),
        }
        if qty is not None:
            cmd["qty"] = _money(qty, "qty")
        if price is not None:
            cmd["price"] = _money(price, "price")
        return cmd

    # -- batching plan -------------------------------------------------------------------------

    def _plan(self, tuples: list[Command], batch: int) -> list[tuple[int, bytes, list[int]]]:
        """Group command indexes into per-shard batches, keeping each shard's order.

        Returns (shard, routing key, indexes) in send order.
        """
        n = self.shards or 1
        open_: dict[int, tuple[bytes, list[int]]] = {}
        plan: list[tuple[int, bytes, list[int]]] = []
        for i, t in enumerate(tuples):
            symbol = t[1] if type(t[1]) is str else ""
            s = shard_for(symbol, n) if self.shards else 0
            cur = open_.get(s)
            if cur is None:
                key = symbol.encode() if symbol else f"#{shard_for('', n)}".encode()
                cur = open_[s] = (key, [])
            cur[1].append(i)
            if len(cur[1]) >= batch:
                plan.append((s, cur[0], cur[1]))
                del open_[s]
        plan.extend((s, key, idx) for s, (key, idx) in open_.items())
        return plan

    @staticmethod
    def _store(idx: list[int], error: str | None, results: Any, out: list) -> None:
        """Record one frame's outcome as (error, events) per command index."""
        if error is None and (not isinstance(results, tuple | list) or len(results) != len(idx)):
            error = "malformed reply: result count does not match the batch"
        if error is not None:
            for i in idx:
                out[i] = (error, ())
        else:
            for k, i in enumerate(idx):
                evs = results[k]
                out[i] = (None, evs if isinstance(evs, tuple | list) else ())

    def _to_results(self, cmds: list[dict[str, Any]], raw: list) -> list[Result]:
        event = self.codec.event
        return [
            Result(c, [event(e) for e in evs], err) for c, (err, evs) in zip(cmds, raw, strict=True)
        ]

    def _decimal_book(self, book: dict[str, Any]) -> dict[str, Any]:
        m = self.markets.get(book.get("symbol"))
        if m is None or "error" in book:
            return book
        return {
            **book,
            **{
                side: [
                    (Decimal(m.price_str(p)), Decimal(m.qty_str(q)), n)
                    for p, q, n in book.get(side, ())
                ]
                for side in ("bids", "asks")
            },
        }


def _socket_options(sock: zmq.Socket, timeout: float) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout * 1000)))
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # do not queue toward a peer that is not connected


class Client(_Base):
    """Blocking client. Not thread-safe: one per thread (ZeroMQ sockets are single-threaded)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        markets: Mapping[str, Market] | None = None,
        timeout: float = 5.0,
        direct: bool = False,
        shard_endpoints: list[str] | None = None,
        account: str | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(endpoint, markets, timeout, direct, shard_endpoints, account)
        self.ctx = context or zmq.Context.instance()
        self._router = self.ctx.socket(zmq.DEALER)
        _socket_options(self._router, timeout)
        self._router.connect(endpoint)
        self._shard_socks: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._late: dict[bytes, bytes] = {}
        if self.direct:
            self._connect_direct()

    # -- public API ------------------------------------------------------------------------------

    def place(self, symbol: str, side: str, qty: Any, price: Any = None, **kw: Any) -> Result:
        """Send one new order; returns its events (accepted, trades, cancels or a reject)."""
        return self.submit_many([self.order(symbol, side, qty, price, **kw)])[0]

    def cancel(self, symbol: str, id: str, *, account: str | None = None) -> Result:  # noqa: A002
        return self.submit_many([self._cancel_cmd(symbol, id, account)])[0]

    def amend(
        self,
        symbol: str,
        id: str,
        *,
        qty: Any = None,
        price: Any = None,  # noqa: A002
        account: str | None = None,
    ) -> Result:
        return self.submit_many([self._amend_cmd(symbol, id, qty, price, account)])[0]

    def submit_many(
        self, commands: Iterable[Mapping[str, Any]], *, batch: int = 100, window: int = 8
    ) -> list[Result]:
        """Send many JSON-schema command dicts; results come back in input order.

        Commands are grouped per shard into frames of ``batch``; up to ``window`` frames are in
        flight at once. A frame that gets no reply within ``timeout`` yields results with
        ``error='timeout ...'`` (the commands may or may not have been applied).
        """
        cmds = [dict(c) for c in commands]
        raw = self.submit_raw([self.codec.command(c) for c in cmds], batch=batch, window=window)
        return self._to_results(cmds, raw)

    def submit_raw(
        self, tuples: list[Command], *, batch: int = 100, window: int = 8
    ) -> list[tuple[str | None, tuple]]:
        """Fast path for load generators: engine command tuples (ints) in, and per command
        ``(error, event tuples)`` out, with no Decimal conversion on either side."""
        if not tuples:
            return []
        if self.shards is None:
            self.topology()
        out: list[Any] = [None] * len(tuples)
        queue = list(reversed(self._plan(tuples, max(1, batch))))
        inflight: dict[bytes, tuple[list[int], float]] = {}
        while queue or inflight:
            while queue and len(inflight) < max(1, window):
                s, key, idx = queue.pop()
                req = _REQ.pack(next(self._req))
                sock = self._shard_socks[s] if self.direct else self._router
                try:
                    self._send(sock, [key, req, encode_request([tuples[i] for i in idx])])
                except RequestTimeout as exc:
                    self._store(idx, str(exc), None, out)
                    continue
                inflight[req] = (idx, time.monotonic() + self.timeout)
            if not inflight:
                continue
            deadline = min(d for _, d in inflight.values())
            got = self._recv(deadline)
            if got is None:
                now = time.monotonic()
                for req, (idx, d) in list(inflight.items()):
                    if d <= now:
                        del inflight[req]
                        self._store(idx, f"timeout after {self.timeout}s", None, out)
                continue
            req, payload = got
            entry = inflight.pop(req, None)
            if entry is None:
                continue  # a late reply to a request that already timed out
            error, results = decode_reply(payload)
            self._store(entry[0], error, results, out)
        return out

    def book(self, symbol: str, depth: int = 10) -> dict[str, Any]:
        """L2 depth: {'bids': [(price, qty, orders)...], 'asks': [...]} with Decimals."""
        s = shard_for(symbol, self.shards) if self.shards else 0
        res = self._read(symbol.encode(), (OP_BOOK, symbol, depth), s)
        return self._decimal_book(res)

    def status(self) -> list[dict[str, Any]]:
        """Status of every shard (seq, resting orders, backlog, uptime...)."""
        n = self.shards or self.topology()["shards"]
        out = []
        for i in range(n):
            try:
                out.append(self._read(f"#{i}".encode(), (OP_STATUS,), i))
            except ShardexError as exc:
                out.append({"shard": i, "error": str(exc)})
        return out

    def topology(self) -> dict[str, Any]:
        """Ask the router for the cluster shape (shard count, shard endpoints, pids)."""
        req = _REQ.pack(next(self._req))
        self._send(self._router, [b"", req, encode_request([])])
        info = self._wait(req, time.monotonic() + self.timeout, what="router topology")
        self.shards = info["shards"]
        return info

    def close(self) -> None:
        for s in (self._router, *self._shard_socks):
            s.close(0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _connect_direct(self) -> None:
        eps = self.shard_endpoints
        if eps is None:
            info = self.topology()
            eps = []
            for t in info["topology"]:
                if not t.get("direct"):
                    raise ShardexError(f"shard {t['shard']} has not registered a direct endpoint")
                eps.append(t["direct"])
            self.shard_endpoints = eps
        self.shards = len(eps)
        for ep in eps:
            sock = self.ctx.socket(zmq.DEALER)
            _socket_options(sock, self.timeout)
            sock.connect(ep)
            self._poller.register(sock, zmq.POLLIN)
            self._shard_socks.append(sock)

    def _read(self, key: bytes, cmd: tuple, shard: int) -> dict[str, Any]:
        req = _REQ.pack(next(self._req))
        sock = self._shard_socks[shard] if self.direct else self._router
        self._send(sock, [key, req, encode_request([cmd])])
        return self._wait(req, time.monotonic() + self.timeout, what=f"shard {shard}")

    def _send(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        """Send, waiting at most ``timeout`` for a connected peer (IMMEDIATE: never queue a
        request toward a peer that is down, where it could run long after we gave up)."""
        try:
            sock.send_multipart(frames)
        except zmq.Again:
            raise RequestTimeout(
                f"cannot reach {sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint} "
                f"within {self.timeout}s (not running?)"
            ) from None

    def _wait(self, req: bytes, deadline: float, what: str) -> Any:
        while True:
            got = self._recv(deadline)
            if got is None:
                raise RequestTimeout(
                    f"no reply from {what} within {self.timeout}s "
                    f"(is the cluster running at {self.endpoint}?)"
                )
            if got[0] != req:
                continue
            error, results = decode_reply(got[1])
            if error is not None:
                raise ShardexError(f"{what}: {error}")
            return results[0]

    def _recv(self, deadline: float) -> tuple[bytes, bytes] | None:
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            for sock, _ in self._poller.poll(max(1, int(wait * 1000))):
                frames = sock.recv_multipart()
                if len(frames) == 2:
                    return frames[0], frames[1]


class AsyncClient(_Base):
    """asyncio twin of ``Client``: same methods, awaitable; safe to share between tasks."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        markets: Mapping[str, Market] | None = None,
        timeout: float = 5.0,
        direct: bool = False,
        shard_endpoints: list[str] | None = None,
        account: str | None = None,
    ) -> None:
        super().__init__(endpoint, markets, timeout, direct, shard_endpoints, account)
        self.ctx = zmq.asyncio.Context.instance()
        self._router = self.ctx.socket(zmq.DEALER)
        _socket_options(self._router, timeout)
        self._router.connect(endpoint)
        self._shard_socks: list[zmq.asyncio.Socket] = []
        self._waiters: dict[bytes, asyncio.Future] = {}
        self._readers: list[asyncio.Task] = []
        self._started = False

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._readers.append(asyncio.ensure_future(self._reader(self._router)))
        if self.direct:
            eps = self.shard_endpoints
            if eps is None:
                info = await self.topology()
                eps = [t["direct"] for t in info["topology"]]
                self.shard_endpoints = eps
            self.shards = len(eps)
            for ep in eps:
                sock = self.ctx.socket(zmq.DEALER)
                _socket_options(sock, self.timeout)
                sock.connect(ep)
                self._shard_socks.append(sock)
                self._readers.append(asyncio.ensure_future(self._reader(sock)))
        elif self.shards is None:
            await self.topology()

    async def _reader(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            if len(frames) == 2:
                fut = self._waiters.pop(frames[0], None)
                if fut is not None and not fut.done():
                    fut.set_result(frames[1])

    async def _send(self, sock, key: bytes, cmds: list) -> tuple[bytes, asyncio.Future]:
        """Send one frame now (so frames leave in call order); return its reply future."""
        req = _REQ.pack(next(self._req))
        fut = asyncio.get_running_loop().create_future()
        self._waiters[req] = fut
        try:
            await asyncio.wait_for(
                sock.send_multipart([key, req, encode_request(cmds)]), self.timeout
            )
        except (TimeoutError, zmq.Again):
            self._waiters.pop(req, None)
            raise RequestTimeout(f"cannot reach {self.endpoint} within {self.timeout}s") from None
        return req, fut

    async def _reply(self, req: bytes, fut: asyncio.Future, what: str) -> tuple[str | None, Any]:
        try:
            payload = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            self._waiters.pop(req, None)
            raise RequestTimeout(f"no reply from {what} within {self.timeout}s") from None
        return decode_reply(payload)

    async def _request(self, sock, key: bytes, cmds: list, what: str) -> tuple[str | None, Any]:
        req, fut = await self._send(sock, key, cmds)
        return await self._reply(req, fut, what)

    async def topology(self) -> dict[str, Any]:
        if not self._started:
            self._started = True
            self._readers.append(asyncio.ensure_future(self._reader(self._router)))
        error, results = await self._request(self._router, b"", [], "router topology")
        if error is not None:
            raise ShardexError(error)
        self.shards = results[0]["shards"]
        return results[0]

    async def place(self, symbol: str, side: str, qty: Any, price: Any = None, **kw) -> Result:
        return (await self.submit_many([self.order(symbol, side, qty, price, **kw)]))[0]

    async def cancel(self, symbol: str, id: str, *, account: str | None = None) -> Result:  # noqa: A002
        return (await self.submit_many([self._cancel_cmd(symbol, id, account)]))[0]

    async def amend(
        self,
        symbol: str,
        id: str,
        *,
        qty: Any = None,
        price: Any = None,  # noqa: A002
        account: str | None = None,
    ) -> Result:
        return (await self.submit_many([self._amend_cmd(symbol, id, qty, price, account)]))[0]

    async def submit_many(
        self, commands: Iterable[Mapping[str, Any]], *, batch: int = 100, window: int = 8
    ) -> list[Result]:
        cmds = [dict(c) for c in commands]
        tuples = [self.codec.command(c) for c in cmds]
        return self._to_results(cmds, await self.submit_raw(tuples, batch=batch, window=window))

    async def submit_raw(
        self, tuples: list[Command], *, batch: int = 100, window: int = 8
    ) -> list[tuple[str | None, tuple]]:
        await self._start()
        out: list[Any] = [None] * len(tuples)
        gate = asyncio.Semaphore(max(1, window))

        async def finish(req: bytes, fut: asyncio.Future, s: int, idx: list[int]) -> None:
            try:
                error, results = await self._reply(req, fut, f"shard {s}")
            except RequestTimeout as exc:
                error, results = str(exc), None
            finally:
                gate.release()
            self._store(idx, error, results, out)

        tasks = []
        for s, key, idx in self._plan(tuples, max(1, batch)):
            await gate.acquire()
            sock = self._shard_socks[s] if self.direct else self._router
            try:
                req, fut = await self._send(sock, key, [tuples[i] for i in idx])
            except RequestTimeout as exc:
                gate.release()
                self._store(idx, str(exc), None, out)
                continue
            tasks.append(asyncio.ensure_future(finish(req, fut, s, idx)))
        await asyncio.gather(*tasks)
        return out

    async def book(self, symbol: str, depth: int = 10) -> dict[str, Any]:
        await self._start()
        s = shard_for(symbol, self.shards) if self.shards else 0
        sock = self._shard_socks[s] if self.direct else self._router
        error, results = await self._request(
            sock, symbol.encode(), [(OP_BOOK, symbol, depth)], f"shard {s}"
        )
        if error is not None:
            raise ShardexError(error)
        return self._decimal_book(results[0])

    async def status(self) -> list[dict[str, Any]]:
        await self._start()
        out = []
        for i in range(self.shards or 0):
            sock = self._shard_socks[i] if self.direct else self._router
            try:
                error, results = await self._request(
                    sock, f"#{i}".encode(), [(OP_STATUS,)], f"shard {i}"
                )
                out.append(results[0] if error is None else {"shard": i, "error": error})
            except RequestTimeout as exc:
                out.append({"shard": i, "error": str(exc)})
        return out

    async def close(self) -> None:
        for t in self._readers:
            t.cancel()
        for s in (self._router, *self._shard_socks):
            s.close(0)

    async def __aenter__(self) -> AsyncClient:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["AsyncClient", "Client", "RequestTimeout", "Result", "ShardexError"]
