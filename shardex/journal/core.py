"""``Journal``: one shard's journal directory — group commit (``commit``), snapshots, recovery
and reading back (gap repair, re-sends, replication)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from shardex.engine import Engine, Market
from shardex.engine.codes import Command, Event
from shardex.journal.commit import GroupCommit
from shardex.journal.dirlock import release
from shardex.journal.disk import (
    EPOCH_FILE,
    OS_DISK,
    Disk,
    JournalError,
    _reason,
    _seq_of,
    write_file,
)
from shardex.journal.records import MAX_RECORD, read_commands, records_at, records_from
from shardex.journal.recovery import EventReader, Recovered, Replay, recover
from shardex.journal.snapshots import (
    ENGINE,
    Machine,
    read_snapshot,
    restore_engine,
    snapshot_paths,
    write_snapshot,
)

log = logging.getLogger("shardex.journal")


class Journal(GroupCommit):
    """One shard's journal directory: append (group commit), snapshot, recover, read back.

    ``disk``: where its files are (``shardex.journal.disk``): the operating system's by
    default, a ``SimDisk`` in the simulator; every file operation goes through it.
    """

    def __init__(
        self,
        directory: str | Path,
        markets: Mapping[str, Market],
        fsync: str = "batch",
        segment_bytes: int = 64 << 20,
        keep_snapshots: int = 2,
        max_record: int = MAX_RECORD,
        machine: Machine = ENGINE,
        preallocate: int | None = None,
        disk: Disk = OS_DISK,
    ) -> None:
        self.machine = machine
        super().__init__(directory, fsync, segment_bytes, max_record, preallocate, disk)
        self.markets = markets
        self.keep_snapshots = max(1, keep_snapshots)
        self._events = EventReader(self.replay_from)

    # -- recovery -------------------------------------------------------------------------------

    def snapshots(self) -> list[Path]:
        return snapshot_paths(self.dir, self.disk)

    def recover(self, progress: Callable[[int, int, int], None] | None = None) -> Recovered:
        """Newest valid snapshot + replay of every record after it; torn tails truncated
        (``recovery.recover``). ``progress(commands done, bytes read, bytes to read)``."""
        return recover(self.dir, self.markets, self.machine, progress, self.disk)

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, engine: Engine) -> Path:
        """Write a snapshot, start a new segment after it, drop what older snapshots cover.

        Commits buffered commands first (a snapshot must not hold state the log lacks);
        raises JournalUnavailable when that or the snapshot write fails. With the writer
        thread, ``commit`` returns once the writer's queue is empty, and only the caller
        submits: the writer is idle while the snapshot is written and the segment closed.
        """
        self.commit()
        path = write_snapshot(self.dir, engine, self.disk)
        if self._dirty is None:
            self._close_segment()  # next commit rolls a segment that starts at this seq
            try:  # ... created now, so a restart sees the snapshot covers every older segment
                self._roll(engine.seq)  # (and reads none of them)
            except OSError as exc:
                log.warning("cannot start the segment after snapshot %s: %s (the next commit "
                            "will)", path.name, _reason(exc))  # fmt: skip
        self._retain()
        return path

    def _retain(self) -> None:
        snaps = self.snapshots()
        if len(snaps) <= self.keep_snapshots:
            return
        for old in snaps[: -self.keep_snapshots]:
            self.disk.unlink(old)
        oldest_kept = _seq_of(snaps[-self.keep_snapshots])
        segs = self.segments()
        for seg, nxt in zip(segs, segs[1:], strict=False):
            if _seq_of(nxt) <= oldest_kept:
                self.disk.unlink(seg)  # every record in it precedes the oldest snapshot we keep

    def close(self) -> None:
        """Stop the writer (after it has written what is queued), close the segment."""
        self._stop_writer()
        if self._thread is None:
            self._close_segment()
        release(self._lock)
        self._lock = None

    def abandon(self) -> None:
        """Let go of the segment as a killed process does: its descriptor closed where it
        stands, nothing more written, synced or trimmed, the buffer dropped. What was written
        stays with the disk (the page cache keeps it; ``SimDisk.crash`` decides what of it was
        durable). The simulator's crash of a node; not for a journal with a writer thread."""
        if self._thread is not None:
            raise RuntimeError("abandon() is for a journal without a writer thread")
        fd, self._fd = self._fd, None
        self._buf, self._seqs = [], []
        if fd is not None:
            try:
                self.disk.close(fd)
            except OSError:
                pass  # (already closed by the disk's crash)

    # -- reading back ------------------------------------------------------------------------

    def commands(self) -> Iterator[tuple[int, Command]]:
        return read_commands(self.dir, self.disk)

    def events(self, first: int, last: int, budget: int | None = None) -> list[Event]:
        """Events with seq in [first, last], regenerated by replaying from the best snapshot
        (``recovery.EventReader``: the position is kept between calls; ``budget`` caps the
        commands replayed by one call). JournalError when the range is no longer covered."""
        return self._events.events(first, last, budget)

    def event_times(self, first: int, last: int) -> list[list[int]] | None:
        """The exchange time marks of ``first..last`` as the last ``events`` call replayed
        them (``[[seq, ts], ...]``, ``timemarks.TimeMarks.runs``), None if unknown."""
        return self._events.times(first, last)

    def replay_from(self, at: int) -> Replay:
        """A ``Replay`` of this journal's machine from the newest snapshot with seq <= ``at``
        (or from the start): what a re-send older than an in-memory ring regenerates its
        messages with (the account tier's settlements). Raises JournalError when the records
        after that snapshot are no longer on disk."""
        base = None
        for path in reversed(self.snapshots()):
            if _seq_of(path) > at:
                continue  # (named by its seq: not worth reading)
            state = read_snapshot(path, self.disk)
            if state is not None and state["seq"] <= at:
                base = restore_engine(state, self.markets, self.machine)
                break
        machine = base if base is not None else self.machine.new(self.markets)
        segs = self.segments()
        if segs and _seq_of(segs[0]) > machine.seq:  # (a later record would say so too, but
            # after a snapshot the only segment may still be empty)
            raise JournalError(
                f"journal records from seq {machine.seq} to {_seq_of(segs[0])} are no longer "
                "on disk (removed by snapshot retention)"
            )
        return Replay(machine, self._records_skipping)

    def _records_skipping(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Records with seq >= ``seq``, not reading the segments wholly before it."""
        return records_from(self.segments(), seq, self.disk)

    # -- replication: used only by ``shardex.node.replica`` ------------------------------------

    def records(self, first_seq: int, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Up to ``limit`` committed records (seq before, msgpack payload), the first starting
        exactly at ``first_seq`` ([] if no record starts there: trimmed away, or not written
        yet). Segments wholly before ``first_seq`` are not read."""
        return records_at(self.segments(), first_seq, limit, self.disk)

    def read_epoch(self) -> int:
        """The highest leader epoch this journal has seen (0: never replicated)."""
        try:
            return int(self.disk.read_bytes(self.dir / EPOCH_FILE).strip() or 0)
        except (OSError, ValueError):
            return 0

    def write_epoch(self, epoch: int) -> None:
        """Record ``epoch`` durably (never lowers it): written before anything of that epoch
        is journaled, so a node's epoch never goes backwards across restarts."""
        if epoch <= self.read_epoch():
            return
        tmp = self.dir / (EPOCH_FILE + ".tmp")
        write_file(self.disk, tmp, f"{epoch}\n".encode())
        self.disk.replace(tmp, self.dir / EPOCH_FILE)
        self.disk.fsync_dir(self.dir)
