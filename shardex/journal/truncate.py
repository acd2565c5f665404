"""Cutting a journal back to a seq: what a replica that led and was deposed does with the
records it journaled past the start of the next leader's epoch (they were never acknowledged,
and the new leader's history from that seq differs), instead of throwing its whole journal
away and copying it again from seq 0 (as Kafka truncates a follower to the leader epoch's
start offset).

``plan_truncation`` is pure over the directory's listing and the snapshots it reads: it says
what ``truncate_from`` will remove and whether the result can be recovered, before anything
is touched. ``truncate_from`` then removes, in an order where a crash at any point leaves a
journal that recovery accepts and that never claims a record it dropped:

1. snapshots with seq above the cut (newest first, each unlink made durable): a crash leaves
   older snapshots, whose records are all still there;
2. segments wholly at or past the cut (newest first, each unlink made durable): what is left
   is always a contiguous prefix of the records, never a hole;
3. the records at or past the cut in the one segment that holds both sides: one ``ftruncate``
   and ``fsync`` (the file is either cut or whole).

A crash in between leaves records past the cut that recovery replays; the caller's check
(the replica's: its seq is still past the epoch's start, and its epoch file is untouched until
the new leader's first record arrives) finds the divergence again and cuts again.

What it cannot repair (``Plan.why`` says which): no valid snapshot at or below the cut and the
records from seq 0 up to it no longer on disk (snapshot retention removed the segments before
a snapshot taken past the cut). The caller moves such a journal aside and copies from the
leader, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from shardex.journal.disk import Disk, _seq_of, truncate_file
from shardex.journal.records import SegmentScan, iter_records, segment_paths
from shardex.journal.recovery import uncovered
from shardex.journal.snapshots import read_snapshot, snapshot_paths

log = logging.getLogger("shardex.journal")


@dataclass
class Plan:
    """What ``truncate_from(at)`` removes: ``snapshots`` (seq above ``at``), ``segments``
    (wholly at or past ``at``), ``cut`` (the segment holding the first record at or past
    ``at``, and its offset); ``base``: the seq of the snapshot recovery starts from afterwards
    (None: from seq 0); ``why``: set when the result could not be recovered (nothing is done)."""

    at: int
    base: int | None = None
    snapshots: list[Path] = field(default_factory=list)
    segments: list[Path] = field(default_factory=list)
    cut: tuple[Path, int] | None = None
    why: str | None = None

    @property
    def empty(self) -> bool:
        """Nothing at or past ``at``: the journal already ends there."""
        return not (self.snapshots or self.segments or self.cut)


def _base(directory: Path, at: int, disk: Disk) -> int | None:
    """The seq of the newest snapshot at or below ``at`` that reads back valid (None)."""
    for path in reversed(snapshot_paths(directory, disk)):
        if _seq_of(path) <= at:
            state = read_snapshot(path, disk)
            if state is not None and state.get("seq") == _seq_of(path):
                return _seq_of(path)
    return None


def _cut_point(path: Path, at: int, after: int | None,
               disk: Disk) -> tuple[tuple[Path, int] | None, int]:  # fmt: skip
    """Where to cut ``path`` (the last segment named below ``at``): (the segment and the offset
    of the first record dropped, or None: nothing in it goes; the seq the journal ends at then).
    A record that starts below ``at`` and ends past it (a standby journals what it drained in
    one record, which may span several of the leader's batches) goes too: the cut moves to its
    start. Its end is where the next record starts, or ``after`` for the segment's last record
    (the next segment's first seq, or the seq the whole journal reaches)."""
    scan = SegmentScan(path)
    prev: tuple[int, int] | None = None  # (offset, seq) of the last record below ``at``
    offset = 0
    for seq, _ in iter_records(path, scan, disk):
        if seq >= at:
            if seq > at and prev is not None:  # (the previous record straddles ``at``)
                return (path, prev[0]), prev[1]
            return (path, offset), at
        prev = (offset, seq)
        offset = scan.good_bytes
    if prev is not None and after is not None and after > at:
        return (path, prev[0]), prev[1]
    return None, at


def plan_truncation(directory: Path, at: int, disk: Disk, end: int | None = None) -> Plan:
    """What cutting the journal in ``directory`` at ``at`` takes (see ``Plan``; ``end``: the
    seq its records reach, if known); reads the snapshots at or below the cut and the one
    segment that may straddle it, nothing else. ``Plan.at`` is where it ends afterwards:
    ``at``, or the start of a record that straddles it."""
    segs = segment_paths(directory, disk)
    kept = [s for s in segs if _seq_of(s) < at]
    later = [s for s in segs if _seq_of(s) >= at]
    cut = None
    if kept:
        cut, at = _cut_point(kept[-1], at, _seq_of(later[0]) if later else end, disk)
    plan = Plan(at, segments=later, cut=cut)
    plan.snapshots = [p for p in snapshot_paths(directory, disk) if _seq_of(p) > at]
    plan.base = _base(directory, at, disk)
    start = plan.base if plan.base is not None else 0
    rest = uncovered(kept, start) if kept else []  # (what recovery replays afterwards)
    first = _seq_of(rest[0]) if rest else None
    if start < at and (first is None or first > start):
        plan.why = (f"no valid snapshot at or below seq {at} that the records on disk continue "
                    f"(recovery would start at seq {start}, the records "
                    + (f"at {first})" if first is not None else "are gone)"))  # fmt: skip
    return plan


def truncate_from(directory: Path, at: int, disk: Disk, end: int | None = None) -> Plan:
    """Remove every record with seq >= ``at`` (and one that straddles it: ``plan.at`` says
    where the journal ends then) and every snapshot past that, crash-safe (see the module).
    ``end``: the seq the journal's records reach, if known (a last record that straddles
    ``at`` is found by it). Returns the plan it carried out; nothing is done when
    ``plan.why`` is set. The journal must not be open for writing meanwhile (close it)."""
    plan = plan_truncation(directory, at, disk, end)
    if plan.why is not None or plan.empty:
        return plan
    for path in reversed(plan.snapshots):
        disk.unlink(path)
        disk.fsync_dir(directory)
    for path in reversed(plan.segments):
        disk.unlink(path)
        disk.fsync_dir(directory)
    if plan.cut is not None:
        truncate_file(disk, *plan.cut)
    cut = f", {plan.cut[0].name} cut at offset {plan.cut[1]}" if plan.cut else ""
    log.warning("journal %s cut at seq %d: %d snapshot(s) and %d segment(s) removed%s",
                directory, at, len(plan.snapshots), len(plan.segments), cut)  # fmt: skip
    return plan

