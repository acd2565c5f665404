"""Reading a journal back: recovery (newest valid snapshot + replay of the records after it,
torn tails cut), events regenerated for gap repair, and bounded replays for re-sends.

A record cut short at the end of the newest segment is a torn write from a crash: it is
truncated on recovery (and logged). A bad record anywhere else means the file is damaged:
recovery refuses, naming the file and the offset. A segment may end in zeros (preallocated,
never-written space), which recovery cuts off like a torn tail.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardex.engine import Engine, Market
from shardex.engine.codes import Event
from shardex.journal.disk import (
    OS_DISK,
    Disk,
    JournalError,
    _reason,
    _seq_of,
    truncate_file,
    write_back,
)
from shardex.journal.records import SegmentScan, iter_records, segment_paths
from shardex.journal.snapshots import (
    ENGINE,
    Machine,
    best_snapshot,
)
from shardex.timemarks import TimeMarks, is_time_command
from shardex.wire.layouts import EV_SEQ
from shardex.wire.protocol import unpackb

log = logging.getLogger("shardex.journal")

PROGRESS_EVERY = 1024  # records between two progress reports of a replay


def _sizes(paths: list[Path], disk: Disk) -> int:
    total = 0
    for p in paths:
        try:
            total += disk.getsize(p)
        except OSError:
            pass
    return total


class _Meter:
    """A replay's progress reports (``Journal.recover``'s ``progress``): at the start, every
    ``PROGRESS_EVERY`` records, at the end; bytes read against the bytes of its segments."""

    def __init__(
        self, segments: list[Path], progress: Callable[[int, int, int], None] | None, disk: Disk
    ) -> None:
        self.progress = progress
        self.total = _sizes(segments, disk) if progress is not None else 0
        self.read = 0  # bytes of the segments before the current one
        if progress is not None:
            progress(0, 0, self.total)  # the snapshot is loaded: the replay starts

    def record(self, replayed: int, scan: SegmentScan) -> None:
        if self.progress is not None and scan.records % PROGRESS_EVERY == 0:
            self.progress(replayed, self.read + scan.good_bytes, self.total)

    def end(self, replayed: int) -> None:
        if self.progress is not None:
            self.progress(replayed, self.total, self.total)


def uncovered(segments: list[Path], seq: int) -> list[Path]:
    """``segments`` (sorted) without those a snapshot at ``seq`` covers whole: a segment whose
    successor starts at or before ``seq`` holds only records before it. A restart reads only
    the rest (retention keeps older segments for gap repair and the previous snapshot)."""
    return [s for s, nxt in zip(segments, [*segments[1:], None], strict=True)
            if nxt is None or _seq_of(nxt) > seq]  # fmt: skip


def replay_segments(
    engine: Engine,
    segments: list[Path],
    ends: dict[Path, int] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    disk: Disk = OS_DISK,
) -> tuple[int, list[SegmentScan]]:
    """Apply every record after ``engine.seq``; return (commands replayed, torn tails to cut).

    Read-only: the caller truncates. Raises JournalError on damage, a gap, or a torn older
    segment that the next one does not continue. ``ends`` receives, per segment with a replayed
    record, the seq reached after its last record (the last event seq it produced).
    """
    replayed = 0
    cut: list[SegmentScan] = []
    torn: SegmentScan | None = None  # a torn older segment, until a later one continues it
    meter = _Meter(segments, progress, disk)
    for i, path in enumerate(segments):
        scan = SegmentScan(path)
        n, torn = _replay_segment(engine, scan, torn, cut, meter, replayed, ends, disk)
        replayed += n
        if scan.damage:
            raise JournalError(
                f"journal damaged: {scan.damage}; refusing to start "
                "(restore the file or move it away to start from what is left)"
            )
        if scan.torn:
            if i == len(segments) - 1:
                cut.append(scan)
            else:
                torn = scan  # acceptable only if a later segment continues it
        elif scan.zeros:
            cut.append(scan)  # preallocated space the writer never reached
        meter.read += scan.size
    meter.end(replayed)
    if torn is not None:
        cut.append(torn)  # only empty segments follow it: it is the end of the log
    return replayed, cut


def _replay_segment(
    engine: Engine,
    scan: SegmentScan,
    torn: SegmentScan | None,
    cut: list[SegmentScan],
    meter: _Meter,
    replayed: int,
    ends: dict[Path, int] | None,
    disk: Disk,
) -> tuple[int, SegmentScan | None]:
    """Apply one segment's records after ``engine.seq``: (commands replayed, the torn older
    segment still waiting to be continued, or None once this one continued it)."""
    out: list[Event] = []
    apply = engine.apply
    n = 0
    path = scan.path
    for seq, payload in iter_records(path, scan, disk):
        meter.record(replayed + n, scan)
        if torn is not None:
            if seq > engine.seq:
                raise JournalError(
                    f"journal damaged: {torn.path} offset {torn.good_bytes}: "
                    f"incomplete record, and {path} does not continue it (starts at "
                    f"seq {seq}, the journal ends at {engine.seq}); refusing to start"
                )
            cut.append(torn)
            torn = None
        if seq < engine.seq:
            continue  # covered by the snapshot (snapshots fall between records)
        if seq != engine.seq:
            raise JournalError(
                f"{path}: record with seq {seq} but the engine is at {engine.seq} "
                "(missing records or a foreign file); refusing to start"
            )
        cmds = unpackb(payload)
        for cmd in cmds:
            apply(cmd, out)
        out.clear()
        n += len(cmds)
        if ends is not None:
            ends[path] = engine.seq
    return n, torn


@dataclass
class Recovered:
    engine: Engine
    snapshot_seq: int | None
    replayed: int
    truncated: list[str] = field(default_factory=list)


def recover(
    directory: Path,
    markets: Mapping[str, Market],
    machine: Machine = ENGINE,
    progress: Callable[[int, int, int], None] | None = None,
    disk: Disk = OS_DISK,
) -> Recovered:
    """Newest valid snapshot + replay of every record after it. Truncates a torn tail, and
    writes back the replayed segments (``_make_durable``: a failed sync's records).

    A torn record may end the newest segment (a crash mid-write), or an older one when
    the next segment continues exactly where its last whole record ended (a write that
    failed and could not be cut off, after which the writer rolled a new segment).
    Anything else that is incomplete or bad is damage: recovery refuses, naming it.
    ``progress(commands done, bytes read, bytes to read)`` is called as the replay goes.
    """
    engine, snap_seq = best_snapshot(directory, markets, machine, disk)
    segments = segment_paths(directory, disk)
    if snap_seq is not None:
        segments = uncovered(segments, snap_seq)
    replayed, cut = replay_segments(engine, segments, progress=progress, disk=disk)
    truncated = _cut_tails(cut, disk)
    _make_durable(segments, disk)
    return Recovered(engine, snap_seq, replayed, truncated)


def _make_durable(segments: list[Path], disk: Disk) -> None:
    """Write back and sync every segment just replayed, before anything is built on it.

    A record the previous process wrote but failed to sync (an EIO, and the cut of that
    record failed too) is readable now from the page cache, may be absent from the disk, and
    would be acked on top of: a power loss would then leave a hole below acked records. The
    cost is one write of what the replay read (the records since the newest snapshot).
    An I/O error here refuses the start: building on records that may not be on the disk
    would be worse. A full disk does not: overwriting bytes in place needs no new space on
    an ordinary file system (where it does, copy-on-write, the records written before the
    disk filled were synced then), so the shard starts and serves reads as it would have."""
    for path in segments:
        try:
            write_back(disk, path)
        except FileNotFoundError:
            continue  # (an empty preallocated segment cut away above)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                log.warning("cannot write back %s (%s): going on with what it holds",
                            path, _reason(exc))  # fmt: skip
                continue
            raise JournalError(f"{path}: cannot make the replayed records durable: "
                               f"{_reason(exc)}") from exc  # fmt: skip


def _cut_tails(cut: list[SegmentScan], disk: Disk) -> list[str]:
    """Truncate each torn tail or preallocated end; the torn ones as ``path@offset``."""
    truncated = []
    for scan in cut:
        if scan.torn:
            log.warning(
                "truncating torn tail of %s at offset %d (%d bytes of a partial record "
                "from a crash or a failed write)",
                scan.path,
                scan.good_bytes,
                scan.size - scan.good_bytes,
            )
        else:
            log.info("trimming %d preallocated bytes off %s", scan.zeros, scan.path)
        truncate_file(disk, scan.path, scan.good_bytes)
        if scan.torn:
            truncated.append(f"{scan.path}@{scan.good_bytes}")
    return truncated


class EventReader:
    """Events of a seq range regenerated by replaying a journal directory from its best
    snapshot: what repairs gaps older than what a shard keeps in memory. A repair walks forward
    in consecutive ranges, so the replay position is kept between calls: a long repair costs
    one pass over the journal, not one pass per range. The position is a ``Replay`` (made by
    ``replay_from(at)``: ``Journal.replay_from``), the same cursor the link re-sends use."""

    def __init__(self, replay_from: Callable[[int], Replay]) -> None:
        self.replay_from = replay_from
        self._cursor: tuple[Replay, list[Event]] | None = None

    def events(self, first: int, last: int, budget: int | None = None) -> list[Event]:
        """Events with seq in [first, last]; JournalError when the range is no longer covered
        (trimmed by snapshot retention). ``budget`` caps the commands replayed by this call:
        when the replay has not reached ``first`` yet, the result is empty and the position
        is kept, so asking again continues where this call stopped."""
        cur = self._cursor
        try:
            if cur is None or (cur[1][0][1] > first if cur[1] else cur[0].machine.seq >= first):
                cur = self._cursor = (self.replay_from(first - 1), [])
            replay, buf = cur
            _drop_before(buf, first)
            start = replay.replayed
            while replay.machine.seq < last:
                if budget is not None and replay.replayed - start >= budget:
                    if replay.machine.seq < first:
                        return []  # not there yet: the cursor keeps the position for the next call
                buf.extend(replay.step(1))  # (one record; at the end, records committed since
                _drop_before(buf, first)  # the replay began are read on from where it stands)
                if replay.done:
                    break
        except JournalError as exc:  # records trimmed by snapshot retention (before or meanwhile)
            self._cursor = None
            raise JournalError(f"events {first}..{last} are no longer in the journal ({exc})"
                               ) from None  # fmt: skip
        return self._result(buf, first, last)

    def times(self, first: int, last: int) -> list[list[int]] | None:
        """The time marks (``timemarks.TimeMarks.runs``) of ``first..last`` as the last
        ``events`` call's replay saw them (None: no replay under way, or none covers it)."""
        cur = self._cursor
        if cur is None:
            return None
        cur[0].times.prune(first)
        return cur[0].times.runs(first, last)

    def _result(self, buf: list[Event], first: int, last: int) -> list[Event]:
        result = [e for e in buf if e[EV_SEQ] <= last]
        if not result or result[0][1] != first:
            self._cursor = None
            raise JournalError(f"events {first}..{last} are no longer in the journal")
        return result


def _drop_before(buf: list[Event], first: int) -> None:
    if buf and buf[0][1] < first:
        del buf[: max(0, min(len(buf), first - buf[0][1]))]


class Replay:
    """A machine moved forward through committed journal records, a bounded number of
    commands per ``step`` (the caller's loop must not stall on one repair). Read-only: it
    never touches the journal's files or the live machine. Made by ``Journal.replay_from``."""

    def __init__(
        self, machine: Any, records_from: Callable[[int], Iterator[tuple[int, bytes]]]
    ) -> None:
        self.machine = machine
        self._records_from = records_from
        self._records = records_from(machine.seq)
        self.done = False  # the last step reached the end of what is on disk (for now)
        self.replayed = 0  # commands replayed so far
        # seq → exchange time of the events replayed (an ``OP_TIME`` heads a batch's records)
        self.times = TimeMarks([(machine.seq + 1, getattr(machine, "ts", 0))])

    def step(self, budget: int) -> list[Event]:
        """Replay whole records until ``budget`` commands are spent or the journal ends; the
        events they produced. Raises JournalError on a hole (a record that does not start at
        the machine's seq: trimmed away, or a foreign file)."""
        out: list[Event] = []
        spent = 0
        self.done = False
        reopened = False
        while spent < budget:
            try:
                seq, payload = next(self._records)
            except StopIteration:
                if reopened:
                    self.done = True
                    break
                # records committed since this replay began: read on from where it stands
                reopened = True
                self._records = self._records_from(self.machine.seq)
                continue
            except OSError as exc:  # a segment removed by snapshot retention meanwhile
                raise JournalError(f"journal replay failed: {_reason(exc)}") from None
            if seq < self.machine.seq:
                continue  # covered by the snapshot
            if seq != self.machine.seq:
                raise JournalError(
                    f"journal record at seq {seq}, replay at {self.machine.seq}: "
                    "the records in between are no longer on disk"
                )
            cmds = unpackb(payload)
            machine, times = self.machine, self.times
            for cmd in cmds:
                machine.apply(cmd, out)
                if is_time_command(cmd):  # (a record may hold several batches: a standby's)
                    times.mark(machine.seq + 1, machine.ts)
            spent += len(cmds)
        self.replayed += spent
        return out
