"""Preallocated journal segments (the writer thread keeps zeros written ahead of its records).

A segment may end in zeros after a crash: recovery trims them (not a torn write, not damage); a
record cut anywhere and followed by zeros is a torn write into that space; a bad record followed
by anything else is still damage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import msgpack
import pytest

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.journal import (
    HEADER,
    PREALLOCATE,
    Journal,
    JournalError,
    SegmentScan,
    inspect,
    iter_records,
)
from shardex.tools.workload import Workload
from shardex.wire.protocol import unpackb


def _state(engine: Engine) -> bytes:
    return msgpack.packb(engine.snapshot(), use_bin_type=True)


def _write(directory, cmds, batch: int = 20, close: bool = True) -> Engine:
    """Journal ``cmds`` through the writer thread (preallocating), ``batch`` per commit."""
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(directory, DEFAULT_MARKETS, fsync="batch")
    j.start_writer()
    out: list = []
    for i, cmd in enumerate(cmds):
        seq = engine.seq
        engine.apply(cmd, out)
        j.add(seq, cmd)
        if i % batch == batch - 1:
            j.submit()
    j.commit()
    if close:
        j.close()
    return engine


def _cmds(n: int = 200, seed: int = 6) -> list:
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=seed)
    return wl.warmup(40) + wl.take(n - 40)


def test_writer_preallocates_and_a_clean_close_trims(tmp_path):
    engine = Engine(DEFAULT_MARKETS)
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="batch")
    j.start_writer()
    out: list = []
    for cmd in _cmds():
        seq = engine.seq
        engine.apply(cmd, out)
        j.add(seq, cmd)
    j.commit()
    (seg,) = j.segments()
    assert os.path.getsize(seg) == PREALLOCATE, "zeros written ahead of the records"
    scan = SegmentScan(seg)
    assert len(list(iter_records(seg, scan))) == 1
    assert scan.zeros == PREALLOCATE - scan.good_bytes and not scan.torn and not scan.damage
    info = inspect(tmp_path)
    assert info["seq"] == engine.seq and info["segments"][0]["damage"] is None
    j.close()
    assert os.path.getsize(seg) == scan.good_bytes, "a clean close leaves no zeros"


def test_zero_tail_after_a_crash_is_trimmed_not_torn(tmp_path):
    """kill -9 of a real writer process: the segment ends in zeros; recovery trims them,
    reports nothing torn, and the next writer appends after the last record."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from shardex.engine import DEFAULT_MARKETS, Engine
        from shardex.journal import Journal
        from shardex.tools.workload import Workload
        wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=6)
        engine, j, out = Engine(DEFAULT_MARKETS), Journal(sys.argv[1], DEFAULT_MARKETS), []
        j.start_writer()
        for i, cmd in enumerate(wl.warmup(40) + wl.take(160)):
            seq = engine.seq
            engine.apply(cmd, out)
            j.add(seq, cmd)
            if i % 20 == 19:
                j.commit()
        print(engine.seq, engine.resting(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    seq, resting = map(int, proc.stdout.split())
    (seg,) = Journal(tmp_path, DEFAULT_MARKETS).segments()
    assert os.path.getsize(seg) == PREALLOCATE
    rec = Journal(tmp_path, DEFAULT_MARKETS).recover()
    assert rec.truncated == [] and (rec.engine.seq, rec.engine.resting()) == (seq, resting)
    scan = SegmentScan(seg)
    assert list(iter_records(seg, scan))
    assert 0 < scan.good_bytes == scan.size < PREALLOCATE and not scan.zeros
    expected = _write(tmp_path / "ref", _cmds())
    assert _state(rec.engine) == _state(expected)


def test_torn_write_into_preallocated_space_at_every_offset(tmp_path):
    src = tmp_path / "src"
    expected_all = _write(src, _cmds(120), batch=40)
    (seg,) = sorted(src.glob("journal-*.log"))
    data = seg.read_bytes()
    starts, off = [], 0
    while off < len(data):
        starts.append(off)
        off += HEADER.size + HEADER.unpack_from(data, off)[0]
    last = starts[-1]
    expected = Engine(DEFAULT_MARKETS)
    for _, payload in list(iter_records(seg))[:-1]:
        expected.apply_many(unpackb(payload))
    assert expected.seq < expected_all.seq
    padded = 4096
    for cut in range(last + 1, len(data), 7):  # the last record, partly written, then zeros
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(data[:cut] + bytes(padded))
        rec = Journal(d, DEFAULT_MARKETS).recover()
        assert rec.truncated, f"cut at {cut} not detected as torn"
        assert _state(rec.engine) == _state(expected)
        assert (d / seg.name).stat().st_size == last


def test_a_bad_record_followed_by_data_is_still_damage(tmp_path):
    _write(tmp_path, _cmds(120), batch=40)
    (seg,) = sorted(tmp_path.glob("journal-*.log"))
    data = bytearray(seg.read_bytes())
    data[HEADER.size + 3] ^= 0x40  # inside the first record's payload: later records follow
    seg.write_bytes(bytes(data) + bytes(4096))
    with pytest.raises(JournalError, match="checksum mismatch"):
        Journal(tmp_path, DEFAULT_MARKETS).recover()


def test_fdatasync_only_inside_preallocated_space(tmp_path, monkeypatch):
    """Records inside written, synced zeros need data only; anything that grows the file (no
    preallocation, or preallocation failed) gets a full fsync."""
    from shardex.journal.disk import OS_DISK as jmod

    calls: list[str] = []
    monkeypatch.setattr(jmod, "fsync", lambda fd: calls.append("fsync") or os.fsync(fd))
    monkeypatch.setattr(jmod, "fdatasync", lambda fd: calls.append("data") or os.fsync(fd))
    _write(tmp_path / "writer", _cmds(120), batch=40)
    assert calls and set(calls) == {"data"}  # (submits waiting together share one)
    calls.clear()
    plain = Journal(tmp_path / "plain", DEFAULT_MARKETS, fsync="batch", preallocate=0)
    engine, out = Engine(DEFAULT_MARKETS), []
    for cmd in _cmds(40):
        seq = engine.seq
        engine.apply(cmd, out)
        plain.add(seq, cmd)
    plain.commit()
    assert calls == ["fsync"]
    calls.clear()
    sync = Journal(tmp_path / "sync", DEFAULT_MARKETS, fsync="batch")  # no writer thread
    for cmd in _cmds(40):
        sync.add(0, cmd)  # (seqs do not matter to the write path)
    sync.commit()
    assert calls == ["data"], "the synchronous path preallocates too"
    calls.clear()

    def no_space(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jmod, "pwrite", no_space)  # preallocation fails: append + fsync
    written = _state(_write(tmp_path / "full", _cmds(40), batch=40))
    assert calls == ["fsync"]
    assert written == _state(Journal(tmp_path / "full", DEFAULT_MARKETS).recover().engine)
