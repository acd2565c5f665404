"""A real etcd cluster for the tests: N members (3 by default) on loopback, Debian's etcd.

Each member gets a client and a peer port from this worker's region (``free_port``) and a data
dir of its own; heartbeat 50 ms / election 500 ms, so etcd's minimum lease TTL is 1 s (1.5 x
the election timeout, rounded up) and a lost etcd leader is replaced within about a second.
``kill(i)``/``start(i)`` take one member away and back (a member lost); ``leader()`` is the
index of etcd's own leader (to take IT away: a leader change of etcd itself).

Tests get one through ``etcd_cluster`` (a context manager) or the ``etcd`` fixture (import
``etcd_fixture`` into the test module): skipped without etcd, stopped always, also when it
failed to start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shardex.coord.etcd import EtcdClient, EtcdUnavailable
from tests.support.ports import free_port

HEARTBEAT_MS = 50
ELECTION_MS = 500


def etcd_binary() -> str | None:
    """Debian's etcd (package etcd-server), or None."""
    return shutil.which("etcd")


class EtcdCluster:
    """``members`` etcd processes forming one cluster; ``url`` is ``etcd://h:p,h:p,h:p``."""

    def __init__(self, directory: str | Path, members: int = 3) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
        self.binary = binary
        self.dir = Path(directory)
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.url = "etcd://" + ",".join(f"127.0.0.1:{p}" for p in self.client_ports)
        self.procs: list[subprocess.Popen | None] = [None] * members
        self.token = f"shardex-test-{os.getpid()}-{self.client_ports[0]}"
        try:
            for i in range(members):
                self.start(i, state="new")
            self.wait_healthy()
        except BaseException:
            self.stop()  # a cluster that failed to form leaves no member running
            raise

    def argv(self, i: int, state: str) -> list[str]:
        pairs = zip(self.names, self.peer_ports, strict=True)
        peers = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in pairs)
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [self.binary, "--name", self.names[i], "--data-dir", str(self.dir / self.names[i]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-state", state,
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
                "--log-level", "error"]  # fmt: skip

    def start(self, i: int, state: str = "existing") -> None:
        """Start member ``i`` (again: it rejoins with its data dir)."""
        with open(self.dir / f"{self.names[i]}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(self.argv(i, state), stdout=log, stderr=log)

    def client(self, i: int | None = None) -> EtcdClient:
        """A client of the whole cluster, or of member ``i`` alone."""
        if i is None:
            return EtcdClient.from_url(self.url)
        return EtcdClient([("127.0.0.1", self.client_ports[i])])

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running member answers a linearizable read (a leader is elected)."""
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            while True:
                try:
                    self.client(i).get("health")
                    break
                except EtcdUnavailable as exc:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise TimeoutError(f"etcd member {i}: see {self.dir}") from exc
                    time.sleep(0.05)

    def leader(self) -> int:
        """The index of etcd's current leader."""
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                status = self.client(i).call("maintenance/status", {})
            except EtcdUnavailable:
                continue
            if status.get("leader") == status["header"]["member_id"]:
                return i
        raise RuntimeError("no etcd leader")

    def kill(self, i: int) -> None:
        """kill -9 member ``i`` (a member lost)."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.procs[i] = None


@contextmanager
def etcd_cluster(directory: str | Path, members: int = 3) -> Iterator[EtcdCluster]:
    """An ``EtcdCluster`` in ``directory`` (made if missing), stopped on the way out; skips the
    test when etcd is not installed."""
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (tests/run.sh installs etcd-server)")
    Path(directory).mkdir(parents=True, exist_ok=True)
    cluster = EtcdCluster(directory, members)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(name="etcd")
def etcd_fixture(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster on loopback for one test (``etcd``: import ``etcd_fixture``)."""
    with etcd_cluster(tmp_path / "etcd") as cluster:
        yield cluster
