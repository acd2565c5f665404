"""``shardex reshard`` on ``shardex up --replicas 2`` (real processes, embedded Redis): the pairs
move through the journals like any other command, so the standby of the shard a pair moved to
holds the same book as its leader, and a failover of that shard (kill -9 of its leader) keeps
the pair: same book, its resting orders cancel and fill there.

The supervisor starts and stops replicated shard processes live: 2 shards, ``--shards 1``
(every pair to shard 0, then both processes of shard 1 stop and its lease is released, nothing
takes it over), then ``--shards 2`` (both processes of shard 1 start again, its standby joins
the in-sync set)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shardex import endpoints
from shardex.client import Client
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.journal.records import read_commands
from shardex.lease import connect
from shardex.placement import default_owner
from shardex.redisauth import user_url
from tests.support.cluster import ROOT, Cluster, alive

pytestmark = pytest.mark.timeout(300)

RESTING = 4  # per pair, at prices 50..53


def _reshard(cluster: Cluster, n: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardex.cli", "reshard", "--shards", str(n),
                           "--data-dir", cluster.data_dir, "--endpoint", cluster.endpoint],
                          cwd=ROOT, capture_output=True, text=True, timeout=200,
                          env={**os.environ, "SHARDEX_KEY": str(cluster.key)})  # fmt: skip


def _wait(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _in_sync(c: Client) -> bool:
    return all(len(st.get("isr", ())) == 2 for st in c.status())


def _replayed(path: Path) -> Engine:
    """A fresh engine after every command journaled in ``path`` (read-only: it is live)."""
    engine = Engine(DEFAULT_MARKETS)
    for _, cmd in read_commands(path):
        engine.apply(cmd, [])
    return engine


def _lease(cluster: Cluster, shard: int) -> str | None:
    """Shard ``shard``'s lease record in the cluster's Redis (None: nobody holds it)."""
    url = endpoints.read(cluster.data_dir)["redis"]
    r = connect(user_url(url, "lease"), str(cluster.keys_dir))
    try:
        return r.get(f"shardex:lease:{shard}")
    finally:
        r.close()


def _journal_dirs(data: str, shard: int, leader_node: str) -> tuple[Path, Path]:
    """(the leader's, the standby's) journal dirs of ``shard`` (replica r0: shard-I, r1:
    shard-I.r1)."""
    dirs = {f"shard-{shard}.r0": Path(data) / f"shard-{shard}",
            f"shard-{shard}.r1": Path(data) / f"shard-{shard}.r1"}  # fmt: skip
    (standby,) = (d for node, d in dirs.items() if node != leader_node)
    return dirs[leader_node], standby


def _books(c: Client, symbols: list[str]) -> dict[str, tuple]:
    out = {}
    for s in symbols:
        b = c.book(s)
        out[s] = (b["shard"], b["bids"], b["asks"])
    return out


def test_reshard_with_replicated_shards_keeps_standbys_in_sync_and_survives_a_failover() -> None:
    data = tempfile.mkdtemp(prefix="shardex-reshard-replicas-")
    cluster = Cluster(2, "--replicas", "2", data_dir=data, redis="embedded")
    try:
        with cluster.client(timeout=10) as c:
            _wait(lambda: _in_sync(c), "both shards' standbys in sync")
        pids = [cluster.child_pid("engine.1"), cluster.child_pid("engine.1.r1")]
        one = _reshard(cluster, 1)
        assert one.returncode == 0, one.stdout + one.stderr
        assert "asked shardex up (pid" in one.stdout and "shards=1" in one.stdout, one.stdout
        _wait(lambda: not any(alive(p) for p in pids), f"shard 1's processes {pids} to stop")
        _wait(lambda: _lease(cluster, 1) is None, "shard 1's lease to be released")
        with cluster.client(account="rest", timeout=10) as c:
            assert c.topology()["shards"] == 1 and len(c.status()) == 1
            assert {c.book(s)["shard"] for s in DEFAULT_MARKETS} == {0}
        status = subprocess.run([sys.executable, "-m", "shardex.cli", "status", "--endpoint",
                                 cluster.endpoint, *cluster.key_args()], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0 and ": 1 shard(s)," in status.stdout, status.stdout
        assert "shard-1." not in status.stdout and "shard-0.r1" in status.stdout, status.stdout
        assert _lease(cluster, 0) is not None
        with cluster.client(account="rest", timeout=10) as c:
            for s in DEFAULT_MARKETS:
                for k in range(RESTING):
                    assert c.place(s, "buy", "1", str(50 + k), id=f"R{k}-{s}").ok
                assert c.place(s, "sell", "1", "53", id=f"S-{s}").ok  # fills R3: a trade id
        time.sleep(1.0)  # (a lease ttl and more: still nothing takes shard 1 over)
        assert _lease(cluster, 1) is None
        two = _reshard(cluster, 2)
        assert two.returncode == 0, two.stdout + two.stderr
        assert cluster.child_pid("engine.1.r1") not in pids
        moved = sorted(s for s in DEFAULT_MARKETS if default_owner(s, 2) == 1)
        assert moved
        with cluster.client(account="rest", timeout=10) as c:
            books = _books(c, moved)
            assert {b[0] for b in books.values()} == {1}
            _wait(lambda: _in_sync(c), "shard 1's standby in sync after the moves")
            leader = c.status()[1]
        lead_dir, standby_dir = _journal_dirs(data, 1, leader["node"])

        def standby_caught_up() -> bool:
            return _replayed(standby_dir).seq >= leader["seq"]

        _wait(standby_caught_up, f"shard 1's standby at seq {leader['seq']}")
        led, stood = _replayed(lead_dir), _replayed(standby_dir)
        for s in moved:  # the moved pair's book on the standby is its leader's
            assert stood.snapshot_pair(s) == led.snapshot_pair(s), s
            assert len(led.books[s].orders) == RESTING - 1, s

        os.kill(leader["pid"], signal.SIGKILL)  # failover of the shard the pairs moved to
        with cluster.client(account="rest", timeout=10) as c:
            _wait(lambda: c.status()[1].get("node") not in (None, leader["node"]) and
                  c.status()[1].get("role") == "primary", "shard 1's standby to lead")  # fmt: skip
            assert _books(c, moved) == books  # the same book on the new leader
            for s in moved:
                assert c.cancel(s, f"R0-{s}").ok, s  # a resting order moved, failed over
                fill = c.place(s, "sell", "1", "52", id=f"F-{s}")
                # (the pair's trade ids go on from the move: 1 was S's)
                trades = [(e["maker"], e["trade_id"]) for e in fill.events if e["ev"] == "trade"]
                assert fill.ok and trades == [(f"R2-{s}", 2)], (s, fill)
        assert "Traceback" not in cluster.output()
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)
