"""The bridge follows a replicated account shard's leader (the bridge side of failover).

A real router process, a real ``shardex bridge`` process and a real Redis with the cluster's
ACL users (the bridge writes as user ``bridge``: its ACL must cover the fence key
``shardex:balances:J:epoch``). The shards are stand-ins made of real ZeroMQ sockets in this
process, speaking the real protocol: each registers with the router (HELLO, as
``shardex.node.accounts`` does; a replicated leader's carries ``epoch`` and names its link
``accounts-J.eE``), publishes ``encode_events(J, events, epoch)`` on its PUB and answers the
bridge's ``OP_STATUS``/``OP_EVENTS`` on its direct ROUTER as ``AccountHandler.direct`` does;
a standby answers every request with ``not_leader`` (``shardex.node.shard.not_leader_reply``,
what the real standby sends). Both replicas of account shard 0 serve one shared history: the
standby replays the leader's journal, so seqs continue across a failover.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_BALANCE, AE_FEES, AE_FORWARD
from shardex.engine import DEFAULT_MARKETS
from shardex.node.shard import not_leader_reply
from shardex.redisauth import RedisUsers
from shardex.wire.protocol import (
    MAX_EVENTS_REPLY,
    OP_EVENTS,
    OP_HELLO,
    OP_STATUS,
    decode_request,
    encode_events,
    encode_reply,
    not_leader_error,
    packb,
)
from shardex.wire.pub import Malformed, decode_account_pub, decode_account_pub_epoch
from tests.support.bridge import BridgeProc, wait_until
from tests.support.cluster import ROOT
from tests.support.ports import free_layout, wait_listening
from tests.support.redis import redis_server_binary
from tests.support.redis_acl import AclRedis

ASSETS = AssetTable(DEFAULT_MARKETS)


def account_event(seq: int) -> tuple:
    """The account shard's event at ``seq``: mostly balance changes, every 5th a forward (not
    written to the balances stream, only advances the seq), every 7th a fee-ledger change."""
    if seq % 5 == 0:
        return (AE_FORWARD, seq, 0, seq - 5 if seq > 5 else 0, (1, "BTC-USD", f"o{seq}"))
    if seq % 7 == 0:
        return (AE_FEES, seq, "USD", 100 * seq)
    return (AE_BALANCE, seq, f"acct{seq % 13}", "USD" if seq & 1 else "BTC", 1_000_000 + seq,
            seq % 11, "deposit", f"d{seq}")  # fmt: skip


def balance_seqs(upto: int) -> list[int]:
    """The seqs 1..upto whose events belong in ``shardex:balances:<j>``."""
    return [s for s in range(1, upto + 1) if account_event(s)[0] in (AE_BALANCE, AE_FEES)]


class History:
    """The account shard's event history (its journal), shared by both replicas."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple] = []

    def extend(self, upto: int) -> list[tuple]:
        with self.lock:
            new = [account_event(s) for s in range(len(self.events) + 1, upto + 1)]
            self.events.extend(new)
            return new

    def range(self, first: int, last: int) -> list[tuple]:
        with self.lock:
            return self.events[first - 1 : last]


class StandIn:
    """One shard process's sockets (PUB, direct ROUTER, a DEALER to the router), served by one
    thread until ``close``. ``tier="accounts"``: account shard ``shard`` of 1 (of a replicated
    pair when ``epoch`` is set), else engine shard 0 of 1 that never publishes."""

    def __init__(self, backend: str, pub: str, direct: str, *, tier: str | None = None,
                 shard: int = 0, epoch: int | None = None, node: str = "",
                 history: History | None = None) -> None:  # fmt: skip
        self.backend, self.pub, self.direct = backend, pub, direct
        self.tier, self.shard, self.epoch, self.node = tier, shard, epoch, node
        self.history = history or History()
        self.leading = True  # False: a standby (no HELLO, every request answered not_leader)
        self.published = 0  # the highest seq this leader serves (its ``published``)
        self.status_asked = 0
        self.subscribed = 0  # subscriptions its PUB (an XPUB) received: the bridge's SUB is in
        self.not_leader_sent = 0
        self._todo: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stand-in did not start")
        if self._error is not None:
            raise self._error

    # -- test side ----------------------------------------------------------------------------

    def publish(self, events: list[tuple], drop: bool = False) -> None:
        """``events`` become served (``published``) and, unless ``drop`` (a message a full PUB
        lost), go out as one PUB message of this leader's epoch."""
        if events:
            self.published = max(self.published, events[-1][1])
        if not drop:
            self.send(events, self.epoch)

    def send(self, events: list[tuple], epoch: int | None) -> None:
        """One PUB message of ``events`` under ``epoch``, nothing else (not served after)."""
        self._todo.put([b"accounts", encode_events(self.shard, events, epoch)])

    def advance(self, upto: int, chunk: int = 40, drop: set[int] | None = None) -> None:
        """Extend the shared history to ``upto`` and publish it in messages of ``chunk``
        events (the ``drop``-th messages are lost on the way)."""
        new = self.history.extend(upto)
        for k in range(0, len(new), chunk):
            self.publish(new[k : k + chunk], drop=bool(drop) and k // chunk in drop)

    def step_down(self) -> None:
        """Stay bound, stop registering, answer every request ``not_leader`` (a standby)."""
        self.leading = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._error is not None:
            raise self._error

    # -- the thread ---------------------------------------------------------------------------

    def _hello(self) -> bytes:
        info: dict[str, Any] = {"shard": self.shard, "shards": 1, "pid": os.getpid(),
                                "pub": self.pub, "direct": self.direct}  # fmt: skip
        if self.tier == "accounts":
            info.update(tier="accounts", engines=1)
        if self.epoch is not None:
            info.update(epoch=self.epoch, role="primary", node=self.node)
        return packb((OP_HELLO, info))

    def _run(self) -> None:
        ctx = zmq.Context()
        socks: list[Any] = []
        try:
            pub = ctx.socket(zmq.XPUB)
            pub.setsockopt(zmq.XPUB_VERBOSE, 1)
            direct = ctx.socket(zmq.ROUTER)
            link = ctx.socket(zmq.DEALER)
            socks = [pub, direct, link]
            for s in socks:
                s.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.SNDHWM, 0)
            pub.bind(self.pub)
            direct.bind(self.direct)
            ident = f"accounts-{self.shard}" if self.tier == "accounts" else f"shard-{self.shard}"
            if self.epoch is not None:
                ident += f".e{self.epoch}"  # a replicated leader's link (the router checks it)
            link.setsockopt(zmq.IDENTITY, ident.encode())
            link.connect(self.backend)
            hello = self._hello()
            last_hello = 0.0
            self._ready.set()
            while not self._stop.is_set():
                now = time.monotonic()
                if self.leading and now - last_hello >= 0.2:
                    last_hello = now
                    link.send_multipart([b"", b"HELLO", hello])
                while True:
                    try:
                        pub.send_multipart(self._todo.get_nowait())
                    except queue.Empty:
                        break
                if direct.poll(5):
                    frames = direct.recv_multipart()
                    if len(frames) == 4:  # [identity, routing key, request id, payload]
                        direct.send_multipart([frames[0], frames[2], self._answer(frames[3])])
                while link.poll(0):
                    link.recv_multipart()  # nothing is routed to a stand-in
                while pub.poll(0):
                    if pub.recv()[:1] == b"\x01":  # a subscription (b"\x00": one ended)
                        self.subscribed += 1
        except BaseException as exc:  # surfaced by close()
            self._error = exc
            self._ready.set()
        finally:
            for s in socks:
                s.close(0)
            ctx.term()

    def _answer(self, payload: bytes) -> bytes:
        """As ``AccountHandler.direct`` (leader) or ``Standby.serve_clients`` (standby)."""
        if not self.leading:
            self.not_leader_sent += 1
            why = f"{self.node} is a standby of account shard {self.shard}"
            return not_leader_reply(payload, not_leader_error(self.epoch or 0, why))
        cmds, error = decode_request(payload)
        if error is not None:
            return encode_reply(None, error)
        published = self.published
        results: list[Any] = []
        for cmd in cmds:
            if cmd[0] == OP_STATUS:
                self.status_asked += 1
                results.append({"seq": published, "account_shard": self.shard})
            elif cmd[0] == OP_EVENTS:
                first, last = cmd[1], min(cmd[2], cmd[1] + MAX_EVENTS_REPLY - 1, published)
                evs = self.history.range(first, last) if first <= last else []
                results.append({"events": evs, "seq": published})
            else:
                results.append({"error": "not served by the stand-in"})
        return encode_reply(results)


class Rig:
    """Router + bridge processes, an ACL'd Redis, an engine stand-in; account stand-ins are
    added by the test (``replica``)."""

    def __init__(self, tmp_path: Path, engine_epoch: int | None = None) -> None:
        """``engine_epoch``: the engine stand-in is a replicated shard's leader at that epoch."""
        self.tmp = tmp_path
        self.layout = free_layout(1, accounts=1)
        self.users = RedisUsers.ensure(tmp_path / "keys")
        (tmp_path / "redis").mkdir()
        self.redis = AclRedis(redis_server_binary(), self.users, tmp_path / "redis")
        self.r = self.redis.client("bridge")  # what the bridge itself may read
        self.stand_ins: list[StandIn] = []
        self.bridge: BridgeProc | None = None
        self.router_log = open(tmp_path / "router.log", "w+b")  # noqa: SIM115 - closed in stop
        self.router = subprocess.Popen(
            [sys.executable, "-m", "shardex.cli", "router", "--shards", "1", "--accounts", "1",
             "--base-port", str(self.layout.base_port), "--metrics-port", "0", "--insecure"],
            stdout=self.router_log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        port = int(self.layout.backend.rsplit(":", 1)[1])
        wait_listening([port], proc=self.router)
        lay = self.layout
        self.engine = self.add(StandIn(lay.backend, lay.pub(0), lay.direct(0),
                                       epoch=engine_epoch, node="shard-0.r0"))  # fmt: skip

    def add(self, s: StandIn) -> StandIn:
        self.stand_ins.append(s)
        return s

    def replica(self, r: int, epoch: int, history: History) -> StandIn:
        """Replica ``r`` of account shard 0, leading at ``epoch`` on its own endpoints."""
        lay = self.layout
        # replica 1 takes the (unused here) replica-1 ports of engine shard 0: checked free
        pub = lay.account_pub(0) if r == 0 else lay.replica_pub(0, 1)
        direct = lay.account_direct(0) if r == 0 else lay.replica_direct(0, 1)
        return self.add(StandIn(lay.backend, pub, direct, tier="accounts", epoch=epoch,
                                node=f"accounts-0.r{r}", history=history))  # fmt: skip

    def start_bridge(self) -> BridgeProc:
        url = self.users.url(self.redis.url, "bridge")  # (a test: the password on argv)
        self.bridge = BridgeProc(SimpleNamespace(layout=self.layout), url, self.tmp)
        return self.bridge

    def ids(self) -> list[int]:
        return [int(eid.split("-")[0]) for eid, _ in self.r.xrange("shardex:balances:0")]

    def assert_exact(self, history: History) -> None:
        """``shardex:balances:0`` holds exactly the balance/fee events of the history: each
        seq once, in order, with the fields of that seq's event (no mix-up across leaders)."""
        upto = len(history.events)
        entries = self.r.xrange("shardex:balances:0")
        assert [int(e[0].split("-")[0]) for e in entries] == balance_seqs(upto)
        for eid, f in entries:
            ev = account_event(int(eid.split("-")[0]))
            assert f["seq"] == eid.split("-")[0] and f["shard"] == "0"
            if ev[0] == AE_BALANCE:
                want = ("balance", ev[2], ev[3], ev[7], ASSETS.fmt(ev[3], ev[4]))
                assert (f["ev"], f["account"], f["asset"], f["ref"], f["available"]) == want
            else:
                want = ("fees", "USD", ASSETS.fmt("USD", ev[3]))
                assert (f["ev"], f["asset"], f["total"]) == want

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        for s in self.stand_ins:
            s.close()
        if self.router.poll() is None:
            self.router.terminate()
            try:
                self.router.wait(10)
            except subprocess.TimeoutExpired:
                self.router.kill()
                self.router.wait(5)
        self.router_log.close()
        self.redis.stop()


@pytest.fixture
def rig(tmp_path: Path):
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


def metric(bridge: BridgeProc, name: str) -> float:
    return bridge.metrics().get(name, 0.0)


def test_decode_account_pub_reads_the_epoch_of_a_replicated_leader() -> None:
    """3 fields (a single-process account shard): epoch None; 4 fields: the leader's epoch;
    an epoch that is not a positive int is a malformed message, never a crash."""
    ev = account_event(1)
    assert decode_account_pub_epoch(encode_events(0, [ev]), 1, ASSETS) == (0, [ev], 0, None)
    assert decode_account_pub_epoch(encode_events(0, [ev], 3), 1, ASSETS) == (0, [ev], 0, 3)
    assert decode_account_pub(encode_events(0, [ev], 3), 1, ASSETS) == (0, [ev], 0)
    for bad in (0, -1, "2", 1.5, True, 1 << 63):
        with pytest.raises(Malformed):
            decode_account_pub_epoch(packb((1, 0, [ev], bad)), 1, ASSETS)
    with pytest.raises(Malformed):  # (a 5th field is the exchange time: a 6th is not a form)
        decode_account_pub_epoch(packb((1, 0, [ev], 2, 9, 9)), 1, ASSETS)
    assert decode_account_pub_epoch(packb((1, 0, [ev], 2, 9)), 1, ASSETS) == (0, [ev], 0, 2)


def test_stale_epoch_pub_of_an_account_shard_is_not_written(rig: Rig) -> None:
    """Regression (before: the account PUB's 4th field made every message of a replicated
    account shard malformed, and an epoch was never checked). A message of an epoch older
    than the newest seen (a deposed leader's, still in the SUB's queue) is dropped and
    counted, its events are not written even where the leader never sends those seqs, and
    the leader's own events at the same seqs are what Redis holds."""
    history = History()
    leader = rig.replica(1, epoch=2, history=history)
    bridge = rig.start_bridge()
    wait_until(lambda: leader.status_asked >= 1, 20, "the bridge polling the leader", bridge)
    wait_until(lambda: leader.subscribed >= 1, 20, "the bridge's subscription", bridge)
    leader.advance(20)
    wait_until(lambda: rig.ids() == balance_seqs(20), 20, "epoch 2's first events", bridge)
    # a deposed leader's view of seqs 21..30: other balances, epoch 1
    forged = [(AE_BALANCE, s, "mallory", "USD", 10**9, 0, "deposit", f"x{s}")
              for s in range(21, 31)]  # fmt: skip
    leader.send(forged[:5], epoch=1)
    leader.advance(25)
    wait_until(lambda: rig.ids() == balance_seqs(25), 20, "epoch 2's events 21..25", bridge)
    leader.send(forged[5:], epoch=1)  # seqs the leader has not reached: never written
    wait_until(lambda: metric(bridge, 'shardex_bridge_stale_epoch_total{shard="a0"}') >= 2,
               20, "two stale messages counted", bridge)  # fmt: skip
    leader.advance(40)
    wait_until(lambda: rig.ids() == balance_seqs(40), 20, "epoch 2's events 26..40", bridge)
    rig.assert_exact(history)
    assert "mallory" not in str(rig.r.xrange("shardex:balances:0"))
    assert rig.r.get("shardex:balances:0:epoch") == "2"  # the write fence, under user bridge
    m = bridge.metrics()
    assert m['shardex_bridge_alerts_total{kind="conflict",shard="a0"}'] >= 2
    assert m['shardex_bridge_malformed_total{source="pub"}'] == 0
    assert m['shardex_bridge_lost_events_total{shard="a0"}'] == 0
    out = bridge.output()
    assert "dropped a PUB message of epoch 1 (the newest seen is 2)" in out
    assert "Traceback" not in out and bridge.proc.poll() is None


@pytest.mark.parametrize("old_leader", ["becomes_standby", "gone"])
def test_bridge_follows_the_account_shards_new_leader(rig: Rig, old_leader: str) -> None:
    """Account shard 0's leader (epoch 1) is replaced by the other replica (epoch 2, its own
    endpoints). The old one either stays bound as a standby answering ``not_leader`` (before:
    the bridge kept polling it, counted its answers as malformed and never moved: a stall) or
    is gone. The bridge follows the new leader through the router, repairs what it missed
    from it, and the balances stream stays contiguous: every event once, though the new leader
    re-publishes the tail the old one had already sent."""
    history = History()
    r0 = rig.replica(0, epoch=1, history=history)
    bridge = rig.start_bridge()
    wait_until(lambda: r0.status_asked >= 1, 20, "the bridge polling the leader", bridge)
    wait_until(lambda: r0.subscribed >= 1, 20, "the bridge's subscription", bridge)
    r0.advance(200, drop={2})  # one message lost on the way: repaired from r0
    wait_until(lambda: rig.ids() == balance_seqs(200), 20, "epoch 1's events", bridge)
    r0.advance(230, drop={0})  # the old leader's last message never reached the bridge
    time.sleep(0.2)
    # failover: the standby took the lease at epoch 2 (same journal: seqs continue)
    if old_leader == "gone":
        r0.close()
        rig.stand_ins.remove(r0)
    else:
        r0.step_down()
    r1 = rig.replica(1, epoch=2, history=history)
    r1.publish(history.range(1, 230), drop=True)  # it serves the same journal
    wait_until(lambda: r1.status_asked >= 1, 30, "the bridge following the new leader", bridge)
    wait_until(lambda: r1.subscribed >= 1, 30, "the bridge's subscription", bridge)
    r1.publish(history.range(181, 230))  # a tail seen from both leaders: written once
    r1.advance(400, drop={1})
    wait_until(lambda: rig.ids() == balance_seqs(400), 30, "epoch 2's events", bridge)
    rig.assert_exact(history)
    assert rig.r.get("shardex:balances:0:epoch") == "2"
    m = bridge.metrics()
    assert m['shardex_bridge_lost_events_total{shard="a0"}'] == 0
    assert m['shardex_bridge_malformed_total{source="reply"}'] == 0
    assert m['shardex_bridge_malformed_total{source="pub"}'] == 0
    assert m['shardex_bridge_repaired_events_total{shard="a0"}'] >= 40
    out = bridge.output()
    assert "account shard 0: leader epoch 2 now at PUB" in out
    if old_leader == "becomes_standby":
        assert r0.not_leader_sent >= 1
        assert "account shard 0 at " in out and "answers not leader" in out
    assert "ALERT" not in out, out[-3000:]
    assert "Traceback" not in out and bridge.proc.poll() is None


def test_engine_and_account_leaders_both_move(tmp_path: Path) -> None:
    """Both tiers fail over: the router already shows account shard 0's new leader when the
    bridge follows engine shard 0's. Following the engine shard must not take the account
    shard's new endpoints as already followed (reading the topology stored both kinds: the
    account shard's later follow then saw "no change" while its sockets still pointed at the
    old leader, a stall); each kind moves its own sockets."""
    rig = Rig(tmp_path, engine_epoch=1)
    try:
        history = History()
        r0 = rig.replica(0, epoch=1, history=history)
        bridge = rig.start_bridge()
        wait_until(lambda: r0.status_asked >= 1, 20, "the bridge polling the leader", bridge)
        wait_until(lambda: r0.subscribed >= 1, 20, "the bridge's subscription", bridge)
        r0.advance(60)
        wait_until(lambda: rig.ids() == balance_seqs(60), 20, "epoch 1's events", bridge)
        # account shard 0: the new leader registers; the old one still answers (it has not
        # noticed yet) and publishes nothing more
        r1 = rig.replica(1, epoch=2, history=history)
        r1.publish(history.range(1, 60), drop=True)
        time.sleep(0.5)  # (the router has its hello: it sends one every 0.2 s)
        # engine shard 0 moves too, and the bridge follows it while r0 still answers
        rig.engine.close()
        rig.stand_ins.remove(rig.engine)
        lay = rig.layout
        rig.engine = rig.add(StandIn(lay.backend, lay.repl(0, 0), lay.repl(0, 1), epoch=2,
                                     node="shard-0.r1"))  # fmt: skip
        wait_until(lambda: "shard 0: leader epoch 2 now at PUB" in bridge.output(), 30,
                   "the bridge following the engine shard", bridge)  # fmt: skip
        wait_until(lambda: rig.engine.status_asked >= 1, 20, "engine status polls", bridge)
        r0.step_down()
        wait_until(lambda: r1.status_asked >= 1, 30, "the bridge following r1", bridge)
        wait_until(lambda: r1.subscribed >= 1, 30, "the bridge's subscription", bridge)
        r1.advance(150)
        wait_until(lambda: rig.ids() == balance_seqs(150), 30, "epoch 2's events", bridge)
        rig.assert_exact(history)
        out = bridge.output()
        assert "account shard 0: leader epoch 2 now at PUB" in out
        assert "Traceback" not in out and bridge.proc.poll() is None
    finally:
        rig.stop()


# -- end to end: shardex up --replicas 2 with the account tier -----------------------------------


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.mark.parametrize("store", ["redis", "etcd"])
def test_kill9_account_leader_twice_the_bridge_follows_there_and_back(
    store: str, tmp_path: Path
) -> None:
    """``shardex up --replicas 2 --accounts 1`` (secure, embedded Redis, the real bridge) under
    funded load: kill -9 the account shard's leader, wait for the killed replica to rejoin,
    kill -9 the new leader (so the bridge moves r0 → r1 → r0, back to endpoints it left).
    The one bridge process follows both moves; the balances stream ends exactly the account
    shard's balance and fee events, in seq order, each once; the tiers agree and
    ``shardex audit`` passes; nothing was lost for Redis and nothing malformed was read.
    ``[etcd]``: the leases (and so the epochs the bridge fences with) in a 3-member etcd
    (``--coord``), the streams still in the embedded Redis."""
    from tests.support.etcd import etcd_cluster
    from tests.support.failover_accounts import AccountsPair

    if store == "redis":
        _bridge_follows_there_and_back(AccountsPair())
        return
    with etcd_cluster(tmp_path / "etcd") as etcd:
        _bridge_follows_there_and_back(AccountsPair(coord=etcd.url))


def _bridge_follows_there_and_back(apair: Any) -> None:
    """The scenario above on a started ``AccountsPair`` (stopped on the way out)."""
    from tests.support.failover_accounts import (
        FundedLoad,
        _check_consistent,
        _fund,
        _wait_account_leader,
    )

    try:
        with apair.admin() as c:
            _fund(c)
        leaders = [_wait_account_leader(apair, -1, isr=2)]
        load = FundedLoad(apair, "b")
        try:
            for _ in range(2):
                load.wait_more(20)  # funded orders acknowledged by this leader first
                before = len(load.acked)
                assert before, "no order was acknowledged before the kill"
                os.kill(leaders[-1]["pid"], 9)
                leaders.append(_wait_account_leader(apair, leaders[-1]["pid"]))
                # the killed replica comes back as a standby and catches up before the next
                _wait_account_leader(apair, leaders[-2]["pid"], isr=2, timeout=30)
                deadline = time.monotonic() + 20
                while len(load.acked) <= before:
                    assert time.monotonic() < deadline, "no order acknowledged after the kill"
                    time.sleep(0.1)
        finally:
            load.stop()
        _check_consistent(apair, load.acked)  # audit, settlements, the balances stream exact
        nodes = [ld["node"] for ld in leaders]
        epochs = [ld["epoch"] for ld in leaders]
        assert nodes[0] != nodes[1] and nodes[2] == nodes[0], nodes
        assert epochs == sorted(set(epochs)), epochs
        r = apair.redis()
        ids = [int(eid.split("-")[0]) for eid, _ in r.xrange("shardex:balances:0")]
        assert ids == sorted(set(ids)) and len(ids) > 100
        assert apair.keys_dir is not None
        url = RedisUsers.ensure(apair.keys_dir).url(apair.layout.redis_url, "bridge")
        import redis

        fence = redis.Redis.from_url(url, decode_responses=True).get("shardex:balances:0:epoch")
        assert fence == str(epochs[-1])
        m = _metrics(apair.layout.bridge_metrics_port)
        assert m['shardex_bridge_lost_events_total{shard="a0"}'] == 0
        assert m['shardex_bridge_malformed_total{source="pub"}'] == 0
        assert m['shardex_bridge_malformed_total{source="reply"}'] == 0
        out = apair.output()
        for epoch in epochs[1:]:
            assert f"account shard 0: leader epoch {epoch} now at PUB" in out
        assert out.count("started bridge (pid") == 1, "the bridge was restarted"
        assert "Traceback" not in out
    finally:
        apair.stop()
