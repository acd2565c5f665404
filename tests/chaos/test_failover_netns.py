"""Failover across two "hosts": each replica in its own network namespace.

Nothing in the replica pair may assume one host: the primary and the standby run in two Linux
network namespaces with their own addresses on a bridge (10.231.X.0/24), the router and Redis
in the test's namespace on the bridge's address, every endpoint explicit (the multi-host form of
``shardex engine --role auto``). Replica 0 binds its own address; replica 1 binds
``tcp://0.0.0.0:PORT`` and announces itself with ``--advertise`` (both forms of the README). Both
use the same port numbers, which only works because each has its own network stack.

Needs root (``ip netns add``); skipped with the reason otherwise. Namespaces, veths and the
bridge get names unique to the run and are always deleted (fixture ``finally``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from shardex.client import Client
from shardex.lease import Lease
from shardex.node.replica import replica_dir
from tests.support.cluster import LOG_DIR, ROOT
from tests.support.cluster import TEST_LOGS as _TEST_LOGS
from tests.support.failover import Load, _journal_ids, _place_until_ok, _replayed_seq
from tests.support.netns import ip, netns_unavailable
from tests.support.ports import free_layout
from tests.support.redis import RedisServer
from tests.support.wait import wait_until

SYMBOL = "BTC-USD"
REPL, DIRECT, PUB = 6155, 5655, 5755  # the same in both namespaces: each has its own stack


class Hosts:
    """A bridge with address 10.231.X.1 in this namespace and two namespaces ``a`` (.2) and
    ``b`` (.3) plugged into it by veth pairs. Names carry a per-run suffix."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000:04d}{random.randrange(256):02x}"  # ≤ 15 chars per name
        self.bridge = f"sxb{tag}"
        self.ns = {k: f"sxn{tag}{k}" for k in "ab"}
        self.veth = {k: f"sxv{tag}{k}" for k in "ab"}
        used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
        free = [x for x in range(1, 255) if f"10.231.{x}." not in used]
        if not free:
            raise RuntimeError("no free 10.231.X.0/24 subnet")
        net = f"10.231.{random.choice(free)}"
        self.host = f"{net}.1"
        self.addr = {"a": f"{net}.2", "b": f"{net}.3"}
        self.created: list[tuple[str, str]] = []  # (kind, name), deleted in reverse
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            self.created.append(("link", self.bridge))
            ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for k in "ab":
                ip("netns", "add", self.ns[k])
                self.created.append(("netns", self.ns[k]))
                peer = f"sxp{tag}{k}"
                ip("link", "add", self.veth[k], "type", "veth", "peer", "name", peer)
                self.created.append(("link", self.veth[k]))
                ip("link", "set", peer, "netns", self.ns[k])
                ip("link", "set", self.veth[k], "master", self.bridge)
                ip("link", "set", self.veth[k], "up")
                ip("-n", self.ns[k], "addr", "add", f"{self.addr[k]}/24", "dev", peer)
                ip("-n", self.ns[k], "link", "set", peer, "up")
                ip("-n", self.ns[k], "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        for kind, name in reversed(self.created):
            if kind == "netns":
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
        self.created.clear()


class NetnsPair:
    """Router + Redis here (bound on the bridge address), replica 0 in namespace ``a``,
    replica 1 in ``b``, each with its own data dir (its own "disk")."""

    def __init__(self, hosts: Hosts, tmp: Path, redis: RedisServer) -> None:
        self.hosts = hosts
        self.tmp = tmp
        self.layout = free_layout(1)
        self.backend = f"tcp://{hosts.host}:{self.layout.base_port + 1}"
        self.frontend = self.layout.frontend  # clients stay on loopback here
        self.redis_url = f"redis://{hosts.host}:{redis.port}/0"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        try:
            router = ["router", "--shards", "1", "--frontend", self.frontend,
                      "--backend", self.backend, "--metrics-port", "0"]  # fmt: skip
            self.start("router", None, router)
            self.start_replica(0)
            self.wait_leader()
            self.start_replica(1)
        except BaseException:
            self.stop()
            raise

    def start(self, name: str, ns: str | None, args: list[str]) -> None:
        path = LOG_DIR / f"shardex-netns-{self.layout.base_port}-{name}.log"
        _TEST_LOGS.append(path)
        log = self.logs.get(name) or open(path, "ab")  # noqa: SIM115 - closed in stop()
        self.logs[name] = log
        prefix = ["ip", "netns", "exec", ns] if ns else []  # (exec: the pid is python's)
        self.procs[name] = subprocess.Popen(
            [*prefix, sys.executable, "-m", "shardex.cli", *args, "--insecure", "--base-port",
             str(self.layout.base_port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip

    def data(self, r: int) -> str:
        return str(self.tmp / f"host-{'ab'[r]}")

    def start_replica(self, r: int) -> None:
        k = "ab"[r]
        me = self.hosts.addr[k]
        if r == 0:  # bound on its own address: announced as bound
            eps = ["--repl", f"tcp://{me}:{REPL}", "--direct", f"tcp://{me}:{DIRECT}",
                   "--pub", f"tcp://{me}:{PUB}"]  # fmt: skip
        else:  # bound on every interface, announced with --advertise
            eps = ["--repl", f"tcp://0.0.0.0:{REPL}", "--direct", f"tcp://0.0.0.0:{DIRECT}",
                   "--pub", f"tcp://0.0.0.0:{PUB}", "--advertise", me]  # fmt: skip
        self.start(f"r{r}", self.hosts.ns[k], [
            "engine", "--shard", "0", "--shards", "1", "--role", "auto", "--replica", str(r),
            "--redis-url", self.redis_url, "--router", self.backend, *eps,
            "--data-dir", self.data(r), "--no-pin", "--metrics-port", "0",
        ])  # fmt: skip

    def lease(self) -> Lease:
        import redis

        return Lease(redis.Redis.from_url(self.redis_url), 0, "test-observer", "none")

    def wait_leader(self, not_node: str | None = None, timeout: float = 15.0) -> Any:
        lease = self.lease()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = lease.holder()
            if h is not None and h.node != not_node:
                return h
            time.sleep(0.05)
        raise TimeoutError("no leader")

    def wait_isr(self, members: set[str], timeout: float = 15.0) -> None:
        lease = self.lease()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if set(lease.isr()) == members:
                return
            time.sleep(0.05)
        raise TimeoutError(f"in-sync set {lease.isr()} never became {members}")

    def client(self) -> Client:
        return Client(self.frontend, timeout=3.0, key=False, account="acct1")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for log in self.logs.values():
            log.close()


@pytest.fixture
def netns_pair(tmp_path) -> Any:
    why = netns_unavailable()
    require(why is None, why or "")
    try:
        hosts = Hosts()
    except (
        subprocess.CalledProcessError,
        OSError,
    ) as exc:  # e.g. a container without CAP_NET_ADMIN
        err = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")
        require(False, f"cannot create network namespaces here: {err or exc}")
    redis = None
    pair = None
    try:
        (tmp_path / "redis").mkdir()
        # Redis on loopback (the test reads it) and on the bridge (the replicas' "lease host")
        redis = RedisServer(str(tmp_path / "redis"), ("--bind", "127.0.0.1", hosts.host))
        pair = NetnsPair(hosts, tmp_path, redis)
        yield pair
    finally:
        if pair is not None:
            pair.stop()
        if redis is not None:
            redis.stop()
        hosts.delete()


def test_failover_across_network_namespaces(netns_pair: NetnsPair) -> None:
    """kill -9 of the primary in namespace a under load: the standby in namespace b leads, the
    router re-points to b's announced address, nothing acknowledged is lost or doubled."""
    p = netns_pair
    a, b = p.hosts.addr["a"], p.hosts.addr["b"]
    first = p.wait_leader()
    assert first.node == "shard-0.r0" and first.endpoint == f"tcp://{a}:{REPL}"
    p.wait_isr({"shard-0.r0", "shard-0.r1"})  # b replicates from a, across the bridge
    load = Load(p)  # type: ignore[arg-type]  # (it needs only .client())
    try:
        wait_until(lambda: len(load.acked) >= 50, 30, "orders acknowledged before the kill")
        before_kill = list(load.acked)
        p.procs["r0"].send_signal(signal.SIGKILL)
        second = p.wait_leader(not_node="shard-0.r0")
        # the load goes on against b
        wait_until(lambda: len(load.acked) >= len(before_kill) + 50, 30, "orders acked on b")
    finally:
        load.stop()
    assert before_kill, "no order was acknowledged before the kill"
    # b announced the address it was told to (it binds 0.0.0.0), and it is reachable from here
    assert second.node == "shard-0.r1" and second.endpoint == f"tcp://{b}:{REPL}"
    with p.client() as c:
        assert _place_until_ok(c, c.order(SYMBOL, "buy", "1", "1", id="after")).ok
        status = c.status()[0]
    assert status["node"] == "shard-0.r1" and status["epoch"] == second.epoch
    # a direct client takes b's announced direct port from the router's topology: reachable
    with Client(p.frontend, timeout=3.0, key=False, account="acct1", direct=True) as direct:
        assert direct.topology()["topology"][0]["direct"] == f"tcp://{b}:{DIRECT}"
        assert _place_until_ok(direct, direct.order(SYMBOL, "buy", "1", "1", id="direct")).ok
    new_dir = replica_dir(p.data(1), 0, 1)
    ids = _journal_ids(new_dir)
    loaded = [i for i in ids if i.startswith("o")]
    assert len(loaded) == len(set(loaded)), "an order was journaled twice"
    missing = set(load.acked) - set(ids)
    assert not missing, f"acknowledged orders lost in the failover: {sorted(missing)[:10]}"
    assert "after" in ids and "direct" in ids
    assert _replayed_seq(new_dir) == status["seq"] + 1  # one contiguous history, across epochs
    # the old primary, restarted in its namespace, rejoins b as a standby over the bridge
    p.start_replica(0)
    p.wait_isr({"shard-0.r0", "shard-0.r1"})
    assert "after" in _journal_ids(replica_dir(p.data(0), 0, 0))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--repl", "tcp://0.0.0.0:6155"], "give --advertise HOST"),
        (["--direct", "tcp://*:5655"], "give --advertise HOST"),
        (["--repl", "tcp://10.0.0.1:*"], "a random port cannot be advertised"),
        (["--pub", "ipc:///tmp/x", "--advertise", "10.0.0.1"], "cannot be reached from another"),
        (["--advertise", "bad host"], "bad endpoint"),
    ],
)
def test_engine_address_flags_refused_with_a_reason(
    tmp_path, extra: list[str], reason: str
) -> None:
    """The multi-host form refuses an address other hosts could not connect to, in one line
    naming the option, before anything starts."""
    from click.testing import CliRunner

    from shardex.cli import main

    args = ["engine", "--shard", "0", "--role", "auto", "--insecure", "--data-dir",
            str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0", *extra]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert reason in result.output, result.output
