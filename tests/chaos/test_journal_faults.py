"""Journal under faults: group commits over the record limit, disk full, failed writes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import msgpack
import pytest
from conftest import require

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import GTC, LIMIT, OP_NEW
from shardex.journal import (
    MAX_RECORD,
    Journal,
    JournalError,
    JournalUnavailable,
    _array,
    iter_records,
)
from shardex.tools.workload import Workload
from shardex.wire.protocol import unpackb


def _state(engine: Engine):
    return msgpack.packb(engine.snapshot(), use_bin_type=True)


def _apply_and_add(engine: Engine, journal: Journal, cmds) -> None:
    out: list = []
    for cmd in cmds:
        seq = engine.seq
        engine.apply(cmd, out)
        journal.add(seq, cmd)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 65535, 65536, 70000])
def test_array_framing_is_msgpack(n):
    items = [msgpack.packb(i) for i in range(n)]
    assert msgpack.unpackb(_array(items)) == list(range(n))


def test_batch_over_the_record_limit_is_split_and_fully_recovered(tmp_path):
    """Regression: one record over the limit was written, then cut as a torn tail on recovery."""
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=4)
    cmds = wl.warmup(200) + wl.take(3000)
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none", max_record=4096)
    _apply_and_add(engine, j, cmds[:100])
    j.commit()
    _apply_and_add(engine, j, cmds[100:])  # one group commit of ~3100 commands, > 100 KB
    j.commit()
    # no close: as after kill -9 (every commit was written with os-level writes)
    (seg,) = j.segments()
    records = list(iter_records(seg))
    assert len(records) > 20
    assert all(len(payload) <= 4096 for _, payload in records)
    # each record's header is the seq before its own first command
    replay = Engine(DEFAULT_MARKETS)
    for seq, payload in records:
        assert seq == replay.seq
        replay.apply_many(unpackb(payload))
    rec = Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert rec.replayed == len(cmds) and not rec.truncated
    assert rec.engine.seq == engine.seq and _state(rec.engine) == _state(engine)


def test_single_command_over_the_limit_is_refused_with_a_reason(tmp_path):
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none", max_record=256)
    j.add(0, (OP_NEW, "BTC-USD", "x" * 300, "a", 0, LIMIT, 100, 1, GTC, False, 0))
    with pytest.raises(JournalError, match="encodes to 3.. bytes, over the journal record limit"):
        j.commit()
    assert j.pending == 1
    with pytest.raises(ValueError, match="max_record"):
        Journal(tmp_path, DEFAULT_MARKETS, max_record=MAX_RECORD + 1)


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from shardex.engine import DEFAULT_MARKETS, Engine
    from shardex.engine.codes import GTC, LIMIT, OP_NEW
    from shardex.journal import Journal
    engine, j, out = Engine(DEFAULT_MARKETS), Journal(sys.argv[1], DEFAULT_MARKETS), []
    acct = "a" * 64
    n = 0
    def add(cmd):
        seq = engine.seq
        engine.apply(cmd, out)
        j.add(seq, cmd)
    add((OP_NEW, "BTC-USD", "first", acct, 0, LIMIT, 100, 1, GTC, False, 0))
    j.commit()
    size = 0
    while size <= (1 << 24) + (1 << 20):  # one group commit a MiB over the real limit
        oid = f"{n:064d}"
        add((OP_NEW, "BTC-USD", oid, acct, n % 2, LIMIT, 1000 + n % 2, 1, GTC, False, 0))
        size += 160
        n += 1
    j.commit()
    add((OP_NEW, "BTC-USD", "last", acct, 0, LIMIT, 100, 1, GTC, False, 0))
    j.commit()
    print(engine.seq, engine.resting(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_real_size_batch_over_16_mib_survives_kill9(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(tmp_path)], capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    seq, resting = map(int, proc.stdout.split())
    (seg,) = Journal(tmp_path, DEFAULT_MARKETS).segments()
    assert os.path.getsize(seg) > MAX_RECORD
    assert all(len(p) <= MAX_RECORD for _, p in iter_records(seg))
    rec = Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert not rec.truncated
    assert (rec.engine.seq, rec.engine.resting()) == (seq, resting)
    assert rec.engine.order_status("BTC-USD", "a" * 64, "last")["state"] == "live"


# ---------------------------------------------------------------------- failed writes


class _Fail:
    """Make a journal system call fail ``times`` times (optionally after writing a part)."""

    def __init__(self, real, err: int, times: int = 1, partial: int = 0) -> None:
        self.real, self.err, self.times, self.partial, self.calls = real, err, times, partial, 0

    def __call__(self, fd, *args):
        self.calls += 1
        if self.times:
            self.times -= 1
            if self.partial:  # part of the data reaches the file, then the error
                self.real(fd, bytes(args[0][: self.partial]))
            raise OSError(self.err, os.strerror(self.err))
        return self.real(fd, *args)


def _batches(seed: int = 9, n: int = 6, size: int = 40):
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=seed)
    cmds = wl.warmup(60) + wl.take(n * size - 120)
    return [cmds[i : i + size] for i in range(0, len(cmds), size)]


def _recovered(directory) -> Engine:
    return Journal(directory, DEFAULT_MARKETS).recover().engine


@pytest.mark.parametrize("partial", [0, 7, 300])
def test_failed_write_is_cut_off_kept_and_retried(tmp_path, monkeypatch, partial):
    """ENOSPC mid-write: the file stays as it was, the commands stay buffered, retry works."""
    from shardex.journal.disk import OS_DISK as jmod

    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="batch")
    batches = _batches()
    _apply_and_add(engine, j, batches[0])
    j.commit()
    (seg,) = j.segments()
    records = seg.read_bytes().rstrip(b"\0")  # (whatever preallocated zeros follow them)
    committed = _state(engine)
    _apply_and_add(engine, j, batches[1])
    monkeypatch.setattr(jmod, "write", _Fail(os.write, errno.ENOSPC, partial=partial))
    with pytest.raises(JournalUnavailable) as exc:
        j.commit()
    assert str(exc.value) == "No space left on device"
    assert (j.healthy, j.last_error, j.pending) == (False, "No space left on device", 40)
    on_disk = seg.read_bytes()
    assert on_disk.startswith(records) and not on_disk[len(records) :].strip(b"\0"), (
        "the partial write was cut off"
    )
    assert _state(_recovered(tmp_path)) == committed  # only what was committed
    j.commit()  # space is back: the same buffered commands are written
    assert (j.healthy, j.last_error, j.pending) == (True, None, 0)
    for batch in batches[2:]:
        _apply_and_add(engine, j, batch)
        j.commit()
    rec = Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert not rec.truncated and rec.replayed == sum(map(len, batches))
    assert _state(rec.engine) == _state(engine)


def test_failed_fsync_is_retried_without_duplicating_records(tmp_path, monkeypatch):
    from shardex.journal.disk import OS_DISK as jmod

    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="batch")
    batches = _batches()
    _apply_and_add(engine, j, batches[0])
    failing = _Fail(os.fsync, errno.EIO, times=2)
    monkeypatch.setattr(jmod, "fsync", failing)
    monkeypatch.setattr(jmod, "fdatasync", failing)  # (records in preallocated space)
    for _ in range(2):
        with pytest.raises(JournalUnavailable, match="Input/output error"):
            j.commit()
    j.commit()
    j.close()
    rec = Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert rec.replayed == len(batches[0]) and _state(rec.engine) == _state(engine)


@pytest.mark.parametrize("first_batch_committed", [True, False])
def test_truncate_failing_too_rolls_a_new_segment_that_recovery_accepts(
    tmp_path, monkeypatch, first_batch_committed
):
    """The failed write cannot be cut off: nothing may be appended after the partial record.

    With good records before it, the writer leaves that segment and rolls a new one (recovery
    accepts a torn older segment that the next one continues); with none, the file goes.
    """
    from shardex.journal.disk import OS_DISK as jmod

    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none")
    batches = _batches()
    if first_batch_committed:
        _apply_and_add(engine, j, batches[0])
        j.commit()
    _apply_and_add(engine, j, batches[1])
    monkeypatch.setattr(jmod, "write", _Fail(os.write, errno.ENOSPC, partial=50))
    monkeypatch.setattr(jmod, "ftruncate", _Fail(os.ftruncate, errno.EIO, times=2))
    with pytest.raises(JournalUnavailable):
        j.commit()
    segs = j.segments()
    assert len(segs) == 1
    j.commit()  # truncate fails again: roll (or remove the empty-but-torn file), then write
    for batch in batches[2:]:
        _apply_and_add(engine, j, batch)
        j.commit()
    j.close()
    assert len(j.segments()) == (2 if first_batch_committed else 1)
    rec = Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert rec.replayed == sum(map(len, batches)) - (0 if first_batch_committed else 40)
    assert _state(rec.engine) == _state(engine)
    assert len(rec.truncated) == (1 if first_batch_committed else 0)


def test_a_torn_older_segment_not_continued_is_still_damage(tmp_path):
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none", segment_bytes=1)
    for batch in _batches():
        _apply_and_add(engine, j, batch)
        j.commit()
    j.close()
    segs = j.segments()
    with open(segs[1], "ab") as fh:  # a torn record at the end of an older segment ...
        fh.write(b"\x10\x00\x00\x00junk")
    os.unlink(segs[2])  # ... that the next segment does not continue
    with pytest.raises(JournalError, match="incomplete record, and .* does not continue it"):
        Journal(tmp_path, DEFAULT_MARKETS).recover()


def test_snapshot_write_failure_leaves_no_snapshot_and_no_temp(tmp_path, monkeypatch):
    from shardex.journal.disk import OS_DISK as jmod

    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none")
    _apply_and_add(engine, j, _batches()[0])
    monkeypatch.setattr(jmod, "fsync", _Fail(os.fsync, errno.ENOSPC))
    with pytest.raises(JournalUnavailable, match="snapshot not written: No space left on device"):
        j.snapshot(engine)
    assert j.pending == 0, "the snapshot committed the buffer first"
    assert not list(tmp_path.glob("snapshot-*")), os.listdir(tmp_path)
    assert j.snapshot(engine).exists()


def test_snapshot_refuses_while_commands_cannot_be_committed(tmp_path, monkeypatch):
    from shardex.journal.disk import OS_DISK as jmod

    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none")
    _apply_and_add(engine, j, _batches()[0])
    monkeypatch.setattr(jmod, "write", _Fail(os.write, errno.ENOSPC))
    with pytest.raises(JournalUnavailable):
        j.snapshot(engine)
    assert not list(tmp_path.glob("snapshot-*")) and j.pending == 40


# ---------------------------------------------------------------------- a real full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root and mount); always unmounted afterwards."""
    require(os.geteuid() == 0, "mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    require(proc.returncode == 0, f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_then_space_returns(small_disk):
    journal_dir = small_disk / "journal"
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(journal_dir, DEFAULT_MARKETS, fsync="batch")
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=12)
    _apply_and_add(engine, j, wl.warmup(100))
    j.commit()
    j.snapshot(engine)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last byte
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with pytest.raises(JournalUnavailable, match="No space left on device"):
        for _ in range(200):
            _apply_and_add(engine, j, wl.take(100))
            j.commit()
    assert not j.healthy and j.pending > 0
    with pytest.raises(JournalUnavailable, match="No space left on device"):
        j.commit()  # still full: same answer, same buffer
    with pytest.raises(JournalUnavailable):
        j.snapshot(engine)
    assert [p.name for p in journal_dir.iterdir() if p.suffix == ".tmp"] == []
    # what is on the disk now recovers to exactly the committed prefix
    probe = Journal(journal_dir, DEFAULT_MARKETS).recover()
    assert not probe.truncated
    assert probe.engine.seq < engine.seq
    filler.unlink()  # space returns
    j.commit()
    assert j.healthy and j.pending == 0
    _apply_and_add(engine, j, wl.take(100))
    j.commit()
    j.snapshot(engine)
    _apply_and_add(engine, j, wl.take(100))
    j.commit()
    # kill -9 style: no close; every committed command exactly once
    rec = Journal(journal_dir, DEFAULT_MARKETS).recover()
    assert rec.engine.seq == engine.seq and _state(rec.engine) == _state(engine)
    rec.engine.check_integrity()
