"""A market-data client of the gateway written from docs/gateway.md alone: it keeps a book
from a snapshot and deltas, checks every message's prev_seq and checksum (computed here with
zlib over the documented string, not with the gateway's code) and resyncs with one message on
a gap or a mismatch; it can drop a delta on purpose (gap injection)."""

from __future__ import annotations

import asyncio
import json
import zlib
from decimal import Decimal
from typing import Any, Self

import aiohttp


def digits(s: str) -> str:
    return s.replace(".", "").lstrip("0")


def crc(bids: list[list[str]], asks: list[list[str]]) -> int:
    """The documented checksum: top 10 asks (lowest first) then top 10 bids (highest first),
    price then qty, point and leading zeros removed, concatenated; CRC32."""
    text = "".join(digits(p) + digits(q) for p, q in asks[:10])
    text += "".join(digits(p) + digits(q) for p, q in bids[:10])
    return zlib.crc32(text.encode())


def engine_levels(book: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The SDK's book read as the gateway's [price, qty] strings, best first."""
    return tuple([[str(p), str(q)] for p, q, _ in book[s]] for s in ("bids", "asks"))  # type: ignore[return-value]


class LocalBook:
    """One symbol's book as a client keeps it."""

    def __init__(self, symbol: str, drop_deltas: int = 0) -> None:
        self.symbol = symbol
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.synced = False
        self.checked = 0  # messages whose checksum matched
        self.gaps = 0  # resyncs this client asked for
        self.drop = drop_deltas  # deltas to drop on purpose (each must cause a resync)

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda lv: Decimal(lv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda lv: Decimal(lv[0]))
        return [list(x) for x in bids], [list(x) for x in asks]

    def on_message(self, msg: dict[str, Any]) -> bool:
        """Apply one book message; False when the client must resync (a gap or a checksum
        that does not match what it holds)."""
        if msg["type"] == "snapshot":
            self.bids = {p: q for p, q in msg["bids"]}
            self.asks = {p: q for p, q in msg["asks"]}
        else:
            if not self.synced:
                return True  # (deltas after a gap, before the snapshot asked for)
            if self.drop:
                self.drop -= 1
                return True  # dropped: the next delta's prev_seq shows the gap
            if msg["prev_seq"] != self.seq:
                self.synced = False
                return False
            for side, book in (("bids", self.bids), ("asks", self.asks)):
                for p, q in msg[side]:
                    if Decimal(q) == 0:
                        book.pop(p, None)
                    else:
                        book[p] = q
        self.seq = msg["seq"]
        bids, asks = self.levels()
        if crc(bids, asks) != msg["checksum"]:
            self.synced = False
            return False
        self.synced = True
        self.checked += 1
        return True


class WsConn:
    """One connection to the gateway's ``/v1/ws`` whose messages a task reads (``_read``,
    each subclass its own way); ``async with`` opens and closes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url + "/v1/ws", max_msg_size=0)
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        await self.ws.close()
        assert self.session is not None
        await self.session.close()

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def _read(self) -> None:
        raise NotImplementedError


class WsClient(WsConn):
    """Book messages into ``books``, everything else into ``other`` (trades, heartbeats,
    acks, errors)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.books: dict[str, LocalBook] = {}
        self.other: list[dict[str, Any]] = []

    async def book(self, symbol: str, drop_deltas: int = 0) -> LocalBook:
        self.books[symbol] = LocalBook(symbol, drop_deltas)
        await self.send({"op": "subscribe", "channel": "book", "symbol": symbol})
        return self.books[symbol]

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            obj = json.loads(msg.data)
            book = self.books.get(obj.get("symbol", "")) if obj.get("channel") == "book" else None
            if book is None or obj.get("type") not in ("snapshot", "update"):
                self.other.append(obj)
                if book is not None and obj.get("type") == "resync_required":
                    book.synced = False
                    await self.send({"op": "resync", "channel": "book", "symbol": book.symbol})
            elif not book.on_message(obj):
                book.gaps += 1
                await self.send({"op": "resync", "channel": "book", "symbol": book.symbol})

    def trades(self) -> list[dict[str, Any]]:
        return [m for m in self.other if m.get("channel") == "trades" and "type" not in m]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.other if m.get("type") == kind]


async def until(predicate: Any, timeout: float, what: str) -> None:
    """Wait (yielding to the loop) until ``predicate()`` is true; TimeoutError naming it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)
