"""Binance WebSocket market streams from the gateway's hub: ``<symbol>@trade``,
``<symbol>@depth`` (diffs), ``<symbol>@depth5|10|20`` (partial books) and
``<symbol>@bookTicker``, raw at ``/ws/<stream>`` or combined at ``/stream?streams=a/b``
(``{"stream": name, "data": event}``), and the live ``SUBSCRIBE``/``UNSUBSCRIBE`` methods.

The hub's frames come in through one internal subscriber per pair and channel (a ``Tap``):
each is turned into Binance's event once and the same string goes to every Binance client of
that stream, each with its own bounded queue (the hub's ``Conn``; a client that falls behind
loses its queue, and the next depth event's ``U`` shows it the gap, as at Binance).

Update ids: a depth diff read at the engine's seq ``s`` whose previous read was at seq ``p``
is ``U = p + 1``, ``u = s``, so each diff's ``U`` is the previous one's ``u + 1``. The depth
endpoint answers the same feed's current levels with ``lastUpdateId`` = its seq, so Binance's
local order book procedure (buffer the diffs, fetch the depth, drop the diffs with
``u <= lastUpdateId``, apply from the one with ``U == lastUpdateId + 1``) holds exactly.
When a pair moves to another engine shard (another seq space) its depth clients are
disconnected: they connect again and fetch a fresh depth, never a silent gap.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from shardex.gateway.binance.symbols import SymbolMap, fmt, places
from shardex.gateway.fanout import Chunk
from shardex.gateway.hub import Conn, Hub, Sub, encode
from shardex.gateway.outbox import Outbox

STREAM_RE = re.compile(r"([a-z0-9]{2,25})@(trade|depth|depth5|depth10|depth20|bookTicker)"
                       r"(@100ms|@1000ms)?")  # fmt: skip
MAX_STREAMS = 100  # per connection
LINGER = 60.0  # seconds a pair's book stays followed after a depth request
HUB_CHANNEL = {"trade": "trades", "bookTicker": "book"}  # (every depth kind: "book")


def parse_stream(name: object, names: SymbolMap) -> tuple[str, str, str] | None:
    """A stream name → (kind, shardex symbol, the name as the client wrote it), or None."""
    if type(name) is not str:
        return None
    m = STREAM_RE.fullmatch(name)
    if m is None:
        return None
    pair = names.get(m.group(1))
    if isinstance(pair, str):
        return None
    return m.group(2), pair.symbol, name


class Client:
    """One Binance WebSocket client: its streams and its queue (a hub ``Conn``)."""

    def __init__(self, conn: Conn, combined: bool) -> None:
        self.conn, self.combined = conn, combined
        self.streams: dict[str, tuple[str, str]] = {}  # name → (kind, symbol)


class Tap(Conn):
    """The hub subscriber of one pair's channel for every Binance client: translates."""

    def __init__(self, on_frame: Callable[[str], None]) -> None:
        async def noop() -> None:
            return None

        super().__init__(Outbox(), noop)
        self.on_frame = on_frame

    counted = False  # (what it makes of a frame is counted where that is sent)

    def push(self, frame: str, channel: str) -> bool:  # noqa: ARG002 - one channel per tap
        self.on_frame(frame)
        return True

    def offer(self, frame: str, now: float) -> bool:  # noqa: ARG002 - (the hub's fan-out)
        self.on_frame(frame)
        return True

    def queue(self, frame: Chunk | str, now: float) -> bool:  # noqa: ARG002 - (a step's chunk)
        for one in [frame] if isinstance(frame, str) else frame.frames:
            self.on_frame(one)
        return True

    def kick(self) -> None:  # (nothing queued: translated at once)
        return None

    def control(self, msg: Any) -> None:  # (acks and errors of the hub: not for clients)
        return None


class Streams:
    """Binance clients by stream, the taps feeding them, and the depth snapshots."""

    def __init__(self, hub: Hub, names: SymbolMap) -> None:
        self.hub, self.names = hub, names
        self.clients: dict[tuple[str, str], set[Client]] = {}  # (kind, symbol) → clients
        self.taps: dict[tuple[str, str], Tap] = {}  # (hub channel, symbol) → tap
        self.linger: dict[str, float] = {}  # symbol → monotonic deadline
        self.seq: dict[str, int | None] = {}  # symbol → the last book seq translated
        self.top: dict[str, tuple[Any, ...]] = {}  # symbol → the last bookTicker sent
        self.pending: dict[str, asyncio.Future[None]] = {}  # symbol → its tap's first read

    # -- subscriptions ---------------------------------------------------------------------------

    async def follow_book(self, symbol: str) -> bool:
        """Keep ``symbol``'s book followed (a tap on the hub); False if it cannot be read.
        Requests arriving while the tap's first read is in flight wait for that one read."""
        pending = self.pending.get(symbol)
        if pending is None and ("book", symbol) not in self.taps:
            pending = self.pending[symbol] = asyncio.ensure_future(self._tap_book(symbol))
            pending.add_done_callback(lambda _: self.pending.pop(symbol, None))
        if pending is not None:
            await asyncio.shield(pending)
        tap = self.taps.get(("book", symbol))
        return tap is not None and ("book", symbol) in tap.subs

    async def _tap_book(self, symbol: str) -> None:
        tap = Tap(lambda frame: self._book(symbol, frame))
        self.taps[("book", symbol)] = tap
        await self.hub.subscribe_book(tap, symbol)
        if ("book", symbol) not in tap.subs:
            self.taps.pop(("book", symbol), None)

    def follow_trades(self, symbol: str) -> None:
        if ("trades", symbol) not in self.taps:
            tap = Tap(lambda frame: self._trade(symbol, frame))
            self.taps[("trades", symbol)] = tap
            self.hub.add(tap, Sub("trades", symbol, last=self.hub.trade_seq.get(symbol)))

    async def add(self, client: Client, kind: str, symbol: str, name: str) -> bool:
        """Subscribe ``client`` to stream ``name``; False when the book cannot be read now."""
        if kind == "trade":
            self.follow_trades(symbol)
        elif not await self.follow_book(symbol):
            return False
        client.streams[name] = (kind, symbol)
        self.clients.setdefault((kind, symbol), set()).add(client)
        return True

    def remove(self, client: Client, name: str) -> None:
        kind, symbol = client.streams.pop(name, ("", ""))
        if not any(k == kind and s == symbol for k, s in client.streams.values()):
            self.clients.get((kind, symbol), set()).discard(client)
        self.sweep(time.monotonic())

    def drop(self, client: Client) -> None:
        for name in list(client.streams):
            self.remove(client, name)

    def sweep(self, now: float) -> None:
        """Stop following what no client streams (and no recent depth request holds)."""
        for (channel, symbol), tap in list(self.taps.items()):
            kinds = ("trade",) if channel == "trades" else ("depth", "depth5", "depth10",
                                                             "depth20", "bookTicker")  # fmt: skip
            if any(self.clients.get((k, symbol)) for k in kinds):
                continue
            if channel == "book" and self.linger.get(symbol, 0.0) > now:
                continue
            self.linger.pop(symbol, None) if channel == "book" else None
            self.hub.remove(tap, channel, symbol)
            del self.taps[(channel, symbol)]
            if channel == "book":
                self.seq.pop(symbol, None)
                self.top.pop(symbol, None)

    # -- the depth endpoint ----------------------------------------------------------------------

    async def depth(self, symbol: str, limit: int) -> dict[str, Any] | None:
        """The followed book's levels with ``lastUpdateId`` (its seq): what the diff stream
        continues exactly. The pair stays followed ``LINGER`` s for the stream to come."""
        self.linger[symbol] = time.monotonic() + LINGER
        if not await self.follow_book(symbol):
            return None
        feed = self.hub.feeds.get(symbol)
        if feed is None or feed.seq is None:
            return None
        n = places(self.names.pairs[self.names.name_of(symbol) or ""].market)
        return {"lastUpdateId": feed.seq,
                "bids": [[fmt(p, n), fmt(q, n)] for p, q in feed.bids[:limit]],
                "asks": [[fmt(p, n), fmt(q, n)] for p, q in feed.asks[:limit]]}  # fmt: skip

    # -- translating -----------------------------------------------------------------------------

    def _send(self, kind: str, symbol: str, event: dict[str, Any]) -> None:
        """One event to every client of ``kind`` on ``symbol``: encoded once per name."""
        frames: dict[tuple[str, bool], str] = {}
        for client in list(self.clients.get((kind, symbol), ())):
            for name, (k, s) in list(client.streams.items()):
                if k != kind or s != symbol:
                    continue
                frame = frames.get((name, client.combined))
                if frame is None:
                    body = {"stream": name, "data": event} if client.combined else event
                    frame = frames[(name, client.combined)] = encode(body)
                client.conn.push(frame, "binance")

    def _trade(self, symbol: str, frame: str) -> None:
        msg = json.loads(frame)
        if msg.get("channel") != "trades":
            return
        name = self.names.name_of(symbol) or ""
        n = places(self.names.pairs[name].market) if name else 8
        now = int(time.time() * 1000)
        self._send("trade", symbol, {
            "e": "trade", "E": now, "s": name, "t": msg.get("trade_id"),
            "p": fmt(msg.get("price"), n), "q": fmt(msg.get("qty"), n),
            "T": msg.get("ts") or now, "m": msg.get("side") == "sell", "M": True})  # fmt: skip

    def _book(self, symbol: str, frame: str) -> None:
        msg = json.loads(frame)
        if msg.get("channel") != "book":
            return
        name = self.names.name_of(symbol) or ""
        n = places(self.names.pairs[name].market) if name else 8
        last, seq = self.seq.get(symbol), msg["seq"]
        self.seq[symbol] = seq
        if msg["type"] == "snapshot":
            if last is not None:  # another seq space (a move): clients start again
                for kind in ("depth", "depth5", "depth10", "depth20", "bookTicker"):
                    for client in list(self.clients.get((kind, symbol), ())):
                        client.conn.closed = True
                        client.conn.outbox.closing = True
                        self._close_later(client.conn)
        else:
            self._send("depth", symbol, {
                "e": "depthUpdate", "E": int(time.time() * 1000), "s": name,
                "U": msg["prev_seq"] + 1, "u": seq,
                "b": [[fmt(p, n), fmt(q, n)] for p, q in msg["bids"]],
                "a": [[fmt(p, n), fmt(q, n)] for p, q in msg["asks"]]})  # fmt: skip
        self._partial(symbol, name, n, seq)

    def _partial(self, symbol: str, name: str, n: int, seq: int) -> None:
        """The partial-book streams and the book ticker, from the feed just updated."""
        feed = self.hub.feeds.get(symbol)
        if feed is None:
            return
        for levels in (5, 10, 20):
            if self.clients.get((f"depth{levels}", symbol)):
                self._send(f"depth{levels}", symbol, {
                    "lastUpdateId": seq,
                    "bids": [[fmt(p, n), fmt(q, n)] for p, q in feed.bids[:levels]],
                    "asks": [[fmt(p, n), fmt(q, n)] for p, q in feed.asks[:levels]]})  # fmt: skip
        bid = feed.bids[0] if feed.bids else (None, None)
        ask = feed.asks[0] if feed.asks else (None, None)
        if (bid, ask) != self.top.get(symbol):
            self.top[symbol] = (bid, ask)
            self._send("bookTicker", symbol, {
                "u": seq, "s": name, "b": fmt(bid[0], n), "B": fmt(bid[1], n),
                "a": fmt(ask[0], n), "A": fmt(ask[1], n)})  # fmt: skip

    @staticmethod
    def _close_later(conn: Conn) -> None:
        """Disconnect a client (it reconnects and fetches a fresh depth, as after any drop)."""
        asyncio.ensure_future(conn._close())
