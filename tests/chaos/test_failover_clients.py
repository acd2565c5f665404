"""Failover as clients see it: ``not leader`` refusals, SDK retries that never
run a command twice, direct clients that follow the new leader, the leader epoch on PUB.

Real processes (``test_failover.Pair``: a redis-server, a router, two ``--role auto`` replicas
of shard 0, insecure) except the socket-free checks of the retry decisions. Nothing here
asserts time.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import pytest
import zmq

from shardex.client import (
    EXECUTED,
    NOT_EXECUTED,
    AsyncClient,
    Client,
    ClientCore,
    Result,
    Retry,
    retryable,
    stale_topology,
)
from shardex.engine import Engine
from shardex.engine.codes import EV_REJECTED, OP_CANCEL, OP_NEW, REJECT_CODES
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import read_commands
from shardex.node.replica import replica_dir
from shardex.wire import codes
from shardex.wire.protocol import (
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    ErrorText,
    decode_events_epoch,
    encode_events,
    journal_error,
    not_leader_epoch,
    not_leader_error,
)
from shardex.wire.transport import dealer
from tests.support.failover import SYMBOL, Pair, started_pair
from tests.support.redis import RedisServer
from tests.support.wait import wait_until

# -- the decisions, without sockets -------------------------------------------------------------

TIMEOUT = ErrorText(codes.TIMEOUT, "timeout after 1s")
UNREACHABLE = ErrorText(codes.UNREACHABLE, "cannot reach tcp://127.0.0.1:1 within 1s")


def test_not_leader_error_carries_the_epoch_and_reads_as_retryable() -> None:
    direct = not_leader_error(7, "shard-0.r1 is a standby of shard 0")
    routed = not_leader_error(7, "x", routed=True)
    assert not_leader_epoch(direct) == 7 and not_leader_epoch(routed) == 7
    assert routed.startswith(ERR_UNAVAILABLE)  # old clients: not executed, as before
    assert not_leader_epoch("shard unavailable") is None and not_leader_epoch(None) is None
    assert REJECT_CODES["not_leader"] == 16
    r = Result({"op": "new"}, [], direct, NOT_EXECUTED)
    assert r.code == "not_leader" and not r.ok
    timeout, unreachable = TIMEOUT, UNREACHABLE
    for err in (direct, routed, ERR_UNAVAILABLE, timeout, unreachable):
        assert retryable(err)
    for err in (ERR_OVERLOADED, journal_error("disk full"), None, "timeout after 1s"):
        assert not retryable(err)  # (a bare text has no code: nothing reads its wording)
    assert stale_topology(direct) and stale_topology(unreachable)
    assert not stale_topology(timeout) and not stale_topology(ERR_OVERLOADED)


def test_retry_plan_asks_fates_before_sending_again() -> None:
    """Open outcomes are asked first; only a send that never left goes again at once; a
    retried new refused as duplicate_id is asked (an earlier attempt ran); settled ones and
    final errors are left alone."""
    new = (OP_NEW, SYMBOL, "a", "acct1", 0, 0, 100, 1, 0, False, 0)
    tuples = [new, new[:2] + ("b",) + new[3:], (OP_CANCEL, SYMBOL, "c", "acct1"), new, new, new]
    dup = [{"ev": "rejected", "code": "duplicate_id", "reason": "dup"}]
    decoded = [
        (TIMEOUT, []),
        (UNREACHABLE, []),
        (not_leader_error(2, "standby"), []),
        (ERR_OVERLOADED, []),
        (None, dup),
        (None, [{"ev": "accepted"}]),
    ]
    attempts = [1, 1, 1, 1, 2, 2]
    ask, send = ClientCore.retry_plan(tuples, decoded, {}, attempts)
    assert ask == [0, 2, 4] and send == [1]
    assert ClientCore.retry_plan(tuples, decoded, {0: 1, 2: 1, 4: 1}, attempts) == ([], [1])
    core = ClientCore("tcp://127.0.0.1:1", key=False)
    resolved: dict[int, Any] = {}
    last: dict[int, Any] = {}
    out = [
        (
            None,
            {
                "state": "live",
                "symbol": SYMBOL,
                "id": "a",
                "seq": 3,
                "side": 0,
                "price": 10_000,
                "qty": 1,
            },
        ),  # fmt: skip
        (
            None,
            {
                "state": "live",
                "symbol": SYMBOL,
                "id": "c",
                "seq": 3,
                "side": 0,
                "price": 10_000,
                "qty": 1,
            },
        ),  # fmt: skip
        (ERR_UNAVAILABLE, None),
    ]
    again = core.retry_fates(tuples, decoded, [0, 2, 4], out, resolved, last)
    assert again == [2]  # the cancel has not run (order still live): send it again
    assert resolved[0][0] == EXECUTED and decoded[0] == (None, [])  # settled from its fate
    assert 4 not in resolved and last[4][0] == "unknown"  # query unanswered: asked next round
    results = core.retry_results([{}] * 6, tuples, decoded, resolved, [2, 1, 1, 1, 2, 2], last)
    assert results[0].ok and results[0].fate == EXECUTED and results[0].attempts == 2
    assert results[0].status["state"] == "live"
    with pytest.raises(ValueError):
        Retry(deadline=-1)
    with pytest.raises(TypeError):
        ClientCore("tcp://127.0.0.1:1", key=False, retry=5)  # type: ignore[arg-type]


def test_router_stops_routing_to_a_leader_that_says_not_leader() -> None:
    """NOT_LEADER from the link a slot is routed to: requests get ``shard unavailable`` at
    once until a leader registers; the same message from any other link changes nothing, and
    a hello of the next epoch routes there (a later NOT_LEADER of the deposed one is ignored)."""
    from shardex.node.router import Router
    from shardex.wire.protocol import NOT_LEADER, OP_HELLO, decode_reply, encode_request, packb

    r = Router(1)

    def hello(epoch: int) -> list[bytes]:
        info = {"shard": 0, "shards": 1, "pid": 10 + epoch, "epoch": epoch}
        return [f"shard-0.e{epoch}".encode(), b"", b"HELLO", packb((OP_HELLO, info))]

    def order(req: bytes) -> tuple[int, Any]:
        return r.from_client([b"c", SYMBOL.encode(), req, encode_request([])], 0.0)

    r.from_shard(hello(1), 0.0)
    assert order(b"1") == (0, None)
    r.from_shard([b"stranger", b"", NOT_LEADER, b""], 0.1)  # not the routed link: ignored
    assert r.route_ids[0] == b"shard-0.e1"
    r.from_shard([b"shard-0.e1", b"", NOT_LEADER, hello(1)[3]], 0.2)
    shard, reply = order(b"2")
    assert shard == -1 and decode_reply(reply[2])[0] == ERR_UNAVAILABLE
    r.from_shard(hello(2), 0.3)
    assert order(b"3") == (0, None) and r.route_ids[0] == b"shard-0.e2"
    r.from_shard([b"shard-0.e1", b"", NOT_LEADER, hello(1)[3]], 0.4)
    assert r.route_ids[0] == b"shard-0.e2" and b"shard-0.e1" not in r.shard_of


def test_router_answers_requests_in_flight_to_a_deposed_leader_as_open() -> None:
    """A newer epoch registers: what was in flight to the deposed leader is answered at once
    (not after the client's timeout) with an error every client reads as an open outcome
    (``timeout after``...: ask the fate), and stops counting against the caps."""
    from shardex.client import uncertain
    from shardex.node.router import Router
    from shardex.wire.protocol import OP_HELLO, decode_reply, encode_request, packb

    r = Router(1)

    def hello(epoch: int) -> list[bytes]:
        info = {"shard": 0, "shards": 1, "pid": 10 + epoch, "epoch": epoch}
        return [f"shard-0.e{epoch}".encode(), b"", b"HELLO", packb((OP_HELLO, info))]

    assert r.from_shard(hello(1), 0.0) == []  # a first leader: nothing deposed
    for req in (b"1", b"2"):
        assert r.from_client([b"c", SYMBOL.encode(), req, encode_request([])], 0.5)[0] == 0
    r.take_batch(0)
    orphans = r.from_shard(hello(2), 2.0)
    assert [(o[0], o[1]) for o in orphans] == [(b"c", b"1"), (b"c", b"2")]
    error = decode_reply(orphans[0][2])[0]
    assert uncertain(error) and "epoch 2" in error and "may have run" in error
    assert r.shard_inflight[0] == 0 and not r.inflight and r.rejected["leader_changed"] == 2
    assert r.from_shard(hello(2), 3.0) == []  # the same leader again: nothing


def test_pub_epoch_is_additive() -> None:
    ev = (0, 5, SYMBOL, "o1")
    assert decode_events_epoch(encode_events(0, [ev])) == (0, (ev,), None)
    assert decode_events_epoch(encode_events(0, [ev], 3)) == (0, (ev,), 3)


# -- real processes ------------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path) -> Any:
    """``test_failover``'s pair (a router, two replicas of shard 0, one redis-server)."""
    with started_pair(tmp_path) as p:
        yield p


def _runs(path: str) -> dict[str, int]:
    """Replay ``path`` and count, per order id, the ``new`` commands that ran (were not
    rejected): a command sent twice and refused as duplicate_id the second time ran once."""
    engine = Engine(DEFAULT_MARKETS)
    runs: dict[str, int] = {}
    for _, cmd in read_commands(path):
        out: list[Any] = []
        engine.apply(cmd, out)
        if cmd[0] == OP_NEW and not (out and out[0][0] == EV_REJECTED):
            runs[cmd[2]] = runs.get(cmd[2], 0) + 1
    return runs


def test_standby_answers_not_leader_even_to_status(pair: Pair) -> None:
    first = pair.wait_leader()
    pair.wait_isr({"shard-0.r0", "shard-0.r1"})
    standby = 1 - int(first[-1])
    ep = pair.layout.replica_direct(0, standby)
    with Client(ep, shard_endpoints=[ep], timeout=3.0, key=False, account="acct1") as c:
        c.markets_source = "given"
        r = c.place(SYMBOL, "buy", "1", "100", id="to-standby")
        assert r.code == "not_leader" and r.fate == NOT_EXECUTED, r
        assert not_leader_epoch(r.error) >= 1 and f"{first} leads" in r.error
        st = c.status()[0]  # refused too: a status answer would pass for the leader's
        assert "not leader" in st["error"] and "is a standby of shard 0 at seq" in st["error"]
        with pytest.raises(Exception, match="not leader"):
            c.order_status(SYMBOL, "to-standby")
    # a direct client whose topology went stale (its socket at the standby) hears not_leader,
    # asks the router again, and its next call reaches the leader (no retry policy needed)
    with Client(pair.layout.frontend, direct=True, timeout=3.0, key=False, account="acct1") as d:
        assert d.place(SYMBOL, "buy", "1", "100", id="direct-ok").ok
        d._poller.unregister(d._shard_socks[0])
        d._shard_socks[0].close(0)
        d._shard_socks[0] = dealer(d.ctx, ep, 3.0)
        d._poller.register(d._shard_socks[0], zmq.POLLIN)
        d.direct_eps[0] = ep
        assert d.place(SYMBOL, "buy", "1", "100", id="stale").code == "not_leader"
        assert d.direct_eps[0] == pair.layout.replica_direct(0, int(first[-1]))
        assert d.place(SYMBOL, "buy", "1", "100", id="stale").ok  # (it never ran: same id)
    runs = _runs(replica_dir(pair.data, 0, int(first[-1])))
    assert "to-standby" not in runs and runs["stale"] == 1 and runs["direct-ok"] == 1
    assert "to-standby" not in _runs(replica_dir(pair.data, 0, standby))


def test_leader_past_its_deadline_refuses_as_not_leader(pair: Pair) -> None:
    """Redis stops: the leader cannot renew, and past its deadline it answers direct requests
    ``not leader`` and routed ones ``shard unavailable`` (the router stops routing to it)."""
    first = pair.wait_leader()
    pair.wait_isr({"shard-0.r0", "shard-0.r1"})
    ep = pair.layout.replica_direct(0, int(first[-1]))
    with Client(ep, shard_endpoints=[ep], timeout=3.0, key=False, account="acct1") as d:
        d.markets_source = "given"
        assert d.place(SYMBOL, "buy", "1", "100", id="before").ok
        pair.redis.stop()  # type: ignore[attr-defined]
        # past the leader's deadline (< 1 s ttl): it says so
        wait_until(lambda: "is past its lease deadline" in pair.output("r" + first[-1]), 30,
                   "the leader past its deadline")  # fmt: skip
        r = d.place(SYMBOL, "buy", "1", "100", id="fenced-direct")
        assert r.code == "not_leader" and r.fate == NOT_EXECUTED, r
    with pair.client() as c:
        r = c.place(SYMBOL, "buy", "1", "100", id="fenced-routed")
        assert r.error is not None and r.error.startswith(ERR_UNAVAILABLE), r
        assert r.fate == NOT_EXECUTED
    assert "says it is not leader" in pair.output("router")
    runs = _runs(replica_dir(pair.data, 0, int(first[-1])))
    assert runs.get("before") == 1 and "fenced-direct" not in runs and "fenced-routed" not in runs


class RetryingLoad:
    """SDK clients (``Retry`` on) placing orders one after another, each id once: through the
    router and, if ``direct``, straight to the shard; every call's result is kept."""

    def __init__(self, pair: Pair, name: str, direct: bool = False, aio: bool = False) -> None:
        self.pair = pair
        self.name = name
        self.direct = direct
        self.aio = aio  # an AsyncClient (same decisions, its own I/O)
        self.results: list[Result] = []
        self.failures: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def order(self, k: int) -> tuple[str, str, str]:
        side = "buy" if k % 2 else "sell"
        return side, str(100 + k % 5) if side == "buy" else str(103 + k % 5), f"{self.name}{k}"

    async def run_async(self) -> None:
        async with AsyncClient(self.pair.layout.frontend, timeout=1.0, key=False,
                               account="acct1", direct=self.direct,
                               retry=Retry(deadline=15.0)) as c:  # fmt: skip
            k = 0
            while not self.stopping.is_set():
                k += 1
                side, price, oid = self.order(k)
                self.results.append(await c.place(SYMBOL, side, "1", price, id=oid))

    def run(self) -> None:
        retry = Retry(deadline=15.0)
        try:
            if self.aio:
                asyncio.run(self.run_async())
                return
            with Client(self.pair.layout.frontend, timeout=1.0, key=False, account="acct1",
                        direct=self.direct, retry=retry) as c:  # fmt: skip
                k = 0
                while not self.stopping.is_set():
                    k += 1
                    side, price, oid = self.order(k)
                    self.results.append(c.place(SYMBOL, side, "1", price, id=oid))
        except BaseException as exc:  # a call that raised instead of returning a result
            self.failures.append(exc)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)


def test_kill9_with_retrying_sdk_clients_runs_every_order_once(pair: Pair) -> None:
    first = pair.wait_leader()
    pair.wait_isr({"shard-0.r0", "shard-0.r1"})
    loads = [
        RetryingLoad(pair, "r"),
        RetryingLoad(pair, "d", direct=True),
        RetryingLoad(pair, "a", aio=True),
        RetryingLoad(pair, "ad", direct=True, aio=True),
    ]
    wait_until(lambda: all(len(load.results) >= 10 for load in loads), 30, "results")
    pair.proc_of(first).send_signal(signal.SIGKILL)
    second = pair.wait_leader(not_node=first)
    # the clients go on against the new leader
    after = [len(load.results) for load in loads]
    wait_until(lambda: all(len(ld.results) >= n + 10 for ld, n in zip(loads, after, strict=True)),
               30, "results after the kill")  # fmt: skip
    for load in loads:
        load.stop()
    assert not any(load.failures for load in loads), [load.failures for load in loads]
    results = [r for load in loads for r in load.results]
    assert all(r.ok or r.error for r in results)  # a result, or a clear error
    runs = _runs(replica_dir(pair.data, 0, int(second[-1])))
    twice = {i: n for i, n in runs.items() if n > 1}
    assert not twice, f"orders that ran twice: {twice}"
    for r in results:
        oid = r.command["id"]
        if r.fate == EXECUTED:
            assert runs.get(oid) == 1, f"{oid} executed ({r}) but not in the new leader's journal"
        elif r.fate == NOT_EXECUTED:
            assert oid not in runs, f"{oid} said not executed but ran"
    retried = [r for r in results if r.attempts > 1 or r.status is not None]
    assert retried, "the kill cost no client a retry (it should have cost some)"
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    for load in loads:  # every client went on after the failover
        assert any(r.ok and r.command["id"] in runs for r in load.results[-3:]), load.name


# -- the leader epoch on PUB and in the bridge's writes ------------------------------------------


def _publish_epoch(fake: Any, make: Any, count: int, epoch: int, *, drop: bool = False,
                   forged: bool = False) -> None:  # fmt: skip
    """``FakeShards.publish`` with an epoch on the message; ``forged``: events at the next seqs
    that the stand-in does not hold (a deposed leader's view), ``drop``: held, not sent."""
    with fake._lock:
        start = len(fake.events[0])
        evs = [make(s) for s in range(start + 1, start + count + 1)]
        if not forged:
            fake.events[0].extend(evs)
    if not drop:
        fake.publish_raw(b"BTC-USD", encode_events(0, evs, epoch))


def test_bridge_drops_pub_of_an_older_epoch(redis_server: RedisServer, tmp_path) -> None:
    """A PUB message of an epoch older than the newest seen for the shard (a deposed leader
    that still publishes) never reaches Redis: it is dropped and counted, and the seqs it
    claimed are filled from the current leader (repair), so Redis ends exact."""
    from tests.support.bridge import BridgeProc, assert_exact, wait_until
    from tests.support.fakeshard import FakeShards, accepted, trade

    fake = FakeShards(1)
    bridge = BridgeProc(fake, redis_server.url, tmp_path)
    r = redis_server.client()
    try:
        wait_until(lambda: fake.status_asked >= 1, 20, "the bridge polling the shard", bridge)
        wait_until(lambda: fake.subscribed[0] >= 1, 20, "the bridge's subscription", bridge)
        _publish_epoch(fake, trade, 50, 2)
        wait_until(lambda: r.xlen("shardex:events:0") == 50, 20, "epoch 2 written", bridge)
        _publish_epoch(fake, accepted, 30, 1, forged=True)  # the deposed leader's seqs 51..80
        _publish_epoch(fake, trade, 30, 2, drop=True)  # the leader's 51..80: a hole to repair
        _publish_epoch(fake, trade, 40, 2)
        wait_until(lambda: r.xlen("shardex:events:0") == fake.seq(), 30, "catch-up", bridge)
        assert_exact(r, fake, bridge)  # the forged events are nowhere
        assert bridge.metrics()['shardex_bridge_stale_epoch_total{shard="0"}'] >= 1
        assert r.get("shardex:events:0:epoch") == "2"
        assert "dropped a PUB message of epoch 1" in bridge.output()
    finally:
        bridge.stop()
        fake.stop()


def test_write_script_checks_the_epoch_then_adds(redis_server: RedisServer) -> None:
    """The bridge's write script: a batch of an older epoch than Redis holds for the shard
    writes nothing and returns the newer epoch; without an epoch (single-process shards)
    nothing is checked, as before."""
    import msgpack

    from shardex.node.bridge import WRITE_SCRIPT

    r = redis_server.client()
    script = r.register_script(WRITE_SCRIPT)
    stream, ekey = "shardex:events:0", "shardex:events:0:epoch"

    def write(seq: int, epoch: int | None) -> list:
        blob = msgpack.packb([[f"{seq}-0", ["seq", str(seq)]]])
        keys = [stream, ekey] if epoch else [stream]
        args = [blob, "shardex:trades:", "0", *([str(epoch)] if epoch else [])]
        return script(keys=keys, args=args)

    assert write(1, 3)[:2] == [1, 0] and r.get(ekey) == "3"
    assert write(2, 2) == [0, 0, 0, [], 3]  # deposed epoch: refused, nothing written
    assert [e[0] for e in r.xrange(stream)] == ["1-0"]
    assert write(2, 4)[:2] == [1, 0] and r.get(ekey) == "4"
    assert write(3, None)[:2] == [1, 0]  # no epoch: no check
    assert r.xlen(stream) == 3


def test_sigstopped_leader_never_reaches_redis_after_resume() -> None:
    """``shardex up --replicas 2`` with its bridge: SIGSTOP the leader, the standby takes over
    and orders go on (SDK retries on), SIGCONT: the Redis stream holds exactly the new
    leader's history (contiguous, each entry the event its journal replays to, the epoch key at
    the new epoch): nothing the deposed leader held or could say reached Redis."""
    import os

    import redis

    from shardex.engine.codes import EV_ACCEPTED, EV_TRADE
    from tests.support.cluster import Cluster

    c = Cluster(1, "--replicas", "2", insecure=True, redis="embedded")
    try:
        with c.client(account="acct1", timeout=1.0, retry=Retry(deadline=15.0)) as cl:
            deadline = time.monotonic() + 15
            while len(cl.status()[0].get("isr", [])) != 2:  # the standby joined
                assert time.monotonic() < deadline, cl.status()
                time.sleep(0.1)
            for k in range(20):
                assert cl.place(SYMBOL, "buy", "1", str(100 + k % 3), id=f"pre{k}").ok
            old = cl.status()[0]
            os.kill(old["pid"], signal.SIGSTOP)
            try:
                for k in range(20):  # through the takeover: retried until the new leader
                    assert cl.place(SYMBOL, "sell", "1", str(101 + k % 3), id=f"mid{k}").ok
            finally:
                os.kill(old["pid"], signal.SIGCONT)
            for k in range(20):
                assert cl.place(SYMBOL, "buy", "1", "90", id=f"post{k}").ok
            new = cl.status()[0]
        assert new["epoch"] > old["epoch"] and new["node"] != old["node"]
        r = redis.Redis(port=c.layout.redis_port, decode_responses=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            entries = r.xrange("shardex:events:0")
            if entries and int(entries[-1][0].split("-")[0]) >= new["seq"]:
                break
            time.sleep(0.1)
        seqs = [int(i.split("-")[0]) for i, _ in entries]
        assert seqs == list(range(1, new["seq"] + 1)), "the events stream has a gap or a dup"
        engine = Engine(DEFAULT_MARKETS)
        events: list[Any] = []
        path = replica_dir(c.data_dir, 0, int(new["node"][-1]))
        for _, cmd in read_commands(path):
            engine.apply(cmd, events)
        assert [ev[1] for ev in events][: len(entries)] == seqs
        for ev, (_, fields) in zip(events, entries, strict=False):
            assert fields["seq"] == str(ev[1])
            if ev[0] == EV_TRADE:
                assert (fields["ev"], fields["trade_id"]) == ("trade", str(ev[8]))
            elif ev[0] == EV_ACCEPTED:
                assert (fields["ev"], fields["id"]) == ("accepted", ev[3])
        assert int(r.get("shardex:events:0:epoch")) == new["epoch"]
    finally:
        c.stop()
