"""Durability for a shard: append-only command journal, snapshots, deterministic recovery.

The engine is deterministic, so the journal stores *commands*, not state: recovery loads the
newest valid snapshot and re-applies the journaled commands after it, which reproduces the exact
books, sequence numbers and trade ids of the uninterrupted run.

Layout of a journal directory::

    journal-<first seq, 20 digits>.log   segments, rolled at a size limit
    snapshot-<seq, 20 digits>.snap       engine state at seq (temp, fsync, rename, fsync dir)

Modules (one concern each; everything is importable from ``shardex.journal``):

* ``records``: the record format and segment scanning (``iter_records``, ``SegmentScan``).
* ``segment``: the segment writer (durable appends, rolling, preallocation, cutting failed
  writes off); ``commit``: group commit and the writer thread on top of it.
* ``snapshots``: writing and reading snapshots, and ``Machine`` (what a journal replays into).
* ``recovery``: recovery (torn tails cut, damage refused), events for gap repair, ``Replay``.
* ``truncate``: cutting a journal back to a seq, crash-safe (a deposed leader's divergent tail).
* ``core``: ``Journal``, one directory, tying them together; ``inspection``: ``inspect``.
* ``disk``: file names, errors, and ``Disk``, the seam every file operation goes through
  (``OS_DISK``: the operating system's calls, patched by fault tests; the simulator's
  ``shardex.sim.disk.SimDisk``); ``Journal(disk=...)``, a node's from ``net.disk``.
"""

from __future__ import annotations

from shardex.journal import disk
from shardex.journal.commit import (
    GroupCommit,
)
from shardex.journal.core import (
    Journal,
)
from shardex.journal.disk import (
    EPOCH_FILE,
    OS_DISK,
    Disk,
    JournalError,
    JournalUnavailable,
    _fsync_dir,
    _reason,
    _seg_name,
    _seq_of,
    _snap_name,
)
from shardex.journal.inspection import (
    inspect,
)
from shardex.journal.records import (
    HEADER,
    MAX_RECORD,
    SEQ,
    SegmentScan,
    _array,
    _frame,
    _zeros_after,
    _zeros_from,
    encode_records,
    iter_records,
    read_commands,
    records_at,
    records_from,
    segment_paths,
)
from shardex.journal.recovery import (
    PROGRESS_EVERY,
    EventReader,
    Recovered,
    Replay,
    recover,
    replay_segments,
    uncovered,
)
from shardex.journal.segment import (
    FSYNC_POLICIES,
    PREALLOCATE,
    SegmentWriter,
)
from shardex.journal.snapshots import (
    ENGINE,
    SNAP_MAGIC,
    Machine,
    best_snapshot,
    open_orders,
    read_snapshot,
    restore_engine,
    snapshot_books,
    snapshot_paths,
    write_snapshot,
)
from shardex.journal.truncate import (
    Plan,
    plan_truncation,
    truncate_from,
)

_best_snapshot = best_snapshot  # the names they had in the single-module journal
_replay = replay_segments
_open_orders = open_orders

__all__ = [
    "Disk",
    "ENGINE",
    "EPOCH_FILE",
    "EventReader",
    "FSYNC_POLICIES",
    "GroupCommit",
    "HEADER",
    "Journal",
    "JournalError",
    "JournalUnavailable",
    "MAX_RECORD",
    "Machine",
    "OS_DISK",
    "PREALLOCATE",
    "Plan",
    "PROGRESS_EVERY",
    "Recovered",
    "Replay",
    "SEQ",
    "SNAP_MAGIC",
    "SegmentScan",
    "SegmentWriter",
    "_array",
    "_best_snapshot",
    "_frame",
    "_fsync_dir",
    "_open_orders",
    "_reason",
    "_replay",
    "_seg_name",
    "_seq_of",
    "_snap_name",
    "_zeros_after",
    "_zeros_from",
    "best_snapshot",
    "disk",
    "encode_records",
    "inspect",
    "iter_records",
    "open_orders",
    "plan_truncation",
    "read_commands",
    "read_snapshot",
    "records_at",
    "records_from",
    "recover",
    "replay_segments",
    "restore_engine",
    "segment_paths",
    "snapshot_books",
    "snapshot_paths",
    "truncate_from",
    "uncovered",
    "write_snapshot",
]
