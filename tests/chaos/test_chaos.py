"""Chaos under load: real 2-shard clusters, the bridge, a real Redis, a steady client load, and
one fault at a time (kill -9, SIGSTOP, a slow Redis, clients that vanish mid-burst).

Every test counts what was lost, duplicated or stuck, and the answer must be 0 (or an explicit,
counted, alerted error):

* every order a client saw acknowledged (or whose fate came back ``executed``) is known to its
  shard afterwards (``OP_ORDER``: live, filled or cancelled, never unknown); an order whose fate
  came back ``not executed`` never ran later; a cancel that was acknowledged stays cancelled;
* each ``shardex:events:<shard>`` stream holds IDs ``1-0 .. <shard seq>-0``, each once;
* each ``shardex:trades:<SYMBOL>`` stream holds trade ids 1..n each once, every trade a client
  was told of is there with the same fields, and a trade no client was told of belongs to an
  order whose reply was lost (a counted timeout/unknown fate);
* the supervisor restarted what was killed; no traceback in any log.

Nothing here asserts on speed: waits are bounded, and a fault is a signal, not a deadline.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shardex.client import EXECUTED, NOT_EXECUTED, Client, ShardexError
from shardex.wire.protocol import OP_ORDER, STATE_UNKNOWN, shard_for
from tests.support.cluster import Cluster
from tests.support.redis import RedisServer
from tests.support.wait import wait_until

SYMBOLS = ("BTC-USD", "ETH-USD")  # on different shards when N = 2
assert shard_for(SYMBOLS[0], 2) != shard_for(SYMBOLS[1], 2)
SHARD0_SYMBOL = SYMBOLS[shard_for(SYMBOLS[1], 2) == 0]  # the pair shard 0 owns
MB = 1 << 20


# -- the load -------------------------------------------------------------------------------------


class Trader(threading.Thread):
    """A steady client: crossing limit orders on both shards plus cancels of its own orders,
    ``per_call`` commands per ``submit_many`` and a short pause between calls. It remembers every
    acknowledgement, every trade it was told of, and the fate of every command that failed."""

    def __init__(self, cluster: Cluster, name: str, timeout: float = 2.0, seed: int = 1) -> None:
        super().__init__(name=f"trader-{name}", daemon=True)
        self.cluster = cluster
        self.prefix = name
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.stop_flag = threading.Event()
        self.acked: dict[tuple[str, str], str] = {}  # (symbol, id) → account
        self.executed: dict[tuple[str, str], str] = {}  # failed reply, fate executed
        self.not_executed: dict[tuple[str, str], str] = {}  # failed reply, fate not executed
        self.unknown: dict[tuple[str, str], str] = {}  # failed reply, fate unknown
        self.cancelled: set[tuple[str, str]] = set()  # cancel acknowledged (reason user)
        self.trades: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in SYMBOLS}
        self.errors: Counter[str] = Counter()  # error class → commands
        self.errors_by_symbol: Counter[str] = Counter()
        self.sent = 0
        self.crash: str | None = None
        self.lock = threading.Lock()
        self._n = 0

    def run(self) -> None:
        try:
            with self.cluster.client(timeout=self.timeout) as c:
                while not self.stop_flag.is_set():
                    self.one_call(c)
                    time.sleep(0.02)
        except Exception as exc:  # the load must never die silently
            self.crash = repr(exc)

    def one_call(self, c: Client) -> None:
        cmds: list[dict[str, Any]] = []
        for _ in range(8):
            self._n += 1
            n = self._n
            sym = SYMBOLS[n % 2]
            side = "buy" if (n // 2) % 2 else "sell"
            price = self.rng.randint(99, 101) + (1 if side == "sell" else 0)
            cmds.append(c.order(sym, side, "1", str(price), id=f"{self.prefix}{n}",
                                account=f"a{n % 3}"))  # fmt: skip
        live = list(self.acked.items())
        for _ in range(2):
            if live:
                (sym, oid), acct = live[self.rng.randrange(len(live))]
                cmds.append({"op": "cancel", "symbol": sym, "id": oid, "account": acct})
        results = c.submit_many(cmds, batch=len(cmds), window=2)
        with self.lock:
            self.sent += len(cmds)
            for cmd, r in zip(cmds, results, strict=True):
                key = (cmd["symbol"], cmd["id"])
                if r.error is not None:
                    self.errors[error_class(r.error)] += 1
                    self.errors_by_symbol[cmd["symbol"]] += 1
                    if cmd["op"] == "new":
                        {EXECUTED: self.executed, NOT_EXECUTED: self.not_executed}.get(
                            r.fate, self.unknown
                        )[key] = cmd["account"]
                    continue
                for e in r.events:
                    if e["ev"] == "trade":
                        self.trades[e["symbol"]][e["seq"]] = e
                if cmd["op"] == "new" and any(e["ev"] == "accepted" for e in r.events):
                    self.acked[key] = cmd["account"]
                if cmd["op"] == "cancel" and any(
                    e["ev"] == "cancelled" and e["reason"] == "user" for e in r.events
                ):
                    self.cancelled.add(key)

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(60)
        assert not self.is_alive(), "the load thread is stuck"
        assert self.crash is None, f"the load thread crashed: {self.crash}"

    def acks(self) -> int:
        with self.lock:
            return len(self.acked)


def error_class(error: str) -> str:
    for prefix in ("overloaded", "shard unavailable", "timeout", "cannot reach", "journal"):
        if error.startswith(prefix):
            return prefix
    return error[:60]


def wait_acks(trader: Trader, more: int, timeout: float = 30.0) -> None:
    """Let the load run until it got ``more`` further acks (progress, not time)."""
    want = trader.acks() + more
    deadline = time.monotonic() + timeout
    while trader.acks() < want:
        assert time.monotonic() < deadline, f"load made no progress: {trader.errors}"
        assert trader.is_alive(), f"the load thread ended: {trader.crash}"
        time.sleep(0.05)


# -- checks ---------------------------------------------------------------------------------------


def order_states(cluster: Cluster, orders: dict[tuple[str, str], str]) -> dict[tuple, Any]:
    """``OP_ORDER`` answers for many orders, batched (``Client.order_status`` is one round trip
    per order; ``_exchange`` is the SDK's own batched path)."""
    keys = list(orders)
    out: dict[tuple, Any] = {}
    with cluster.client(timeout=10) as c:
        c._ready(markets=True)
        for start in range(0, len(keys), 2000):
            chunk = keys[start : start + 2000]
            queries = [(OP_ORDER, sym, orders[(sym, oid)], oid) for sym, oid in chunk]
            for key, (err, raw) in zip(chunk, c._exchange(queries, 200, 4), strict=True):
                out[key] = err if err is not None else raw
    return out


def check_orders(cluster: Cluster, traders: list[Trader]) -> dict[str, int]:
    """Every acked/executed order is known to its shard; no 'not executed' order ran later; an
    acked cancel stays cancelled. Returns counts for the report."""
    lost: list[tuple] = []
    ran_later: list[tuple] = []
    uncancelled: list[tuple] = []
    counts = Counter()
    for t in traders:
        must = {**t.acked, **t.executed}
        states = order_states(cluster, {**must, **t.not_executed, **t.unknown})
        for key in must:
            st = states[key]
            if not isinstance(st, dict) or st.get("state") in (None, STATE_UNKNOWN):
                lost.append((key, st))
        for key in t.not_executed:
            st = states[key]
            if isinstance(st, dict) and st.get("state") not in (None, STATE_UNKNOWN):
                ran_later.append((key, st))
        for key in t.cancelled:
            st = states.get(key)
            if st is None:
                st = order_states(cluster, {key: t.acked.get(key) or t.executed[key]})[key]
            if not isinstance(st, dict) or st.get("state") != "cancelled":
                uncancelled.append((key, st))
        counts["acked"] += len(t.acked)
        counts["executed_fate"] += len(t.executed)
        counts["not_executed_fate"] += len(t.not_executed)
        counts["unknown_fate"] += len(t.unknown)
        counts["unknown_fate_ran"] += sum(
            1
            for k in t.unknown
            if isinstance(states[k], dict) and states[k].get("state") not in (None, STATE_UNKNOWN)
        )
    assert not lost, f"{len(lost)} acknowledged orders unknown to their shard: {lost[:5]}"
    assert not ran_later, f"{len(ran_later)} 'not executed' orders ran later: {ran_later[:5]}"
    assert not uncancelled, f"{len(uncancelled)} acked cancels undone: {uncancelled[:5]}"
    return dict(counts)


def shard_seqs(cluster: Cluster) -> dict[int, int]:
    deadline = time.monotonic() + 30
    while True:
        try:
            with cluster.client(timeout=2) as c:
                status = c.status()
            if all("seq" in s for s in status):
                return {s["shard"]: s["seq"] for s in status}
        except ShardexError:
            pass
        assert time.monotonic() < deadline, f"shards never all answered: {cluster.output()[-2000:]}"
        time.sleep(0.2)


def check_redis(
    r, cluster: Cluster, traders: list[Trader], timeout: float = 45, unread: str | None = None
) -> dict[str, int]:
    """Redis exact: events streams contiguous 1..seq (no hole, no copy), trades streams
    contiguous trade ids, every client-seen trade present with the same fields, and any trade no
    client saw belongs to an order whose reply was lost (or, ``unread``: an id prefix of orders
    sent by clients that never read their replies)."""
    seqs = shard_seqs(cluster)
    deadline = time.monotonic() + timeout
    while True:
        have = {i: r.xlen(f"shardex:events:{i}") for i in seqs}
        if have == seqs:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"Redis events streams stuck at {have}, shards at {seqs}\n"
                        f"{cluster.output()[-3000:]}")  # fmt: skip
        time.sleep(0.2)
    counts: Counter[str] = Counter()
    for shard, seq in seqs.items():
        ids = [e[0] for e in r.xrange(f"shardex:events:{shard}")]
        want = [f"{s}-0" for s in range(1, seq + 1)]
        if ids != want:
            missing = sorted(set(want) - set(ids), key=lambda i: int(i.split("-")[0]))
            dups = [i for i, n in Counter(ids).items() if n > 1]
            pytest.fail(
                f"shard {shard} events stream: {len(missing)} missing (first {missing[:5]}), "
                f"{len(dups)} duplicated, {len(ids)} entries for seq {seq}"
            )
        counts["events"] += seq
    uncertain = set()
    for t in traders:
        uncertain |= {oid for _, oid in (*t.executed, *t.unknown, *t.not_executed)}
    for sym in SYMBOLS:
        entries = r.xrange(f"shardex:trades:{sym}")
        trade_ids = [int(f["trade_id"]) for _, f in entries]
        assert trade_ids == list(range(1, len(trade_ids) + 1)), f"{sym}: trade ids not 1..n once"
        stored = {int(eid.split("-")[0]): f for eid, f in entries}
        seen: dict[int, dict[str, Any]] = {}
        for t in traders:
            seen.update(t.trades[sym])
        for seq, ev in seen.items():
            f = stored.get(seq)
            assert f is not None, f"{sym}: trade at seq {seq} told to a client is not in Redis"
            assert (f["taker"], f["maker"], int(f["trade_id"]), f["price"], f["qty"]) == (
                ev["taker"], ev["maker"], ev["trade_id"], str(ev["price"]), str(ev["qty"])
            ), f"{sym}: trade at seq {seq} differs in Redis"  # fmt: skip
        unseen = [f for seq, f in stored.items() if seq not in seen]
        strays = [
            f
            for f in unseen
            if f["taker"] not in uncertain and not (unread and f["taker"].startswith(unread))
        ]
        assert not strays, f"{sym}: {len(strays)} trades in Redis no client could have been told"
        counts["trades"] += len(stored)
        counts["trades_unseen_lost_replies"] += len(unseen)
    return dict(counts)


def metrics(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


class Sampler(threading.Thread):
    """Samples the bridge's metrics every 0.2 s (lag, stalled) so a test sees them rise and fall."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[dict[str, float]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            m = metrics(self.port)
            if m:
                self.samples.append(m)
            time.sleep(0.2)

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(10)

    def max(self, name: str) -> float:
        return max((s.get(name, 0.0) for s in self.samples), default=0.0)


def no_tracebacks(cluster: Cluster) -> None:
    out = cluster.output()
    assert "Traceback" not in out, out[out.index("Traceback") - 500 :][:3000]


def wait_restarted(cluster: Cluster, name: str, old_pid: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid = cluster.child_pid(name)
            if pid != old_pid:
                return pid
        except LookupError:
            pass
        assert time.monotonic() < deadline, f"{name} was not restarted\n{cluster.output()[-2000:]}"
        time.sleep(0.05)


def wait_ready(cluster: Cluster, timeout: float = 30) -> None:
    """Every shard registered with the router and answering (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.client(timeout=1) as c:
                topo = c.topology()["topology"]
                if all(t.get("pid") for t in topo) and all("seq" in s for s in c.status()):
                    return
        except ShardexError:
            pass
        assert time.monotonic() < deadline, f"cluster not ready\n{cluster.output()[-2000:]}"
        time.sleep(0.1)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def bridged(redis_server: RedisServer):
    cluster = Cluster(2, redis=redis_server.url)
    try:
        yield cluster, redis_server
    finally:
        cluster.stop()


@pytest.fixture
def debug_bridged(tmp_path):
    # Redis 7 refuses DEBUG SLEEP unless started with --enable-debug-command
    server = RedisServer(str(tmp_path), ("--enable-debug-command", "local"))
    try:
        cluster = Cluster(2, redis=server.url)
        try:
            yield cluster, server
        finally:
            cluster.stop()
    finally:
        server.stop()


@pytest.fixture
def stopped():
    """Processes a test SIGSTOPped: always continued at teardown, even on failure."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.fixture
def traders():
    """Load threads a test started: always stopped at teardown."""
    running: list[Trader] = []
    yield running
    for t in running:
        t.stop_flag.set()
    for t in running:
        t.join(30)


def start_trader(traders: list[Trader], cluster: Cluster, name: str, **kw) -> Trader:
    t = Trader(cluster, name, **kw)
    traders.append(t)
    t.start()
    wait_acks(t, 50)
    return t


# -- 1. kill -9 of each process in turn -----------------------------------------------------------


def test_kill9_each_process_in_turn_under_load(bridged, traders):
    """kill -9 the router, shard 0, the bridge, then Redis, each under load: every acked order is
    still known, Redis ends exact, the supervisor restarted each child."""
    cluster, server = bridged
    t = start_trader(traders, cluster, "k")
    for name in ("router", "engine.0", "bridge"):
        old = cluster.child_pid(name)
        os.kill(old, signal.SIGKILL)
        wait_restarted(cluster, name, old)
        wait_ready(cluster)
        wait_acks(t, 200)
    # Redis: nobody supervises the external server; kill -9 it and start it again (its AOF)
    assert server.proc is not None
    gone = cluster.output().count("Redis unavailable at")
    server.proc.kill()
    server.proc.wait(10)
    wait_acks(t, 100)  # the engines match while Redis is gone
    # down until the bridge found it gone (not only a reconnect)
    wait_until(lambda: cluster.output().count("Redis unavailable at") > gone, 30,
               "the bridge finding Redis gone")  # fmt: skip
    server.start()
    wait_acks(t, 200)
    t.finish()
    orders = check_orders(cluster, [t])
    redis_counts = check_redis(server.client(), cluster, [t])
    out = cluster.output()
    for name in ("router", "engine.0", "bridge"):
        assert re.search(rf"!!! {re.escape(name)} \(pid \d+\) DIED with signal 9", out), name
    assert "Redis unavailable" in out and "Redis is back" in out
    no_tracebacks(cluster)
    print("kill9:", orders, redis_counts, dict(t.errors))


def test_kill9_embedded_redis_restarted_by_supervisor(traders):
    """The embedded Redis (AOF everysec) killed -9 under load: the supervisor restarts it, and
    whatever its AOF lost is written again by the bridge (no hole, no copy)."""
    import redis

    from shardex.redisauth import RedisUsers

    cluster = Cluster(2, redis="embedded")
    try:
        assert cluster.keys_dir is not None
        t = start_trader(traders, cluster, "e")
        url = RedisUsers.load(cluster.keys_dir).url(cluster.layout.redis_url, "reader")
        r = redis.Redis.from_url(url, decode_responses=True)
        for _ in range(2):
            wait_acks(t, 300)
            old = cluster.child_pid("redis")
            os.kill(old, signal.SIGKILL)
            wait_restarted(cluster, "redis", old)
        wait_acks(t, 300)
        t.finish()
        check_orders(cluster, [t])
        counts = check_redis(r, cluster, [t])
        assert "DIED with signal 9" in cluster.output()
        no_tracebacks(cluster)
        print("embedded redis kill9:", counts)
    finally:
        cluster.stop()


# -- 2. a shard frozen for seconds ----------------------------------------------------------------


def test_sigstop_shard_under_load(bridged, traders, stopped):
    """Shard 0 SIGSTOPped ~3 s: its clients get timeouts/overloaded with fates, the other shard
    keeps trading, nothing acked is lost, the bridge notices the silent shard and catches up."""
    cluster, server = bridged
    t = start_trader(traders, cluster, "s", timeout=1.0)
    # the bridge has heard from shard 0 (it writes only what a status answer confirmed): a
    # shard that never answered yet is one still starting, not one that went silent
    r = server.client()
    deadline = time.monotonic() + 30
    while not r.xlen("shardex:events:0"):
        assert time.monotonic() < deadline, "the bridge never wrote shard 0's events"
        time.sleep(0.05)
    pid = cluster.shard_pid(0)
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)
    errors_before = sum(t.errors.values())
    # frozen until its clients got errors and the bridge noticed the silent shard
    wait_until(lambda: t.errors_by_symbol[SHARD0_SYMBOL] > 0
               and "shard 0 does not answer its status requests" in cluster.output(), 30,
               "errors for shard 0's clients and the bridge noticing the silence")  # fmt: skip
    os.kill(pid, signal.SIGCONT)
    wait_acks(t, 300)
    t.finish()
    assert sum(t.errors.values()) > errors_before, "no client noticed the frozen shard"
    assert t.errors_by_symbol[SHARD0_SYMBOL] > 0
    orders = check_orders(cluster, [t])
    counts = check_redis(server.client(), cluster, [t])
    out = cluster.output()
    assert "shard 0 does not answer its status requests" in out
    assert "shard 0 answers again" in out
    no_tracebacks(cluster)
    print("sigstop shard:", orders, counts, dict(t.errors))


# -- 3. the bridge frozen, Redis frozen -----------------------------------------------------------


def test_sigstop_bridge_then_redis_engines_never_wait(bridged, traders, stopped):
    """SIGSTOP the bridge ~5 s, later Redis ~6 s: clients see no error at all (the engines never
    wait on either), the bridge catches up, Redis exact; a frozen Redis raises the stall alert,
    which clears once writes resume."""
    cluster, server = bridged
    sampler = Sampler(cluster.layout.bridge_metrics_port)
    sampler.start()
    stalled = [f'shardex_bridge_stalled{{shard="{i}"}}' for i in (0, 1)]
    try:
        t = start_trader(traders, cluster, "b", timeout=5.0)
        bridge = cluster.child_pid("bridge")
        os.kill(bridge, signal.SIGSTOP)
        stopped.append(bridge)
        wait_acks(t, 200)  # the engines go on while the bridge is frozen
        os.kill(bridge, signal.SIGCONT)
        wait_acks(t, 200)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped.append(server.proc.pid)
        # frozen until the bridge raised the stall alert (its gauge and its ALERT line)
        alert = r"ALERT shard \d is reachable and at seq \d+, but Redis"
        wait_until(lambda: max(sampler.max(s) for s in stalled) == 1.0
                   and re.search(alert, cluster.output()), 60, "the stall alert")  # fmt: skip
        wait_acks(t, 100)  # and the engines went on meanwhile
        os.kill(server.proc.pid, signal.SIGCONT)
        wait_acks(t, 200)
        t.finish()
        assert not t.errors, f"clients saw errors while only the bridge/Redis froze: {t.errors}"
        orders = check_orders(cluster, [t])
        counts = check_redis(server.client(), cluster, [t])
        deadline = time.monotonic() + 15
        while any(metrics(cluster.layout.bridge_metrics_port).get(s) != 0.0 for s in stalled):
            assert time.monotonic() < deadline, "the stall gauge never went back to 0"
            time.sleep(0.2)
    finally:
        sampler.finish()
    assert max(sampler.max(s) for s in stalled) == 1.0, "a frozen Redis never raised the stall"
    out = cluster.output()
    assert re.search(r"ALERT shard \d is reachable and at seq \d+, but Redis", out)
    assert re.search(r"shard \d is flowing again", out)
    assert cluster.output().count("started bridge (pid") == 1, "the bridge was restarted"
    no_tracebacks(cluster)
    print("sigstop bridge/redis:", orders, counts)


# -- 4. a slow Redis ------------------------------------------------------------------------------


def test_slow_redis_debug_sleep(debug_bridged, traders):
    """``DEBUG SLEEP 2`` on the real redis-server three times while events flow: no loss, no
    copy, the lag gauge rises while Redis sleeps and falls back to 0."""
    cluster, server = debug_bridged
    sampler = Sampler(cluster.layout.bridge_metrics_port)
    sampler.start()
    try:
        t = start_trader(traders, cluster, "w")
        admin = server.client()
        for _ in range(3):
            wait_acks(t, 100)
            admin.execute_command("DEBUG", "SLEEP", "2")
        wait_acks(t, 100)
        t.finish()
        assert not t.errors, f"clients saw errors while only Redis was slow: {t.errors}"
        orders = check_orders(cluster, [t])
        counts = check_redis(server.client(), cluster, [t])
        lags = [f'shardex_bridge_lag_events{{shard="{i}"}}' for i in (0, 1)]
        deadline = time.monotonic() + 15
        while any(metrics(cluster.layout.bridge_metrics_port).get(g) != 0.0 for g in lags):
            assert time.monotonic() < deadline, "the lag gauge never went back to 0"
            time.sleep(0.2)
    finally:
        sampler.finish()
    assert max(sampler.max(g) for g in lags) > 0, "the lag never rose while Redis slept"
    no_tracebacks(cluster)
    print("slow redis:", orders, counts)


# -- 5. clients that vanish mid-burst -------------------------------------------------------------


def vanish(cluster: Cluster, n: int, tag: str) -> int:
    """``n`` clients, each connects (CURVE, admin key), sends 4 frames of 50 orders without
    reading a reply and closes its socket at once; every other one talks to a shard's direct
    port instead of the router. Returns the orders sent."""
    import zmq

    from shardex.auth import KeyFile, client_socket
    from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW, SELL
    from shardex.wire.protocol import encode_request

    key = KeyFile.read(cluster.key) if cluster.key else None
    ctx = zmq.Context()
    sent = 0
    try:
        for k in range(n):
            direct = k % 2 == 1
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if key is not None:
                client_socket(s, key)
            sym = SYMBOLS[(k // 2) % 2]
            s.connect(cluster.layout.direct(shard_for(sym, 2)) if direct else cluster.endpoint)
            for f in range(4):
                if not direct:
                    sym = SYMBOLS[f % 2]
                cmds = [
                    (OP_NEW, sym, f"{tag}{k}-{f}-{j}", f"v{j % 3}", (BUY, SELL)[j % 2], LIMIT,
                     10_000 + (j % 3), 10_000, GTC, False, 0)
                    for j in range(50)
                ]  # fmt: skip
                try:
                    s.send_multipart([sym.encode(), f"r{f}".encode(), encode_request(cmds)])
                    sent += len(cmds)
                except zmq.ZMQError:
                    break
            if k % 3 == 0:
                time.sleep(0.01)  # some leave after the handshake, some before it ends
            s.close(0)
    finally:
        ctx.term()
    return sent


def test_clients_vanishing_mid_burst_leave_memory_bounded(bridged, traders):
    """300 clients (half through the router, half on a shard's direct port) send 200 orders
    each and vanish without reading, in three waves, while a normal client trades: no process
    grows wave over wave, replies to the vanished are counted drops, the normal client's acks
    all hold, Redis exact."""
    cluster, server = bridged
    t = start_trader(traders, cluster, "v", timeout=5.0)
    procs = {name: cluster.child_pid(name) for name in ("router", "engine.0", "engine.1", "bridge")}
    sizes: list[dict[str, int]] = []
    sent = 0
    for wave in range(3):
        sent += vanish(cluster, 100, f"gone{wave}-")
        wait_acks(t, 100)
        sizes.append({name: rss(pid) for name, pid in procs.items()})
    t.finish()
    for name, pid in procs.items():
        assert cluster.child_pid(name) == pid, f"{name} was restarted"
        growth = sizes[2][name] - sizes[0][name]
        assert growth < 50 * MB, f"{name} grew {growth / MB:.0f} MB over two waves: {sizes}"
    orders = check_orders(cluster, [t])
    counts = check_redis(server.client(), cluster, [t], unread="gone")
    m = metrics(cluster.layout.router_metrics_port)
    dropped = sum(v for k, v in m.items() if k.startswith("shardex_router_replies_dropped_total"))
    shard_dropped = sum(
        sum(v for k, v in metrics(cluster.layout.shard_metrics_port(i)).items()
            if k.startswith("shardex_replies_dropped_total"))
        for i in (0, 1)
    )  # fmt: skip
    out = cluster.output()
    errors = [ln for ln in out.splitlines() if "ERROR" in ln or "ALERT" in ln]
    assert not errors, f"error lines in the logs: {errors[:5]}"
    no_tracebacks(cluster)
    print("vanishing clients:", sent, "orders sent,", dropped, "router drops,", shard_dropped,
          "shard drops", orders, counts, sizes)  # fmt: skip


# -- 6. faults stacked: the bridge frozen while shard 0 dies twice and the router once -------------


def test_frozen_bridge_while_shard_and_router_die(bridged, traders, stopped):
    """The bridge is SIGSTOPped while shard 0 is killed -9 twice (its event ring gone: repairs must
    come from its journal) and the router once; then the bridge resumes: Redis exact, every acked
    order known."""
    cluster, server = bridged
    t = start_trader(traders, cluster, "f")
    bridge = cluster.child_pid("bridge")
    os.kill(bridge, signal.SIGSTOP)
    stopped.append(bridge)
    for name in ("engine.0", "engine.0", "router"):
        wait_acks(t, 200)
        old = cluster.child_pid(name)
        os.kill(old, signal.SIGKILL)
        wait_restarted(cluster, name, old)
        wait_ready(cluster)
    wait_acks(t, 200)
    os.kill(bridge, signal.SIGCONT)
    wait_acks(t, 200)
    t.finish()
    orders = check_orders(cluster, [t])
    counts = check_redis(server.client(), cluster, [t])
    m = metrics(cluster.layout.bridge_metrics_port)
    assert sum(v for k, v in m.items() if k.startswith("shardex_bridge_lost_events_total")) == 0
    assert cluster.output().count("started bridge (pid") == 1
    no_tracebacks(cluster)
    print("stacked:", orders, counts, dict(t.errors))


# -- 7. the router frozen under a burst ------------------------------------------------------------


class Burst(Trader):
    """A client that keeps 8 frames of 100 orders in flight (closed loop), remembering acks,
    trades and fates like ``Trader`` (crossing orders, one symbol per frame)."""

    def one_call(self, c: Client) -> None:
        cmds = []
        for _ in range(800):
            self._n += 1
            n = self._n
            side = "buy" if n % 2 else "sell"
            cmds.append(c.order(SYMBOLS[(n // 100) % 2], side, "1",
                                "101" if side == "buy" else "100",
                                id=f"{self.prefix}{n}", account=f"a{n % 3}"))  # fmt: skip
        results = c.submit_many(cmds, batch=100, window=8)
        with self.lock:
            self.sent += len(cmds)
            for cmd, r in zip(cmds, results, strict=True):
                key = (cmd["symbol"], cmd["id"])
                if r.error is not None:
                    self.errors[error_class(r.error)] += 1
                    {EXECUTED: self.executed, NOT_EXECUTED: self.not_executed}.get(
                        r.fate, self.unknown
                    )[key] = cmd["account"]
                elif any(e["ev"] == "accepted" for e in r.events):
                    self.acked[key] = cmd["account"]
                    for e in r.events:
                        if e["ev"] == "trade":
                            self.trades[e["symbol"]][e["seq"]] = e


def test_sigstop_router_under_burst(bridged, traders, stopped):
    """The router SIGSTOPped ~3 s while one client keeps 8×100 orders in flight and another
    trades steadily: timeouts come back with fates, nothing acked is lost, no 'not executed'
    order runs later, Redis exact."""
    cluster, server = bridged
    steady = start_trader(traders, cluster, "r", timeout=1.0)
    burst = Burst(cluster, "B", timeout=1.0)
    traders.append(burst)
    burst.start()
    wait_acks(burst, 800)
    router = cluster.child_pid("router")
    os.kill(router, signal.SIGSTOP)
    stopped.append(router)
    # frozen until clients' requests timed out (with their fates)
    wait_until(lambda: sum(steady.errors.values()) + sum(burst.errors.values()) > 0, 30,
               "timeouts while the router is frozen")  # fmt: skip
    os.kill(router, signal.SIGCONT)
    wait_acks(burst, 800)
    wait_acks(steady, 100)
    burst.stop_flag.set()
    steady.finish()
    burst.finish()
    assert sum(steady.errors.values()) + sum(burst.errors.values()) > 0
    orders = check_orders(cluster, [steady, burst])
    counts = check_redis(server.client(), cluster, [steady, burst])
    assert cluster.output().count("started router (pid") == 1
    no_tracebacks(cluster)
    print("sigstop router:", orders, counts, dict(steady.errors), dict(burst.errors))
