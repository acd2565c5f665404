"""The journal directory on disk: file names, errors, and the system calls that write it.

The calls are module attributes (``disk._fsync(fd)``, never ``from ... import``) so that fault
tests can make them fail by patching this module: a full disk cannot be arranged for every
case, e.g. a truncate that fails after a failed write.
"""

from __future__ import annotations

import os
from pathlib import Path

# The segment writer's system calls (see above).
_write, _fsync, _ftruncate = os.write, os.fsync, os.ftruncate
# Preallocation's own calls: zeros written ahead, and their sync (not ``_fsync``: the record
# syncs are the ones tests hold or fail).
_pwrite, _prealloc_sync = os.pwrite, os.fsync
# A record inside preallocated space changes no metadata that reading it back needs (size and
# blocks are synced already): fdatasync, which, unlike fsync, does not wait for a file-system
# journal commit for the file's timestamps.
_fdatasync = getattr(os, "fdatasync", os.fsync)

EPOCH_FILE = "epoch"  # highest leader epoch seen (replicated shards)


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
    """Make a directory entry change (create, rename) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
