"""Failover with the account tier: replicated engine shards under
funded load, account shards following the leader.

Real processes (``shardex up --replicas 2 --accounts 1``, secure as by default: CURVE keys, the
lease and the bridge as Redis ACL users), the embedded Redis, the real bridge. The engine shard
runs as two replicas; the account shard is one process whose link connects to both and follows
whichever leads. What must hold after kill -9 or SIGSTOP of the engine leader:

* every order the account shard acknowledged (held and forwarded) is in the new leader's
  journal, once (a forward lost on the way to a dead or paused leader is re-sent through
  SYNC/HAVE; the link is sequenced and idempotent);
* the settlements the account shard applied are exactly the ones the new leader's own history
  produces (replayed from its journal): none the deposed leader made and the standby never had,
  none twice, none missing (the high-watermark rule for settlements);
* ``shardex audit`` passes (conservation, held == what open orders can cost);
* the balances stream in Redis holds exactly the account shard's balance and fee events, in seq
  order, each once.

The release rule itself is also checked on one process with a stand-in replicator (no
timing): a batch's settlements and SYNC re-sends never leave before the standby acked it.
Nothing here asserts time.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from shardex.accounts.codes import S_TRADE
from shardex.accounts.machines import SettledEngineFactory
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.layout import Layout
from shardex.wire.protocol import LINK_FWD, LINK_SETTLE, LINK_SYNC, OP_FORWARD, packb, unpackb
from tests.support.failover_accounts import (
    SYMBOL,
    AccountsPair,
    FundedLoad,
    _check_consistent,
    _engine_history,
    _fund,
    account_leader_fails_over,
)
from tests.support.ports import free_layout, free_port, listening
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def apair() -> Any:
    c = AccountsPair()
    try:
        yield c
    finally:
        c.stop()


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_kill9_engine_leader_under_funded_load(apair: AccountsPair) -> None:
    with apair.admin() as c:
        _fund(c)
    first = apair.leader()
    # only the leader takes forwards: the standby has not even bound its account link
    r = int(first["node"][-1])
    assert listening(_port(apair.layout.replica_account_link(0, r)))
    assert not listening(_port(apair.layout.replica_account_link(0, 1 - r)))
    load = FundedLoad(apair, "k")
    try:
        wait_until(lambda: len(load.acked) >= 20, 30, "funded orders acknowledged")
        before = len(load.acked)
        os.kill(first["pid"], signal.SIGKILL)
        second = apair.wait_isr(None, not_pid=first["pid"])  # the standby leads
        # funded orders go on against the new leader
        wait_until(lambda: len(load.acked) >= before + 20, 30, "orders acked after the kill")
    finally:
        load.stop()
    assert before, "no order was acknowledged before the kill"
    assert second["epoch"] > first["epoch"]
    assert len(load.acked) > before, "no order was acknowledged after the kill"
    leader = _check_consistent(apair, load.acked)
    assert leader["pid"] != first["pid"]
    # the killed replica comes back (the supervisor), catches up and rejoins
    apair.wait_isr(2)


def test_sigstop_engine_leader_its_settlements_never_applied(apair: AccountsPair) -> None:
    with apair.admin() as c:
        _fund(c)
    first = apair.leader()
    load = FundedLoad(apair, "s")
    try:
        wait_until(lambda: len(load.acked) >= 20, 30, "funded orders acknowledged")
        os.kill(first["pid"], signal.SIGSTOP)
        try:
            apair.wait_isr(None, not_pid=first["pid"])
            during = len(load.acked)  # the new leader acknowledges while the old one sleeps
            wait_until(lambda: len(load.acked) >= during + 20, 30, "orders acked by the new one")
        finally:
            os.kill(first["pid"], signal.SIGCONT)  # it is past its deadline: fenced
        # resumed, it learns it lost the lease (and exits) while the load goes on
        wait_until(lambda: "lost the lease" in apair.output(), 30, "the deposed leader's exit")
    finally:
        load.stop()
    assert load.acked
    _check_consistent(apair, load.acked)
    out = apair.output()
    assert "lost the lease" in out  # the deposed leader said so and exited (code 3)
    apair.wait_isr(2)  # restarted by the supervisor, it rejoins as a standby


@pytest.mark.parametrize("how", ["kill9", "sigstop"])
def test_account_shard_leader_fails_over_under_funded_load(apair: AccountsPair,
                                                           how: str) -> None:  # fmt: skip
    """The account shard's own pair: ``account_leader_fails_over`` (its leases in Redis here,
    in etcd in tests/chaos/test_failover_etcd_accounts.py)."""
    account_leader_fails_over(apair, how)


# -- the release rule on one process (a stand-in replicator; no timing) -------------------------


class _Lease:
    def __init__(self) -> None:
        self.ok = True
        self.epoch = 1
        self.node = "shard-0.r0"

    def valid(self) -> bool:
        return self.ok


class _Replicator:
    """What ``ShardNode`` needs of ``replica.Replicator``, with a high watermark the test
    moves by hand (the standby's acks)."""

    def __init__(self, ctx: Any, zmq_: Any) -> None:
        self.sock = ctx.socket(zmq_.PAIR)
        self.lease = _Lease()
        self.epoch = 1
        self.isr = ["shard-0.r0"]
        self.changes = 0
        self.committed = 0
        self.acked = 0
        self.shipped: list[tuple[int, int]] = []

    def ship(self, seq0: int, cmds: list[Any], seq1: int) -> None:
        self.committed = seq1
        self.shipped.append((seq0, seq1))

    def hw(self) -> int:
        return self.acked

    def tick(self, now: float) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"role": "primary"}

    def close(self) -> None:
        self.sock.close(0)


def _recv_settlements(sock: Any, wait_ms: int) -> list[tuple]:
    """Settlements that reach account shard 0's link socket within ``wait_ms`` (HAVEs skipped)."""
    got: list[tuple] = []
    while sock.poll(wait_ms):
        kind, payload = sock.recv_multipart()
        if kind == LINK_SETTLE:
            got.extend(unpackb(payload)[1])
        wait_ms = 100
    return got


def test_settlements_wait_for_the_standby(tmp_path: Path) -> None:
    """Regression: a replicated leader sent every settlement produced so far
    as soon as any earlier batch was released, and re-sent on SYNC everything in its ring —
    settlements of batches the standby had not acked. Had it died then, the account shard
    would hold money moves the next leader never made. Now a batch's settlements leave with
    that batch (at the high watermark, while the lease is valid) and SYNC re-sends stop there."""
    from shardex.node.shard import ShardConfig, ShardNode

    link = f"tcp://127.0.0.1:{free_port()}"
    cfg = ShardConfig(
        index=0, shards=1, router=None, direct=f"tcp://127.0.0.1:{free_port()}",
        pub=f"tcp://127.0.0.1:{free_port()}", markets=DEFAULT_MARKETS, pin=False,
        journal_dir=str(tmp_path / "shard-0"), fsync="none", accounts=1, account_link=link,
    )  # fmt: skip
    node = ShardNode(cfg, replicate=_Replicator)
    rep: _Replicator = node.replica
    ctx = zmq.Context()
    acc = ctx.socket(zmq.DEALER)
    acc.setsockopt(zmq.LINGER, 0)
    acc.setsockopt(zmq.IDENTITY, b"accounts-0")
    acc.connect(link)

    def forward(seq: int, prev: int, oid: str, side: int, account: str) -> None:
        cmd = (OP_NEW, SYMBOL, oid, account, side, 0, 10_000, 100, 0, False, 0)
        acc.send_multipart([LINK_FWD, packb((0, [(seq, prev, cmd)]))])
        deadline = time.monotonic() + 5
        while node.link_counts["forwards"] < seq:  # (the test's own pace, not a timing assert)
            assert time.monotonic() < deadline, "the forward never arrived"
            if node.alink.poll(100):
                node.from_accounts()
        node.flush()  # group commit → ship → wait for the standby

    try:
        forward(1, 0, "m1", 1, "alice")  # a resting sell: no settlement yet
        forward(2, 1, "t1", 0, "bob")  # a crossing buy: a trade → settlements
        batch1 = rep.committed
        forward(3, 2, "m2", 1, "alice")
        forward(4, 3, "t2", 0, "bob")  # a second trade, in a later batch
        assert node.repl_settle, "the settlements wait with their batches"
        assert _recv_settlements(acc, 300) == [], "a settlement left before any ack"
        rep.acked = batch1  # the standby acks the first trade's batch only
        node.release_acked()
        first = _recv_settlements(acc, 2000)
        assert first and all(m[2] <= batch1 for m in first), first
        # a SYNC from 0 re-sends from the ring: still only what the standby has
        acc.send_multipart([LINK_SYNC, packb((0, 0))])
        while not node.syncs:
            if node.alink.poll(100):
                node.from_accounts()
        node.release_acked()
        resent = _recv_settlements(acc, 2000)
        assert resent == first, "a SYNC re-sent a settlement the standby has not acked"
        # past our lease deadline nothing leaves, acked or not
        rep.lease.ok = False
        rep.acked = rep.committed
        node.release_acked()
        assert _recv_settlements(acc, 300) == []
        rep.lease.ok = True
        node.release_acked()
        second = _recv_settlements(acc, 2000)
        assert second and all(m[2] > batch1 for m in second)
        assert second[0][3] == first[-1][2]  # the link's chain continues, nothing skipped
    finally:
        acc.close(0)
        ctx.term()
        node.close()


def test_layout_gives_each_replica_its_own_account_link() -> None:
    layout = Layout("127.0.0.1", 20000, 2, accounts=1)
    assert layout.replica_account_link(0, 0) == layout.account_link(0)
    ones = {layout.replica_account_link(i, 1) for i in range(2)}
    assert not ones & {layout.account_link(i) for i in range(2)}
    assert {int(ep.rsplit(":", 1)[1]) for ep in ones} <= set(layout.replica_ports())
    assert not set(layout.replica_ports()) & set(layout.ports())
    assert layout.replica_account_links.split(",")[1] == (
        f"{layout.account_link(1)}+{layout.replica_account_link(1, 1)}"
    )
    # without accounts, --replicas 2 adds no account-link port
    assert len(Layout("127.0.0.1", 20000, 2).replica_ports()) == 10


def test_engine_links_with_more_than_two_replicas_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shardex.cli import main

    bad = "tcp://127.0.0.1:1+tcp://127.0.0.1:2+tcp://127.0.0.1:3"
    for links, reason in ((bad, "at most 2"), ("tcp://x+nope", "bad endpoint")):
        result = CliRunner().invoke(main, [
            "accounts", "--shard", "0", "--shards", "1", "--engines", "1", "--insecure",
            "--engine-links", links, "--data-dir", str(tmp_path),
        ])  # fmt: skip
        assert result.exit_code != 0 and reason in result.output, result.output


class _StandbyLease:
    node = "shard-0.r1"

    def starts(self) -> dict[int, int]:
        return {}


def test_standby_replays_forwards_into_the_settled_engine(tmp_path: Path) -> None:
    """A standby of an engine shard with the account tier journals and applies the leader's
    forward records with the same machine (inbox, settlement feed, rings): promoted, it can
    re-send every settlement; it sends none itself (``outgoing`` stays empty). Moved aside
    (``start_over``), its new journal still uses that machine."""
    import zlib

    from shardex.journal import Journal
    from shardex.node.replica import ACK, REC, SUB, Standby, open_journal

    factory = SettledEngineFactory(0, 1, 1)
    d = str(tmp_path / "shard-0.r1")
    journal = open_journal(d, DEFAULT_MARKETS, "none", factory)
    standby = Standby(_StandbyLease(), d, DEFAULT_MARKETS, "none", journal,  # type: ignore[arg-type]
                      journal.recover().engine, machine=factory)  # fmt: skip
    leader = standby.ctx.socket(zmq.ROUTER)
    leader.setsockopt(zmq.LINGER, 0)
    port = leader.bind_to_random_port("tcp://127.0.0.1")
    try:
        standby.sock = standby.ctx.socket(zmq.DEALER)
        standby.sock.setsockopt(zmq.IDENTITY, b"shard-0.r1")
        standby.sock.connect(f"tcp://127.0.0.1:{port}")
        standby.sock.send_multipart([SUB, packb(("shard-0.r1", 0, 0))])
        ident, _, _ = leader.recv_multipart()
        sell = (OP_NEW, SYMBOL, "m1", "alice", 1, 0, 10_000, 100, 0, False, 0)
        buy = (OP_NEW, SYMBOL, "t1", "bob", 0, 0, 10_000, 100, 0, False, 0)
        payload = packb([(OP_FORWARD, 0, 1, 0, sell), (OP_FORWARD, 0, 2, 1, buy)])
        leader.send_multipart([ident, REC, packb((1, 0, 0, zlib.crc32(payload), payload))])
        deadline = time.monotonic() + 5
        while standby.engine.seq == 0:
            assert time.monotonic() < deadline, "the record was not applied"
            if standby.sock.poll(100):
                standby._drain()
        _, kind, body = leader.recv_multipart()
        assert kind == ACK and unpackb(body) == (1, standby.engine.seq)
        engine = standby.engine
        assert engine.inbox.last == {0: 2}  # the forwards' link state is replicated
        assert engine.outgoing == []  # a standby sends no settlement
        ring = engine.resend(0, 0)[0]
        assert ring and ring[0][0] == S_TRADE  # ... but can re-send them once it leads
        # what it journaled replays to the same settlements (the journal's machine)
        assert _engine_history(d)[2] == [packb(m) for m in ring]
        standby.start_over("test")
        assert type(standby.engine).__name__ == "SettledEngine"
        assert isinstance(standby.journal, Journal) and standby.journal.machine is factory
    finally:
        leader.close(0)
        standby.close()


def test_accounts_replicas_2_connects_to_both_replicas_links(tmp_path: Path, monkeypatch) -> None:
    """``shardex accounts --replicas 2`` (by hand, on the layout) links to both replicas of each
    engine shard, as ``shardex up --replicas 2`` passes them."""
    from click.testing import CliRunner

    import shardex.cli.accounts as accounts_mod  # (the command runs the name it imported)
    from shardex.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(accounts_mod, "run_accounts", lambda cfg: seen.setdefault("cfg", cfg))
    layout = free_layout(2, accounts=1)  # (its metrics port is bound: 20000 once was taken)
    result = CliRunner().invoke(main, [
        "accounts", "--shard", "0", "--shards", "1", "--engines", "2", "--insecure",
        "--replicas", "2", "--base-port", str(layout.base_port),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["cfg"].engine_links == [
        f"{layout.account_link(i)}+{layout.replica_account_link(i, 1)}" for i in range(2)
    ]


def test_restarted_old_leader_checks_divergence_when_the_new_leader_appears(
    tmp_path: Path,
) -> None:
    """Regression: a leader killed with an unacked tail and restarted at once (the supervisor)
    stood by before its successor took the lease: its start-up check saw no later epoch, it
    followed the new leader, wrote the new epoch into its journal with the first record (so no
    later check could tell), and applied the leader's batches on top of a tail the leader never
    had: "ALERT replica diverged", exit, restart, forever. It now checks again when it sees a
    leader of a later epoch, and cuts its journal back to that epoch's start."""
    from shardex.journal import Journal, read_commands
    from shardex.lease import Holder
    from shardex.node.replica import Standby

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
    successor = Holder(2, "shard-0.r1", "tcp://127.0.0.1:9")  # (nothing listens: never sent to)

    class RacingLease:
        node = "shard-0.r0"
        shard = 0
        calls = 0

        def starts(self) -> dict[int, int]:
            self.calls += 1  # at start-up epoch 2 does not exist yet; then it began below us
            return {1: 0} if self.calls == 1 else {1: 0, 2: ahead - 1}

        def holder(self) -> Holder:
            return successor

        def holder_ttl(self) -> tuple[Holder, int]:
            return successor, 500

    class Stop:
        def __init__(self) -> None:
            self.n = 0

        def __bool__(self) -> bool:
            self.n += 1
            return standby.leader is not None or self.n > 200

    standby = Standby(RacingLease(), d, DEFAULT_MARKETS, "none", journal, engine)  # type: ignore[arg-type]
    try:
        assert standby.run(Stop()) is False
        assert standby.leader == successor, "it never followed the new leader"
        # its one record straddled epoch 2's start: cut at that record's start (seq 0), in
        # place (no journal moved aside); epoch 2 is written only with its first record
        assert standby.engine.seq == 0 and standby.journal.read_epoch() == 1, "it kept its tail"
        assert not list(read_commands(d))
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("shard-0.diverged-")]
    finally:
        standby.close()
