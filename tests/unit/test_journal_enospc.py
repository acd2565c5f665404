"""A full disk at every step of the journal's write path, then space back, then kill -9.

Deterministic: a model disk (a size cap on the segment, or the n-th call of one system call
failing) stands in for ENOSPC, through the journal's named system calls. After every fault
schedule the journal must recover, and to exactly what was acknowledged (plus, at most, the
batch whose write failed): a failed preallocation must never leave a record that recovery reads
as damage, nor let a later preallocation write its zeros over an acknowledged record.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import msgpack
import pytest

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.journal import HEADER, Journal, JournalError, JournalUnavailable, iter_records
from shardex.journal.disk import OS_DISK as jmod
from shardex.tools.workload import Workload

STEP = 512  # preallocation step: many boundaries crossed by a few dozen small records
HOOKS = ("write", "pwrite", "fsync", "fdatasync", "prealloc_sync", "ftruncate")


def _state(engine: Engine) -> bytes:
    return msgpack.packb(engine.snapshot(), use_bin_type=True)


def _batches(n: int = 24, size: int = 3) -> list[list]:
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=21)
    cmds = wl.warmup(12) + wl.take(n * size - 12)
    return [cmds[i : i + size] for i in range(0, len(cmds), size)]


BATCHES = _batches()


class Disk:
    """The journal's system calls on a model disk. ``cap``: no file may grow past this many
    bytes (a write is cut short at it, as a full file system does, then fails with ENOSPC);
    ``fail``: {(hook, n)} makes the n-th call (from 0) of that hook fail (writes: half of the
    data reaches the file first). Syncs do not reach the device: a kill -9 keeps the page
    cache, and the model is what the process sees."""

    def __init__(self, cap: int | None = None, fail: frozenset = frozenset()) -> None:
        self.cap, self.fail = cap, fail
        self.calls = dict.fromkeys(HOOKS, 0)

    def _due(self, hook: str) -> bool:
        n = self.calls[hook]
        self.calls[hook] += 1
        return (hook, n) in self.fail

    def _room(self, fd: int, off: int, size: int) -> int:
        if self.cap is None:
            return size
        return max(0, min(size, max(self.cap, os.fstat(fd).st_size) - off))

    def write(self, fd: int, data) -> int:
        off = os.lseek(fd, 0, os.SEEK_CUR)
        room = self._room(fd, off, len(data))
        if self._due("write"):
            room = min(room, len(data) // 2)
        elif room == len(data):
            return os.write(fd, data)
        if room:
            return os.write(fd, bytes(data[:room]))  # a short write; the next call fails
        raise OSError(errno.ENOSPC, "No space left on device")

    def pwrite(self, fd: int, data, off: int) -> int:
        room = self._room(fd, off, len(data))
        if self._due("pwrite"):
            room = min(room, len(data) // 2)
        elif room == len(data):
            return os.pwrite(fd, data, off)
        if room:
            return os.pwrite(fd, bytes(data[:room]), off)
        raise OSError(errno.ENOSPC, "No space left on device")

    def sync(self, hook: str):
        def call(fd: int) -> None:
            if self._due(hook):
                raise OSError(errno.EIO, "Input/output error")

        return call

    def ftruncate(self, fd: int, size: int) -> None:
        if self._due("ftruncate"):
            raise OSError(errno.EIO, "Input/output error")
        os.ftruncate(fd, size)

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(jmod, "write", self.write)
        monkeypatch.setattr(jmod, "pwrite", self.pwrite)
        monkeypatch.setattr(jmod, "ftruncate", self.ftruncate)
        for hook in ("fsync", "fdatasync", "prealloc_sync"):
            monkeypatch.setattr(jmod, hook, self.sync(hook))


def _run(directory, disk: Disk, threaded: bool = False):
    """Journal every batch, retrying a failed commit until it succeeds; a capped disk gets its
    space back after the second failure of a batch (full for a while, then freed). Returns the
    engine and, per failure, (the acknowledged state, the state with the failed batch) with a
    copy of the directory taken right after it."""
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(directory, DEFAULT_MARKETS, fsync="batch", preallocate=STEP)
    if threaded:
        j.start_writer()
    failures = []
    out: list = []
    for i, batch in enumerate(BATCHES):
        acked = _state(engine)
        for cmd in batch:
            seq = engine.seq
            engine.apply(cmd, out)
            j.add(seq, cmd)
        for attempt in range(4):
            try:
                j.commit()
                break
            except JournalUnavailable:
                copy = directory.parent / f"{directory.name}-fail{len(failures)}"
                shutil.copytree(directory, copy)
                failures.append(((acked, _state(engine)), copy))
                if attempt >= 1:
                    disk.cap = None  # space returns
        else:
            pytest.fail(f"batch {i} never committed ({j.last_error})")
    # no close: the process is killed -9 here (every write went to the file with os calls);
    # only what the killed process would lose with it goes: its writer thread (idle: every
    # commit returned) and its file descriptor (this test makes ~400 journals)
    j._stop_writer()
    if j._fd is not None:
        os.close(j._fd)
        j._fd = None
    return engine, failures


def _check(directory, engine: Engine, failures) -> None:
    for (acked, with_failed), copy in failures:
        rec = Journal(copy, DEFAULT_MARKETS).recover()  # as if killed right after the failure
        ok = _state(rec.engine) in (acked, with_failed)
        assert ok, f"{copy}: recovered to seq {rec.engine.seq}, not the acknowledged state"
    rec = Journal(directory, DEFAULT_MARKETS).recover()
    ok = _state(rec.engine) == _state(engine)
    assert ok, f"{directory}: recovered to seq {rec.engine.seq}, acknowledged {engine.seq}"
    rec.engine.check_integrity()
    # and the recovered journal takes writes again and recovers once more
    j = Journal(directory, DEFAULT_MARKETS, fsync="batch", preallocate=STEP)
    j.recover()
    out: list = []
    extra = Workload(symbols=("BTC-USD",), seed=5, prefix="x").take(3)
    for cmd in extra:
        seq = engine.seq
        engine.apply(cmd, out)
        j.add(seq, cmd)
    j.commit()
    j.close()
    assert _state(Journal(directory, DEFAULT_MARKETS).recover().engine) == _state(engine)


def _baseline() -> tuple[dict[str, int], int]:
    """The system calls an undisturbed run makes, and the bytes of records it writes."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        disk = Disk()
        disk.install(mp)
        _run(Path(tmp) / "j", disk)
        (seg,) = Path(tmp, "j").glob("journal-*.log")
        return dict(disk.calls), len(seg.read_bytes().rstrip(b"\0"))


@pytest.mark.parametrize("threaded", [False, True])
def test_disk_full_at_every_size_then_space_returns_then_kill9(tmp_path, monkeypatch, threaded):
    """The full disk of the issue: preallocation fails (no room for a step of zeros) while a
    record still fits past the preallocated space, and is acknowledged; later writes must not
    zero it or cut it off. Every cap from the first record to the end, with the disk full for
    a while (several failures) before space returns."""
    total = _baseline()[1]
    for cap in range(0, total + STEP, 19):
        disk = Disk(cap=cap)
        disk.install(monkeypatch)
        d = tmp_path / f"cap{cap}"
        engine, failures = _run(d, disk, threaded=threaded)
        monkeypatch.undo()
        _check(d, engine, failures)
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()


def test_every_single_failing_call_recovers_to_what_was_acknowledged(tmp_path, monkeypatch):
    """Fail the n-th call of each system call of the write path once (writes after writing
    half), for every n an undisturbed run makes; also each write/preallocation failure
    together with the truncate that should cut it off."""
    calls = _baseline()[0]
    assert calls["write"] == len(BATCHES) and calls["pwrite"] > 5, calls
    schedules = [frozenset({(hook, n)}) for hook in HOOKS for n in range(calls[hook] + 1)]
    schedules += [
        frozenset({(hook, n), ("ftruncate", 0)})
        for hook in ("write", "pwrite", "fdatasync", "fsync", "prealloc_sync")
        for n in range(calls[hook])
    ]
    for k, fail in enumerate(schedules):
        disk = Disk(fail=fail)
        disk.install(monkeypatch)
        d = tmp_path / f"s{k}"
        engine, failures = _run(d, disk)
        monkeypatch.undo()
        _check(d, engine, failures)
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()


def test_a_record_with_a_zeroed_tail_before_more_records_still_refuses(tmp_path):
    """What the old failure left (an acknowledged record's end overwritten by zeros, records
    after it) is damage, not a torn tail: the rule that reads a bad record followed only by
    zeros as the end of the log never drops a record that something follows."""
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="batch", preallocate=0)
    out: list = []
    for batch in BATCHES[:6]:
        for cmd in batch:
            seq = engine.seq
            engine.apply(cmd, out)
            j.add(seq, cmd)
        j.commit()
    j.close()
    (seg,) = j.segments()
    data = bytearray(seg.read_bytes())
    second = HEADER.size + HEADER.unpack_from(data, 0)[0]
    third = second + HEADER.size + HEADER.unpack_from(data, second)[0]
    data[third - 5 : third + 40] = bytes(45)  # the second record's end and more: zeros
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=f"offset {second}: checksum mismatch"):
        Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert len(list(iter_records(seg))) == 1
