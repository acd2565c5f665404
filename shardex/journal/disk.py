"""The journal directory on disk: file names, errors, and the one seam every file operation of
the journal goes through (``Disk``).

Everything the journal, its snapshots, the epoch file and recovery do to files is a method of a
``Disk``: ``OS_DISK`` (the default) is the operating system's calls, bound as attributes
(``OS_DISK.write is os.write``), so the segment writer's hot path pays exactly what calling
``os.write`` did, with no layer per record. The simulator gives a node a ``SimDisk``
(``shardex.sim.disk``): files in memory where only what was synced survives a crash.

Fault tests make one call fail by patching it on ``OS_DISK`` (``monkeypatch.setattr(OS_DISK,
"fsync", failing)``): a full disk cannot be arranged for every case, e.g. a truncate that fails
after a failed write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

EPOCH_FILE = "epoch"  # highest leader epoch seen (replicated shards)

StrPath = str | os.PathLike[str]


class Disk(Protocol):
    """The file operations of a journal directory (the names and meanings of ``os``'s).

    ``fdatasync``: a record inside preallocated space changes no metadata that reading it back
    needs (size and blocks are synced already), so its sync need not wait for a file-system
    journal commit for the file's timestamps. ``prealloc_sync``: the sync of preallocated
    zeros, a separate attribute so that a test can hold or fail the record syncs alone.
    ``fsync_dir``: makes creates, renames and unlinks in a directory durable.
    """

    def open(self, path: StrPath, flags: int, mode: int = 0o777, /) -> int: ...

    def close(self, fd: int, /) -> None: ...

    def write(self, fd: int, data: bytes | memoryview, /) -> int: ...

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int, /) -> int: ...

    def lseek(self, fd: int, pos: int, how: int, /) -> int: ...

    def fsync(self, fd: int, /) -> None: ...

    def fdatasync(self, fd: int, /) -> None: ...

    def prealloc_sync(self, fd: int, /) -> None: ...

    def ftruncate(self, fd: int, size: int, /) -> None: ...

    def unlink(self, path: StrPath, /) -> None: ...

    def replace(self, src: StrPath, dst: StrPath, /) -> None: ...

    def listdir(self, path: StrPath, /) -> list[str]: ...

    def isdir(self, path: StrPath, /) -> bool: ...

    def getsize(self, path: StrPath, /) -> int: ...

    def fstat_size(self, fd: int) -> int: ...

    def read_bytes(self, path: StrPath) -> bytes: ...

    def makedirs(self, path: StrPath) -> None: ...

    def fsync_dir(self, path: StrPath) -> None: ...


class OsDisk:
    """The operating system's file calls (today's behaviour and cost): each attribute is the
    ``os`` function itself, so ``disk.write(fd, data)`` is one attribute lookup, as
    ``os.write`` was."""

    def __init__(self) -> None:
        self.open = os.open
        self.close = os.close
        self.write = os.write
        self.pwrite = os.pwrite
        self.lseek = os.lseek
        self.fsync = os.fsync
        self.fdatasync = getattr(os, "fdatasync", os.fsync)
        self.prealloc_sync = os.fsync
        self.ftruncate = os.ftruncate
        self.unlink = os.unlink
        self.replace = os.replace
        self.listdir = os.listdir
        self.isdir = os.path.isdir
        self.getsize = os.path.getsize

    def fstat_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def read_bytes(self, path: StrPath) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def makedirs(self, path: StrPath) -> None:
        os.makedirs(path, exist_ok=True)

    def fsync_dir(self, path: StrPath) -> None:
        """Make a directory entry change (create, rename, unlink) durable."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return "<OsDisk>"


OS_DISK = OsDisk()


class JournalError(Exception):
    """The journal cannot be used as it is; the message names the file and offset."""


class JournalUnavailable(JournalError):
    """A write failed (disk full, I/O error); the message is the one-line reason.

    The journal stays consistent (the failed write is truncated away) and keeps the buffered
    commands: calling ``commit`` again retries them. The caller holds its replies meanwhile.
    """


def _reason(exc: OSError) -> str:
    """A one-line reason for an OSError (no multi-line strerror, never empty)."""
    return " ".join(str(exc.strerror or exc).split()) or type(exc).__name__


def _seg_name(seq: int) -> str:
    return f"journal-{seq:020d}.log"


def _snap_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def _seq_of(path: Path) -> int:
    """The seq in a segment or snapshot file name."""
    return int(path.stem.split("-", 1)[1])


def _fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, rename) durable (on the real disk)."""
    OS_DISK.fsync_dir(path)


def listed(disk: Disk, directory: Path, prefix: str, suffix: str) -> list[Path]:
    """The files ``prefix<seq>suffix`` in ``directory``, oldest seq first (what
    ``directory.glob(prefix + "*" + suffix)`` sorted by seq gave)."""
    try:
        found = disk.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []  # (as a glob of a missing directory)
    names = [n for n in found if n.startswith(prefix) and n.endswith(suffix)]
    return sorted((directory / n for n in names), key=_seq_of)


def write_file(disk: Disk, path: Path, data: bytes) -> None:
    """Create (or empty) ``path``, write ``data`` and fsync it; its directory entry is the
    caller's to make durable (rename, then ``fsync_dir``)."""
    _write_synced(disk, disk.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), data)


def write_back(disk: Disk, path: Path) -> None:
    """Write ``path``'s bytes, as read now, over themselves and sync them.

    Why: after a failed fsync Linux marks the file's dirty pages clean; their bytes stay
    readable from the page cache but may never reach the disk, and no later fsync writes
    them. A restarted process reads such a record as if it were durable. Writing what it
    read makes those pages dirty again, so the sync that follows puts them on the disk (or
    fails, and then the caller must not build on them)."""
    data = disk.read_bytes(path)
    _write_synced(disk, disk.open(path, os.O_RDWR, 0o644), data)


def _write_synced(disk: Disk, fd: int, data: bytes) -> None:
    """All of ``data`` at ``fd``'s position, fsynced, then ``fd`` closed (the records' own
    calls, write and fsync: ``pwrite`` is preallocation's)."""
    try:
        view = memoryview(data)
        while view:  # a write may take less than asked
            view = view[disk.write(fd, view) :]
        disk.fsync(fd)
    finally:
        disk.close(fd)


def truncate_file(disk: Disk, path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes, durably."""
    fd = disk.open(path, os.O_RDWR, 0o644)
    try:
        disk.ftruncate(fd, size)
        disk.fsync(fd)
    finally:
        disk.close(fd)
