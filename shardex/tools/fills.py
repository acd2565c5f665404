"""What a load run's orders did in the books, read from the engine shards' events PUB.

With the account tier on, an order's reply is the account shard's "held and forwarded": the
match happens later at the engine shard and its events never come back in the reply. So the
load generator counts accepted orders, trades, fills and engine-side rejects from the events
the engine shards publish (the stream the bridge writes to Redis), keeping only the events of
this run's own orders (ids start with the run's prefix). It is cheap (one SUB socket in the
parent process, reading the messages the shards publish anyway) and honest about its limits:
every shard's events carry consecutive seqs, so events the subscriber missed (a slow joiner, a
full pipe), from the shard's seq before the load to its seq after it, are fetched again by seq
range (``OP_EVENTS``, as the bridge repairs its gaps) and only what that cannot fetch is counted
as ``lost``, never silently.

``FillCounter`` is the pure part; ``EventWatch`` the thread that feeds it; ``settle`` ends a
run's counting (catch up, repair, close).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import zmq

from shardex.auth import KeyFile
from shardex.client import Client, ShardexError
from shardex.engine.codes import EV_ACCEPTED, EV_CANCELLED, EV_REJECTED, EV_TRADE, reject_name
from shardex.net.roles import event_sub
from shardex.wire.layouts import EV_ID, EV_KIND, EV_SEQ, REJECTED_CODE, TRADE_MAKER, TRADE_TAKER
from shardex.wire.protocol import OP_EVENTS
from shardex.wire.pub import Malformed, decode_events
from shardex.wire.transport import RequestIds, dealer, request

SUB_HWM = 1_000_000  # messages the subscriber may queue (a burst must not drop)


class FillCounter:
    """Counts the events of orders whose ids start with ``prefix``, per engine shard from seq
    ``start[shard] + 1``, each seq once. A shard publishes a batch as one message per symbol,
    so seqs arrive interleaved across messages: ``next`` is the first seq not seen yet and
    ``ahead`` the seqs seen beyond it. ``close`` turns what is still unseen into ``holes``
    for ``repair`` (the range re-send the bridge uses); what no repair filled is ``lost``."""

    def __init__(self, prefix: str, start: Mapping[int, int]) -> None:
        self.prefix = prefix
        self.next = {shard: seq + 1 for shard, seq in start.items()}
        self.ahead: dict[int, set[int]] = {shard: set() for shard in start}
        self.holes: list[tuple[int, int, int]] = []  # (shard, first, last) not seen
        self.accepted = 0
        self.trades = 0  # trades with at least one side ours (each counted once)
        self.fills = 0  # order sides of ours filled (a trade between two of ours: 2)
        self.cancelled = 0
        self.rejected: Counter[str] = Counter()
        self.repaired = 0  # events fetched again to fill holes

    @property
    def lost(self) -> int:
        """Events never seen (holes not repaired): the counts are short by their orders."""
        return sum(last - first + 1 for _, first, last in self.holes)

    def feed(self, shard: int, events: Any) -> None:
        """One PUB message's events of ``shard`` (older seqs and repeats are ignored)."""
        nxt = self.next.get(shard)
        if nxt is None or not isinstance(events, tuple | list):
            return
        ahead = self.ahead[shard]
        for ev in events:
            if not isinstance(ev, tuple | list) or len(ev) <= EV_ID or type(ev[EV_SEQ]) is not int:
                continue
            seq = ev[EV_SEQ]
            if seq < nxt or seq in ahead:
                continue
            self._count(ev)
            if seq == nxt:
                nxt += 1
                while nxt in ahead:
                    ahead.discard(nxt)
                    nxt += 1
            else:
                ahead.add(seq)
        self.next[shard] = nxt

    def _count(self, ev: tuple | list) -> None:
        p = self.prefix
        kind = ev[EV_KIND]
        if kind == EV_TRADE and len(ev) > TRADE_MAKER:
            taker, maker = ev[TRADE_TAKER], ev[TRADE_MAKER]
            ours = (type(taker) is str and taker.startswith(p)) + (
                type(maker) is str and maker.startswith(p)
            )
            if ours:
                self.trades += 1
                self.fills += ours
        elif type(ev[EV_ID]) is not str or not ev[EV_ID].startswith(p):
            return
        elif kind == EV_ACCEPTED:
            self.accepted += 1
        elif kind == EV_CANCELLED:
            self.cancelled += 1
        elif kind == EV_REJECTED:
            self.rejected[reject_name(ev[REJECTED_CODE] if len(ev) > REJECTED_CODE else None)] += 1

    def behind(self, end: Mapping[int, int]) -> int:
        """Events up to ``end`` (each shard's seq after the load) not seen yet."""
        missing = 0
        for shard, seq in end.items():
            nxt = self.next.get(shard)
            if nxt is not None and nxt <= seq:
                missing += seq + 1 - nxt - sum(1 for q in self.ahead[shard] if q <= seq)
        return missing

    def close(self, end: Mapping[int, int]) -> None:
        """Stop reading at ``end``: every seq up to it not seen by now is in a hole."""
        for shard, seq in end.items():
            nxt = self.next.get(shard)
            if nxt is None or nxt > seq:
                continue
            for q in sorted(q for q in self.ahead[shard] if q <= seq) + [seq + 1]:
                if q > nxt:
                    self.holes.append((shard, nxt, q - 1))
                nxt = q + 1
            self.next[shard] = seq + 1
            self.ahead[shard] = {q for q in self.ahead[shard] if q > seq}

    def repair(self, k: int, events: Any) -> bool:
        """Events re-sent for hole ``k`` (``OP_EVENTS``, possibly only its start): counts those
        inside it and shrinks it. False when nothing usable came (stop asking)."""
        shard, first, last = self.holes[k]
        nxt = first
        for ev in events if isinstance(events, tuple | list) else ():
            if isinstance(ev, tuple | list) and len(ev) > EV_ID and type(ev[EV_SEQ]) is int:
                if ev[EV_SEQ] == nxt and nxt <= last:
                    self._count(ev)
                    self.repaired += 1
                    nxt += 1
        if nxt == first:
            return False
        self.holes[k] = (shard, nxt, last)
        return True

    def report(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "trades": self.trades,
            "fills": self.fills,
            "cancelled": self.cancelled,
            "rejected": dict(self.rejected),
            "events_repaired": self.repaired,
            "events_lost": self.lost,
        }


class EventWatch:
    """A thread subscribed to every engine shard's PUB (CURVE with ``key``) feeding a
    ``FillCounter``; ``stop`` joins it."""

    def __init__(self, pubs: list[str], counter: FillCounter, key: KeyFile | None) -> None:
        self.counter = counter
        self.lock = threading.Lock()
        self._ctx = zmq.Context()
        self._sub = event_sub(self._ctx, zmq, SUB_HWM, key)
        for ep in pubs:
            self._sub.connect(ep)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sub = self._sub
        while not self._halt.is_set():
            if not sub.poll(50):
                continue
            for _ in range(1000):
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    shard, events = decode_events(frames[-1])
                except Malformed:  # garbage or another version: skip the message
                    continue
                with self.lock:
                    self.counter.feed(shard, events)

    def behind(self, end: Mapping[int, int]) -> int:
        with self.lock:
            return self.counter.behind(end)

    def stop(self) -> None:
        """Stop reading and close (idempotent)."""
        if self._halt.is_set():
            return
        self._halt.set()
        self._thread.join(5)
        self._sub.close(0)
        self._ctx.term()


def shard_seqs(endpoint: str, key: KeyFile | None, timeout: float,
               tries: int = 1) -> dict[int, int] | None:  # fmt: skip
    """Each engine shard's seq now (``OP_STATUS`` through the router, each try waiting
    ``max(timeout, 2 s)``: a shard busy with a backlog answers late); None if one cannot say."""
    for _ in range(tries):
        try:
            with Client(endpoint, key=key or False, timeout=max(timeout, 2.0)) as c:
                status = c.status()
        except ShardexError:
            continue
        seqs = {s.get("shard"): s.get("seq") for s in status}
        if all(type(k) is int and type(v) is int for k, v in seqs.items()):
            return seqs  # type: ignore[return-value]
    return None


def settle(watch: EventWatch, endpoint: str, key: KeyFile | None, timeout: float,
           wait: bool = True) -> bool:  # fmt: skip
    """End a run's counting: take each shard's seq now, wait (at most ``max(timeout, 5 s)``,
    not at all without ``wait``) until the subscriber has seen that far and the shards are
    quiet, stop it, and fetch what it missed by seq range. False when a shard could not tell
    its seq: the counts are then what the subscriber saw."""
    end = shard_seqs(endpoint, key, timeout, tries=3 if wait else 1)
    deadline = time.monotonic() + (max(timeout, 5.0) if wait else 0.0)
    while end is not None and time.monotonic() < deadline:
        if watch.behind(end):
            time.sleep(0.05)  # (the subscriber thread reads; this only waits for its progress)
            continue
        # seen up to ``end``: done once the shards are quiet (an order the account tier
        # acknowledged may reach its engine shard after the load ended)
        now = shard_seqs(endpoint, key, timeout)
        if now is None or now == end:
            break
        end = now
    watch.stop()
    if end is None:
        return False
    watch.counter.close(end)
    if watch.counter.holes and wait:
        repair_holes(watch.counter, endpoint, key, timeout)
    return True


def repair_holes(c: FillCounter, endpoint: str, key: KeyFile | None, timeout: float) -> None:
    """Ask each shard (through the router, ``#i``) for the events of every hole, a reply at a
    time, within ``2 × max(timeout, 5 s)`` in all; what stays unfetched is ``c.lost``."""
    ctx = zmq.Context()
    sock = dealer(ctx, endpoint, timeout, key=key)
    ids = RequestIds()
    deadline = time.monotonic() + 2 * max(timeout, 5.0)
    try:
        for k in range(len(c.holes)):
            while time.monotonic() < deadline:
                shard, first, last = c.holes[k]
                if first > last:
                    break
                try:
                    error, res = request(sock, f"#{shard}".encode(), [(OP_EVENTS, first, last)],
                                         timeout, ids)  # fmt: skip
                except TimeoutError:
                    return
                got = res[0] if error is None and isinstance(res, tuple | list) and res else {}
                if not isinstance(got, dict) or not c.repair(k, got.get("events")):
                    break
    finally:
        sock.close(0)
        ctx.term()
