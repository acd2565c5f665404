"""Engine shard process: one pinned OS process, the single writer of its pairs' state.

``ShardCore`` is the socket-free part (decode a request, check pair ownership, apply to the pure
engine, build the reply); ``run_shard`` is the thin loop around it: drain a batch of messages
from the router and from direct clients, apply, reply, publish events. The loop never blocks on
anything downstream: PUB drops rather than waits, and a backlog past ``max_backlog`` is answered
with ``overloaded`` instead of being queued.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from prometheus_client import REGISTRY

from shardex.engine import Engine, Market
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW, OP_REJECT, Event
from shardex.journal import Journal, JournalError
from shardex.metrics import ShardCollector, ShardStats, serve
from shardex.protocol import (
    ERR_OVERLOADED,
    MAX_EVENTS_REPLY,
    OP_BOOK,
    OP_EVENTS,
    OP_HELLO,
    OP_STATUS,
    decode_request,
    encode_events,
    encode_reply,
    packb,
    shard_for,
)

log = logging.getLogger("shardex.shard")

_WRITE_OPS = frozenset((OP_NEW, OP_CANCEL, OP_AMEND, OP_REJECT))
HELLO_EVERY_S = 1.0


class ShardCore:
    """Everything a shard does per request, without sockets or clocks (testable on its own)."""

    def __init__(
        self,
        index: int,
        shards: int,
        markets: Mapping[str, Market],
        engine: Engine | None = None,
        journal: Journal | None = None,
        ring_size: int = 1 << 20,
    ) -> None:
        if not 0 <= index < shards:
            raise ValueError(f"shard index {index} out of range for {shards} shards")
        self.index = index
        self.shards = shards
        self.markets = markets
        self.engine = engine if engine is not None else Engine(markets)
        # Every command applied is journaled before its reply leaves (the loop commits the
        # journal, then sends the replies of the batch).
        self.journal = journal
        self.ring = EventRing(ring_size)
        self.stats = ShardStats(index)
        self._owner: dict[Any, int] = {}
        self.commands = 0

    def owner(self, symbol: Any) -> int:
        owner = self._owner.get(symbol)
        if owner is None:
            owner = shard_for(symbol, self.shards) if type(symbol) is str else self.index
            if len(self._owner) < 100_000:  # bounded: garbage symbols must not grow memory
                self._owner[symbol] = owner
        return owner

    def handle(self, payload: bytes, out: list[Event], info: dict[str, Any]) -> bytes:
        """One request payload → reply bytes; the commands' events are appended to ``out``."""
        cmds, error = decode_request(payload)
        if error is not None:
            return encode_reply(None, error)
        stats = self.stats
        t0 = perf_counter()
        results: list[Any] = []
        engine = self.engine
        apply = engine.apply
        journal = self.journal
        index = self.index
        for cmd in cmds:
            op = cmd[0] if type(cmd) is tuple and cmd else None
            if op in _WRITE_OPS:
                try:
                    symbol = cmd[1]
                    owner = self.owner(symbol)
                except (IndexError, TypeError):
                    owner = index  # malformed: let the engine reject it with a reason
                if owner != index:
                    cmd = (
                        OP_REJECT,
                        symbol,
                        cmd[2] if len(cmd) > 2 else "",
                        f"symbol {symbol} belongs to shard {owner}, not {index}",
                    )
                start = len(out)
                seq = engine.seq
                apply(cmd, out)
                if journal is not None:
                    journal.add(seq, cmd)
                results.append(out[start:])
            elif op == OP_BOOK:
                results.append(self.book(cmd))
            elif op == OP_EVENTS:
                results.append(self.events(cmd))
            elif op == OP_STATUS:
                results.append(self.status(info))
            else:
                start = len(out)
                seq = engine.seq
                cmd = (OP_REJECT, _at(cmd, 1), _at(cmd, 2), f"unknown op {op!r}"[:200])
                apply(cmd, out)
                if journal is not None:
                    journal.add(seq, cmd)
                results.append(out[start:])
        n = len(cmds)
        self.commands += n
        if n:
            stats.received += n
            stats.engine_time.add((perf_counter() - t0) / n, n)
            stats.cmds_per_msg.add(n)
        return encode_reply(results)

    def events(self, cmd: tuple) -> dict[str, Any]:
        """Re-send events [first, last] (capped) from the in-memory ring, else the journal."""
        try:
            _, first, last = cmd
            if type(first) is not int or type(last) is not int or not 0 < first <= last:
                raise ValueError
        except (ValueError, TypeError):
            return {"error": "events: expected (op, first seq, last seq) with 0 < first <= last"}
        last = min(last, first + MAX_EVENTS_REPLY - 1, self.engine.seq)
        if first > last:
            return {"events": [], "seq": self.engine.seq}
        evs = self.ring.get(first, last)
        if evs is None and self.journal is not None:
            try:
                evs = self.journal.events(first, last)
            except JournalError as exc:
                return {"error": str(exc), "seq": self.engine.seq}
        if evs is None:
            return {
                "error": f"events {first}..{last} are gone (ring starts at "
                f"{self.ring.first}, no journal)",
                "seq": self.engine.seq,
            }
        return {"events": evs, "seq": self.engine.seq}

    def book(self, cmd: tuple) -> dict[str, Any]:
        symbol = _at(cmd, 1)
        depth = _at(cmd, 2)
        if type(depth) is not int or not 0 < depth <= 1000:
            depth = 10
        book = self.engine.book(symbol) if type(symbol) is str else None
        if book is None:
            return {"symbol": symbol, "error": f"unknown symbol {symbol}"}
        if self.owner(symbol) != self.index:
            return {"symbol": symbol, "error": f"symbol {symbol} is on shard {self.owner(symbol)}"}
        bids, asks = book.depth(depth)
        return {
            "symbol": symbol,
            "shard": self.index,
            "seq": self.engine.seq,
            "bids": bids,
            "asks": asks,
        }

    def status(self, info: dict[str, Any]) -> dict[str, Any]:
        eng = self.engine
        return {
            "shard": self.index,
            "shards": self.shards,
            "seq": eng.seq,
            "resting": eng.resting(),
            "symbols": {s: len(b.orders) for s, b in sorted(eng.books.items())},
            "commands": self.commands,
            **info,
        }


class EventRing:
    """The last ``size`` published events, by seq, for gap repair (events are contiguous)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf: list[Event | None] = [None] * size
        self.first = 0  # seq of the oldest event held (0: empty)
        self.last = 0

    def extend(self, events: list[Event]) -> None:
        buf, size = self.buf, self.size
        for ev in events:
            buf[ev[1] % size] = ev
        if events:
            self.last = events[-1][1]
            if not self.first:
                self.first = events[0][1]
            self.first = max(self.first, self.last - size + 1)

    def get(self, first: int, last: int) -> list[Event] | None:
        if not self.first or first < self.first or last > self.last:
            return None
        size = self.size
        return [self.buf[s % size] for s in range(first, last + 1)]  # type: ignore[misc]


def _at(cmd: Any, i: int) -> Any:
    try:
        v = cmd[i]
    except Exception:
        return ""
    return v if type(v) is str else ""


def check_ownership(engine: Engine, index: int, shards: int, where: str) -> None:
    """Refuse to serve a journal whose pairs now hash to other shards (``--shards`` changed):
    their resting orders would be stranded here while their new owner starts empty."""
    foreign = sorted(s for s in engine.books if shard_for(s, shards) != index)
    if foreign:
        raise JournalError(
            f"{where} holds pairs that shard {index} of {shards} does not own "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): it was written "
            "with another --shards. Moving pairs between shards is not supported yet; start "
            "with the old shard count or another --data-dir."
        )


def pin_to_cpu(index: int, cpu: int | None, shards: int) -> int | None:
    """Pin this process to one core before any thread (zmq's I/O thread) exists.

    Auto: shard i → i-th usable CPU modulo the count. Returns the CPU, or None if not pinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        log.warning("CPU pinning is not supported on this platform; running unpinned")
        return None
    usable = sorted(os.sched_getaffinity(0))
    if shards > len(usable):
        log.warning(
            "%d shards on %d usable cores: shards will share cores and their latency will suffer",
            shards,
            len(usable),
        )
    target = usable[index % len(usable)] if cpu is None else cpu
    try:
        os.sched_setaffinity(0, {target})
    except OSError as exc:
        log.warning("could not pin to CPU %d (%s); running unpinned", target, exc)
        return None
    return target


@dataclass
class ShardConfig:
    index: int
    shards: int
    router: str | None  # router backend endpoint to connect to (None: direct clients only)
    direct: str | None  # endpoint to bind for direct clients (None: router only)
    pub: str  # endpoint to bind for the event stream
    markets: Mapping[str, Market]
    max_backlog: int = 10_000  # messages waiting in one wake-up before we shed load
    publish_every: int = 4096  # events buffered at most before a PUB flush within a wake-up
    pin: bool = True
    cpu: int | None = None
    pub_hwm: int = 100_000
    journal_dir: str | None = None  # None: in-memory only (state lost on crash)
    fsync: str = "batch"  # always | batch | none
    snapshot_every: int = 1_000_000  # journaled commands between snapshots
    snapshot_interval: float = 300.0  # seconds between snapshots (if anything changed)
    metrics_port: int | None = None  # Prometheus exporter; None/0: off
    extra: dict[str, Any] = field(default_factory=dict)


def run_shard(cfg: ShardConfig) -> None:
    """The shard's process loop. Returns on SIGTERM/SIGINT."""
    cpu = pin_to_cpu(cfg.index, cfg.cpu, cfg.shards) if cfg.pin else None
    import zmq  # imported after pinning so no zmq thread exists before the affinity is set

    journal = None
    engine = None
    if cfg.journal_dir:
        journal = Journal(cfg.journal_dir, cfg.markets, fsync=cfg.fsync)
        t = time.monotonic()
        rec = journal.recover()
        engine = rec.engine
        check_ownership(engine, cfg.index, cfg.shards, cfg.journal_dir)
        log.info(
            "recovered shard %d from %s: snapshot seq %s + %d journaled commands in %.2fs "
            "→ seq %d, %d resting orders",
            cfg.index,
            cfg.journal_dir,
            rec.snapshot_seq,
            rec.replayed,
            time.monotonic() - t,
            engine.seq,
            engine.resting(),
        )
    else:
        log.warning("shard %d has no journal: its state is lost if the process dies", cfg.index)
    core = ShardCore(cfg.index, cfg.shards, cfg.markets, engine=engine, journal=journal)
    stats = core.stats
    stats.engine = core.engine
    stats.seq = core.engine.seq
    REGISTRY.register(ShardCollector(stats))
    serve(cfg.metrics_port, "engine", shard=str(cfg.index))
    last_snap_seq = core.engine.seq
    last_snap = time.monotonic()
    last_snap_records = 0
    last_resting = 0.0
    ctx = zmq.Context()
    sockets = []
    dealer = direct = None
    if cfg.router:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, f"shard-{cfg.index}".encode())
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.HEARTBEAT_IVL, 500)
        dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1500)
        dealer.setsockopt(zmq.RCVHWM, 0)  # backlog is bounded by max_backlog, not by drops
        dealer.connect(cfg.router)
        sockets.append(dealer)
    if cfg.direct:
        direct = ctx.socket(zmq.ROUTER)
        direct.setsockopt(zmq.LINGER, 0)
        direct.bind(cfg.direct)
        sockets.append(direct)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, cfg.pub_hwm)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(cfg.pub)

    running = True

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    started = time.monotonic()
    hello = {
        "shard": cfg.index,
        "shards": cfg.shards,
        "pid": os.getpid(),
        "cpu": cpu,
        "direct": cfg.direct,
        "pub": cfg.pub,
        **cfg.extra,
    }
    overloaded_reply = encode_reply(None, ERR_OVERLOADED)
    backlog_seen = 0
    last_hello = 0.0
    poller = zmq.Poller()
    for s in sockets:
        poller.register(s, zmq.POLLIN)
    drain_cap = 2 * cfg.max_backlog  # bounds one wake-up; past max_backlog we only shed
    publish_every = cfg.publish_every
    log.info(
        "shard %d/%d up (pid %d, cpu %s): router=%s direct=%s pub=%s",
        cfg.index,
        cfg.shards,
        os.getpid(),
        cpu,
        cfg.router,
        cfg.direct,
        cfg.pub,
    )
    out: list[Event] = []
    replies: list[tuple[Any, list[bytes], bytes]] = []
    NOBLOCK = zmq.NOBLOCK
    Again = zmq.Again

    def flush() -> None:
        """Group commit: journal the batch's commands, then reply, then publish its events."""
        if journal is not None and journal.pending:
            journal.commit()
            stats.journal_write.add(journal.last_write_s)
            if journal.fsync != "none":
                stats.journal_fsync.add(journal.last_fsync_s)
        for sock, head, reply in replies:
            try:
                sock.send_multipart([*head, reply], NOBLOCK)
            except Again:
                pass  # the peer's pipe is full: it stops reading, we must not stop matching
        replies.clear()
        if out:
            core.ring.extend(out)
            _publish(pub, cfg.index, out)
            out.clear()

    while running:
        now = time.monotonic()
        if dealer is not None and now - last_hello >= HELLO_EVERY_S:
            dealer.send_multipart([b"", b"HELLO", packb((OP_HELLO, hello))], NOBLOCK)
            last_hello = now
        try:
            ready = poller.poll(200)
        except zmq.ZMQError:
            continue  # EINTR from a signal: loop re-checks ``running``
        if not ready:
            continue
        # Drain what is waiting on each socket (non-blocking): the backlog of this wake-up.
        pending: list[tuple[Any, list[bytes]]] = []
        for sock in sockets:
            while len(pending) < drain_cap:
                try:
                    pending.append((sock, sock.recv_multipart(NOBLOCK)))
                except Again:
                    break
        backlog_seen = len(pending)
        stats.backlog = backlog_seen
        stats.batch_size.add(backlog_seen)
        info = {
            "uptime_s": round(now - started, 3),
            "pid": os.getpid(),
            "cpu": cpu,
            "backlog": backlog_seen,
            "shed": stats.shed,
        }
        for n, (sock, frames) in enumerate(pending):
            if sock is dealer:
                # [client identity, request id, payload] from the router
                if len(frames) != 3:
                    continue  # not from our router: nothing sensible to answer
                head = frames[:2]
            else:
                # [client identity, routing key, request id, payload] from a direct client
                if len(frames) != 4:
                    if len(frames) >= 2:
                        sock.send_multipart(
                            [
                                frames[0],
                                frames[-2] if len(frames) > 2 else b"",
                                encode_reply(None, "malformed message: expected 3 frames"),
                            ],
                            NOBLOCK,
                        )
                    continue
                head = [frames[0], frames[2]]
            if n >= cfg.max_backlog:
                stats.shed += 1
                replies.append((sock, head, overloaded_reply))
            else:
                replies.append((sock, head, core.handle(frames[-1], out, info)))
            if len(out) >= publish_every:
                flush()
        flush()
        stats.seq = core.engine.seq
        if now - last_resting >= 1.0:
            stats.resting = core.engine.resting()
            last_resting = now
        if journal is not None and (
            journal.records_written - last_snap_records >= cfg.snapshot_every
            or (core.engine.seq != last_snap_seq and now - last_snap >= cfg.snapshot_interval)
        ):
            t = time.monotonic()
            path = journal.snapshot(core.engine)
            log.info(
                "snapshot %s (%d resting orders) in %.1f ms",
                path.name,
                core.engine.resting(),
                (time.monotonic() - t) * 1000,
            )
            last_snap_seq, last_snap = core.engine.seq, now
            last_snap_records = journal.records_written
    if journal is not None:
        journal.close()
    for s in (*sockets, pub):
        s.close(0)
    ctx.term()
    log.info("shard %d stopped", cfg.index)


def _publish(pub: Any, shard: int, events: list[Event]) -> None:
    """One PUB message per symbol per batch (topic = symbol), events in seq order."""
    import zmq

    groups: dict[str, list[Event]] = {}
    for ev in events:
        g = groups.get(ev[2])
        if g is None:
            groups[ev[2]] = [ev]
        else:
            g.append(ev)
    for symbol, evs in groups.items():
        try:
            pub.send_multipart([symbol.encode(), encode_events(shard, evs)], zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks; a subscriber repairs gaps by seq
