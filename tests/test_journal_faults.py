"""Journal under faults: group commits over the record limit, disk full, failed writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import msgpack
import pytest

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import GTC, LIMIT, OP_NEW
from shardex.journal import MAX_RECORD, Journal, JournalError, _array, iter_records
from shardex.protocol import unpackb
from shardex.workload import Workload


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
