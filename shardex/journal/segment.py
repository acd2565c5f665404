"""The segment writer: appends framed records to ``journal-<first seq>.log`` segments, durably
(one write, then one sync per the fsync policy), rolling at a size limit.

Writes are unbuffered at the end of the last record: after a failed write the file holds
exactly what the kernel took, which is cut off again (``_cut``); a segment whose failed write
could not be cut off is left for a new one (recovery accepts a torn record at the end of a
segment only when the next segment continues exactly where its last whole record ended).

A syncing writer preallocates its segment in ``PREALLOCATE`` steps of written (and synced)
zeros ahead of the last record, so a group commit's sync (``fdatasync``) has only data to
flush, not the file's new size, and does not wait for the file system's journal commit
(measured on ext4: p50 a quarter less, p90 under contention 0.5 ms instead of 4;
``bench/journal.py --sync-micro``). A clean close trims the zeros.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from time import perf_counter

from shardex.journal.dirlock import hold
from shardex.journal.disk import OS_DISK, Disk, JournalUnavailable, _reason, _seg_name, listed
from shardex.journal.records import MAX_RECORD

log = logging.getLogger("shardex.journal")

# Zeros the writer thread keeps written ahead of its last record. Small steps: each costs one
# extra write + sync (~1 in 600 one-order commits), and space preallocated is space a full disk
# does not report until it is used up.
PREALLOCATE = 64 << 10
FSYNC_POLICIES = ("always", "batch", "none")


class SegmentWriter:
    """Durable appends to a journal directory's segments (the bottom layer of ``Journal``)."""

    def __init__(
        self,
        directory: str | Path,
        fsync: str = "batch",
        segment_bytes: int = 64 << 20,
        max_record: int = MAX_RECORD,
        preallocate: int | None = None,
        disk: Disk = OS_DISK,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if not 64 <= max_record <= MAX_RECORD:
            raise ValueError(f"max_record must be in 64..{MAX_RECORD} (what recovery accepts)")
        self.max_record = max_record
        self.dir = Path(directory)
        self.disk = disk  # every file operation of this journal (``shardex.journal.disk``)
        disk.makedirs(self.dir)
        self._lock: str | None = None  # the directory's lock, from the first write (``dirlock``)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._fd: int | None = None  # current segment, O_APPEND, unbuffered (see commit)
        self._path: Path | None = None
        self._size = 0  # bytes of whole records in the current segment
        self._dirty: Path | None = None  # a segment whose failed write could not be cut off
        self.healthy = True  # False from a failed commit until one succeeds
        self.last_error: str | None = None  # one-line reason of the last failed write
        self.records_written = 0
        self.last_write_s = 0.0  # timings of the last commit, read by the shard's metrics
        self.last_fsync_s = 0.0
        # zeros kept written ahead of the last record (default: PREALLOCATE when syncing)
        self.preallocate = max(0, preallocate if preallocate is not None else
                               (PREALLOCATE if fsync != "none" else 0))  # fmt: skip
        self._alloc = 0  # bytes of the current segment file (records + preallocated zeros)
        # ``sync_behind`` (a replicated leader in ``--durability replicated``): a commit writes
        # and returns; its sync is made later by ``sync_pending`` (the standby has the batch
        # durably meanwhile). ``_unsynced``: those writes since the last sync, kept to be
        # written again if the sync fails (after a failed sync Linux may drop them).
        self.sync_behind = False
        self._unsynced: list[bytes] = []
        self._unsynced_at = 0  # where the first of them starts in the current segment
        self._resync = False  # a sync failed: write them again before anything else

    def hold_dir(self) -> None:
        """Become the directory's one writing process (``shardex.journal.dirlock``;
        ``JournalInUse`` if another has it). At the first segment opened for writing, or when
        a node starts the writer thread: a journal only read (recovery, tools, tests) never
        takes it, so reading a live shard's directory stays possible."""
        if self._lock is None:
            self._lock = hold(self.dir, self.disk)

    def segments(self) -> list[Path]:
        return listed(self.disk, self.dir, "journal-", ".log")

    def _write_durably(self, data: bytes, first_seq: int, commands: int) -> None:
        """Append framed records (one write, then one fsync per policy); on any OSError cut
        the partial write off, mark the journal unhealthy and raise JournalUnavailable."""
        try:
            if self._dirty is not None:
                self._repair_tail()
            if self._unsynced and (self._resync or self._size >= self.segment_bytes):
                self._sync_unsynced()  # (a segment is never left with writes not synced)
            if self._fd is None or self._size >= self.segment_bytes:
                self._roll(first_seq)
            fd, disk = self._fd, self.disk
            assert fd is not None
            start = self._size
            if self.preallocate and start + len(data) > self._alloc:
                self._extend(start + len(data))
            sync = disk.fdatasync if start + len(data) <= self._alloc else disk.fsync
            t0 = perf_counter()
            try:
                disk.lseek(fd, start, os.SEEK_SET)  # (a failed write may have moved it)
                view = memoryview(data)
                write = disk.write
                while view:  # a write may take less than asked
                    view = view[write(fd, view) :]
                t1 = perf_counter()
                if self.fsync != "none" and self.sync_behind:
                    if not self._unsynced:
                        self._unsynced_at = start
                    self._unsynced.append(data)
                elif self.fsync != "none":
                    sync(fd)
                    self.last_fsync_s = perf_counter() - t1
            except OSError:
                self._cut(start)
                raise
        except OSError as exc:
            self.healthy = False
            self.last_error = _reason(exc)
            log.error(
                "journal write failed (%s): %d commands kept for retry",
                self.last_error,
                commands,
            )
            raise JournalUnavailable(self.last_error) from None
        self.last_write_s = t1 - t0
        self._size = start + len(data)
        # A record written past the preallocated space (its preallocation failed: disk full)
        # is part of the file now. ``_alloc`` never stays below it: the next preallocation
        # would write its zeros from there, over this acknowledged record, or cut it off when
        # it fails (a checksum mismatch followed by records: a journal that refuses to start).
        self._alloc = max(self._alloc, self._size)
        self.records_written += commands
        if not self.healthy:
            log.warning("journal writes again after: %s", self.last_error)
        self.healthy = True
        self.last_error = None

    def sync_pending(self) -> bool:
        """With ``sync_behind``: make the writes since the last sync durable; True if there
        were any. A failed sync cuts them off and writes them again (never just a second
        sync); failing that, JournalUnavailable, and they are written again first thing."""
        if not self._unsynced:
            return False
        try:
            self._sync_unsynced()
        except OSError as exc:
            self.healthy = False
            self.last_error = _reason(exc)
            log.error("journal sync failed (%s): %d writes kept to write again",
                      self.last_error, len(self._unsynced))  # fmt: skip
            raise JournalUnavailable(self.last_error) from None
        return True

    def _sync_unsynced(self) -> None:
        """Sync the current segment (after a failed sync: cut and rewrite what it lost)."""
        fd, disk = self._fd, self.disk
        assert fd is not None
        t0 = perf_counter()
        if not self._resync:
            try:
                (disk.fdatasync if self._size <= self._alloc else disk.fsync)(fd)
            except OSError:
                self._resync = True
        if self._resync:
            start = self._unsynced_at
            disk.ftruncate(fd, start)
            self._alloc = start
            disk.lseek(fd, start, os.SEEK_SET)
            data = b"".join(self._unsynced)
            view = memoryview(data)
            while view:
                view = view[disk.write(fd, view) :]
            self._alloc = self._size = start + len(data)
            disk.fsync(fd)  # (the zeros ahead were cut off: the size changed)
            self._resync = False
        self.last_fsync_s = perf_counter() - t0
        self._unsynced = []

    def _extend(self, end: int) -> None:
        """Write and sync zeros past ``end`` (whole ``preallocate`` steps) so that the syncs of
        the records that fill them flush data only. Best effort: on a failure (disk full) the
        file is cut back and the record is appended as without preallocation."""
        fd, step, disk = self._fd, self.preallocate, self.disk
        assert fd is not None
        target = (end // step + 1) * step
        # Zeros go only past every whole record (and past zeros already synced): never over a
        # record, and a failure cuts back to there, never into a record.
        keep = max(self._alloc, self._size)
        try:
            zero = bytes(min(step, 1 << 20))
            pos = keep
            while pos < target:
                pos += disk.pwrite(fd, zero[: target - pos], pos)
            disk.prealloc_sync(fd)
            self._alloc = target
        except OSError as exc:
            log.warning("cannot preallocate %s to %d bytes: %s", self._path, target,
                        _reason(exc))  # fmt: skip
            try:
                disk.ftruncate(fd, keep)
            except OSError:
                pass  # zeros past ``keep`` stay: recovery reads them as the end of the log

    def _cut(self, good: int) -> None:
        """After a failed write: drop whatever part of it reached the file."""
        try:
            self.disk.ftruncate(self._fd, good)  # type: ignore[arg-type]
            self._alloc = good
        except OSError as exc:
            # The segment may end in a partial record: nothing may be appended after it.
            log.error("cannot truncate %s to %d: %s", self._path, good, _reason(exc))
            self._dirty = self._path

    def _repair_tail(self) -> None:
        """Retry cutting a failed write off; failing that, leave the segment for a new one.

        Recovery accepts a torn record at the end of a segment only when the next segment
        continues exactly where its last whole record ended, which is what rolling gives.
        """
        dirty = self._dirty
        try:
            self.disk.ftruncate(self._fd, self._size)  # type: ignore[arg-type]
            self._alloc = self._size
        except OSError:
            if self._size == 0:  # nothing good in it: a new segment would get its very name
                self.disk.unlink(dirty)  # type: ignore[arg-type]  # OSError → JournalUnavailable
            self._close_segment()
        self._dirty = None

    def _roll(self, first_seq: int) -> None:
        """Start (or reopen) the segment whose first record has ``first_seq``.

        Unbuffered writes at the end of the last record: after a failed write the file holds
        exactly what the kernel took, which ``_cut`` removes; no library buffer can write it
        again later.
        """
        self._close_segment()
        self.hold_dir()
        path = self.dir / _seg_name(first_seq)
        disk = self.disk
        fd = disk.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self._size = self._alloc = disk.fstat_size(fd)
            disk.fsync_dir(self.dir)
        except OSError:
            disk.close(fd)
            raise
        self._fd, self._path = fd, path

    def _close_segment(self) -> None:
        if self._unsynced:  # (a clean close or a snapshot: best effort, the standby has them)
            try:
                self.sync_pending()
            except JournalUnavailable:
                pass
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._alloc > self._size and self._dirty is None:
                try:  # a cleanly left segment ends at its last record
                    self.disk.ftruncate(fd, self._size)
                except OSError as exc:
                    log.warning("cannot trim %s: %s", self._path, _reason(exc))
            try:
                self.disk.close(fd)
            except OSError:
                pass
