"""``inspect``: what is in a journal directory, and any damage, without changing anything
(``shardex journal inspect``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shardex.engine import DEFAULT_MARKETS, Market
from shardex.journal.disk import OS_DISK, Disk, JournalError, _seq_of
from shardex.journal.records import SegmentScan, iter_records, segment_paths
from shardex.journal.recovery import replay_segments, uncovered
from shardex.journal.snapshots import (
    ENGINE,
    Machine,
    best_snapshot,
    open_orders,
    read_snapshot,
    snapshot_paths,
)
from shardex.wire.protocol import unpackb


def inspect(
    directory: str | Path,
    markets: Mapping[str, Market] | None = None,
    machine: Machine = ENGINE,
    check: Callable[[Any], list[str]] | None = None,
    disk: Disk = OS_DISK,
) -> dict[str, Any]:
    """What is in a journal directory, and any damage, without changing anything.

    Record headers hold the seq *before* their commands, so ``first_seq``/``last_seq`` of a
    segment are not event seqs. The event seqs are ``first_event_seq``/``last_event_seq`` per
    segment and ``seq`` overall: the seq a recovery would reach (found by replaying from the
    newest valid snapshot with ``markets``, default the built-in table, into ``machine``: the
    one the shard that wrote the journal recovers with; ``seq`` is None and ``seq_error`` says
    why when recovery would refuse). ``check(machine)`` after that replay lists what is wrong
    with the state it reached (``checks``).
    """
    d = Path(directory)
    if not disk.isdir(d):
        raise JournalError(f"{d} is not a directory")
    markets = DEFAULT_MARKETS if markets is None else markets
    paths = segment_paths(d, disk)
    segs = [_segment(path, disk) for path in paths]
    snaps = [_snapshot(path, disk) for path in snapshot_paths(d, disk)]
    seq: int | None = None
    seq_error = None
    snap_seq = None
    checks: list[str] = []
    ends: dict[Path, int] = {}
    try:
        engine, snap_seq = best_snapshot(d, markets, machine, disk)
        # what recovery reads: not the segments the snapshot covers whole (their damage is
        # still reported per segment, but a restart does not refuse over it)
        replay_segments(engine, paths if snap_seq is None else uncovered(paths, snap_seq), ends,
                        disk=disk)  # fmt: skip
        seq = engine.seq
        if check is not None:
            checks = check(engine)
    except JournalError as exc:
        seq_error = str(exc)
    _event_ends(paths, segs, ends, snap_seq)
    return {
        "dir": str(d),
        "segments": segs,
        "snapshots": snaps,
        "records": sum(s["records"] for s in segs),
        "commands": sum(s["commands"] for s in segs),
        "seq": seq,
        "seq_error": seq_error,
        "checks": checks,
    }


def _segment(path: Path, disk: Disk) -> dict[str, Any]:
    """One segment's summary (its ``last_event_seq`` is filled in by ``_event_ends``)."""
    scan = SegmentScan(path)
    commands = sum(len(unpackb(payload)) for _, payload in iter_records(path, scan, disk))
    torn = f"{scan.size - scan.good_bytes} bytes at offset {scan.good_bytes}" if scan.torn else None
    return {
        "file": path.name,
        "bytes": scan.size,
        "records": scan.records,
        "commands": commands,
        "first_seq": scan.first_seq,
        "last_seq": scan.last_seq,
        "first_event_seq": None if scan.first_seq is None else scan.first_seq + 1,
        "last_event_seq": None,
        "damage": scan.damage,
        "torn_tail": torn,
    }


def _snapshot(path: Path, disk: Disk) -> dict[str, Any]:
    state = read_snapshot(path, disk)
    return {
        "file": path.name,
        "seq": _seq_of(path),
        "valid": state is not None,
        "orders": None if state is None else open_orders(state),
    }


def _event_ends(
    paths: list[Path], segs: list[dict[str, Any]], ends: dict[Path, int], snap_seq: int | None
) -> None:
    """A segment's events end where the next segment's records begin (records are
    contiguous), or where replay got to; a newest segment wholly covered by the snapshot ends
    at it (the journal commits, snapshots, then starts a new segment)."""
    following: int | None = None
    for path, seg in zip(reversed(paths), reversed(segs), strict=True):
        if path in ends:
            seg["last_event_seq"] = ends[path]
        elif seg["records"]:
            if following is not None:
                seg["last_event_seq"] = following
            elif snap_seq is not None and seg["last_seq"] < snap_seq:
                seg["last_event_seq"] = snap_seq
        if seg["first_seq"] is not None:
            following = seg["first_seq"]
