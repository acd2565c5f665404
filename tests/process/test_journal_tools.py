"""``shardex replay --journal`` and ``shardex journal inspect`` on the journals a default cluster
writes (account tier on): engine shard journals with forwarded orders (op 40) and account shard
journals. Both must give the events the live cluster published, and inspect must fail loudly.

One real cluster (2 engine shards, 2 account shards, a real Redis and the bridge): deposits and
crossing orders, then the tools on its data directory, compared with what the bridge wrote. The
tools run in this process (click's runner: the same code from argv to exit status, stdout and
stderr), each kind once as ``python -m shardex.cli`` too, the way a user runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardex.accounts.codes import A_DEPOSIT
from shardex.accounts.core import account_shard_for
from shardex.accounts.machines import AccountMachineFactory, SettledEngineFactory
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW, STP_NONE
from shardex.journal import ENGINE, HEADER, Journal, JournalError, _frame, iter_records
from shardex.tools.journals import journal_kind
from shardex.tools.replay import ReplaySummary, replay_journal
from shardex.tools.workload import Workload
from shardex.wire.protocol import OP_FORWARD, event_to_json, packb, shard_for
from tests.support.accounts import _converged, _flow, accounts_cluster
from tests.support.cli import invoke_cli
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, real: bool = False) -> subprocess.CompletedProcess:
    """``shardex ARGS`` in this process, or (``real``) as ``python -m shardex.cli``."""
    if not real:
        return invoke_cli(*args)
    return subprocess.run(
        [sys.executable, "-m", "shardex.cli", *args], capture_output=True, timeout=60, cwd=ROOT
    )


def _replay(directory: Path, real: bool = False) -> tuple[list[dict], str]:
    proc = _cli("replay", "--journal", str(directory), "--summary", real=real)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()], proc.stderr.decode()


def _as_entry(ev: dict, shard: int) -> dict[str, str]:
    """A replayed event as the bridge writes it to Redis (every value a string, plus shard)."""
    return {**{k: v if isinstance(v, str) else str(v) for k, v in ev.items()}, "shard": str(shard)}


def _engine_streams_done(cluster, r, shards: int, timeout: float = 30.0) -> None:
    """Wait until the bridge has written every engine shard's events up to its seq."""
    deadline = time.monotonic() + timeout
    with cluster.client() as c:
        while True:
            behind = []
            for st in c.status():
                top = r.xrevrange(f"shardex:events:{st['shard']}", count=1)
                got = int(top[0][0].split("-")[0]) if top else 0
                if got != st["seq"]:
                    behind.append((st["shard"], st["seq"], got))
            if not behind:
                return
            assert time.monotonic() < deadline, f"bridge behind (shard, seq, written): {behind}"
            time.sleep(0.2)


def _eth_flow(c, n: int) -> None:
    """Crossing ETH-USD orders (another pair, so that with two engine shards both may trade)."""
    for k in range(n):
        assert c.deposit(f"eb-{k}", "USD", "5000", ref=f"eb-d{k}").ok
        assert c.deposit(f"es-{k}", "ETH", "2", ref=f"es-d{k}").ok
        assert c.place("ETH-USD", "sell", "0.5", "2000", account=f"es-{k}", id=f"es{k}").ok
        assert c.place("ETH-USD", "buy", "0.5", "2001", account=f"eb-{k}", id=f"eb{k}").ok


def test_tools_read_every_journal_of_an_accounts_cluster(tmp_path, redis_server: RedisServer):
    data = tmp_path / "data"
    cluster = accounts_cluster(2, 2, data_dir=str(data), redis=redis_server.url)
    r = redis_server.client()
    try:
        with cluster.client() as c:
            _flow(c, "j", 5)
            _eth_flow(c, 4)
        _converged(cluster, r, 2)
        _engine_streams_done(cluster, r, 2)
    finally:
        cluster.stop()
    trades = 0
    for i in range(2):
        events, summary = _replay(data / f"shard-{i}", real=i == 0)
        published = [dict(f) for _, f in r.xrange(f"shardex:events:{i}")]
        assert [_as_entry(ev, i) for ev in events] == published, f"shard-{i}"
        assert "unknown_op" not in summary and "not live" not in summary, summary
        assert "account tier" in summary, summary
        trades += sum(1 for ev in events if ev["ev"] == "trade")
    assert trades == 5 + 4  # every crossing pair traded once, replayed as it ran
    for j in range(2):
        events, summary = _replay(data / f"accounts-{j}")
        assert "malformed" not in summary, summary
        assert events and {"balance", "forward"} <= {ev["ev"] for ev in events}
        money = [_as_entry(ev, j) for ev in events if ev["ev"] in ("balance", "fees", "fill")]
        assert money == [dict(f) for _, f in r.xrange(f"shardex:balances:{j}")], f"accounts-{j}"
    for name in ("shard-0", "shard-1", "accounts-0", "accounts-1"):
        proc = _cli("journal", "inspect", str(data / name), real=name == "accounts-1")
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        assert b"PROBLEM" not in proc.stderr and b"recovery reaches seq" in proc.stdout
        info = json.loads(_cli("journal", "inspect", str(data / name), "--json").stdout)
        assert info["seq_error"] is None and info["problems"] == [] and info["seq"] > 0

    # inspect fails loudly on what is wrong: a record that does not continue the journal
    broken = tmp_path / "broken"
    shutil.copytree(data, broken, ignore=shutil.ignore_patterns("keys", "*.sock"))
    shard = broken / "shard-0"
    seg = Journal(shard, {}).segments()[-1]  # (a clean stop's snapshot opened a new one)
    good = len(seg.read_bytes().rstrip(b"\0"))
    with open(seg, "r+b") as fh:  # a record 5 seqs ahead of the end: records missing
        fh.truncate(good)
        fh.seek(good)
        seq = json.loads(_cli("journal", "inspect", str(shard), "--json").stdout)["seq"]
        fh.write(_frame(seq + 5, packb([])))
    proc = _cli("journal", "inspect", str(shard), real=True)
    assert proc.returncode == 1, proc.stdout
    err = proc.stderr.decode()
    assert "PROBLEM: recovery would refuse to start" in err and f"seq {seq + 5}" in err, err
    proc = _cli("journal", "inspect", str(shard), "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["problems"]
    proc = _cli("replay", "--journal", str(shard))
    assert proc.returncode == 1 and b"records missing" in proc.stderr
    # damage in the middle of an account shard's journal
    seg = Journal(broken / "accounts-0", {}).segments()[0]
    raw = bytearray(seg.read_bytes())
    raw[HEADER.size + 2] ^= 0xFF
    seg.write_bytes(bytes(raw))
    proc = _cli("journal", "inspect", str(broken / "accounts-0"))
    assert proc.returncode == 1 and b"checksum mismatch" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------- without processes


def _write(directory: Path, machine, cmds, **kw) -> tuple[object, list]:
    """Journal ``cmds`` as a shard does (apply, add, commit each), with ``machine``'s factory."""
    j = Journal(directory, DEFAULT_MARKETS, fsync="none", machine=machine, **kw)
    m = machine.new(DEFAULT_MARKETS)
    out: list = []
    for k, cmd in enumerate(cmds):
        j.add(m.seq, cmd)
        m.apply(cmd, out)
        j.commit()
        if kw and k % 40 == 39:
            j.snapshot(m)
    j.close()
    return m, out


def _lines(directory: Path) -> tuple[list[dict], ReplaySummary]:
    lines: list[str] = []
    summary = replay_journal(directory, DEFAULT_MARKETS, lines.append)
    return [json.loads(x) for x in "".join(lines).splitlines()], summary


def test_replay_starts_at_the_oldest_snapshot_the_records_continue(tmp_path):
    """Older segments deleted by snapshot retention: the events after the oldest snapshot kept,
    exactly as the uninterrupted run produced them (a fresh engine fed the later records
    produced other events: unknown orders, other seqs)."""
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=7)
    cmds = wl.warmup(30) + wl.take(170)
    engine, out = _write(tmp_path, ENGINE, cmds, segment_bytes=2048, keep_snapshots=1)
    j = Journal(tmp_path, DEFAULT_MARKETS)
    first = next(iter_records(j.segments()[0]))[0]
    assert first > 0, "retention removed the first segments"
    events, summary = _lines(tmp_path)
    start = int(j.snapshots()[0].stem.split("-")[1])
    # (records written without exchange time: their events replay with ts 0)
    want = [event_to_json(ev, DEFAULT_MARKETS, 0) for ev in out if ev[1] > start]
    assert events == want and summary.events == len(want) == engine.seq - start


def test_kind_comes_from_the_data_dir_or_the_snapshot_or_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "shard-1").mkdir(parents=True)
    (data / "accounts.json").write_text('{"accounts": 2}\n')
    order = (OP_NEW, "BTC-USD", "o1", "acct-x", BUY, LIMIT, 100, 1, GTC, False, STP_NONE)
    j = next(k for k in range(2) if account_shard_for("acct-x", 2) == k)
    fwd = (OP_FORWARD, j, 1, 0, order)
    settled = SettledEngineFactory(0, 2, 2)
    _write(data / "shard-0", settled, [fwd])
    kind = journal_kind(data / "shard-0")
    assert (kind.role, kind.index, kind.accounts, kind.engines) == ("engine", 0, 2, 2)
    events, summary = _lines(data / "shard-0")
    assert [e["ev"] for e in events] == ["accepted"] and not summary.rejects
    # the same journal anywhere else: nothing says how many account shards there were
    shutil.copytree(data / "shard-0", tmp_path / "copy")
    with pytest.raises(JournalError, match="forwarded by account shards, but nothing says"):
        journal_kind(tmp_path / "copy")
    # an account shard journal: M from accounts.json, N from the shard-I directories...
    acct = AccountMachineFactory(1, 2, lambda s: shard_for(s, 2))
    u = next(f"u{k}" for k in range(99) if account_shard_for(f"u{k}", 2) == 1)
    _write(data / "accounts-1", acct, [(A_DEPOSIT, u, "USD", 10**6, "r1")])
    kind = journal_kind(data / "accounts-1")
    assert (kind.role, kind.index, kind.accounts, kind.engines) == ("accounts", 1, 2, 2)
    events, summary = _lines(data / "accounts-1")
    assert events == [{"ev": "balance", "account": u, "asset": "USD", "available": "1.00",
                       "held": "0.00", "why": "deposit", "ref": "r1", "seq": 1,
                       "ts": 0}]  # fmt: skip
    # ...and without its data dir, refused rather than guessed
    shutil.copytree(data / "accounts-1", tmp_path / "accounts-1")
    with pytest.raises(JournalError, match="how many account shards"):
        journal_kind(tmp_path / "accounts-1")
    # a plain engine journal anywhere is the engine's
    _write(tmp_path / "plain", ENGINE, [order])
    assert journal_kind(tmp_path / "plain").role == "engine"
    assert not journal_kind(tmp_path / "plain").settled


def test_inspect_exits_1_when_recovery_would_refuse(tmp_path):
    """A record that does not continue the journal: the old inspect printed every segment "ok"
    and exited 0 (the reason only in --json's seq_error)."""
    wl = Workload(symbols=("BTC-USD",), seed=3)
    engine, _ = _write(tmp_path, ENGINE, wl.warmup(10) + wl.take(30))
    with open(Journal(tmp_path, {}).segments()[-1], "ab") as fh:
        fh.write(_frame(engine.seq + 3, packb([])))
    for extra in ((), ("--json",)):
        proc = _cli("journal", "inspect", str(tmp_path), *extra)
        assert proc.returncode == 1, (extra, proc.stdout, proc.stderr)
        assert b"PROBLEM: recovery would refuse to start" in proc.stderr
        assert f"record with seq {engine.seq + 3}".encode() in proc.stderr
