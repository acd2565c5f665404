"""The gateway's market-data hub: Redis Streams and the engine's book reads in, frames out.

One asyncio task reads every engine shard's events stream and every pair's trades stream
(``XREAD BLOCK``, from each stream's top at start: the trades' ``prev_seq`` chain is the
stream's own order, so it is the same across gateway restarts and gateways). A trade becomes
one trades frame. Any other event of a pair with book subscribers marks its book dirty; one
task per such pair reads the engine's book (``OP_BOOK``, atomic at a seq) and publishes the
``BookFeed``'s delta. Every message is encoded once; a step's messages of a channel are
sealed into one ``fanout.Chunk`` and the same chunk is queued to every subscriber
(``Hub.flush``: one queue entry and one wake-up per subscriber per step, not per message;
counted once per fan-out). Heartbeats (1 s, with a counter) and tickers (1 s) too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from shardex.engine import Market
from shardex.gateway import metrics as m
from shardex.gateway.book import DEFAULT_DEPTH, BookFeed
from shardex.gateway.fanout import Chunk, StepBatch, batch_chunk, batch_msg, encode
from shardex.gateway.messages import error
from shardex.gateway.outbox import BEHIND, CLOSE, OK, Outbox
from shardex.gateway.perpfeed import LOOKBACK, PERP_CHANNELS, PerpFeed, entry_message
from shardex.wire.codes import GATEWAY_UNAVAILABLE

log = logging.getLogger("shardex.gateway")
EVENTS_PREFIX, TRADES_PREFIX = "shardex:events:", "shardex:trades:"
REPLAY_MAX = 10_000  # trades a resume may replay; older: resumed false (a gap, said)
REPLAY_PAGE = 500
STAMPS_MAX = 1000  # trade times kept for the written-latency histogram, until a write round
DISCOVER_EVERY = 5.0  # seconds between looks for new engine shards' events streams


@dataclass
class Sub:
    """One subscription of one connection: ``live`` False while a book waits for its
    resync (or a trades replay runs: live frames wait in ``held``); ``last``: the seq of the
    last message sent on it; ``batch``: a trades subscription taking a step's trades in one
    message."""

    channel: str
    symbol: str
    live: bool = True
    last: int | None = None
    held: list[tuple[int, str]] = field(default_factory=list)
    batch: bool = False


class Conn:
    """One WebSocket client: its subscriptions and its bounded queue (``Outbox``)."""

    counted = True  # its frames count as frames out (a subclass that translates: False)

    def __init__(self, outbox: Outbox, close: Callable[[], Awaitable[None]]) -> None:
        self.outbox = outbox
        self.subs: dict[tuple[str, str], Sub] = {}
        self.wake = asyncio.Event()
        self._close = close
        self.closed = False
        self.behind: list[Callable[[], None]] = []  # told when the queue is dropped (user channel)

    def push(self, frame: str, channel: str) -> bool:
        """Queue one shared frame, counted; on falling behind, the resync notices (or the
        close)."""
        if not self.offer(frame, time.monotonic()):
            return False
        m.FRAMES.labels(channel).inc()
        m.BYTES.labels(channel).inc(len(frame))
        return True

    def offer(self, frame: str, now: float) -> bool:
        """``push`` without the metrics: a fan-out counts its frames once (``Hub.publish``;
        a labelled counter per frame per client was most of the gateway's CPU)."""
        if self.queue(frame, now):
            self.kick()
            return True
        return False

    def kick(self) -> None:
        """Something was queued: the writer sends it (the server's ``wswriter.Writer``
        replaces this: every kicked connection written once after the step, no task switch)."""
        self.wake.set()

    def spill(self) -> None:
        """Its queue is about to overflow: write what its socket takes now (the server's
        ``Writer`` replaces this), so that falling behind means the client does not read,
        not that the gateway's next write round has not come yet."""

    def queue(self, frame: Chunk | str, now: float) -> bool:
        """Queue a message or a step's chunk, without waking the writer (``Hub.flush`` kicks
        each connection once when the step's chunks are all queued)."""
        box, count = self.outbox, self.outbox.count
        n = 1 if frame.__class__ is str else frame.weight  # type: ignore[union-attr]
        if not count or count + n <= box.limit:  # (``Outbox.offer``'s common case, inline: this
            if not box.closing:  # runs per subscriber per step, the fan-out's inner loop)
                box.frames.append(frame)
                box.count = count + n
                return True
        else:  # about to overflow: what the socket takes first (the round may not have come)
            self.spill()
        verdict = box.offer(frame, now)
        if verdict == OK:
            return True
        m.DROPPED.inc(self.outbox.take_dropped())
        lost = self.outbox.take_lost()
        if verdict == BEHIND:
            self.fell_behind(lost)
        elif verdict == CLOSE and not self.closed:
            self.closed = True
            m.SLOW_CLOSES.inc()
            asyncio.get_running_loop().create_task(self._close())
        return False

    def control(self, msg: Mapping[str, Any]) -> None:
        self.outbox.control(encode(msg))
        self.kick()

    def fell_behind(self, lost: Sequence[Sized] = ()) -> None:
        """Everything queued was dropped: each subscription is told how to resync, from the
        last seq it was *sent* (the first dropped message's ``prev_seq``, when one was)."""
        for hook in self.behind:
            hook()
        for key, prev in first_prevs(lost, set(self.subs)).items():
            self.subs[key].last = prev
        for sub in self.subs.values():
            sub.live = sub.channel != "book"  # trades/ticker keep flowing after the notice
            m.RESYNCS.labels(sub.channel, "slow").inc()
            self.control({"type": "resync_required", "channel": sub.channel,
                          "symbol": sub.symbol, "last_seq": sub.last, "code": 123,
                          "name": "slow_client"})  # fmt: skip


class Hub:
    """Subscribers per (channel, symbol), the book feeds and the stream positions."""

    def __init__(self, r: Any, book: Callable[[str, int], Awaitable[dict[str, Any]]],
                 markets: Mapping[str, Market], depth: int = DEFAULT_DEPTH,
                 shards: Callable[[], Awaitable[int]] | None = None) -> None:  # fmt: skip
        self.r = r  # redis.asyncio, decode_responses=True
        self.read_book = book
        self.shard_count = shards  # the engine shards (whose events streams to read)
        self.markets = markets
        self.depth = depth
        self.subs: dict[tuple[str, str], set[Conn]] = {}
        self.feeds: dict[str, BookFeed] = {}
        self.snap: dict[str, tuple[int | None, str]] = {}  # symbol → (seq, encoded snapshot)
        self.dirty: set[str] = set()
        self.reading: dict[str, asyncio.Task[None]] = {}
        self.first: dict[str, asyncio.Future[None]] = {}  # a book's first read, in flight
        self.pos: dict[str, str] = {}  # stream key → last id read
        self.trade_seq: dict[str, int | None] = {}
        self.step_batch = StepBatch()  # published, not yet queued (``flush``)
        # each step's oldest trade per pair, (exchange time ms, read at: epoch s), until written
        self.stamps: list[tuple[int, float]] = []
        self.read_at = 0.0  # the wall time the last step's Redis read answered
        self.beats = 0
        self.conns: set[Conn] = set()  # every connection (heartbeats reach them all)
        self.redis_ok = False
        self.cluster_ok = False
        self.user: Any = None  # the private user channel (``userhub.UserHub``), when served
        self.perp = PerpFeed()  # the perp pairs' mark, funding and liquidations channels

    # -- subscriptions --------------------------------------------------------------------------

    def add(self, conn: Conn, sub: Sub) -> None:
        conn.subs[(sub.channel, sub.symbol)] = sub
        self.subs.setdefault((sub.channel, sub.symbol), set()).add(conn)
        m.SUBSCRIPTIONS.labels(sub.channel).set(len(self.subs[(sub.channel, sub.symbol)]))
        self._count()

    def remove(self, conn: Conn, channel: str, symbol: str) -> bool:
        sub = conn.subs.pop((channel, symbol), None)
        self.subs.get((channel, symbol), set()).discard(conn)
        if (channel == "book" and sub is not None and symbol not in self.first
                and not self.subs.get((channel, symbol))):
            # its last subscriber left: the feed would go stale; the next one reads afresh
            # (not while a first read is in flight: its subscribers wait for that feed)
            self.feeds.pop(symbol, None)
            self.snap.pop(symbol, None)
        self._count()
        return sub is not None

    def drop(self, conn: Conn) -> None:
        for channel, symbol in list(conn.subs):
            self.remove(conn, channel, symbol)

    def _count(self) -> None:
        for ch in ("book", "trades", "ticker", *PERP_CHANNELS):
            m.SUBSCRIPTIONS.labels(ch).set(
                sum(len(c) for (k, _), c in self.subs.items() if k == ch))

    async def subscribe_book(self, conn: Conn, symbol: str) -> None:
        """The symbol's current snapshot (read first if the gateway has none), then deltas;
        an error (and no subscription) when the engine cannot be read."""
        if self.feeds.get(symbol) is None or self.feeds[symbol].seq is None:
            self.feeds.setdefault(symbol, BookFeed(symbol, self.depth))
            first = self.first.get(symbol)
            if first is None:  # one read for every subscriber that comes meanwhile (a
                # restarted gateway's clients all resubscribe at once: no storm on the engine)
                first = self.first[symbol] = asyncio.ensure_future(self.refresh(symbol))
                first.add_done_callback(lambda _: self.first.pop(symbol, None))
            await asyncio.shield(first)
        feed = self.feeds.get(symbol)
        if feed is None or feed.seq is None:
            if not self.subs.get(("book", symbol)):
                self.feeds.pop(symbol, None)
            conn.control(error(GATEWAY_UNAVAILABLE, "the book cannot be read now: try again"))
            return
        seq, frame = self.snap.get(symbol, (None, ""))
        if seq != feed.seq or not frame:
            frame = encode(feed.snapshot())
            self.snap[symbol] = (feed.seq, frame)
        self.add(conn, Sub("book", symbol, last=feed.seq))  # same step as the snapshot: no gap
        conn.push(frame, "book")

    async def subscribe_trades(self, conn: Conn, symbol: str, since: int | None,
                               batch: bool = False) -> None:  # fmt: skip
        """Live trades from now (the ack says the seq they continue), or from ``since``
        (exclusive): a replay from the stream, then live, with no gap and no overlap."""
        top = self.trade_seq.get(symbol)
        if since is None:
            self.add(conn, Sub("trades", symbol, last=top, batch=batch))
            conn.control({"type": "subscribed", "channel": "trades", "symbol": symbol,
                          "seq": top})  # fmt: skip
            return
        sub = Sub("trades", symbol, live=False, last=since, batch=batch)
        self.add(conn, sub)
        resumed, sent = await self.replay(
            conn, TRADES_PREFIX + symbol, sub, since,
            lambda seq, prev, f: trade_msg(symbol, seq, prev, f))  # fmt: skip
        conn.control({"type": "subscribed", "channel": "trades", "symbol": symbol,
                      "from_seq": since, "resumed": resumed, "replayed": sent})  # fmt: skip
        self.go_live(conn, sub)

    def go_live(self, conn: Conn, sub: Sub) -> None:
        """After a replay: the live messages held meanwhile that it did not send, then live."""
        held = [(seq, f) for seq, f in sub.held if sub.last is None or seq > sub.last]
        if held and sub.batch:
            conn.push(encode(batch_msg(sub.symbol, [json.loads(f) for _, f in held])), "trades")
        else:
            for _, frame in held:
                conn.push(frame, sub.channel)
        sub.last = held[-1][0] if held else sub.last
        sub.held.clear()
        sub.live = True

    async def subscribe_perp(self, conn: Conn, channel: str, symbol: str,
                             since: int | None = None) -> None:  # fmt: skip
        """A perp channel, live from now: the answer says the seq the chain continues from
        and carries the last message (the current mark, the last funding or liquidation); or
        from ``since`` (exclusive), replayed from the pair's events stream, then live."""
        seq, last = self.perp.last.get((channel, symbol)), self.perp.latest.get((channel, symbol))
        if since is None:
            self.add(conn, Sub(channel, symbol, last=seq))
            conn.control({"type": "subscribed", "channel": channel, "symbol": symbol,
                          "seq": seq, "last": last})  # fmt: skip
            return
        sub = Sub(channel, symbol, live=False, last=since)
        self.add(conn, sub)
        key = self.perp.stream.get(symbol)  # (none known: nothing to replay from, said)
        resumed, sent = (False, 0) if key is None else await self.replay(
            conn, key, sub, since, partial(entry_message, channel, symbol))
        conn.control({"type": "subscribed", "channel": channel, "symbol": symbol,
                      "from_seq": since, "resumed": resumed, "replayed": sent})  # fmt: skip
        self.go_live(conn, sub)

    async def replay(self, conn: Conn, key: str, sub: Sub, since: int,
                     build: Callable[[int, int | None, Mapping[str, str]], dict[str, Any] | None],
                     ) -> tuple[bool, int]:  # fmt: skip
        """Send the messages ``build`` makes of stream ``key``'s entries after ``since`` (None:
        not one of this subscription's); resumed False when ``since`` is not such an entry of
        the stream (trimmed, or never one): the client knows there may be a gap."""
        start, resumed, sent, scanned = f"{since}-0", False, 0, 0
        first = True
        while scanned < REPLAY_MAX:
            page = await self.r.xrange(key, min=start, max="+", count=REPLAY_PAGE)
            if first:
                resumed = bool(page) and page[0][0] == start and build(
                    since, None, page[0][1]) is not None  # fmt: skip
                sub.last = since if resumed else None  # the first one's prev_seq: unknown
                first = False
            page = [e for e in page if e[0] != start]
            if not page:
                break
            scanned += len(page)
            msgs = []
            for entry_id, fields in page:
                seq = int(entry_id.split("-")[0])
                msg = build(seq, sub.last, fields)
                if msg is not None:
                    msgs.append(msg)
                    sub.last, sent = seq, sent + 1
            if sub.batch and msgs:
                conn.push(encode(batch_msg(sub.symbol, msgs)), "trades")
            else:
                for msg in msgs:
                    conn.push(encode(msg), sub.channel)
            start = page[-1][0]
        # more than REPLAY_MAX entries behind: the messages after the replay's last are not all
        # sent (the next one's prev_seq shows where): said, not silent
        return resumed and scanned < REPLAY_MAX, sent

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, channel: str, symbol: str, frame: str, seq: int | None = None,
                trade: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Publish one message: O(1) whoever subscribes; queued to the subscribers by the
        step's ``flush`` (every caller flushes before it next awaits: a subscriber joining
        meanwhile could otherwise get a message older than its snapshot)."""
        self.step_batch.add((channel, symbol), frame, seq, trade)

    def flush(self) -> None:
        """Queue each (channel, symbol)'s chunk of this step to its live subscribers (one
        entry each), then kick every connection that got something, once."""
        if not self.step_batch:
            return
        now, kicked = time.monotonic(), set()
        for key, chunk, trades in self.step_batch.seal():
            self._fan_out(key, chunk, trades, now, kicked)
        for conn in kicked:
            conn.kick()

    def _fan_out(self, key: tuple[str, str], chunk: Chunk, trades: list[dict[str, Any]],
                 now: float, kicked: set[Conn]) -> None:  # fmt: skip
        """One chunk to every subscriber of ``key``: a batch subscriber gets the step's
        trades as one message; a trades replay in progress holds them for its end."""
        channel, symbol = key
        batch, sent, bytes_out = None, 0, 0
        for conn in list(self.subs.get(key, ())):
            sub = conn.subs.get(key)
            if sub is None:
                continue
            if not sub.live:
                if channel == "trades" or channel in PERP_CHANNELS:
                    pairs = zip(chunk.seqs, chunk.frames, strict=True)
                    sub.held.extend((s, f) for s, f in pairs if s is not None)
                continue
            piece = chunk
            if sub.batch and trades:
                piece = batch = batch or batch_chunk(symbol, trades)
            if conn.queue(piece, now):
                kicked.add(conn)
                if conn.counted:
                    sent, bytes_out = sent + len(piece), bytes_out + piece.size
                sub.last = piece.last if piece.last is not None else sub.last
        count(channel, sent, bytes_out)
        if sent and trades and trades[0].get("ts") and len(self.stamps) < STAMPS_MAX:
            # (the writer's round observes it written)
            self.stamps.append((trades[0]["ts"], self.read_at))

    async def refresh(self, symbol: str) -> None:
        """Read the engine's book of ``symbol`` and publish what changed."""
        feed = self.feeds.get(symbol)
        if feed is None:
            return
        try:
            book = await self.read_book(symbol, self.depth)
            self.cluster_ok = True
        except Exception as exc:  # noqa: BLE001 - the cluster may be away: said, retried
            self.cluster_ok = False
            log.warning("book %s: %s", symbol, exc)
            return
        m.BOOK_READS.inc()
        if self.feeds.get(symbol) is not feed:
            return  # its last subscriber left while the read was in flight
        if "error" in book or "seq" not in book:
            log.warning("book %s: %s", symbol, book.get("error"))
            return
        lv = [[(str(p), str(q)) for p, q, _ in book[s]] for s in ("bids", "asks")]
        msg = feed.update(int(book["seq"]), int(book.get("shard", 0)), lv[0], lv[1])
        if msg is None:
            return
        frame = encode(msg)
        if msg["type"] == "snapshot":
            self.snap[symbol] = (feed.seq, frame)
        self.publish("book", symbol, frame, feed.seq)
        self.flush()

    def mark(self, symbol: str) -> None:
        """A book event of ``symbol``: read its book again (one read in flight per pair)."""
        if symbol not in self.feeds:  # (a feed exists while someone subscribes or follows)
            return
        self.dirty.add(symbol)
        if symbol not in self.reading:
            self.reading[symbol] = asyncio.get_running_loop().create_task(self._reader(symbol))

    async def _reader(self, symbol: str) -> None:
        try:
            while symbol in self.dirty:
                self.dirty.discard(symbol)
                await self.refresh(symbol)
        finally:
            self.reading.pop(symbol, None)

    def resync(self, conn: Conn, symbol: str) -> None:
        """A book subscriber asking again: the current snapshot, deltas from it."""
        feed = self.feeds.get(symbol)
        sub = conn.subs.get(("book", symbol))
        if feed is None or sub is None or feed.seq is None:
            return
        m.RESYNCS.labels("book", "client").inc()
        seq, frame = self.snap.get(symbol, (None, ""))
        if seq != feed.seq:
            frame = encode(feed.snapshot())
            self.snap[symbol] = (feed.seq, frame)
        sub.live, sub.last = True, feed.seq
        conn.push(frame, "book")

    # -- the streams ----------------------------------------------------------------------------

    async def start_positions(self) -> None:
        """Each trades stream's top (the first live trade's prev_seq) and every events
        stream's, so nothing before the gateway started is taken as new."""
        for symbol in self.markets:
            key = TRADES_PREFIX + symbol
            top = await self.r.xrevrange(key, "+", "-", count=1)
            self.pos[key] = top[0][0] if top else "0-0"
            self.trade_seq[symbol] = int(top[0][0].split("-")[0]) if top else None
        await self.discover()

    async def discover(self) -> None:
        """The events stream of every engine shard the cluster has, and the trades stream of
        every pair (asked again every few seconds: a cluster that grows, or lists a pair at
        runtime, is followed; ``shard_count`` learns the pairs into ``markets``; nobody can
        have subscribed to a pair before it was learnt, so its stream is read from its top)."""
        try:
            n = await self.shard_count() if self.shard_count else 0
            self.cluster_ok = True
        except Exception as exc:  # noqa: BLE001 - the cluster away: the trades still flow
            self.cluster_ok = False
            log.warning("shard count: %s", exc)
            return
        for symbol in self.markets:  # a pair listed at runtime: from its stream's top, as above
            key = TRADES_PREFIX + symbol
            if key not in self.pos:
                top = await self.r.xrevrange(key, "+", "-", count=1)
                self.pos[key] = top[0][0] if top else "0-0"
                self.trade_seq[symbol] = int(top[0][0].split("-")[0]) if top else None
        for key in (f"{EVENTS_PREFIX}{i}" for i in range(n)):
            if key not in self.pos:  # (its tail: the perp channels' last seqs)
                top = await self.r.xrevrange(key, "+", "-", count=LOOKBACK)
                self.pos[key] = top[0][0] if top else "0-0"
                self.perp.seed(key, top)
        for key in await self.user.keys() if self.user is not None else ():
            if key not in self.pos:  # the account shards' orders and balances streams
                self.pos[key] = await self.user.start(key)

    async def step(self, block_ms: int = 1000) -> int:
        """One XREAD over every stream; the entries handled."""
        resp = await self.r.xread(dict(self.pos), count=1000, block=block_ms)
        self.redis_ok, self.read_at = True, time.time()
        n = 0
        for key, entries in resp or ():
            self.pos[key] = entries[-1][0]
            n += len(entries)
            if key.startswith(TRADES_PREFIX):
                self.trades(key.removeprefix(TRADES_PREFIX), entries)
                continue
            if key.startswith(EVENTS_PREFIX):
                for _, f in entries:
                    if f.get("ev") != "rejected" and "symbol" in f:
                        self.mark(f["symbol"])
                for channel, symbol, msg in self.perp.entries(key, entries):
                    self.publish(channel, symbol, encode(msg), msg["seq"])
            if self.user is not None:
                self.user.entries(key, entries)
        self.flush()  # one fan-out per step
        return n

    def trades(self, symbol: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        ts = _int(entries[0][1].get("ts")) if entries else None
        if ts:  # the step's oldest trade: exchange time → read here (the bridge's hop in it)
            m.TRADE_READ.observe(max(0.0, self.read_at - ts / 1000))
        for entry_id, fields in entries:
            seq = int(entry_id.split("-")[0])
            msg = trade_msg(symbol, seq, self.trade_seq.get(symbol), fields)
            self.trade_seq[symbol] = seq
            self.publish("trades", symbol, encode(msg), seq, msg)

    def heartbeat(self) -> None:
        """One heartbeat to every connection: its counter tells a client one was missed."""
        self.beats += 1
        frame = encode({"type": "heartbeat", "counter": self.beats,
                        "ts": int(time.time() * 1000)})  # fmt: skip
        now = time.monotonic()
        sent = sum(conn.offer(frame, now) for conn in list(self.conns))
        count("heartbeat", sent, sent * len(frame))


def first_prevs(lost: Sequence[Sized], keys: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """For each (channel, symbol) of ``keys`` with a message in ``lost`` (queue entries: a
    message or a chunk), the ``prev_seq`` of its first one: the last seq the client got."""
    out: dict[tuple[str, str], Any] = {}
    for item in lost:
        for frame in [item] if isinstance(item, str) else item.frames:  # type: ignore[attr-defined]
            if len(out) == len(keys):
                return out
            try:
                msg = json.loads(frame)
            except ValueError:
                continue
            key = (msg.get("channel"), msg.get("symbol")) if isinstance(msg, dict) else None
            if key in keys and key not in out and "prev_seq" in msg:
                out[key] = msg["prev_seq"]  # type: ignore[index]
    return out


def count(channel: str, sent: int, bytes_out: int) -> None:
    """``sent`` frames of ``bytes_out`` bytes queued: the frames and bytes out, counted once."""
    if sent:
        m.FRAMES.labels(channel).inc(sent)
        m.BYTES.labels(channel).inc(bytes_out)


def trade_msg(symbol: str, seq: int, prev: int | None, f: Mapping[str, str]) -> dict[str, Any]:
    """A trades-stream entry → the trades channel's message (decimal strings as stored)."""
    return {"channel": "trades", "symbol": symbol, "seq": seq, "prev_seq": prev,
            "trade_id": _int(f.get("trade_id")), "price": f.get("price"),
            "qty": f.get("qty"), "side": f.get("taker_side"),
            "ts": _int(f.get("ts"))}  # fmt: skip


def _int(raw: Any) -> int | None:
    return int(raw) if isinstance(raw, str) and raw.isdigit() and len(raw) < 20 else None
