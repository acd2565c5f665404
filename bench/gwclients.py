"""The WebSocket side of ``bench/gateway.py``: one process holding many market-data clients.

Each connection subscribes to ``trades`` and ``book`` of every given pair and checks every
message the way a careful client would: a trade's ``prev_seq`` must be the seq of the trade
before it, a book delta's ``prev_seq`` the seq of the book message before it, unless the
gateway *said* it dropped frames (``resync_required``: the book is resynced with one message,
the trades chain restarts). A break that was not announced is a **silent gap** (the bench's
must-be-zero number). The first connection of each process also keeps the whole book and
checks every message's CRC32 (docs/gateway.md), which is too costly to do on all of them.

With ``batch`` the trades subscriptions ask for a step's trades in one message (docs/gateway.md):
the chain is checked per message, the latency recorded for every trade in it.

Latency is commit → frame: the trade's ``ts`` (the engine's exchange time, ms) against this
process's wall clock when the frame is read (same box, same clock). The process reports its
own CPU so the bench can say whether the client side was the bottleneck.

The driver talks to it over a pipe: ``ready`` (all connected, snapshots in) → ``start``
(counters reset) → ``stop {symbol: last trade seq}`` (wait, bounded, until every connection
has that trade or was told it fell behind; then the report) → ``close``.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import uvloop
from gwraw import open_raw, quick
from hdrh.histogram import HdrHistogram
from reaper import die_with_parent

CONNECT_CHUNK = 50  # connections opened at once


def _digits(s: str) -> str:
    return s.replace(".", "").lstrip("0")


def crc(bids: dict[str, str], asks: dict[str, str]) -> int:
    """The documented checksum over a book held as {price: qty}."""
    a = sorted(asks.items(), key=lambda lv: Decimal(lv[0]))[:10]
    b = sorted(bids.items(), key=lambda lv: Decimal(lv[0]), reverse=True)[:10]
    return zlib.crc32("".join(_digits(p) + _digits(q) for p, q in a + b).encode())


class Stats:
    """What every connection of this process saw since ``start``."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(1, 600_000_000, 2)  # µs
        self.lat: dict[int, int] = {}  # commit → frame ms → trades (into ``hist`` at the end)
        self.frames = self.bytes = self.trades = self.books = self.beats = 0
        self.silent_gaps = self.resyncs = self.bad_checksums = self.checked = 0
        self.last_frame = 0.0


class Watcher:
    """One connection's view: the seq chains it checks (and, on one of them, the book)."""

    def __init__(self, symbols: list[str], full_book: bool) -> None:
        self.trade_last: dict[str, int | None] = dict.fromkeys(symbols)
        self.trade_free: dict[str, bool] = dict.fromkeys(symbols, True)  # next one starts a chain
        self.book_last: dict[str, int | None] = dict.fromkeys(symbols)
        self.waiting: dict[str, bool] = dict.fromkeys(symbols, True)  # a snapshot is due
        self.full = full_book
        self.levels: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.ws: Any = None

    def on(self, obj: dict[str, Any], st: Stats, measuring: bool) -> str | None:
        """Check one message; the symbol to resync when the book must be asked again."""
        ch, kind, sym = obj.get("channel"), obj.get("type"), obj.get("symbol", "")
        if ch == "trades" and kind in (None, "batch"):
            trades = obj["trades"] if kind == "batch" else (obj,)
            tss = Counter(t["ts"] for t in trades if t.get("ts"))
            self.trade(sym, obj["prev_seq"], obj["seq"], tss, st, measuring)
            return None
        if ch == "book" and kind in ("snapshot", "update"):
            if self.book(sym, kind, obj["prev_seq"], obj["seq"], st, measuring):
                return sym
            return None if self.waiting[sym] else self._check(sym, obj, kind, st)
        if kind == "subscribed" and ch == "trades":
            self.trade_last[sym], self.trade_free[sym] = obj.get("seq"), obj.get("seq") is None
        elif kind == "resync_required":
            st.resyncs += 1
            if ch == "book":
                self.waiting[sym] = True
                return sym
            if ch == "trades":
                self.trade_free[sym] = True  # said: the chain may jump
        elif kind == "heartbeat":
            st.beats += measuring
        return None

    def trade(self, sym: str, prev: int | None, seq: int, tss: Mapping[int, int], st: Stats,
              measuring: bool) -> None:  # fmt: skip
        """A trades message (one trade, or a batch of them; ``tss``: their exchange times,
        each with how many trades have it): its chain link checked, each trade's commit →
        frame latency counted."""
        if not self.trade_free[sym] and prev != self.trade_last[sym]:
            st.silent_gaps += 1
        self.trade_last[sym], self.trade_free[sym] = seq, False
        if measuring:  # (counted per ms, the ts's resolution: a histogram record per trade
            now, lat = int(time.time() * 1000), st.lat  # cost the clients most)
            for ts, k in tss.items():
                ms = now - ts
                lat[ms] = lat.get(ms, 0) + k
                st.trades += k

    def book(self, sym: str, kind: str, prev: int | None, seq: int, st: Stats,
             measuring: bool) -> bool:  # fmt: skip
        """A book snapshot or delta's chain link; True when the book must be asked again."""
        st.books += measuring
        if kind == "snapshot":
            self.waiting[sym] = False
        elif self.waiting[sym]:
            return False  # (deltas before the snapshot asked for)
        elif prev != self.book_last[sym]:
            st.silent_gaps += 1
            self.waiting[sym] = True
            return True
        self.book_last[sym] = seq
        return False

    def _check(self, sym: str, obj: dict[str, Any], kind: str, st: Stats) -> str | None:
        if not self.full:
            return None
        if kind == "snapshot":
            self.levels[sym] = ({p: q for p, q in obj["bids"]}, {p: q for p, q in obj["asks"]})
        else:
            for side, book in zip(("bids", "asks"), self.levels[sym], strict=True):
                for p, q in obj[side]:
                    if Decimal(q) == 0:
                        book.pop(p, None)
                    else:
                        book[p] = q
        if crc(*self.levels[sym]) != obj["checksum"]:
            st.bad_checksums += 1
            self.waiting[sym] = True
            return sym
        st.checked += 1
        return None


def resync(symbol: str) -> str:
    return orjson.dumps({"op": "resync", "channel": "book", "symbol": symbol}).decode()


class Fleet:
    """This process's connections and their shared counters."""

    def __init__(self, url: str, n: int, symbols: list[str], batch: bool = False,
                 reader: str = "raw") -> None:  # fmt: skip
        self.url, self.n, self.symbols, self.batch, self.reader = url, n, symbols, batch, reader
        self.st = Stats()
        self.measuring = False
        self.watchers = [Watcher(symbols, i == 0) for i in range(n)]

    def subscriptions(self) -> list[str]:
        """What every connection sends first: trades (batched if asked) and book per pair."""
        out = []
        for sym in self.symbols:
            trades = {"op": "subscribe", "channel": "trades", "symbol": sym}
            out.append(orjson.dumps({**trades, **({"batch": True} if self.batch else {})}).decode())
            out.append(orjson.dumps({"op": "subscribe", "channel": "book", "symbol": sym}).decode())
        return out

    async def connect(self, session: aiohttp.ClientSession) -> list[asyncio.Task[None]]:
        tasks, subs = [], self.subscriptions()
        for lo in range(0, self.n, CONNECT_CHUNK):
            chunk = self.watchers[lo:lo + CONNECT_CHUNK]
            if self.reader == "raw":
                conns = await asyncio.gather(*(open_raw(self, w, self.url) for w in chunk))
                for w, conn in zip(chunk, conns, strict=True):
                    w.ws = conn
                    for text in subs:
                        conn.send_str(text)
                continue
            socks = await asyncio.gather(*(session.ws_connect(self.url, max_msg_size=0,
                                                              autoping=True) for _ in chunk))
            for w, ws in zip(chunk, socks, strict=True):
                w.ws = ws
                for text in subs:
                    await ws.send_str(text)
                tasks.append(asyncio.create_task(self.read(w)))
        return tasks

    def count(self, st: Stats, size: int) -> None:
        if self.measuring:
            st.frames += 1
            st.bytes += size
            st.last_frame = time.perf_counter()

    def text(self, conn: Any, payload: bytearray) -> None:
        """One text message read by a raw connection (``gwraw``): checked in place."""
        st, w = self.st, conn.w  # (``st`` replaced at ``start``)
        self.count(st, len(payload))
        done, ask = quick(w, payload, st, self.measuring)
        if not done:
            ask = w.on(orjson.loads(payload), st, self.measuring)
        if ask is not None:
            conn.send_str(resync(ask))

    async def read(self, w: Watcher) -> None:
        async for msg in w.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            st = self.st  # (replaced at ``start``)
            self.count(st, len(msg.data))
            ask = w.on(orjson.loads(msg.data), st, self.measuring)
            if ask is not None:
                await w.ws.send_str(resync(ask))

    def synced(self) -> bool:
        return all(not any(w.waiting.values()) for w in self.watchers)

    def reached(self, tops: dict[str, int]) -> int:
        """Connections that have every pair's last trade (or were told they fell behind)."""
        return sum(all(w.trade_free[s] or (w.trade_last[s] or 0) >= top
                       for s, top in tops.items()) for w in self.watchers)  # fmt: skip


def run_delay() -> float:
    """Seconds this process was runnable but waited for a core (``/proc/self/schedstat``)."""
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


async def _until(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _main(url: str, n: int, symbols: list[str], pipe: Any, batch: bool,
                reader: str) -> None:  # fmt: skip
    fleet = Fleet(url, n, symbols, batch, reader)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        tasks = await fleet.connect(session)
        ok = await _until(fleet.synced, 120)
        pipe.send({"ready": ok})
        await asyncio.to_thread(pipe.recv)  # start
        fleet.st = Stats()
        fleet.measuring = True
        t0, c0, w0 = time.perf_counter(), time.process_time(), run_delay()
        s0 = os.times().system  # (the kernel's share: the socket reads)
        tops = await asyncio.to_thread(pipe.recv)  # stop: the last trade seq of every pair
        await _until(lambda: fleet.reached(tops) == n, 60)
        fleet.measuring = False
        st = fleet.st
        for ms, count in st.lat.items():
            st.hist.record_value(max(1, ms * 1000), count)
        pipe.send({"frames": st.frames, "bytes": st.bytes, "trades": st.trades,
                   "books": st.books, "heartbeats": st.beats, "silent_gaps": st.silent_gaps,
                   "resyncs": st.resyncs, "bad_checksums": st.bad_checksums,
                   "checked": st.checked, "reached": fleet.reached(tops), "clients": n,
                   "wall": max(st.last_frame - t0, 1e-9), "cpu": time.process_time() - c0,
                   "wait": run_delay() - w0, "sys": os.times().system - s0,
                   "hist": st.hist.encode()})  # fmt: skip
        await asyncio.to_thread(pipe.recv)  # close
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(w.ws.close() for w in fleet.watchers), return_exceptions=True)


def worker(url: str, n: int, symbols: list[str], pipe: Any, batch: bool = False,
           reader: str = "raw") -> None:  # fmt: skip
    """A client process's entry point (``multiprocessing``); it dies with the bench.
    ``reader``: ``raw`` (``gwraw``) or ``aiohttp`` (the library's client, as before)."""
    die_with_parent()
    uvloop.run(_main(url, n, symbols, pipe, batch, reader))
