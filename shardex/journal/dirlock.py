"""One writing process per journal directory: an exclusive ``flock`` on ``DIR/LOCK``.

Two processes appending to one journal directory (a second ``shardex engine`` started by hand
with another's ``--journal-dir``, a copied unit file, a standby pointed at its leader's
directory) would interleave records under one seq range, and recovery would keep whichever
segment it read last: both would ack orders that one of them then loses. The kernel's
``flock`` is the tool for this: it is released when the holding process dies (kill -9
included), so a crash never leaves a stale lock to clear by hand, and the file names the pid
that holds it for the refusal's message.

Within one process the lock is counted, not taken again: the in-process cluster and the
journal tests "kill" a node by dropping it (its journal never closed) and start its successor
on the same directory in the same process, as a restarted process would. The simulator's disk
(``SimDisk``) has no other process to fear: nothing is locked there.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from shardex.journal.disk import JournalError, OsDisk

LOCK_NAME = "LOCK"

# A process killed -9 lets go of its files only when its last thread has exited: its main
# thread may already show as a zombie while a thread in the middle of an fsync still holds the
# lock (CI saw it). A successor started at once waits that long rather than refuse.
WAIT_S = 5.0

_HELD: dict[str, list[int]] = {}  # real path -> [fd, holders in this process]


class JournalInUse(JournalError):
    """Another process holds the journal directory; the message names it and its pid (a
    ``JournalError``: the node commands print it as their one-line refusal)."""


def hold(directory: str | Path, disk: object, wait_s: float | None = None) -> str | None:
    """Take the directory's lock for this process (``JournalInUse`` if another process still
    has it after ``wait_s``): the key ``release`` takes, or None on a disk that is not the
    operating system's."""
    if not isinstance(disk, OsDisk):
        return None
    key = os.path.realpath(directory)
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        return key
    fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    if not _locked(fd, WAIT_S if wait_s is None else wait_s):
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise JournalInUse(
            f"journal directory {directory} is in use by another process (pid {holder}); "
            "refusing to start: one process writes a journal (stop that one first, or give "
            "this one its own --data-dir)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = [fd, 1]
    return key


def _locked(fd: int, wait_s: float) -> bool:
    """``flock(fd)`` exclusively, trying again for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def release(key: str | None) -> None:
    """Let go of one hold of ``key`` (``hold``'s value); the lock goes with the last one."""
    held = _HELD.get(key) if key is not None else None
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]  # type: ignore[arg-type]
        os.close(held[0])  # (closing the descriptor drops the flock)
