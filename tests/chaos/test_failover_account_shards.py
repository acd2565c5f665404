"""Replicated account shards, on one process, no timing.

The end-to-end proof (kill -9 / SIGSTOP of the account shard leader under funded load) is in
tests/chaos/test_failover_accounts.py. Here: the leader's release rule with a stand-in replicator
whose high watermark the test moves by hand (the standby's acks), real ZeroMQ sockets playing
the router, the engine shard's account link and the bridge's SUB; the ZAP domain of the
account replication link; the lease key and node names of an account shard; a restarted node
leaving a free lease to its live in-sync standby (real redis-server).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from shardex.auth import KeyStore, domain_allows, replication_domain, replication_peer
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.layout import Layout
from shardex.node.accounts import AccountNode, AccountsConfig
from shardex.wire.protocol import (
    BATCH,
    LINK_FWD,
    LINK_HAVE,
    OP_DEPOSIT,
    VERSION,
    decode_batch,
    decode_events_epoch,
    decode_reply,
    encode_batch,
    packb,
    unpackb,
)
from tests.support.ports import free_port as _free_port

pytestmark = pytest.mark.timeout(60)


class _Lease:
    def __init__(self) -> None:
        self.ok = True
        self.epoch = 3
        self.node = "accounts-0.r0"

    def valid(self) -> bool:
        return self.ok


class _Replicator:
    """What ``AccountNode`` needs of ``replica.Replicator``; ``acked`` is the standby's ack."""

    def __init__(self, ctx: Any, zmq_: Any) -> None:
        self.sock = ctx.socket(zmq_.PAIR)
        self.lease = _Lease()
        self.epoch = 3
        self.node = "accounts-0.r0"
        self.isr = [self.node]
        self.changes = 0
        self.committed = 0
        self.acked = 0
        self.shipped: list[tuple[int, int, int]] = []

    def ship(self, seq0: int, cmds: list[Any], seq1: int) -> None:
        self.committed = seq1
        self.shipped.append((seq0, len(cmds), seq1))

    def hw(self) -> int:
        return self.acked

    def tick(self, now: float) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"role": "primary", "epoch": self.epoch}

    def close(self) -> None:
        self.sock.close(0)


class _Rig:
    """An ``AccountNode`` (account shard 0 of 1, engine shards: 1) with a stand-in replicator,
    and the test's sockets in the other seats: the router (a ROUTER it connects to), engine
    shard 0's account link (a ROUTER it connects to) and a SUB on its PUB."""

    def __init__(self, tmp: Path) -> None:
        self.ctx = zmq.Context()
        router_ep, link_ep = (f"tcp://127.0.0.1:{_free_port()}" for _ in range(2))
        self.router = self._bind(zmq.ROUTER, router_ep)
        self.link = self._bind(zmq.ROUTER, link_ep)
        cfg = AccountsConfig(
            index=0, shards=1, engines=1, router=router_ep, engine_links=[link_ep],
            markets=DEFAULT_MARKETS, journal_dir=str(tmp / "accounts-0"), fsync="none",
            pub=f"tcp://127.0.0.1:{_free_port()}", direct=f"tcp://127.0.0.1:{_free_port()}",
            link_identity="accounts-0.e3", extra={"role": "primary", "epoch": 3},
        )  # fmt: skip
        self.node = AccountNode(cfg, replicate=_Replicator)
        self.rep: _Replicator = self.node.replica
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(cfg.pub)  # type: ignore[arg-type]
        self.node.hello(time.monotonic())
        self.ident = self._hello()
        self.req = 0

    def _bind(self, kind: int, ep: str) -> Any:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(ep)
        return s

    def _hello(self) -> bytes:
        assert self.router.poll(5000), "no HELLO from the account shard"
        ident, _, kind, body = self.router.recv_multipart()
        assert kind == b"HELLO" and unpackb(body)[1]["epoch"] == 3
        assert ident == b"accounts-0.e3"  # its router link is named after its epoch
        return ident

    def ask(self, cmd: tuple) -> None:
        """One request through the 'router', read and journaled by the node (not sent yet)."""
        self.req += 1
        payload = msgpack.packb([VERSION, [list(cmd)]])
        item = [b"client", str(self.req).encode(), b"", payload]
        self.router.send_multipart([self.ident, BATCH, encode_batch(item)])
        before = self.node.handler.commands
        deadline = time.monotonic() + 5
        while self.node.handler.commands == before:  # (the test's own pace)
            assert time.monotonic() < deadline, "the request never arrived"
            self.node.poller.poll(100)
            self.node.from_routers()
        self.node.flush()

    def replies(self, wait_ms: int) -> list[Any]:
        got = []
        while self.router.poll(wait_ms):
            frames = self.router.recv_multipart()
            if frames[2] == BATCH:
                items = decode_batch(frames[3], 3)
                got += [decode_reply(items[k + 2]) for k in range(0, len(items), 3)]
            wait_ms = 100
        return got

    def forwards(self, wait_ms: int) -> list[tuple]:
        got: list[tuple] = []
        while self.link.poll(wait_ms):
            _, kind, payload = self.link.recv_multipart()
            if kind == LINK_FWD:
                got.extend(unpackb(payload)[1])
            wait_ms = 100
        return got

    def events(self, wait_ms: int) -> list[tuple[int, int | None]]:
        """(seq, epoch) of each balance event published."""
        got = []
        while self.sub.poll(wait_ms):
            _, payload = self.sub.recv_multipart()
            _, evs, epoch = decode_events_epoch(payload)
            got += [(ev[1], epoch) for ev in evs]
            wait_ms = 100
        return got

    def close(self) -> None:
        for s in (self.router, self.link, self.sub):
            s.close(0)
        self.ctx.term()
        self.node.close()


def test_account_leader_sends_nothing_before_the_standby_has_it(tmp_path: Path) -> None:
    """A replicated account shard leader ships each group commit to its standby and sends
    what the batch produced — the deposit's reply and balance event, an order's forward to
    its engine shard, its "held and forwarded" reply — only once the standby has acked that
    batch and only while its lease is valid; a HAVE's re-send stops at the same mark. Any of
    them leaving earlier would be money (or an order) the next leader never had."""
    rig = _Rig(tmp_path)
    try:
        rep = rig.rep
        rig.ask((OP_DEPOSIT, "alice", "USD", "100000000", "d1"))
        deposit_batch = rep.committed
        assert rep.shipped and rep.shipped[-1][2] == deposit_batch
        rig.ask((OP_NEW, "BTC-USD", "o1", "alice", 0, 0, 100_000_000, 10, 0, False, 0))
        order_batch = rep.committed
        assert order_batch > deposit_batch
        assert rig.replies(300) == [] and rig.events(100) == [] and rig.forwards(100) == []
        # the engine shard says it has nothing (HAVE 0): the re-send is capped at what the
        # standby has acked, i.e. nothing yet
        rig.link.send_multipart([b"accounts-0", LINK_HAVE, packb((0, 0))])
        deadline = time.monotonic() + 5
        while 0 not in rig.node.linked:
            assert time.monotonic() < deadline, "the HAVE never arrived"
            rig.node.poller.poll(100)
            rig.node.from_engines()
        rig.node.flush()
        assert rig.forwards(300) == [], "a HAVE re-sent a forward the standby has not acked"

        rep.acked = deposit_batch  # the standby acks the deposit's batch only
        rig.node.release_acked()
        (deposit,) = rig.replies(2000)
        assert deposit[0] is None
        events = rig.events(2000)
        assert events and all(seq <= deposit_batch and epoch == 3 for seq, epoch in events)
        assert rig.forwards(300) == []

        rep.lease.ok = False  # past our lease deadline nothing leaves, acked or not
        rep.acked = order_batch
        rig.node.release_acked()
        assert rig.replies(300) == [] and rig.forwards(100) == [] and rig.events(100) == []
        rep.lease.ok = True
        rig.node.release_acked()
        (fwd,) = rig.forwards(2000)
        assert fwd[2][2] == "o1" and fwd[0] <= order_batch
        (placed,) = rig.replies(2000)
        assert placed[0] is None
        assert rig.node.released == order_batch
        assert rig.node.handler.status()["epoch"] == 3  # role and epoch in status
    finally:
        rig.close()


def test_account_replication_domain_admits_only_that_account_shards_key(
    tmp_path: Path,
) -> None:
    """The account shard's replication link has a ZAP domain of its own: only account shard
    J's key (both replicas run with it), never engine shard J's, another account shard's, a
    client's or the admin's."""
    store = KeyStore(str(tmp_path / "keys"))
    acct0 = store.process_key("accounts-0", "accounts", 0)
    acct1 = store.process_key("accounts-1", "accounts", 1)
    shard0 = store.process_key("shard-0", "shard", 0)
    reg = store.registry()
    info = {k.public: reg.lookup(k.public) for k in (acct0, acct1, shard0)}
    domain = replication_domain(0, "accounts")
    assert domain == "replication-accounts-0" and replication_domain(0) == "replication-0"
    assert domain_allows(domain, info[acct0.public])  # type: ignore[arg-type]
    assert not domain_allows(domain, info[acct1.public])  # type: ignore[arg-type]
    assert not domain_allows(domain, info[shard0.public])  # type: ignore[arg-type]
    assert not domain_allows(replication_domain(0), info[acct0.public])  # type: ignore[arg-type]
    assert replication_peer(info[acct0.public], 0, "accounts")
    assert not replication_peer(info[shard0.public], 0, "accounts")


def test_account_replica_ports_do_not_collide() -> None:
    """Every port ``--replicas 2`` adds with the account tier is distinct from each other and
    from the cluster's own."""
    layout = Layout(base_port=20000, shards=3, accounts=2)
    extra = layout.replica_ports()
    assert len(set(extra)) == len(extra)
    assert not set(extra) & set(layout.ports())
    for j in range(2):
        for r in (0, 1):
            for ep in (layout.account_repl(j, r), layout.account_replica_direct(j, r),
                       layout.account_replica_pub(j, r)):  # fmt: skip
                port = int(ep.rsplit(":", 1)[1])
                assert port in extra or port in layout.ports()


@contextmanager
def _restarted_account_node(port: int, tmp: Path) -> Iterator[tuple[Any, Any, Any]]:
    """Account shard 0's former leader ``accounts-0.r0`` (epoch 1, in-sync set r0 and r1, its
    lease still in Redis at ``port``) restarted as a standby: (redis client, its lease, the
    ``Standby``), closed on the way out."""
    import redis

    from shardex.journal import Journal
    from shardex.lease import Lease
    from shardex.node.replica import Standby

    r = redis.Redis(port=port)
    old, mine = (Lease(r, 0, "accounts-0.r0", "tcp://127.0.0.1:9", ttl_ms=300, renew_ms=100,
                       name="accounts-0") for _ in range(2))  # fmt: skip
    assert old.try_acquire(0, 0)[0] == 1
    assert old.set_isr(["accounts-0.r0", "accounts-0.r1"])
    assert r.exists("shardex:lease:accounts-0")  # an account shard's own lease key
    d = str(tmp / "accounts-0")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(mine, d, DEFAULT_MARKETS, "none", journal, journal.recover().engine)
    try:
        yield r, mine, standby
    finally:
        standby.close()


def test_a_restarted_node_leaves_a_free_lease_to_its_live_standby(
    redis_server: Any, tmp_path: Path
) -> None:
    """Regression (failover): a leader killed with kill -9 and restarted at once by the
    supervisor found the lease free (its standby takes it only at the expiry) and won it back
    — a second failover for nothing (seen with account shards: the killed node led again at
    the next epoch). A node that has just started and never followed anyone now leaves a free
    lease to the other in-sync member for ``START_GRACE_S``, then takes it if nobody did."""
    from shardex.node.replica import CHECK_LEASE_S, START_GRACE_S

    with _restarted_account_node(redis_server.port, tmp_path) as (r, mine, standby):
        r.delete("shardex:lease:accounts-0")  # the leader died before; its lease is gone
        assert standby._check_lease() == CHECK_LEASE_S  # left to accounts-0.r1
        assert mine.holder() is None
        standby.started -= START_GRACE_S  # (nobody took it within the grace)
        assert standby._check_lease() is None
        assert mine.epoch == 2 and mine.holder().node == "accounts-0.r0"


def test_a_restarted_node_leaves_its_former_lease_to_its_standby_once_it_expires(
    redis_server: Any, tmp_path: Path
) -> None:
    """Regression (found on etcd: kill -9 of an account leader and etcd's leader at once): the
    restarted node saw its former self's lease still held past ``START_GRACE_S`` after its
    start (etcd's ttl is whole seconds, its expiries are checked every 500 ms and an election
    of etcd's own extends them), so when the lease went the grace was over: it took the lease
    back, its live in-sync standby cut its tail. The grace now runs again from the moment the
    node sees its own former lease gone."""
    from shardex.node.replica import CHECK_LEASE_S, START_GRACE_S

    with _restarted_account_node(redis_server.port, tmp_path) as (r, mine, standby):
        standby._check_lease()  # our former self still holds it: nothing to follow
        assert standby.leader is None and mine.holder().node == "accounts-0.r0"
        standby.started -= START_GRACE_S  # (the grace since the start is over meanwhile)
        r.delete("shardex:lease:accounts-0")  # it expires
        assert standby._check_lease() == CHECK_LEASE_S, "it took its former lease back"
        assert mine.holder() is None  # left to accounts-0.r1
        standby.own_gone_at -= START_GRACE_S  # (nobody took it)
        assert standby._check_lease() is None
        assert mine.epoch == 2 and mine.holder().node == "accounts-0.r0"


def test_prometheus_config_scrapes_both_replicas_of_each_shard() -> None:
    """``shardex up --replicas 2 --prometheus-config``: every replica's exporter port (the
    leader's answers; a standby's answers once it leads), for engine and account shards."""
    from shardex.metrics import prometheus_config

    layout = Layout(base_port=20000, shards=2, accounts=1)
    cfg = prometheus_config(layout, replicas=2)
    for i in range(2):
        for r in (0, 1):
            assert f"'127.0.0.1:{layout.replica_metrics(i, r)}'" in cfg
    for r in (0, 1):
        assert f"'127.0.0.1:{layout.account_replica_metrics(0, r)}'" in cfg
    assert f"{layout.replica_metrics(0, 1)}" not in prometheus_config(layout)


def test_a_standby_holds_the_ports_it_will_bind_as_leader(tmp_path: Path) -> None:
    """Regression (failover): a promoted standby bound its PUB, replication and account-link
    ports only after taking the lease; meanwhile another process's outgoing connection could
    take one as its ephemeral port, the bind failed, the new leader exited and the shard was
    leaderless for seconds (seen once). The standby now holds them (bound, not listening)
    while it stands by, and releases them at promotion, when the leader binds them."""
    import zmq as _zmq

    from shardex.journal import Journal
    from shardex.node.replica import Standby
    from shardex.node.supervisor import port_free

    ports = [_free_port(), _free_port()]
    eps = tuple(f"tcp://127.0.0.1:{p}" for p in ports)

    class _NoLease:
        node = "accounts-0.r1"
        shard = 0
        name = label = "accounts-0"

    d = str(tmp_path / "accounts-0.r1")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(_NoLease(), d, DEFAULT_MARKETS, "none", journal,  # type: ignore[arg-type]
                      journal.recover().engine, reserve=(*eps, None, "ipc:///tmp/x"))  # fmt: skip
    try:
        assert not any(port_free("127.0.0.1", p) for p in ports), "the ports are not held"
    finally:
        standby.close()
    ctx = _zmq.Context()
    try:  # released: the leader binds them at once
        for ep in eps:
            s = ctx.socket(_zmq.PUB)
            s.setsockopt(_zmq.LINGER, 0)
            s.bind(ep)
            s.close(0)
    finally:
        ctx.term()


class _LeaderLease:
    """What ``leader.Replicator`` needs of its lease: held at epoch 8, no renewer thread."""

    node, shard, epoch, label, thread = "accounts-0.r0", 0, 8, "accounts-0", False

    def __init__(self) -> None:
        from shardex.clock import REAL

        self.clock = REAL
        self.isr: list[str] = []

    def set_isr(self, members: list[str]) -> bool:
        self.isr = list(members)
        return True

    def tick(self, now: float) -> None:
        pass

    def release(self) -> None:
        pass


def test_a_standby_ahead_of_the_leader_counts_for_nothing(tmp_path: Path) -> None:
    """Regression (found on etcd: a killed leader restarted and took its lease back, its
    standby held one record more): a standby that said SUB at a seq above the leader's was
    told to start over (DIV), but the leader had already recorded that seq as the standby's
    acked and sent position. Once the leader's own records reached that seq the standby
    looked caught up: it joined the in-sync set and its "ack" released a batch it never had
    (it had cut that tail), so a failover to it would lose an acknowledged order. An ahead
    standby now counts for nothing until it says SUB again from what it keeps."""
    from shardex.journal import Journal
    from shardex.node.leader import Replicator

    ctx = zmq.Context()
    journal = Journal(str(tmp_path / "accounts-0"), DEFAULT_MARKETS, fsync="none")
    lease = _LeaderLease()
    rep = Replicator(ctx, zmq, f"tcp://127.0.0.1:{_free_port()}", lease,  # type: ignore[arg-type]
                     journal, 116, role="accounts")  # fmt: skip
    nodes = {"accounts-0.r1"}
    try:
        now = time.monotonic()
        rep._on_sub(b"r1", ("accounts-0.r1", 4, 117), nodes, now)  # ahead: told to start over
        cmd = (OP_NEW, "BTC-USD", "o1", "acct1", 0, 0, 10_000, 1, 0, False, 0)
        rep.ship(116, [cmd], 117)  # our own record 116 -> 117, a different one than its
        for _ in range(3):
            rep._maintain_isr(now)
        assert rep.isr == ["accounts-0.r0"], "the ahead standby joined the in-sync set"
        assert rep.hw() == 117  # (alone in the set: our own commit releases)
        assert rep.peers["accounts-0.r1"].acked < 117
        rep._on_sub(b"r1", ("accounts-0.r1", 4, 116), nodes, now)  # cut back: it streams on
        assert rep.peers["accounts-0.r1"].sent == 116 and not rep.peers["accounts-0.r1"].waiting
    finally:
        rep.sock.close(0)
        ctx.term()
