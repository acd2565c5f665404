"""Exchange time: what a sequenced shard's events are stamped with, and how a seq finds its time.

Exchange time is an integer number of **milliseconds since the Unix epoch, UTC** (``ts``). A
shard's leader reads its clock (``shardex.clock``, through its node: the simulator's virtual
clock drives it) once per journaled batch, makes it non-decreasing (``next_ts``: never below
the machine's own ``ts``, which the snapshot and the replayed or replicated ``OP_TIME``
commands carry across restarts and failovers) and journals ``(OP_TIME, ts)`` at the head of
the batch. The pure machines only ever receive it as that command; every event of the batch
has that time.

Events themselves stay as they are (no field added to the hot tuples): the time travels per
batch. ``TimeMarks`` is the compact map seq → ts a node keeps beside its event ring: a *mark*
``(seq, ts)`` says "the events from ``seq`` on have time ``ts``", written only when the time
changes. PUB messages carry the ts of their events (``runs_of``: one message never spans two
times), range re-sends (``OP_EVENTS``) carry the marks covering the range (``runs``), and the
bridge applies them to each event at the edge (``ts_at``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from shardex.clock import Clock
from shardex.engine.codes import OP_TIME

MAX_TS = (1 << 63) - 1  # what a peer may claim (any larger value is not a time)
TIME_MARKS_PRUNE = 4096  # marks a node keeps before dropping those older than its event ring


def wall_ms(clock: Clock) -> int:
    """The clock's wall time in whole milliseconds since the Unix epoch (UTC)."""
    return int(clock.time() * 1000)


def next_ts(now_ms: int, last: int) -> int:
    """A batch's time: the clock's, unless that is behind the last time this shard gave (a
    clock stepped back, another node's clock after a failover): time never goes backwards."""
    return now_ms if now_ms > last else last


def time_command(ts: int) -> tuple[int, int]:
    """The journaled command that gives a batch its time (``engine.codes.OP_TIME``)."""
    return (OP_TIME, ts)


def is_time_command(cmd: Any) -> bool:
    """Whether ``cmd`` is an ``OP_TIME`` command (of the shape leaders journal)."""
    return type(cmd) is tuple and len(cmd) == 2 and cmd[0] == OP_TIME


def stamp(machine: Any, journal: Any, wall: Callable[[], int]) -> int:
    """Journal and apply a batch's ``OP_TIME`` before its first write: the clock's time
    (``wall()``, ms), never below the machine's last; returns it. Each tier's leader calls
    this, so the pure machine only ever receives its time as a command."""
    ts = next_ts(wall(), machine.ts)
    cmd = time_command(ts)
    journal.add(machine.seq, cmd)
    machine.apply(cmd, [])
    return ts


class TimeMarks:
    """Seq → exchange time, as marks ``(seq, ts)`` in seq order (one per change of time).

    ``at(seq)`` is the ts of the newest mark at or below ``seq``; a seq before the first mark
    has no known time here (None). ``prune`` forgets marks older than what the caller still
    serves (its event ring's first seq)."""

    __slots__ = ("seqs", "tss")

    def __init__(self, marks: Sequence[Sequence[int]] = ()) -> None:
        self.seqs: list[int] = []
        self.tss: list[int] = []
        for seq, ts in marks:
            self.mark(seq, ts)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def last(self) -> int | None:
        """The newest time marked (None: none yet)."""
        return self.tss[-1] if self.tss else None

    def mark(self, seq: int, ts: int) -> None:
        """Events from ``seq`` on have time ``ts`` (``seq`` never below the last mark's)."""
        seqs, tss = self.seqs, self.tss
        if seqs:
            if tss[-1] == ts:
                return  # (the time did not change: the last mark covers it)
            if seqs[-1] >= seq:  # (a batch that emitted nothing: its mark covers no event)
                seqs.pop()
                tss.pop()
                if tss and tss[-1] == ts:
                    return
        seqs.append(seq)
        tss.append(ts)

    def at(self, seq: int) -> int | None:
        k = bisect_right(self.seqs, seq) - 1
        return self.tss[k] if k >= 0 else None

    def runs(self, first: int, last: int) -> list[list[int]] | None:
        """The marks that cover ``first..last``, as ``[[seq, ts], ...]`` with the first one's
        seq raised to ``first``; None when ``first`` is before the first mark."""
        seqs = self.seqs
        k = bisect_right(seqs, first) - 1
        if k < 0:
            return None
        out = [[first, self.tss[k]]]
        k += 1
        while k < len(seqs) and seqs[k] <= last:
            out.append([seqs[k], self.tss[k]])
            k += 1
        return out

    def prune(self, first: int) -> None:
        """Forget the marks no seq >= ``first`` needs."""
        k = bisect_right(self.seqs, first) - 1
        if k > 0:
            del self.seqs[:k]
            del self.tss[:k]

    def snapshot(self) -> list[list[int]]:
        return [[s, t] for s, t in zip(self.seqs, self.tss, strict=True)]


def runs_of(events: list[Any], marks: TimeMarks, default: int,
            seq_at: int = 1) -> list[tuple[int, list[Any]]]:  # fmt: skip
    """``events`` (seq order) cut where their time changes: (ts, events) runs. A batch is one
    run (one time): the common case costs two look-ups. ``default``: the time of events
    before the first mark (none in a running node; 0 for what predates exchange time)."""
    if not events:
        return []
    at = marks.at
    ts = at(events[0][seq_at])
    ts = default if ts is None else ts
    if at(events[-1][seq_at]) == ts:
        return [(ts, events)]
    out: list[tuple[int, list[Any]]] = []
    start = 0
    for k, ev in enumerate(events):
        t = at(ev[seq_at])
        t = default if t is None else t
        if t != ts:
            if k > start:
                out.append((ts, events[start:k]))
            start, ts = k, t
    out.append((ts, events[start:]))
    return out


def check_runs(runs: Any) -> list[list[int]] | None:
    """Marks a peer sent (``OP_EVENTS`` replies), checked: a list of ``[seq, ts]`` int pairs
    in increasing seq order with sane values; None for anything else."""
    if type(runs) not in (list, tuple) or not runs or len(runs) > 1 << 20:
        return None
    out: list[list[int]] = []
    prev = -1
    for r in runs:
        if type(r) not in (list, tuple) or len(r) != 2:
            return None
        seq, ts = r
        if type(seq) is not int or type(ts) is not int or not prev < seq or not 0 <= ts <= MAX_TS:
            return None
        prev = seq
        out.append([seq, ts])
    return out


def ts_at(runs: list[list[int]], seq: int) -> int:
    """The time of ``seq`` in checked ``runs`` (0 before the first: unknown)."""
    ts = 0
    for s, t in runs:
        if s > seq:
            break
        ts = t
    return ts


__all__ = [
    "MAX_TS",
    "TIME_MARKS_PRUNE",
    "TimeMarks",
    "check_runs",
    "is_time_command",
    "next_ts",
    "runs_of",
    "stamp",
    "time_command",
    "ts_at",
    "wall_ms",
]
