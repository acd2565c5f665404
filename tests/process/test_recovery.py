"""Restarts: a snapshot at a clean stop, exact snapshots, a linear journal scan, and a router
that says ``recovering`` (with the estimate) while a shard replays.

Regressions (each fails on 698b19a): no snapshot was taken at SIGTERM/SIGINT, so every restart
replayed the whole journal; ``iter_records`` scanned the rest of the segment for zeros after
every good record (quadratic: the 24 s data-dir check); the router answered ``shard
unavailable`` for a shard that was replaying.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import msgpack
import zmq

from shardex import recovery
from shardex.accounts.machines import AccountMachineFactory, SettledEngineFactory
from shardex.client import Client, ShardexError, retryable
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.journal import Journal, iter_records, read_snapshot, snapshot_books, uncovered
from shardex.journal import records as journal_mod
from shardex.node.bridge import _waiting_for
from shardex.node.router import Router, RouterConfig, RouterNode
from shardex.recovery import Progress, describe, recover_visibly
from shardex.tools.workload import Workload
from shardex.wire.protocol import (
    ERR_RECOVERING,
    ERR_UNAVAILABLE,
    OP_HELLO,
    VERSION,
    decode_reply,
    encode_reply,
    packb,
    shard_for,
)
from tests.support.cluster import Cluster
from tests.support.ports import free_layout

# -- pure parts -----------------------------------------------------------------------------------


def test_progress_estimates_total_and_time_left_from_bytes():
    p = Progress("shard 0", start=100.0)
    assert p.estimate()["total"] is None and p.estimate()["eta_s"] is None
    p.now = 103.0  # (the beacon's clock while the snapshot loads)
    assert describe(p.estimate()) == "shard 0, loading its newest snapshot (3 s so far)"
    p.update(1_000, 250, 1_000, now=102.0)  # a quarter of the bytes in 2 s
    e = p.estimate()
    assert e == {"what": "shard 0", "phase": "replaying the journal after it", "done": 1_000,
                 "total": 4_000, "eta_s": 6.0, "elapsed_s": 2.0}  # fmt: skip
    assert "replayed 1,000 of ~4,000" in p.line() and "~6 s left" in p.line()
    p.finished = True
    assert p.estimate()["total"] == 1_000 and p.estimate()["eta_s"] == 0.0


def test_the_last_progress_line_is_logged_once(monkeypatch, caplog):
    """A replay whose last step logged its line logged the same line again when it finished
    (``replayed 13,771 of ~13,771 …`` twice in a row)."""
    monkeypatch.setattr(recovery, "LOG_EVERY_S", 0.0)  # every step is due: no clock needed

    def replay(step):
        step(500, 500, 1_000)
        step(1_000, 1_000, 1_000)
        return "state"

    with caplog.at_level("INFO", logger=recovery.log.name):
        assert recover_visibly(replay, "shard 1", None, None, "shard-1", None, {}) == "state"
    lines = [r.getMessage() for r in caplog.records if "replayed" in r.getMessage()]
    assert [ln.split(" journaled")[0] for ln in lines] == [
        "shard 1: replayed 500 of ~1,000", "shard 1: replayed 1,000 of ~1,000"]


def test_record_scan_is_linear(tmp_path, monkeypatch):
    """Regression: every good record asked whether only zeros follow it, reading the rest of
    the segment each time. Now that is asked only about a bad record (or the end)."""
    j = Journal(tmp_path, DEFAULT_MARKETS, fsync="none", preallocate=1 << 16)
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    for cmd in Workload(symbols=("BTC-USD",), seed=1).take(2_000):
        j.add(engine.seq, cmd)
        engine.apply(cmd, out)
        j.commit()
    j.close()
    calls = []
    real = journal_mod._zeros_from
    monkeypatch.setattr(journal_mod, "_zeros_from", lambda d, s: calls.append(s) or real(d, s))
    (seg,) = j.segments()
    assert sum(1 for _ in iter_records(seg)) == 2_000
    assert len(calls) <= 1, f"{len(calls)} scans for zeros over 2,000 good records"


def test_recovery_reads_only_segments_the_snapshot_does_not_cover(tmp_path):
    segs = [tmp_path / f"journal-{s:020d}.log" for s in (0, 100, 200, 300)]
    assert uncovered(segs, 50) == segs
    assert uncovered(segs, 200) == segs[2:]
    assert uncovered(segs, 250) == segs[2:]
    assert uncovered(segs, 999) == segs[3:]


def _state(machine) -> bytes:
    return msgpack.packb(machine.snapshot(), use_bin_type=True)


def test_snapshot_plus_tail_equals_full_replay_byte_for_byte(tmp_path):
    """The engine's state recovered from each snapshot + the journal after it is, byte for
    byte, the state of a replay of the whole journal with no snapshot at all."""
    full = tmp_path / "full"
    snapped = tmp_path / "snapped"
    j_full = Journal(full, DEFAULT_MARKETS, fsync="none", segment_bytes=4096)
    j_snap = Journal(snapped, DEFAULT_MARKETS, fsync="none", segment_bytes=4096,
                     keep_snapshots=100)  # fmt: skip
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    cmds = Workload(symbols=("BTC-USD", "ETH-USD"), seed=5)
    for k in range(12):
        for cmd in cmds.take(150):
            for j in (j_full, j_snap):
                j.add(engine.seq, cmd)
            engine.apply(cmd, out)
        j_full.commit()
        j_snap.commit()
        if k % 3 == 1:
            j_snap.snapshot(engine)
    for j in (j_full, j_snap):
        j.close()
    want = _state(engine)
    assert _state(Journal(full, DEFAULT_MARKETS).recover().engine) == want
    snaps = Journal(snapped, DEFAULT_MARKETS).snapshots()
    assert len(snaps) == 4
    for snap in snaps:  # the data-dir check's partial read says what the full one does
        state = read_snapshot(snap)
        assert snapshot_books(snap) == (state["seq"], list(state["books"]))
    for keep in range(len(snaps), 0, -1):  # newest snapshot + tail, then each older one
        rec = Journal(snapped, DEFAULT_MARKETS).recover()
        assert rec.snapshot_seq is not None and rec.replayed > 0 or keep == len(snaps)
        assert _state(rec.engine) == want, f"from snapshot {snaps[keep - 1].name}"
        snaps[keep - 1].unlink()


# -- the router: recovering instead of unavailable --------------------------------------------


def _hello(i: int, recovering: dict | None) -> bytes:
    info = {"shard": i, "shards": 1, "pid": 7}
    if recovering is not None:
        info["recovering"] = recovering
    return packb((OP_HELLO, info))


def test_router_answers_recovering_with_the_estimate_then_routes():
    r = Router(1, RouterConfig(1, "", ""))
    est = {"what": "shard 0", "done": 1200, "total": 5000, "eta_s": 4.2, "elapsed_s": 1.0}
    r.hello(b"recovering-shard-0", _hello(0, est), now=10.0)
    assert r.info(10.0)["recovering"] == {"shard 0": est}
    frames = [b"client", b"BTC-USD", b"req", msgpack.packb([VERSION, [[11]]])]
    shard, reply = r.from_client(frames, now=10.5)
    error, _ = decode_reply(reply[-1])
    assert shard == -1 and error.startswith(ERR_RECOVERING), error
    assert "1,200 of ~5,000" in error and "~4 s left" in error and retryable(error)
    # another connection may not claim the state (insecure: the beacon's own identity)
    r2 = Router(1, RouterConfig(1, "", ""))
    r2.hello(b"shard-0", _hello(0, est), now=10.0)
    assert not r2.recovering
    # the shard's own hello ends it; a beacon gone silent is forgotten after its TTL
    r.hello(b"shard-0", _hello(0, None), now=11.0)
    assert not r.recovering and r.from_client(frames, now=11.1)[0] == 0
    r.hello(b"recovering-shard-0", _hello(0, est), now=20.0)
    assert r.from_client(frames, now=21.0)[0] == -1
    shard, reply = r.from_client(frames, now=30.0)
    assert shard == 0 and reply is None  # registered link still there: routed again


def test_a_replaying_shard_makes_a_real_router_answer_recovering(tmp_path):
    """Real router process loop and sockets, real beacon: while ``recover`` runs (held here
    until a client has seen the answer), requests for that shard get ``recovering`` with the
    estimate instead of ``shard unavailable``; after it, the router forgets the state."""
    layout = free_layout(1)
    node = RouterNode(RouterConfig(1, layout.frontend, layout.backend, open_after=0.0))
    t = threading.Thread(target=node.run, daemon=True)
    t.start()
    seen: list[str] = []
    release = threading.Event()

    def recover(progress):
        progress(300, 3_000, 12_000)
        release.wait(30)
        progress(1_200, 12_000, 12_000)
        return "state"

    def client_side():
        deadline = time.monotonic() + 20
        try:
            with Client(layout.frontend, key=False, timeout=1.0) as c:
                while time.monotonic() < deadline:
                    try:
                        c.book("BTC-USD")
                    except ShardexError as exc:
                        seen.append(str(exc))
                        if "of ~" in str(exc):  # the estimate after the first progress
                            return
                    time.sleep(0.05)
        finally:
            release.set()

    ct = threading.Thread(target=client_side, daemon=True)
    ct.start()
    ctx = zmq.Context()
    try:
        got = recover_visibly(recover, "shard 0", ctx, layout.backend, "shard-0", None,
                              {"shard": 0, "shards": 1, "pid": os.getpid()})  # fmt: skip
        ct.join(30)
    finally:
        node.stop.set()
        t.join(10)
        ctx.term()
    assert got == "state"
    first = next((k for k, e in enumerate(seen) if ERR_RECOVERING in e), None)
    assert first is not None, seen  # (before the beacon's first beat: "unavailable")
    assert all(ERR_RECOVERING in e and ERR_UNAVAILABLE not in e for e in seen[first:]), seen
    assert "replayed 300 of ~1,200" in seen[-1], seen[-1]


# -- the real cluster: a clean stop snapshots both tiers --------------------------------------


def test_a_clean_stop_snapshots_both_tiers_and_the_restart_replays_nothing():
    """``shardex up`` (one engine shard, one account shard), funded orders, SIGTERM: each
    shard writes a snapshot at its last seq while stopping, the restart loads them and
    replays 0 commands, and each snapshot equals a full replay of its journal byte for byte."""
    env = {"SHARDEX_SNAPSHOT_EVERY": "1000000000", "SHARDEX_SNAPSHOT_INTERVAL": "100000"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    data = None
    try:
        cl = Cluster(1, accounts=1)
        data = Path(cl.data_dir)
        cl.own_data = False
        try:
            with cl.client() as c:
                assert c.deposit("alice", "USD", "100000", ref="r1").ok
                assert c.deposit("bob", "BTC", "10", ref="r2").ok
                for k in range(20):
                    assert c.place("BTC-USD", "buy", "0.01", str(100 + k), account="alice").ok
                    assert c.place("BTC-USD", "sell", "0.01", str(110 - k), account="bob").ok
        finally:
            cl.stop()
        first = cl.log_path.read_text(errors="replace")
        for name in ("shard-0", "accounts-0"):
            assert re.search(rf"{'account shard' if 'acc' in name else 'shard'} 0 stopping: "
                             r"snapshot at seq \d+", first), first[-3000:]  # fmt: skip
            assert Journal(data / name, DEFAULT_MARKETS).snapshots(), name
        _assert_exact(data)
        cl2 = Cluster(1, accounts=1, data_dir=str(data))
        try:
            text = cl2.output()
        finally:
            cl2.stop()
        for what in ("shard 0", "account shard 0"):
            m = re.search(
                rf"recovered {what} from \S+: snapshot seq (\S+) \+ (\d+) journaled", text
            )
            assert m and m.group(1) != "None" and m.group(2) == "0", (what, text[-3000:])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)


def _assert_exact(data: Path) -> None:
    """Each directory: state from its snapshot (+ tail) == state from a full replay."""
    engine_for = lambda s: shard_for(s, 1)  # noqa: E731
    machines = {"shard-0": SettledEngineFactory(0, 1, 1),
                "accounts-0": AccountMachineFactory(0, 1, engine_for, engines=1)}  # fmt: skip
    for name, factory in machines.items():
        src = data / name
        bare = data.parent / f"{data.name}-{name}-bare"
        shutil.copytree(src, bare)
        try:
            for snap in bare.glob("snapshot-*.snap"):
                snap.unlink()
            a = Journal(src, DEFAULT_MARKETS, machine=factory).recover()
            b = Journal(bare, DEFAULT_MARKETS, machine=factory).recover()
            assert a.snapshot_seq is not None and b.snapshot_seq is None and b.replayed > 0
            assert _state(a.engine) == _state(b.engine), name
        finally:
            shutil.rmtree(bare, ignore_errors=True)


def test_the_bridge_names_what_it_waits_for():
    """The bridge's wait line (logged once per change, not every 0.5 s) names the shards not
    registered and the recovering estimate the router holds for them."""
    r = Router(2, RouterConfig(2, "", "", accounts=1))
    est = {"what": "account shard 0", "done": 10, "total": 100, "eta_s": 9.0}
    r.hello(b"recovering-accounts-0", packb((OP_HELLO, {"tier": "accounts", "shard": 0,
                                                         "shards": 1, "recovering": est})),
            now=1.0)  # fmt: skip
    r.hello(b"shard-0", packb((OP_HELLO, {"shard": 0, "shards": 2, "pub": "tcp://p",
                                          "direct": "tcp://d"})), now=1.0)  # fmt: skip
    names, detail = _waiting_for([b"req", encode_reply([r.info(1.5)])])
    assert names == ("shard 1", "account shard 0")
    assert "account shard 0, replayed 10 of ~100, ~9 s left" in detail
