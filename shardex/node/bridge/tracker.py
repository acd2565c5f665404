"""``ShardTracker``: the socket-free, clock-free core of one shard's stream (what to write
next, which range to repair, what is lost, when the shard is stalled, when Redis is ahead)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

from shardex.wire.layouts import EV_SEQ

_SEQ = itemgetter(EV_SEQ)  # (an engine or account event: its seq)


@dataclass
class StatusOutcome:
    """What one status answer changed: the loop logs and measures these."""

    behind: bool = False  # the shard is below what Redis holds: rewind (see ShardTracker)
    stalled: bool | None = None  # True: became stalled, False: recovered, None: no change


class ShardTracker:
    """Seq tracking of one shard: what to write next, what to repair, what is lost or stalled.

    Driven by the loop with plain values (events, seqs, ``now`` in seconds); it never touches a
    socket or a clock, so every decision is unit-tested alone. One writer: the loop's writer task
    is the only caller of ``take``/``written``/``putback``/``rewind``; ``accept`` and
    ``on_status`` only add information.
    """

    def __init__(
        self,
        index: int,
        *,
        max_pending: int = 2_000_000,
        hole_wait: float = 0.1,
        stall_after: float = 5.0,
    ) -> None:
        self.index = index
        self.max_pending = max_pending  # beyond this, received events are dropped (and repaired)
        self.hole_wait = hole_wait  # a hole younger than this may still fill from PUB
        self.stall_after = stall_after
        self.last = 0  # last seq known written to Redis
        self.pending: list[tuple] = []  # received, not yet written (any order, copies allowed)
        # seq → exchange time of the pending events, as their PUB message or repair said (the
        # events stay the shard's tuples; the writer stamps each entry with ``ts_of``)
        self.times: dict[int, int] = {}
        self.shard_seq = 0  # the shard's seq as its last status answer said
        self.prev_poll = 0  # the shard's seq one poll ago: must be written by now
        self.repair_to = 0  # repair up to here once nothing pending is in the way
        self.lost = 0
        self.conflicted = 0
        self.dropped = 0  # received past max_pending (to be repaired)
        self.stalled = False
        self.behind_at: int | None = None  # shard seq to rewind to (writer acts on it)
        # ``last`` as read from Redis is trusted only once a status answer sent after the read
        # shows the shard at or above it (a foreign top entry must not hide the shard's events)
        self.verified = False
        self._check_from: float | None = None  # statuses sent after this compare with ``last``
        self._resumed_last = 0
        self._progress_last = 0
        self._progress_at = 0.0
        self._hole: tuple[int, int] | None = None  # (last, first pending seq) of the open hole
        self._hole_since = 0.0
        self._sorted = True

    # information in

    def resume(self, last: int, now: float) -> None:
        """``last`` as read from Redis (start-up, after an outage). The next status answer sent
        after ``now`` checks that the shard is not below it; nothing is written until then."""
        self.verified = False
        self.last = last
        self._resumed_last = last
        self._check_from = now
        self._progress_last, self._progress_at = last, now

    def accept(self, events: list[tuple], ts: int | None = None) -> None:
        """Events received from PUB (checked by ``check_event``): queued unless over the cap;
        ``ts``: their exchange time (the message's; None from a shard older than it)."""
        p = self.pending
        if len(p) >= self.max_pending:
            self.dropped += len(events)
            return
        if p and events and events[0][EV_SEQ] <= p[-1][EV_SEQ]:
            self._sorted = False
        p.extend(events)
        if ts is not None and events:
            if events[0][EV_SEQ] > self.last:  # (the common case, at C speed: a message's
                self.times.update(zip(map(_SEQ, events), repeat(ts)))  # events are in order)
            else:
                self.times.update((ev[EV_SEQ], ts) for ev in events if ev[EV_SEQ] > self.last)

    def accept_repair(self, events: list[tuple], shard_seq: int | None,
                      runs: list[list[int]] | None = None) -> None:  # fmt: skip
        """Events a repair brought (whatever the cap). ``shard_seq``: the shard's seq at the
        time; a pending seq above it was never sent by that shard and is discarded. ``runs``:
        the reply's time marks (``timemarks.check_runs``: ``[[seq, ts], ...]``)."""
        if events:
            self._sorted = False
            self.pending.extend(events)
            if runs:
                self._stamp(events, runs)
        if shard_seq is not None and not events:
            bogus = [ev for ev in self.pending if ev[EV_SEQ] > shard_seq]
            if bogus:
                self.pending = [ev for ev in self.pending if ev[EV_SEQ] <= shard_seq]
                self.dropped += len(bogus)
                for ev in bogus:
                    self.times.pop(ev[EV_SEQ], None)
            self.repair_to = min(self.repair_to, shard_seq)

    def _stamp(self, events: list[tuple], runs: list[list[int]]) -> None:
        """Each event's time from the marks (events and marks both in seq order)."""
        times, k, ts = self.times, 0, 0
        for ev in events:
            seq = ev[EV_SEQ]
            while k < len(runs) and runs[k][0] <= seq:
                ts = runs[k][1]
                k += 1
            times[seq] = ts

    def ts_of(self, seq: int) -> int:
        """The exchange time of pending event ``seq`` (0: its shard did not say)."""
        return self.times.get(seq, 0)

    def _forget(self, old: int, new: int) -> None:
        """The times of seqs ``old+1..new`` are no longer needed (written, or lost)."""
        times = self.times
        if not times or new <= old:
            return
        if new - old <= len(times):
            for s in range(old + 1, new + 1):
                times.pop(s, None)
        else:
            self.times = {s: t for s, t in times.items() if s > new}

    def on_status(self, seq: int, sent_at: float, now: float) -> StatusOutcome:
        """The shard answered a status request sent at ``sent_at`` with its ``seq``."""
        out = StatusOutcome()
        check = self._check_from is not None and sent_at >= self._check_from
        if (check and seq < self._resumed_last) or seq < self.shard_seq:
            out.behind = True
            self.behind_at = seq
        if check:
            self._check_from = None
            self.verified = True
        # What the shard had one poll ago and is still not written is lost in transit (e.g.
        # the tail of a burst dropped by PUB): repair it.
        if self.prev_poll > self.last:
            self.repair_to = max(self.repair_to, self.prev_poll)
        self.prev_poll = seq
        self.shard_seq = seq
        if self.last != self._progress_last or seq <= self.last:
            self._progress_last, self._progress_at = self.last, now
        stalled = seq > self.last and now - self._progress_at >= self.stall_after
        if stalled != self.stalled:
            self.stalled = out.stalled = stalled
        return out

    # decisions out

    def take(self, limit: int) -> list[tuple]:
        """The next contiguous run of pending events from ``last + 1`` (at most ``limit``).

        Older seqs and second copies are dropped. The caller must then call ``written`` (or
        ``putback`` if the write did not happen) before taking again.
        """
        p = self.pending
        if not p or not self.verified:
            return []
        if not self._sorted:
            p.sort(key=_SEQ)
            self._sorted = True
        expect = self.last + 1
        n = len(p)
        i = 0
        while i < n and p[i][EV_SEQ] < expect:
            i += 1
        batch: list[tuple] = []
        while i < n:
            ev = p[i]
            s = ev[EV_SEQ]
            if s == expect:
                if len(batch) >= limit:
                    break
                batch.append(ev)
                expect += 1
            elif s > expect:
                break  # a hole
            i += 1  # s < expect: a second copy of what is in the batch
        if i:
            del p[:i]
        return batch

    def written(self, upto: int, now: float) -> None:
        if upto > self.last:
            if self.pending:
                self._forget(self.last, upto)
            else:
                self.times.clear()  # (nothing pending: no time is needed any more)
            self.last = upto
            self._progress_last, self._progress_at = upto, now

    def putback(self, batch: list[tuple]) -> None:
        """A batch that was not (or not surely) written: take it again later."""
        if batch:
            self.pending[:0] = batch
            self._sorted = False

    def gap(self, now: float) -> tuple[int, int] | None:
        """The range to ask the shard for, if any (call after ``take`` returned nothing)."""
        if not self.verified:
            return None
        nxt = self.last + 1
        p = self.pending
        if p:
            if not self._sorted:
                p.sort(key=_SEQ)
                self._sorted = True
            head = p[0][EV_SEQ]
            if head > nxt:
                # a hole: events may still be on their way (one batch is several PUB messages)
                if self._hole is None or self._hole[1] != head:
                    self._hole, self._hole_since = (self.last, head), now
                if now - self._hole_since >= self.hole_wait:
                    return nxt, head - 1
                return None
            self._hole = None
            return None
        self._hole = None
        if self.repair_to >= nxt:
            return nxt, self.repair_to
        return None

    def lose(self, first: int, last: int) -> int:
        """The shard cannot re-send ``first..last``: count it and move on. Returns the count."""
        if first != self.last + 1 or last < first:
            return 0
        n = last - first + 1
        self.lost += n
        self._forget(self.last, last)
        self.last = last
        return n

    def rewind(self, last: int, now: float) -> None:
        """Redis was ahead of the shard: go on from ``last`` (the highest entry ≤ its seq)."""
        self.last = last
        self.behind_at = None
        self.repair_to = max(self.repair_to, self.shard_seq)
        self._progress_last, self._progress_at = last, now

    @property
    def lag(self) -> int:
        return max(0, self.shard_seq - self.last)
