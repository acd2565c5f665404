"""The lean WebSocket reader of ``bench/gwclients.py`` (``--reader raw``, the default).

A 1,000-connection aiohttp client process spends most of its CPU on the library's message
objects, a task switch per message and a full JSON parse of every batch (py-spy, 2026-12-07:
its read loop and ``orjson.loads`` ~70 %): on a 2-core box the measuring clients, not the
gateway, set the pace. This reader is an ``asyncio.Protocol`` per connection that splits the
server's (unmasked) frames itself, all in ``data_received``; a trades or book message's
chain link (``channel``, ``type``, ``symbol``, ``seq``, ``prev_seq``, which the gateway always
writes first, in this order) and its trades' exchange times are read with two compiled regexes
(C speed) instead of a parse. Every chain is still checked by ``Watcher``; anything else (a
control message, the one full-book connection per process that checks every CRC32) is parsed
with ``orjson`` as before.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

HEAD = re.compile(rb'\{"channel":"(trades|book)",(?:"type":"(\w+)",)?"symbol":"([^"]*)",'
                  rb'"seq":(\d+),"prev_seq":(\d+|null)')  # fmt: skip
TS = re.compile(rb'"ts":(\d+)')
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 1, 8, 9, 10


def client_frame(payload: bytes, op: int = OP_TEXT) -> bytes:
    """A client's frame: final, masked (RFC 6455 section 5.3)."""
    n, mask = len(payload), os.urandom(4)
    head = bytes((0x80 | op, 0x80 | n)) if n < 126 else bytes((0x80 | op, 0xFE)) + n.to_bytes(2)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(n) if n else b""
    return head + mask + body


def frames(buf: bytearray) -> tuple[list[tuple[int, bytearray]], int]:
    """The whole frames at the start of ``buf`` (opcode, payload) and the bytes they took."""
    out, pos, n = [], 0, len(buf)
    while n - pos >= 2:
        op, ln, off = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, pos + 2
        if ln == 126:
            if n - off < 2:
                break
            ln, off = int.from_bytes(buf[off:off + 2]), off + 2
        elif ln == 127:
            if n - off < 8:
                break
            ln, off = int.from_bytes(buf[off:off + 8]), off + 8
        if n - off < ln:
            break
        out.append((op, buf[off:off + ln]))
        pos = off + ln
    return out, pos


class RawConn(asyncio.Protocol):
    """One connection: the upgrade, then every frame handed to ``fleet.text``."""

    def __init__(self, fleet: Any, watcher: Any, host: str, path: str) -> None:
        self.fleet, self.w = fleet, watcher
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()  # fmt: skip
        self.buf = bytearray()
        self.transport: Any = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the upgrade"))

    def send_str(self, text: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(client_frame(text.encode()))

    async def close(self) -> None:
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buf[:end]).decode()))
                self.transport.close()
                return
            del buf[:end + 4]
            self.opened.set_result(None)
        got, used = frames(buf)
        if used:
            del buf[:used]
        for op, payload in got:
            if op == OP_TEXT:
                self.fleet.text(self, payload)
            elif op == OP_PING:
                self.transport.write(client_frame(bytes(payload), OP_PONG))
            elif op == OP_CLOSE:
                self.transport.close()


def quick(w: Any, payload: bytearray, st: Any, measuring: bool) -> tuple[bool, str | None]:
    """A trades or book message checked from its head alone: (handled, book to resync)."""
    m = HEAD.match(payload)
    if m is None or w.full:
        return False, None
    ch, kind, raw_sym, raw_seq, raw_prev = m.groups()
    sym, seq = raw_sym.decode(), int(raw_seq)
    prev = None if raw_prev == b"null" else int(raw_prev)
    if ch == b"trades":
        if kind not in (None, b"batch"):
            return False, None
        tss = Counter(TS.findall(payload)) if measuring else {}
        w.trade(sym, prev, seq, {int(k): c for k, c in tss.items()}, st, measuring)
        return True, None
    if kind not in (b"snapshot", b"update"):
        return False, None
    return True, sym if w.book(sym, kind.decode(), prev, seq, st, measuring) else None


async def open_raw(fleet: Any, watcher: Any, url: str) -> RawConn:
    """Connect and upgrade one raw connection."""
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: RawConn(fleet, watcher, u.netloc, u.path), u.hostname, u.port)
    await conn.opened
    return conn

