"""Failover: a hot standby per shard, the Redis lease, epoch fencing.

Real processes: a real redis-server, one router, two ``shardex engine --role auto`` replicas of
one shard (each with its own journal), clients through the router. Nothing here asserts time;
``bench/failover.py`` prints failover times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from shardex.engine import Engine
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import Journal
from shardex.lease import Holder, Lease, LeaseLost
from shardex.node.replica import replica_dir
from tests.support.cluster import ROOT
from tests.support.failover import (
    SYMBOL,
    Load,
    Pair,
    _journal_ids,
    _place_until_ok,
    _replayed_seq,
    kill9_primary_under_load_loses_nothing_acked,
    sigstop_primary_is_fenced_after_resume,
    started_pair,
)
from tests.support.redis import RedisServer
from tests.support.wait import wait_until


@pytest.fixture
def pair(tmp_path) -> Any:
    with started_pair(tmp_path) as p:
        yield p


def test_kill9_primary_under_load_loses_nothing_acked(pair: Pair) -> None:
    kill9_primary_under_load_loses_nothing_acked(pair)


def test_sigstop_primary_is_fenced_after_resume(pair: Pair) -> None:
    sigstop_primary_is_fenced_after_resume(pair)


def test_standby_dies_primary_goes_on_and_it_rejoins(pair: Pair) -> None:
    first = pair.wait_leader()
    pair.wait_isr({"shard-0.r0", "shard-0.r1"})
    standby = "shard-0.r1" if first == "shard-0.r0" else "shard-0.r0"
    pair.proc_of(standby).send_signal(signal.SIGKILL)
    pair.proc_of(standby).wait(5)
    with pair.client() as c:
        for k in range(30):  # the primary answers alone once it shrank the in-sync set
            assert _place_until_ok(c, c.order(SYMBOL, "sell", "1", "200", id=f"alone{k}")).ok
    assert pair.lease().isr() == [first]
    load = Load(pair)  # it rejoins while orders keep coming
    try:
        pair.start_replica(int(standby[-1]))
        pair.wait_isr({first, standby})  # it caught up from the primary, then joined
    finally:
        load.stop()
    assert load.acked
    rejoined = replica_dir(pair.data, 0, int(standby[-1]))
    assert {f"alone{k}" for k in range(30)} <= set(_journal_ids(rejoined))
    _replayed_seq(rejoined)  # contiguous


def test_status_names_the_standby_pid(pair: Pair) -> None:
    """Regression: ``shardex status`` showed the leader's pid and no standby's. The standby
    tells its leader its pid (``[PID, pid]`` after each SUB); the leader's status lists it."""
    first = pair.wait_leader()
    standby = "shard-0.r1" if first == "shard-0.r0" else "shard-0.r0"
    pair.wait_isr({first, standby})
    want = {standby: pair.proc_of(standby).pid}
    with pair.client() as c:
        deadline = time.monotonic() + 15
        while (st := c.status()[0]).get("standby_pids") != want:
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
        assert st["pid"] == pair.proc_of(first).pid
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "status", "--endpoint", pair.layout.frontend,
         "--key", "none"], capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"standby pid {standby} {want[standby]}" in out.stdout, out.stdout


def test_redis_restart_no_split_brain(pair: Pair) -> None:
    """Redis (the lease's home) stops for 2 s and comes back with its AOF: the leader stops
    answering at its deadline, one leader serves afterwards, nothing acknowledged is lost, and
    both replicas end in sync on one history."""
    first = pair.wait_leader()
    pair.wait_isr({"shard-0.r0", "shard-0.r1"})
    acked = []
    with pair.client() as c:
        for k in range(10):
            assert _place_until_ok(c, c.order(SYMBOL, "buy", "1", "60", id=f"pre{k}")).ok
            acked.append(f"pre{k}")
    pair.redis.stop()  # type: ignore[attr-defined]
    with pair.client() as c:  # acked only while the leader's lease deadline holds
        for k in range(10):
            r = c.submit_many([c.order(SYMBOL, "buy", "1", "61", id=f"mid{k}")])[0]
            if r.error is None:
                acked.append(f"mid{k}")
    # down until the leader reached its deadline (it says so)
    wait_until(lambda: "is past its lease deadline" in pair.output("r" + first[-1]), 30,
               "the leader past its deadline")  # fmt: skip
    pair.redis.start()  # type: ignore[attr-defined]
    with pair.client() as c:
        for k in range(10):
            assert _place_until_ok(c, c.order(SYMBOL, "buy", "1", "62", id=f"post{k}")).ok
            acked.append(f"post{k}")
    leader = pair.wait_leader()
    lease = pair.lease()
    deadline = time.monotonic() + 15
    while set(lease.isr()) != {"shard-0.r0", "shard-0.r1"}:
        assert time.monotonic() < deadline, f"in-sync set stays {lease.isr()}"
        for r in (0, 1):  # a leader that lost its lease exits (3): restart it, as supervised
            proc = pair.procs[f"r{r}"]
            if proc.poll() is not None:
                assert proc.returncode == 3
                pair.start_replica(r)
        time.sleep(0.1)
    with pair.client() as c:
        seq = c.status()[0]["seq"]
    for r in (0, 1):  # both hold every acknowledged order, on one contiguous history
        path = replica_dir(pair.data, 0, r)
        deadline = time.monotonic() + 10
        while _replayed_seq(path) < seq and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not set(acked) - set(_journal_ids(path)), f"replica {r} lacks acked orders"
        assert _replayed_seq(path) == seq
    assert first and leader  # (either may lead afterwards: exactly one holds the lease)


def test_lease_is_exclusive_and_fenced(redis_server: RedisServer) -> None:
    """The lease on its own: one holder; a non-member may not take it; epochs only grow."""
    import redis

    r = redis.Redis(port=redis_server.port)
    a = Lease(r, 7, "a", "tcp://a", ttl_ms=300, renew_ms=100)
    b = Lease(r, 7, "b", "tcp://b", ttl_ms=300, renew_ms=100)
    assert a.try_acquire(0, 0)[0] == 1
    assert b.try_acquire(0, 0) == (0, "held")
    assert a.renew() and a.valid()
    deadline = time.monotonic() + 5  # a stopped renewing: it expires; b is not in the ISR {a}
    while a.valid() or r.exists(a.keys[0]):
        assert time.monotonic() < deadline, "lease never expired"
        time.sleep(0.02)
    epoch, why = b.try_acquire(0, 0)
    assert epoch == 0 and "in-sync" in why
    assert a.try_acquire(5, 10)[0] == 6  # the journal's floor wins over the counter
    assert a.set_isr(["a", "b"])
    a.release()
    assert b.try_acquire(0, 20)[0] == 7
    with pytest.raises(LeaseLost):
        a.value = "6|a|tcp://a"
        a.renew()
    assert b.starts() == {1: 0, 6: 10, 7: 20}


def test_up_replicas_2_kill9_leader_stream_contiguous() -> None:
    """``shardex up --replicas 2`` end to end: the supervisor's pair, the embedded Redis and the
    bridge; kill -9 the leader: orders go on, the Redis stream stays contiguous, no duplicate."""
    import redis

    from tests.support.cluster import Cluster

    c = Cluster(1, "--replicas", "2", "--accounts", "0", insecure=True, redis="embedded")
    try:
        with c.client(account="acct1") as cl:
            deadline = time.monotonic() + 15
            while len(cl.status()[0].get("isr", [])) != 2:  # the standby joined
                assert time.monotonic() < deadline, cl.status()
                time.sleep(0.1)
            for k in range(20):
                assert _place_until_ok(cl, cl.order(SYMBOL, "buy", "1", "100", id=f"a{k}")).ok
            leader = cl.status()[0]
            assert leader["role"] == "primary" and leader["epoch"] >= 1
            import urllib.request

            port = c.layout.replica_metrics(0, int(leader["node"][-1]))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
            assert f'shardex_replica_epoch{{shard="0"}} {leader["epoch"]}.0' in metrics
            assert 'shardex_replica_in_sync{shard="0"} 2.0' in metrics
            os.kill(leader["pid"], signal.SIGKILL)
            for k in range(20):
                assert _place_until_ok(cl, cl.order(SYMBOL, "sell", "1", "100", id=f"b{k}")).ok
            after = cl.status()[0]
        assert after["pid"] != leader["pid"] and after["epoch"] > leader["epoch"]
        r = redis.Redis(port=c.layout.redis_port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seqs = [int(i.split(b"-")[0]) for i, _ in r.xrange("shardex:events:0")]
            if seqs and seqs[-1] >= after["seq"]:
                break
            time.sleep(0.1)
        assert seqs == list(range(1, after["seq"] + 1)), "the events stream has a gap or a dup"
        if after["node"] != leader["node"]:  # the other replica leads, on other ports
            assert "now at PUB" in c.output()  # the bridge followed it
    finally:
        c.stop()


def test_standby_that_is_ahead_starts_over(tmp_path) -> None:
    """A deposed leader whose journal runs past the start of the next epoch (records it
    committed but never got acked) moves its journal aside and starts from an empty one."""
    from shardex.node.replica import Diverged, Standby

    d = str(tmp_path / "shard-0")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    engine = journal.recover().engine
    for k in range(3):
        cmd = (OP_NEW, SYMBOL, f"x{k}", "acct1", 0, 0, 10_000, 1, 0, False, 0)
        before = engine.seq
        engine.apply(cmd, [])
        journal.add(before, cmd)
    journal.commit()
    journal.write_epoch(1)
    ahead = engine.seq

    class FakeLease:
        node = "shard-0.r0"

        def starts(self) -> dict[int, int]:
            return {1: 0, 2: ahead - 1}  # epoch 2 began one seq before our end

    standby = Standby(FakeLease(), d, DEFAULT_MARKETS, "none", journal, engine)  # type: ignore[arg-type]
    try:
        with pytest.raises(Diverged):
            standby.check_divergence()
        standby.start_over("test")
        assert standby.engine.seq == 0 and standby.journal.read_epoch() == 0
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("shard-0.diverged-")]
        assert len(aside) == 1 and _journal_ids(str(aside[0])) == ["x0", "x1", "x2"]
        FakeLease.starts = lambda self: {1: 0, 2: 5}  # type: ignore[method-assign]
        standby.check_divergence()  # empty now: a prefix of anything
    finally:
        standby.close()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["engine", "--shard", "0", "--role", "auto", "--insecure"], "needs --data-dir and"),
        (["engine", "--shard", "0", "--role", "auto", "--insecure", "--data-dir", "{d}",
          "--redis-url", "redis://127.0.0.1:1/0", "--fsync", "always"], "--fsync batch or none"),
        (["up", "--shards", "1", "--replicas", "2", "--insecure", "--no-bridge",
          "--data-dir", "{d}"], "needs Redis"),
    ],
)  # fmt: skip
def test_replica_options_refused_with_a_reason(tmp_path, args: list[str], reason: str) -> None:
    from click.testing import CliRunner

    from shardex.cli import main

    args = [a.replace("{d}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert reason in result.output, result.output


def test_journal_record_ranges_and_epoch(tmp_path) -> None:
    """The journal's additive replication APIs: records from an exact record start (else
    nothing: the caller must not guess a boundary), and an epoch that never goes down."""
    journal = Journal(tmp_path, DEFAULT_MARKETS, fsync="none")
    engine = journal.recover().engine
    starts = []
    for batch in range(3):
        starts.append(engine.seq)
        for k in range(2):
            cmd = (OP_NEW, SYMBOL, f"b{batch}-{k}", "acct1", 0, 0, 10_000, 1, 0, False, 0)
            before = engine.seq
            engine.apply(cmd, [])
            journal.add(before, cmd)
        assert journal.buffered() is not None and journal.buffered()[0] == starts[-1]
        journal.commit()
        assert journal.buffered() is None
    assert [s for s, _ in journal.records(starts[1])] == starts[1:]
    assert [s for s, _ in journal.records(starts[0], limit=2)] == starts[:2]
    assert journal.records(starts[1] + 1) == []  # inside a record: no guess
    assert journal.records(engine.seq) == []  # nothing written there yet
    assert journal.read_epoch() == 0
    journal.write_epoch(3)
    journal.write_epoch(2)  # never lowers it
    assert Journal(tmp_path, DEFAULT_MARKETS).read_epoch() == 3


def test_standby_ignores_garbage_from_the_replication_link(tmp_path) -> None:
    """Unreadable or malformed messages on the replication link are logged and skipped; a good
    record after them is still applied and acknowledged (the standby never crashes on input)."""
    import zlib

    import zmq

    from shardex.node.replica import ACK, REC, Standby
    from shardex.wire.protocol import packb, unpackb

    class FakeLease:
        node = "shard-0.r1"

        def starts(self) -> dict[int, int]:
            return {}

    d = str(tmp_path / "shard-0.r1")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(FakeLease(), d, DEFAULT_MARKETS, "none", journal, journal.recover().engine)  # type: ignore[arg-type]
    leader = standby.ctx.socket(zmq.ROUTER)
    leader.setsockopt(zmq.LINGER, 0)
    port = leader.bind_to_random_port("tcp://127.0.0.1")
    try:
        standby.sock = standby.ctx.socket(zmq.DEALER)
        standby.sock.setsockopt(zmq.IDENTITY, b"shard-0.r1")
        standby.sock.connect(f"tcp://127.0.0.1:{port}")
        standby.sock.send_multipart([b"SUB", packb(("shard-0.r1", 0, 0))])
        ident, _, _ = leader.recv_multipart()
        cmd = (OP_NEW, SYMBOL, "g1", "acct1", 0, 0, 10_000, 1, 0, False, 0)
        payload = packb([cmd])
        for kind, body in [
            (REC, b"\xc1garbage"),
            (REC, packb(("x", 0, 0, 0, b""))),
            (REC, packb((1, 0, 0, 12345, payload))),  # bad crc
            (REC, packb((1, 0, 0, zlib.crc32(payload), payload))),
        ]:
            leader.send_multipart([ident, kind, body])
        deadline = time.monotonic() + 5
        while standby.engine.seq == 0 and time.monotonic() < deadline:
            if standby.sock.poll(100):
                standby._drain()
        assert standby.engine.seq > 0
        _, kind, body = leader.recv_multipart()
        assert kind == ACK and unpackb(body) == (1, standby.engine.seq)
        assert _journal_ids(d) == ["g1"] and journal.read_epoch() == 1
    finally:
        leader.close(0)
        standby.close()


def test_standby_looks_again_when_the_holders_lease_runs_out(redis_server, tmp_path) -> None:
    """A standby schedules its next look at the lease by the holder's remaining ttl (PTTL) when
    that is sooner than its period, so a dead leader's lease is taken within a few ms of its
    expiry in Redis instead of up to a period later (it is failover time)."""
    import redis

    from shardex.node.replica import CHECK_LEASE_S, EXPIRY_SLACK_S, Standby

    r = redis.Redis(port=redis_server.port)
    old = Lease(r, 3, "shard-3.r0", "tcp://127.0.0.1:9", ttl_ms=300, renew_ms=100)
    assert old.try_acquire(0, 0)[0] == 1
    assert old.set_isr(["shard-3.r0", "shard-3.r1"])
    mine = Lease(r, 3, "shard-3.r1", "tcp://127.0.0.1:9", ttl_ms=300, renew_ms=100)
    holder, pttl = mine.holder_ttl()
    assert holder is not None and holder.node == "shard-3.r0" and 0 < pttl <= 300
    d = str(tmp_path / "shard-3.r1")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(mine, d, DEFAULT_MARKETS, "none", journal, journal.recover().engine)
    try:
        r.persist("shardex:lease:3")  # no ttl (not ours to judge): the fixed period
        assert standby._check_lease() == CHECK_LEASE_S
        assert standby.leader == holder  # it follows the holder meanwhile
        r.pexpire("shardex:lease:3", 40)  # the holder died: 40 ms of its lease are left
        wait = standby._check_lease()
        assert wait is not None and 0 < wait <= 0.040 + EXPIRY_SLACK_S < CHECK_LEASE_S
        time.sleep(wait)  # looked at again just after the expiry: taken at once
        assert standby._look(time.monotonic()) is None  # (and the epoch recorded)
        assert mine.epoch == 2 and mine.holder() == Holder(2, "shard-3.r1", "tcp://127.0.0.1:9")
        assert standby.took_at > 0 and journal.read_epoch() == 2
    finally:
        standby.close()


def test_lease_renewer_survives_a_busy_loop_but_not_a_wedged_one(redis_server) -> None:
    """The leader's lease is renewed by a thread: a shard loop busy for longer than the ttl (a
    gap-repair replay from the journal stalled new leaders past their deadline, and each lost
    its lease: a second failover) keeps it; a loop that stops ticking for ``stall_s`` lets it
    go (a standby takes over); Redis saying it is someone else's is raised in the loop."""
    import redis

    r = redis.Redis(port=redis_server.port)
    lease = Lease(r, 5, "shard-5.r0", "tcp://a", ttl_ms=600, renew_ms=100)
    assert lease.try_acquire(0, 0)[0] == 1
    beat = [time.monotonic()]
    lease.start_renewer(lambda: beat[0], stall_s=2.0)
    try:
        time.sleep(1.2)  # twice the ttl without a tick: busy, not wedged
        assert lease.valid() and lease.holder() == Holder(1, "shard-5.r0", "tcp://a")
        lease.check()  # nothing to raise
        # past stall_s: no more renewals, the key expires
        wait_until(lambda: not lease.valid() and lease.holder() is None, 10, "the expiry")
        beat[0] = time.monotonic()  # the loop is back, but someone else leads now
        other = Lease(r, 5, "shard-5.r1", "tcp://b", ttl_ms=600, renew_ms=100)
        epoch, why = other.try_acquire(0, 0)
        assert epoch == 0 and "in-sync" in why  # the set still names the old leader
        r.delete("shardex:lease:5:isr")  # (as if Redis lost it: anyone may take it)
        assert other.try_acquire(0, 0)[0] == 2
        deadline = time.monotonic() + 5
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost):
            lease.check()
    finally:
        lease.release()


def test_standby_keeps_the_events_of_what_it_applies(tmp_path) -> None:
    """The standby keeps the events of the records it applies (the same as the leader's: the
    engine is deterministic), so the leader it becomes serves the bridge's repair of the old
    leader's last unpublished events from memory. (Replaying them from the journal stalled new
    leaders' loops for seconds: clients got errors, and new leaders lost their lease.)"""
    import zlib

    import zmq

    from shardex.node.replica import REC, Standby
    from shardex.wire.protocol import packb

    class FakeLease:
        node = "shard-0.r1"

        def starts(self) -> dict[int, int]:
            return {}

    cmds = [(OP_NEW, SYMBOL, f"e{k}", "acct1", k % 2, 0, 10_000, 1, 0, False, 0) for k in range(6)]
    expected: list[Any] = []
    reference = Engine(DEFAULT_MARKETS)
    for cmd in cmds:
        reference.apply(cmd, expected)
    d = str(tmp_path / "shard-0.r1")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(FakeLease(), d, DEFAULT_MARKETS, "none", journal, journal.recover().engine,
                      ring_size=64)  # type: ignore[arg-type]  # fmt: skip
    leader = standby.ctx.socket(zmq.ROUTER)
    leader.setsockopt(zmq.LINGER, 0)
    port = leader.bind_to_random_port("tcp://127.0.0.1")
    try:
        standby.sock = standby.ctx.socket(zmq.DEALER)
        standby.sock.setsockopt(zmq.IDENTITY, b"shard-0.r1")
        standby.sock.connect(f"tcp://127.0.0.1:{port}")
        standby.sock.send_multipart([b"SUB", packb(("shard-0.r1", 0, 0))])
        ident, _, _ = leader.recv_multipart()
        seq = 0
        for batch in (cmds[:3], cmds[3:]):  # two records, as two group commits would ship them
            probe = Engine(DEFAULT_MARKETS)
            for cmd in cmds[: cmds.index(batch[-1]) + 1]:
                probe.apply(cmd, [])
            payload = packb(batch)
            leader.send_multipart([ident, REC, packb((1, seq, probe.seq, zlib.crc32(payload),
                                                      payload))])  # fmt: skip
            seq = probe.seq
        deadline = time.monotonic() + 5
        while standby.engine.seq < seq and time.monotonic() < deadline:
            if standby.sock.poll(100):
                standby._drain()
        assert standby.engine.seq == seq == reference.seq
        assert standby.ring.get(1, seq) == expected  # the leader's events, by seq
        standby.start_over("test")  # a journal started over: its events start over too
        assert standby.ring.get(1, 1) is None
    finally:
        leader.close(0)
        standby.close()
