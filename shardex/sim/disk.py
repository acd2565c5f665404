"""A simulated disk: the journal's files in memory, where only what was synced survives a crash.

``SimDisk`` implements the journal's ``Disk`` seam (``shardex.journal.disk``); a node gets one
through its transport (``net.disk = SimDisk(...)``). Each file (an inode: names point at it, as
on a real file system) has two images:

* the **volatile** one: what reads see (the page cache); every write lands here at once;
* the **durable** one: what the device holds. ``fsync``/``fdatasync`` of a file applies its
  writes and truncates since the last sync to it; ``fsync_dir`` of a directory makes its
  creates, renames and unlinks durable.

``crash(rng)`` is a power loss: every name goes back to its durable directory entry plus a
seeded prefix of the directory's unsynced operations (a rename is one operation: it happened or
it did not), and every file to its durable image plus a seeded prefix of its unsynced writes,
the last one possibly torn (cut at any byte: mid-record). ``kill()`` is a process crash
(``kill -9``): only open descriptors go, the page cache keeps everything written.

Faults: ``space`` (bytes; None: unlimited) makes the disk full: a write that would grow the
files past it writes what fits and then fails with ENOSPC (``full_on="write"``, what ext4
reports), or every write succeeds and the sync that would need more fails (``full_on="sync"``:
delayed allocation, thin provisioning). ``eio_rate`` fails that share of writes, syncs and
truncates with EIO, seeded. A failed sync drops the file's unsynced writes from the durable
path for good, as Linux does after a writeback error: a second ``fsync`` succeeds without them
(reads still see them). Only a writer that cuts off and rewrites what failed is durable.

Crash points: ``trap(under, op, n)`` makes the ``n``-th write (after it lands) or sync (before
it runs) of a file under ``under`` (``"dirsync"``: of a directory, before its ``fsync_dir``
runs) raise ``CrashPoint`` -- not an ``OSError``, so nothing in the
journal or the node handles it: the process dies right there, between a write and its sync
(``shardex.sim.hazards`` arms them in a world and crashes the node when one springs).

Simplifications: directories are durable once made (``makedirs``); unsynced writes reach the
device in the order they were made (a real disk may write back pages out of order: a prefix
model is the one a torn tail, not a hole, comes from); a rename across directories is an
unlink in one and a link in the other, each made durable by its own ``fsync_dir``; paths are
names (normalised, never resolved against a working directory). Same seed and same calls: the
same disk, byte for byte. Not thread-safe on its own: one lock serialises the
calls (a journal writer thread may share it with its node).
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

from shardex.journal.disk import StrPath

F = TypeVar("F", bound=Callable[..., Any])

_WRITE, _TRUNC = "w", "t"  # unsynced file operations: (kind, offset or size, data)


class _Inode:
    """One file: its volatile bytes, its durable bytes, and the writes in between."""

    __slots__ = ("data", "durable", "pending")

    def __init__(self) -> None:
        self.data = bytearray()  # what reads see
        self.durable = b""  # what a power loss keeps
        self.pending: list[tuple[str, int, bytes]] = []  # since the last sync, in order


@dataclass
class _Handle:
    inode: _Inode
    path: str  # the name it was opened by (``kill``/``crash`` close it by directory)
    writable: bool
    pos: int = 0


TRAP_OPS = ("write", "sync", "dirsync")  # what a crash point (``SimDisk.trap``) waits for


class CrashPoint(Exception):
    """A trap set with ``SimDisk.trap`` sprang: the process dies at this very point of a
    write or a sync (not an ``OSError``: nothing in the node handles it, so it leaves the
    turn, and the simulator crashes the node there). ``op`` is ``"write"`` (the write landed
    in the page cache, unsynced), ``"sync"`` (the sync never ran) or ``"dirsync"`` (the
    directory's sync never ran: ``path`` is the directory); ``path`` the file. (The
    simulator raises one with ``op`` ``"promoted"`` too: ``shardex.sim.hazards``' crash
    point after a promotion, which is not the disk's.)"""

    def __init__(self, op: str, path: str, root: str) -> None:
        super().__init__(f"crash point: {op} of {path}")
        self.op, self.path, self.root = op, path, root


@dataclass
class _Trap:
    root: str  # files under this directory (a node's journal dir) ...
    op: str  # ... at their ``op`` ("write" or "sync") ...
    left: int  # ... number ``left`` from now (1: the next one)


@dataclass
class CrashReport:
    """What a crash kept and lost: per file whose content changed, (path, bytes kept past
    its durable image, bytes of unsynced writes lost, torn: the last write kept in part);
    names that came back or vanished."""

    files: list[tuple[str, int, int, bool]] = field(default_factory=list)
    names_lost: list[str] = field(default_factory=list)

    @property
    def torn(self) -> int:
        return sum(1 for f in self.files if f[3])


def _apply(image: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    """``image`` with the writes and truncates ``ops`` applied, in order."""
    out = bytearray(image)
    for kind, at, data in ops:
        if kind == _TRUNC:
            del out[at:]
            out.extend(bytes(max(0, at - len(out))))
        else:
            if at > len(out):
                out.extend(bytes(at - len(out)))  # a hole reads as zeros
            out[at : at + len(data)] = data
    return bytes(out)


def _locked(fn: F) -> F:
    """One call at a time: a journal writer thread and its node may share the disk."""

    @wraps(fn)
    def call(self: SimDisk, *args: Any, **kw: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kw)

    return call  # type: ignore[return-value]


def _norm(path: StrPath) -> str:
    return os.path.normpath(os.fspath(path))


def _under(path: str, root: str | None) -> bool:
    return root is None or path == root or path.startswith(root.rstrip("/") + "/")


class SimDisk:
    """Files in memory with a durable and a volatile image (see the module docstring)."""

    def __init__(
        self,
        rng: random.Random | None = None,
        space: int | None = None,
        eio_rate: float = 0.0,
        full_on: str = "write",
    ) -> None:
        if full_on not in ("write", "sync"):
            raise ValueError(f"full_on must be 'write' or 'sync', got {full_on!r}")
        self.rng = rng or random.Random(0)
        self.space = space
        self.eio_rate = eio_rate
        self.full_on = full_on
        self._names: dict[str, _Inode] = {}  # what listings and opens see
        self._durable_names: dict[str, _Inode] = {}  # what a power loss keeps
        self._dir_ops: dict[str, list[tuple[Any, ...]]] = {}  # unsynced, per directory
        self._dirs: set[str] = {"/", "."}
        self._fds: dict[int, _Handle] = {}
        self._next_fd = 3
        self._lock = threading.RLock()
        self.faults: dict[str, int] = {"eio": 0, "enospc": 0, "crashes": 0, "kills": 0,
                                       "traps": 0}  # fmt: skip
        self._traps: list[_Trap] = []
        self.syncs = 0

    def __repr__(self) -> str:
        return f"<SimDisk {len(self._names)} files, {self.used()} bytes>"

    # -- faults ---------------------------------------------------------------------------------

    def _fault(self, call: str) -> None:
        """EIO for this call, at ``eio_rate`` (seeded)."""
        if self.eio_rate and self.rng.random() < self.eio_rate:
            self.faults["eio"] += 1
            raise OSError(errno.EIO, f"Input/output error (simulated, {call})")

    def _no_space(self) -> OSError:
        self.faults["enospc"] += 1
        return OSError(errno.ENOSPC, "No space left on device (simulated)")

    @_locked
    def trap(self, under: StrPath, op: str, n: int = 1) -> None:
        """The ``n``-th ``op`` (``"write"``: after it lands; ``"sync"``: before it runs) of a
        file under ``under`` from now raises ``CrashPoint``: a crash between a journal write
        and its sync. ``"dirsync"``: before the ``n``-th ``fsync_dir`` of a directory under
        ``under`` runs (a rename made and not yet durable: a promotion's epoch record). One
        trap per directory (a new one replaces it); it fires once."""
        if op not in TRAP_OPS or n < 1:
            raise ValueError(f"trap: op one of {TRAP_OPS} and n >= 1, not {op!r}, {n!r}")
        root = _norm(under)
        self._traps = [t for t in self._traps if t.root != root] + [_Trap(root, op, n)]

    @_locked
    def untrap(self, under: StrPath | None = None) -> int:
        """Remove the traps under ``under`` (None: all); how many were still set."""
        root = None if under is None else _norm(under)
        kept = [t for t in self._traps if root is not None and not _under(t.root, root)]
        gone = len(self._traps) - len(kept)
        self._traps = kept
        return gone

    def _spring(self, op: str, path: str) -> None:
        for t in self._traps:
            if t.op == op and _under(path, t.root):
                t.left -= 1
                if t.left <= 0:
                    self._traps.remove(t)
                    self.faults["traps"] += 1
                    raise CrashPoint(op, path, t.root)

    def used(self) -> int:
        """Bytes the files' volatile images take (each inode once)."""
        return sum(len(i.data) for i in {id(i): i for i in self._names.values()}.values())

    def _durable_used(self, inode: _Inode, synced: bytes) -> int:
        """Bytes of every durable image once ``inode``'s is ``synced``."""
        inodes = {id(i): i for i in self._names.values()}
        inodes[id(inode)] = inode
        return sum(len(synced) if i is inode else len(i.durable) for i in inodes.values())

    # -- descriptors ----------------------------------------------------------------------------

    def _handle(self, fd: int, write: bool = False) -> _Handle:
        h = self._fds.get(fd)
        if h is None or (write and not h.writable):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return h

    @_locked
    def open(self, path: StrPath, flags: int, mode: int = 0o644) -> int:
        p = _norm(path)
        parent, name = os.path.split(p)
        if p in self._dirs:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", p)
        if (parent or ".") not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        inode = self._names.get(p)
        if inode is None:
            if not flags & os.O_CREAT:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
            inode = self._names[p] = _Inode()
            self._dir_ops.setdefault(parent or ".", []).append(("link", p, inode))
        elif flags & os.O_CREAT and flags & os.O_EXCL:
            raise FileExistsError(errno.EEXIST, "File exists", p)
        writable = bool(flags & (os.O_WRONLY | os.O_RDWR))
        if flags & os.O_TRUNC and writable and inode.data:
            del inode.data[:]
            inode.pending.append((_TRUNC, 0, b""))
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = _Handle(inode, p, writable)
        return fd

    @_locked
    def close(self, fd: int) -> None:
        self._handle(fd)
        del self._fds[fd]

    @_locked
    def fstat_size(self, fd: int) -> int:
        return len(self._handle(fd).inode.data)

    @_locked
    def lseek(self, fd: int, pos: int, how: int) -> int:
        h = self._handle(fd)
        base = {os.SEEK_SET: 0, os.SEEK_CUR: h.pos, os.SEEK_END: len(h.inode.data)}[how]
        if base + pos < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        h.pos = base + pos
        return h.pos

    # -- data -----------------------------------------------------------------------------------

    def _put(self, inode: _Inode, at: int, data: bytes | memoryview) -> int:
        """Write ``data`` at ``at`` (what fits, with ``space`` and ``full_on="write"``)."""
        self._fault("write")
        n = len(data)
        if self.space is not None and self.full_on == "write":
            free = self.space - self.used()
            n = max(0, min(n, len(inode.data) + free - at))
            if n == 0 and len(data):
                raise self._no_space()
        chunk = bytes(data[:n])
        if at > len(inode.data):
            inode.data.extend(bytes(at - len(inode.data)))
        inode.data[at : at + n] = chunk
        inode.pending.append((_WRITE, at, chunk))
        return n

    @_locked
    def write(self, fd: int, data: bytes | memoryview) -> int:
        h = self._handle(fd, write=True)
        n = self._put(h.inode, h.pos, data)
        h.pos += n
        if self._traps:
            self._spring("write", h.path)
        return n

    @_locked
    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        h = self._handle(fd, write=True)
        n = self._put(h.inode, offset, data)
        if self._traps:
            self._spring("write", h.path)
        return n

    @_locked
    def ftruncate(self, fd: int, size: int) -> None:
        inode = self._handle(fd, write=True).inode
        self._fault("ftruncate")
        del inode.data[size:]
        inode.data.extend(bytes(max(0, size - len(inode.data))))
        inode.pending.append((_TRUNC, size, b""))

    @_locked
    def fsync(self, fd: int) -> None:
        """Make the file's writes since its last sync durable. On failure they never will be
        (a writeback error: Linux marks the pages clean), though reads still see them."""
        h = self._handle(fd)
        inode = h.inode
        if self._traps:
            self._spring("sync", h.path)
        try:
            self._fault("sync")
            synced = _apply(inode.durable, inode.pending)
            if (self.space is not None and self.full_on == "sync"
                    and self._durable_used(inode, synced) > self.space):  # fmt: skip
                raise self._no_space()
        except OSError:
            inode.pending.clear()
            raise
        inode.durable = synced
        inode.pending.clear()
        self.syncs += 1

    fdatasync = fsync  # (the size a record needs is data here: the same durability)
    prealloc_sync = fsync

    @_locked
    def read_bytes(self, path: StrPath) -> bytes:
        p = _norm(path)
        if p in self._dirs:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", p)
        inode = self._names.get(p)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        return bytes(inode.data)

    @_locked
    def getsize(self, path: StrPath) -> int:
        p = _norm(path)
        inode = self._names.get(p)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        return len(inode.data)

    # -- names ----------------------------------------------------------------------------------

    @_locked
    def makedirs(self, path: StrPath) -> None:
        p = _norm(path)
        while p not in self._dirs:
            if p in self._names:
                raise FileExistsError(errno.EEXIST, "File exists", p)
            self._dirs.add(p)
            p = os.path.dirname(p) or "."

    @_locked
    def isdir(self, path: StrPath) -> bool:
        return _norm(path) in self._dirs

    @_locked
    def listdir(self, path: StrPath) -> list[str]:
        p = _norm(path)
        if p not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        names = [n for n in self._names if os.path.dirname(n) == p]
        names += [d for d in self._dirs if d != p and os.path.dirname(d) == p]
        return sorted(os.path.basename(n) for n in names)

    @_locked
    def unlink(self, path: StrPath) -> None:
        p = _norm(path)
        if p not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        del self._names[p]
        self._dir_ops.setdefault(os.path.dirname(p) or ".", []).append(("unlink", p))

    @_locked
    def replace(self, src: StrPath, dst: StrPath) -> None:
        s, d = _norm(src), _norm(dst)
        inode = self._names.get(s)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", s)
        if (os.path.dirname(d) or ".") not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", d)
        del self._names[s]
        self._names[d] = inode
        sdir, ddir = os.path.dirname(s) or ".", os.path.dirname(d) or "."
        if sdir == ddir:
            self._dir_ops.setdefault(sdir, []).append(("rename", s, d, inode))  # atomic
        else:
            self._dir_ops.setdefault(sdir, []).append(("unlink", s))
            self._dir_ops.setdefault(ddir, []).append(("link", d, inode))

    @_locked
    def fsync_dir(self, path: StrPath) -> None:
        """Make the directory's creates, renames and unlinks durable."""
        p = _norm(path)
        if p not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        if self._traps:
            self._spring("dirsync", p)
        self._fault("sync")
        self._link(self._dir_ops.pop(p, []))

    def _link(self, ops: list[tuple[Any, ...]]) -> None:
        names = self._durable_names
        for op in ops:
            if op[0] == "link":
                names[op[1]] = op[2]
            elif op[0] == "unlink":
                names.pop(op[1], None)
            else:  # rename
                names.pop(op[1], None)
                names[op[2]] = op[3]

    # -- crashes --------------------------------------------------------------------------------

    @_locked
    def kill(self, under: StrPath | None = None) -> int:
        """A process crash (``kill -9``) of whatever has files open under ``under`` (None:
        everything): its descriptors close, every byte written stays (the kernel has it).
        Returns the descriptors closed."""
        self.faults["kills"] += 1
        return self._close_all(None if under is None else _norm(under))

    def _close_all(self, root: str | None) -> int:
        gone = [fd for fd, h in self._fds.items() if _under(h.path, root)]
        for fd in gone:
            del self._fds[fd]
        return len(gone)

    @_locked
    def crash(self, rng: random.Random | None = None, under: StrPath | None = None) -> CrashReport:
        """A power loss of the machine whose files are under ``under`` (None: the whole disk):
        names and contents go back to what was made durable, plus a seeded prefix of what was
        not (the last write of each file possibly torn). Open descriptors there close."""
        rng = rng or self.rng
        root = None if under is None else _norm(under)
        self._close_all(root)
        self.faults["crashes"] += 1
        report = CrashReport()
        for d in sorted(k for k in self._dir_ops if _under(k, root)):
            ops = self._dir_ops.pop(d)
            self._link(ops[: rng.randint(0, len(ops))])
        before = {p for p in self._names if _under(p, root)}
        for p in before:
            del self._names[p]
        seen: set[int] = set()
        for p in sorted(p for p in self._durable_names if _under(p, root)):
            inode = self._names[p] = self._durable_names[p]
            if id(inode) not in seen:
                seen.add(id(inode))
                self._settle(p, inode, rng, report)
        report.names_lost = sorted(before - set(self._names))
        return report

    @staticmethod
    def _settle(path: str, inode: _Inode, rng: random.Random, report: CrashReport) -> None:
        """``inode`` after a power loss: its durable image plus a seeded prefix of its unsynced
        operations, the first one not kept whole possibly kept in part (a torn write)."""
        ops = inode.pending
        if not ops:
            inode.data = bytearray(inode.durable)
            return
        k = rng.randint(0, len(ops))
        kept = ops[:k]
        torn = False
        if k < len(ops) and ops[k][0] == _WRITE and len(ops[k][2]) > 1:
            cut = rng.randint(0, len(ops[k][2]) - 1)
            if cut:
                kept = [*kept, (_WRITE, ops[k][1], ops[k][2][:cut])]
                torn = True
        image = _apply(inode.durable, kept)
        lost = sum(len(op[2]) for op in ops) - sum(len(op[2]) for op in kept)
        report.files.append((path, sum(len(op[2]) for op in kept), lost, torn))
        inode.durable = image
        inode.data = bytearray(image)
        inode.pending = []
