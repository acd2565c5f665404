"""Failover, secure: the replication link under CURVE and the lease under a
Redis ACL user, as ``shardex up --replicas 2`` runs them by default.

Real processes and sockets on loopback: a router and two ``--role auto`` replicas with keys
(``tests/chaos/test_failover.py``'s ``Pair``), a real redis-server with the cluster's ACL users.
Attackers hold every other kind of key (a trader's, another shard's, an account shard's, the
admin's) or none; none may read the replication stream or feed either side, and garbage at
the replication port from any side is refused and counted, never applied, never a crash.
Nothing here asserts time.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
import zmq
from zmq.utils.monitor import parse_monitor_message

from shardex.auth import (
    KeyFile,
    KeyStore,
    ZapHandler,
    client_socket,
    domain_allows,
    keypair,
    replication_domain,
    server_socket,
)
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import Journal
from shardex.lease import Lease, connect
from shardex.node.replica import ACK, DIV, REC, SUB, Standby, replica_dir
from shardex.redisauth import RedisUsers, user_url
from shardex.wire.protocol import packb, unpackb
from tests.support.cluster import ROOT, Cluster
from tests.support.failover import Pair, _journal_ids, _place_until_ok
from tests.support.failover import kill9_primary_under_load_loses_nothing_acked as _kill9_body
from tests.support.failover import sigstop_primary_is_fenced_after_resume as _sigstop_body
from tests.support.redis import redis_server_binary
from tests.support.redis_acl import BINARIES, AclRedis, refused

SYMBOL = "BTC-USD"


@pytest.fixture
def secure_pair(tmp_path: Path) -> Any:
    """A secure Pair: keys in DATA_DIR/keys, Redis with the cluster's ACL users, the replicas
    on the lease as user ``lease`` (its password read from the keys dir, never on argv)."""
    keys = tmp_path / "data" / "keys"
    KeyStore(keys).init()
    users = RedisUsers.ensure(keys)
    (tmp_path / "redis").mkdir()
    server = AclRedis(redis_server_binary(), users, tmp_path / "redis")
    try:
        p = Pair(tmp_path, user_url(server.url, "lease"), str(keys),
                 observer_url=users.url(server.url, "lease"))  # fmt: skip
    except BaseException:
        server.stop()
        raise
    p.redis = server  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        p.stop()
        server.stop()


def test_secure_kill9_primary_under_load_loses_nothing_acked(secure_pair: Pair) -> None:
    _kill9_body(secure_pair)
    for name in ("r0", "r1"):  # the lease's password never reached a log line
        out = secure_pair.output(name)
        assert secure_pair.redis.users.password("lease") not in out  # type: ignore[attr-defined]


def test_secure_sigstop_primary_is_fenced_after_resume(secure_pair: Pair) -> None:
    _sigstop_body(secure_pair)


# -- the replication link: who may speak on it --------------------------------------------------


def test_zap_replication_domain_admits_only_its_shards_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    keys = [store.process_key("shard-0", "shard", 0), store.process_key("shard-1", "shard", 1),
            store.process_key("accounts-0", "accounts", 0), KeyFile.read(store.dir / "admin.key"),
            store.process_key("bridge", "bridge")]  # fmt: skip
    reg = store.registry()
    shard0, shard1, acc0, admin, bridge = (reg.lookup(k.public) for k in keys)
    assert all(i is not None for i in (shard0, shard1, acc0, admin, bridge))
    assert domain_allows(replication_domain(0), shard0)  # type: ignore[arg-type]
    for other in (shard1, acc0, admin, bridge):  # (account shard 0 has index 0 too)
        assert not domain_allows(replication_domain(0), other)  # type: ignore[arg-type]
    assert domain_allows(replication_domain(1), shard1)  # type: ignore[arg-type]
    for bad in ("replication-", "replication-x", "replication-0-1", "replication-9999999"):
        assert not domain_allows(bad, shard0)  # type: ignore[arg-type]
    assert domain_allows("shards", shard0) and not domain_allows("clients", shard0)  # type: ignore[arg-type]


def _dealer(ctx: Any, endpoint: str, key: KeyFile | None, ident: bytes,
            monitors: dict[Any, Any] | None = None) -> Any:  # fmt: skip
    """A DEALER to ``endpoint`` (CURVE with ``key``); with ``monitors``, its socket monitor is
    made BEFORE it connects and kept there: a keyless client's handshake fails at once on a
    mechanism mismatch and is not tried again, so a monitor made after the connect can miss
    the only refusal there is."""
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.IDENTITY, ident)
    if key is not None:
        client_socket(d, key)
    if monitors is not None:
        monitors[d] = d.get_monitor_socket()
    d.connect(endpoint)
    return d


def _try_send(sock: Any, frames: list[bytes]) -> bool:
    """Send without waiting; False when the socket has no peer to send to (a DEALER whose
    handshake was refused never gets one: its messages stay with it)."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False


def _standby_node(leader: str) -> str:
    return "shard-0.r1" if leader == "shard-0.r0" else "shard-0.r0"


def test_only_shard_keys_get_the_replication_stream(secure_pair: Pair) -> None:
    """A trader's, another shard's, an account shard's, the admin's, a stranger's key and no
    key at all: none gets a record, not one of their SUB/ACK/REC frames reaches the leader
    (each poses as the real standby, whose routing id it would take over if it got in), and
    the pair goes on in sync. A frame on shard 0's own key does reach it (the link is not
    just dead)."""
    pair = secure_pair
    leader = pair.wait_leader()
    standby = _standby_node(leader)
    pair.wait_isr({leader, standby})
    store = KeyStore(pair.keys_dir)  # type: ignore[arg-type]
    server = store.server()
    strangers_public, strangers_secret = keypair()
    attackers = {
        "trader": KeyFile.read(store.add("mallory", "trader", ["acct1"])),
        "shard-1": store.process_key("shard-1", "shard", 1),
        "accounts-0": store.process_key("accounts-0", "accounts", 0),
        "admin": KeyFile.read(Path(pair.keys_dir) / "admin.key"),  # type: ignore[arg-type]
        "stranger": KeyFile(strangers_public, strangers_secret, server.public),
        "no key": None,
    }
    endpoint = pair.layout.repl(0, int(leader[-1]))
    line = "refused a CURVE connection on replication-0"
    logged = pair.output("r" + leader[-1]).count(line)
    ctx = zmq.Context()
    # each attacker's own socket monitor: the witness that its connection reached the leader
    made: dict[Any, Any] = {}
    socks = {n: _dealer(ctx, endpoint, k, standby.encode(), made) for n, k in attackers.items()}
    monitors = {n: made[s] for n, s in socks.items()}
    refused_at: dict[str, int] = {}
    try:
        cmd = (OP_NEW, SYMBOL, "forged", "acct1", 0, 0, 10_000, 1, 0, False, 0)
        payload = packb([cmd])
        # a bound, not a target: in one full CI run under load 15 s was not enough
        deadline = time.monotonic() + 45
        keyed = sum(k is not None for k in attackers.values())
        # attack until every attacker was seen refused at its handshake (and, with a key, in
        # the leader's log): "nothing got in" must not pass for "nothing was sent"
        while len(refused_at) < len(socks) or (
            pair.output("r" + leader[-1]).count(line) < logged + keyed
        ):
            assert time.monotonic() < deadline, f"refusals seen: {sorted(refused_at)}"
            for n, s in socks.items():
                _try_send(s, [SUB, packb((standby, 0, 0))])
                _try_send(s, [ACK, packb((1, 10**9))])
                _try_send(s, [REC, packb((99, 0, 0, zlib.crc32(payload), payload))])
                while monitors[n].poll(0):
                    ev = parse_monitor_message(monitors[n].recv_multipart())["event"]
                    if ev in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                              zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):  # fmt: skip
                        refused_at[n] = ev
                    assert ev != zmq.EVENT_HANDSHAKE_SUCCEEDED, f"the {n} key got in"
            time.sleep(0.05)
        with pair.client() as c:
            for k in range(10):
                assert _place_until_ok(c, c.order(SYMBOL, "buy", "1", "70", id=f"s{k}")).ok
            status = c.status()[0]
        for name, s in socks.items():
            assert not s.poll(300), f"the {name} socket got something from the replication link"
        assert status["node"] == leader and set(status["isr"]) == {leader, standby}
        assert status["repl_refused"] == 0, "an attacker's frame reached the leader"
        assert "forged" not in _journal_ids(replica_dir(pair.data, 0, int(leader[-1])))
        assert "refused a CURVE connection on replication-0" in pair.output("r" + leader[-1])
        # the standby still follows: it has every order placed during the attack
        path = replica_dir(pair.data, 0, int(standby[-1]))
        deadline = time.monotonic() + 10
        while not {f"s{k}" for k in range(10)} <= set(_journal_ids(path)):
            assert time.monotonic() < deadline, "the standby fell out of step"
            time.sleep(0.1)
        # positive control: a frame on shard 0's own key gets in (and, not well formed, is
        # refused and counted); so does a SUB naming a node that is no replica of shard 0
        own = _dealer(ctx, endpoint, store.process_key("shard-0", "shard", 0), b"shard-0.r7")
        socks["own"] = own
        own.send_multipart([b"XYZ", packb(None)])
        own.send_multipart([SUB, packb(("shard-0.r7", 0, 0))])
        with pair.client() as c:
            deadline = time.monotonic() + 10
            while c.status()[0]["repl_refused"] < 2:
                assert time.monotonic() < deadline, "shard 0's own key was not let in"
                time.sleep(0.1)
        assert not own.poll(200)
    finally:
        for n, s in socks.items():
            if n in monitors:
                s.disable_monitor()
                monitors[n].close(0)
            s.close(0)
        ctx.term()


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    pick = rnd.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rnd.randrange(-(2**63), 2**64)
    if pick == 1:
        return rnd.random()
    if pick == 2:
        return rnd.randbytes(rnd.randrange(0, 64))
    if pick == 3:
        return "".join(chr(rnd.randrange(32, 0x2FF)) for _ in range(rnd.randrange(0, 24)))
    if pick == 4:
        return rnd.choice([None, True, False, 0, -1, 2**63 - 1])
    if pick == 5:
        return rnd.choice(["shard-0.r1", "shard-0.r0", "shard-0.rX", "shard-1.r1", ""])
    if pick == 6:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(0, 6))]
    if pick == 7:
        return tuple(_random_value(rnd, depth + 1) for _ in range(rnd.choice([2, 3, 5])))
    return {str(_random_value(rnd, depth + 1)): _random_value(rnd, depth + 1) for _ in range(2)}


def _random_frames(rnd: random.Random) -> list[bytes]:
    kind = rnd.choice([SUB, ACK, REC, DIV, b"", b"\x00" * 9, rnd.randbytes(3)])
    body = packb(_random_value(rnd)) if rnd.random() < 0.8 else rnd.randbytes(rnd.randrange(40))
    return rnd.choice([[kind, body], [kind], [kind, body, body], [body]])


def test_garbage_at_the_replication_port_is_refused_and_counted(secure_pair: Pair) -> None:
    """Random bytes (no ZMTP), random msgpack from a keyless socket, and random msgpack from a
    socket holding shard 0's own key (the worst case: it passes the handshake): the leader
    refuses and counts every message, keeps serving, and the standby stays in the set."""
    pair = secure_pair
    leader = pair.wait_leader()
    standby = _standby_node(leader)
    pair.wait_isr({leader, standby})
    port = int(pair.layout.repl(0, int(leader[-1])).rsplit(":", 1)[1])
    rnd = random.Random(15)
    for _ in range(20):  # not even a ZMTP greeting
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            raw.sendall(rnd.randbytes(rnd.randrange(1, 300)))
    ctx = zmq.Context()
    store = KeyStore(pair.keys_dir)  # type: ignore[arg-type]
    endpoint = pair.layout.repl(0, int(leader[-1]))
    keyless = _dealer(ctx, endpoint, None, b"x")
    insider = _dealer(ctx, endpoint, store.process_key("shard-0", "shard", 0), b"shard-0.r5")
    try:
        sent = 0
        deadline = time.monotonic() + 10
        while sent < 300:  # (the insider's handshake takes a moment; the keyless one never ends)
            _try_send(keyless, _random_frames(rnd))
            if _try_send(insider, _random_frames(rnd)):
                sent += 1
            else:
                assert time.monotonic() < deadline, "shard 0's own key was not let in"
                time.sleep(0.01)
        with pair.client() as c:
            deadline = time.monotonic() + 10
            while c.status()[0].get("repl_refused", 0) < sent // 2:
                assert time.monotonic() < deadline, c.status()[0]
                time.sleep(0.1)
            for k in range(5):
                assert _place_until_ok(c, c.order(SYMBOL, "sell", "1", "90", id=f"g{k}")).ok
            status = c.status()[0]
        assert status["node"] == leader and set(status["isr"]) == {leader, standby}
        assert status["repl_refused"] <= sent  # (the keyless socket's never got in at all)
        assert pair.procs["r" + leader[-1]].poll() is None
        assert pair.procs["r" + standby[-1]].poll() is None
        assert "ALERT leader" in pair.output("r" + leader[-1])
    finally:
        keyless.close(0)
        insider.close(0)
        ctx.term()


class _FakeLease:
    node = "shard-0.r1"
    shard = 0

    def starts(self) -> dict[int, int]:
        return {}


def _secure_leader(ctx: Any, store: KeyStore, server: KeyFile) -> tuple[Any, Any, str]:
    """A ROUTER as the leader binds it: CURVE server, ZAP domain replication-0."""
    zap = ZapHandler(ctx, store.registry())
    leader = ctx.socket(zmq.ROUTER)
    leader.setsockopt(zmq.LINGER, 0)
    server_socket(leader, server, replication_domain(0))
    port = leader.bind_to_random_port("tcp://127.0.0.1")
    return zap, leader, f"tcp://127.0.0.1:{port}"


def _recv_sub(zap: Any, leader: Any, timeout: float = 5.0) -> bytes | None:
    """Serve ZAP until the standby's SUB arrives; its routing id (None: nothing came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        zap.serve()
        if leader.poll(20):
            ident, kind, _ = leader.recv_multipart()
            assert kind == SUB
            return ident
    return None


def test_standby_refuses_and_counts_hostile_frames_from_the_leader_side(tmp_path: Path) -> None:
    """The leader side of the link sends garbage: wrong frame counts, unreadable msgpack,
    records of the wrong shape, a crc-valid record whose payload is no command list, a DIV
    that makes no sense. Each is refused and counted, none applied; the standby does not
    crash, and a good record after them is applied and acknowledged."""
    store = KeyStore(tmp_path / "keys")
    store.init()
    key = store.process_key("shard-0", "shard", 0)
    d = str(tmp_path / "shard-0.r1")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(_FakeLease(), d, DEFAULT_MARKETS, "none", journal,  # type: ignore[arg-type]
                      journal.recover().engine, key)  # fmt: skip
    lctx = zmq.Context()
    zap, leader, endpoint = _secure_leader(lctx, store, store.server())
    try:
        from shardex.lease import Holder

        standby._follow(Holder(1, "shard-0.r0", endpoint))
        standby._send(SUB, ("shard-0.r1", 0, 0))
        ident = _recv_sub(zap, leader)
        assert ident is not None, "the standby's SUB never arrived over CURVE"
        cmd = (OP_NEW, SYMBOL, "g1", "acct1", 0, 0, 10_000, 1, 0, False, 0)
        payload = packb([cmd])
        not_a_list = packb({"op": 1})
        hostile = [
            [REC],
            [REC, packb(1), packb(2)],
            [REC, b"\xc1garbage"],
            [REC, packb(("x", 0, 0, 0, b""))],
            [REC, packb((1, 0, 0, 12345, payload))],  # bad crc
            [REC, packb((1, 0, 0, zlib.crc32(not_a_list), not_a_list))],
            [REC, packb((1, 0, 0, zlib.crc32(b"\xc1"), b"\xc1"))],
            [DIV, packb("seven")],
            [DIV, packb(10**6)],  # "the leader is below us": we are at 0
            [b"XYZ", packb(None)],
        ]
        for frames in hostile:
            leader.send_multipart([ident, *frames])
        leader.send_multipart([ident, REC, packb((1, 0, 0, zlib.crc32(payload), payload))])
        deadline = time.monotonic() + 5
        while standby.engine.seq == 0 and time.monotonic() < deadline:
            if standby.sock.poll(100):
                standby._drain()
        assert standby.engine.seq > 0
        assert standby.refused.count == len(hostile)
        assert leader.poll(5000)
        _, kind, body = leader.recv_multipart()
        assert kind == ACK and unpackb(body) == (1, standby.engine.seq)
        assert _journal_ids(d) == ["g1"]
    finally:
        leader.close(0)
        zap.close()
        lctx.term()
        standby.close()


def test_standby_will_not_follow_an_impostor_without_the_server_key(tmp_path: Path) -> None:
    """A "leader" whose CURVE key is not the cluster's server key (say, someone who wrote a
    lease value pointing at their own port): the standby's handshake fails, so it neither
    sends it anything nor applies anything from it. The impostor's socket monitor first shows
    that the standby's connection reached it and its handshake failed (else "nothing came"
    would pass as well for a standby that never dialled)."""
    store = KeyStore(tmp_path / "keys")
    store.init()
    key = store.process_key("shard-0", "shard", 0)
    d = str(tmp_path / "shard-0.r1")
    journal = Journal(d, DEFAULT_MARKETS, fsync="none")
    standby = Standby(_FakeLease(), d, DEFAULT_MARKETS, "none", journal,  # type: ignore[arg-type]
                      journal.recover().engine, key)  # fmt: skip
    public, secret = keypair()
    lctx = zmq.Context()
    zap, impostor, endpoint = _secure_leader(lctx, store, KeyFile(public, secret, public))
    monitor = impostor.get_monitor_socket()
    failed = {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
              zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL}  # fmt: skip
    try:
        from shardex.lease import Holder

        standby._follow(Holder(1, "shard-0.r0", endpoint))
        standby._send(SUB, ("shard-0.r1", 0, 0))
        events: set[int] = set()
        deadline = time.monotonic() + 15
        while not events & failed:  # arrival first: the standby dialled, the handshake failed
            assert time.monotonic() < deadline, f"the standby never reached it: {events}"
            zap.serve()
            if monitor.poll(50):
                events.add(parse_monitor_message(monitor.recv_multipart())["event"])
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events
        assert _recv_sub(zap, impostor, timeout=0.2) is None  # no SUB got through
        assert standby.engine.seq == 0 and not standby.sock.poll(200)
    finally:
        impostor.disable_monitor()
        monitor.close(0)
        impostor.close(0)
        zap.close()
        lctx.term()
        standby.close()


# -- the lease under a Redis ACL user -----------------------------------------------------------


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_lease_user_may_touch_the_lease_keys_and_nothing_else(tmp_path: Path, binary: str) -> None:
    """User ``lease`` runs the whole lease protocol (acquire, renew, in-sync set, epoch starts,
    release) and nothing else: no stream command, no key outside ``shardex:lease:*``, no
    script that would reach one. And no other user may take or change the lease."""
    users = RedisUsers.ensure(tmp_path / "keys")
    server = AclRedis(BINARIES[binary], users, tmp_path)
    try:
        bridge = server.client("bridge")
        bridge.xadd("shardex:events:0", {"e": "x"}, id="1-0")
        r = connect(user_url(server.url, "lease"), str(tmp_path / "keys"))
        assert r.connection_pool.connection_kwargs["username"] == "lease"
        a = Lease(r, 0, "shard-0.r0", "tcp://a", ttl_ms=300, renew_ms=100)
        b = Lease(connect(user_url(server.url, "lease"), str(tmp_path / "keys")), 0,
                  "shard-0.r1", "tcp://b", ttl_ms=300, renew_ms=100)  # fmt: skip
        assert a.try_acquire(0, 0) == (1, "ok")
        assert b.try_acquire(0, 0) == (0, "held")
        assert a.renew() and a.set_isr(["shard-0.r0", "shard-0.r1"])
        assert b.holder().node == "shard-0.r0" and b.isr() == ["shard-0.r0", "shard-0.r1"]
        a.release()
        assert b.try_acquire(0, 5)[0] == 2 and b.starts() == {1: 0, 2: 5}
        lease = server.client("lease")
        for call in (
            lambda: lease.xadd("shardex:events:0", {"e": "forged"}),
            lambda: lease.xrange("shardex:events:0"),
            lambda: lease.xlen("shardex:events:0"),
            lambda: lease.get("shardex:events:0"),
            lambda: lease.delete("shardex:events:0"),
            lambda: lease.set("shardex:other", "1"),
            lambda: lease.keys("*"),
            lambda: lease.flushall(),
            lambda: lease.eval("return redis.call('XADD', KEYS[1], '*', 'e', 'x')", 1,
                               "shardex:events:0"),
            lambda: lease.eval("return redis.call('XADD', KEYS[1], '*', 'e', 'x')", 1,
                               "shardex:lease:0:x"),  # (its own keys, but no stream command)
        ):  # fmt: skip
            assert "permission" in refused(call).lower()
        assert bridge.xlen("shardex:events:0") == 1
        # the other users cannot take, renew or read the lease
        bridge_lease = Lease(redis.Redis.from_url(users.url(server.url, "bridge")), 0,
                             "shard-0.r9", "tcp://evil")  # fmt: skip
        b.release()
        with pytest.raises(redis.exceptions.ResponseError):
            bridge_lease.try_acquire(99, 0)
        reader = server.client("reader")
        for call in (lambda: reader.get("shardex:lease:0"), lambda: bridge.get("shardex:lease:0"),
                     lambda: bridge.set("shardex:lease:0", "9|evil|tcp://evil")):  # fmt: skip
            assert "permission" in refused(call).lower()
        assert lease.get("shardex:lease:0") is None and lease.get("shardex:lease:0:epoch") == "2"
    finally:
        server.stop()


def test_an_older_credentials_file_gains_the_lease_user_and_keeps_its_passwords(
    tmp_path: Path,
) -> None:
    """A ``redis.json`` written before the lease user existed: ``load`` says what is missing
    and how to fix it; ``ensure`` (every ``shardex up``) adds ``lease`` and keeps the other
    passwords, so consumers' credentials stay valid."""
    import json
    import stat

    from shardex.redisauth import REDIS_FILE, RedisAuthError

    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    old = {"bridge": "b" * 32, "reader": "r" * 32}
    (keys / REDIS_FILE).write_text(json.dumps({"users": {u: {"password": p}
                                                         for u, p in old.items()}}))  # fmt: skip
    with pytest.raises(RedisAuthError, match="lease.*adds them"):
        RedisUsers.load(keys)
    users = RedisUsers.ensure(keys)
    assert {u: users.password(u) for u in old} == old
    assert len(users.password("lease")) >= 32 and users.password("lease") not in old.values()
    assert RedisUsers.ensure(keys).passwords == users.passwords  # idempotent
    assert stat.S_IMODE((keys / REDIS_FILE).stat().st_mode) == 0o600
    assert any(line.startswith("user lease ") and "~shardex:lease:*" in line
               for line in users.acl_lines())  # fmt: skip


def test_engine_refuses_to_start_with_lease_credentials_redis_refuses(tmp_path: Path) -> None:
    """A replica whose Redis URL has no user (or a wrong one) against an ACL'd Redis exits at
    once with one line saying so, instead of standing by forever without a lease."""
    keys = tmp_path / "keys"
    KeyStore(keys).init()
    users = RedisUsers.ensure(keys)
    server = AclRedis(BINARIES["redis-server"], users, tmp_path)
    try:
        for url, why in ((server.url, "refused"), (user_url(server.url, "reader"), "refused")):
            out = subprocess.run(
                [sys.executable, "-m", "shardex.cli", "engine", "--shard", "0", "--shards", "1",
                 "--role", "auto", "--redis-url", url, "--data-dir", str(tmp_path / "data"),
                 "--keys-dir", str(keys), "--router", "none", "--no-pin", "--metrics-port", "0"],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
            assert out.returncode != 0
            assert "the lease's Redis" in out.stderr and why in out.stderr, out.stderr
            assert users.password("reader") not in out.stderr + out.stdout
    finally:
        server.stop()


# -- shardex up --replicas 2, secure by default ---------------------------------------------------


def _cmdlines_with(needle: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmd:
                found.append(cmd)
    return found


def test_secure_up_replicas_2_kill9_leader_stream_contiguous() -> None:
    """``shardex up --replicas 2`` without ``--insecure``: CURVE everywhere, the lease as Redis
    user ``lease`` (no password on any command line), the bridge as ``bridge``; kill -9 the
    leader: orders go on, the events stream (read as ``reader``) is contiguous, no duplicate."""
    c = Cluster(1, "--replicas", "2", "--accounts", "0", redis="embedded")
    try:
        assert c.keys_dir is not None
        users = RedisUsers.load(c.keys_dir)
        lease_url = user_url(f"redis://127.0.0.1:{c.layout.redis_port}/0", "lease")
        cmdlines = _cmdlines_with(lease_url)
        assert len(cmdlines) == 2, cmdlines  # both replicas, user only
        assert not any(p in " ".join(cmdlines) for p in users.passwords.values())
        with c.client(account="acct1") as cl:
            deadline = time.monotonic() + 15
            while len(cl.status()[0].get("isr", [])) != 2:  # the standby joined (over CURVE)
                assert time.monotonic() < deadline, cl.status()
                time.sleep(0.1)
            for k in range(20):
                assert _place_until_ok(cl, cl.order(SYMBOL, "buy", "1", "100", id=f"a{k}")).ok
            leader = cl.status()[0]
            assert leader["role"] == "primary" and leader["repl_refused"] == 0
            os.kill(leader["pid"], signal.SIGKILL)
            for k in range(20):
                assert _place_until_ok(cl, cl.order(SYMBOL, "sell", "1", "100", id=f"b{k}")).ok
            after = cl.status()[0]
        assert after["pid"] != leader["pid"] and after["epoch"] > leader["epoch"]
        r = redis.Redis.from_url(users.url(f"redis://127.0.0.1:{c.layout.redis_port}/0", "reader"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seqs = [int(i.split(b"-")[0]) for i, _ in r.xrange("shardex:events:0")]
            if seqs and seqs[-1] >= after["seq"]:
                break
            time.sleep(0.1)
        assert seqs == list(range(1, after["seq"] + 1)), "the events stream has a gap or a dup"
        out = c.output()
        assert "INSECURE" not in out
        assert not any(p in out for p in users.passwords.values())
    finally:
        c.stop()
