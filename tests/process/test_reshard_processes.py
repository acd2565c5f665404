"""``shardex reshard --shards N`` starts and stops engine shard processes of a cluster ``shardex
up`` runs (real processes): 1 -> 3 starts two shard processes and spreads the pairs, 3 -> 1 moves
them back and stops the two; every resting order stays on exactly one shard throughout, and a
restart of ``shardex up`` comes back with 1. The bridge (embedded Redis) follows the new shards
live, without a restart: their adoptions reach their event streams, and shard 0's stream stays
contiguous. A real Prometheus (``--prometheus-reload``) scrapes the new shards after the grow and
lets them go after the shrink."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from conftest import require

from shardex.engine import DEFAULT_MARKETS
from shardex.placement import default_owner
from shardex.redisauth import RedisUsers
from tests.support.cluster import ROOT, Cluster, alive, resting_by_shard
from tests.support.ports import free_layout

pytestmark = pytest.mark.timeout(240)

PAIRS = ("ADA-USD", "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD")


def _reshard(cluster: Cluster, n: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHARDEX_KEY": str(cluster.key)}
    return subprocess.run([sys.executable, "-m", "shardex.cli", "reshard", "--shards", str(n),
                           "--data-dir", cluster.data_dir, "--endpoint", cluster.endpoint],
                          cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env=env)  # fmt: skip


def _resting(cluster: Cluster) -> dict[str, list[int]]:
    """Each pair's resting order count per shard that holds any (one entry: one owner)."""
    with cluster.client() as c:
        return {s: list(held.values()) for s, held in resting_by_shard(c).items()}


def _redis(cluster: Cluster) -> redis.Redis:
    assert cluster.keys_dir is not None
    url = RedisUsers.ensure(cluster.keys_dir).url(cluster.layout.redis_url, "reader")
    return redis.Redis.from_url(url, decode_responses=True)


def _adopted(r: redis.Redis, shard: int) -> set[str]:
    """The pairs shard ``shard``'s events stream shows adopted."""
    return {f["symbol"] for _, f in r.xrange(f"shardex:events:{shard}")
            if f.get("ev") == "adopted"}  # fmt: skip


def _wait(check, what, timeout: float = 60.0) -> None:
    """Until ``check()``, at most ``timeout`` s; ``what``: text, or a function giving it."""
    deadline = time.monotonic() + timeout
    while not check():
        text = what if isinstance(what, str) else what()
        assert time.monotonic() < deadline, f"timed out waiting for {text}"
        time.sleep(0.2)


def _gone(pids: list[int], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_reshard_starts_and_stops_shard_processes_and_keeps_every_order() -> None:
    data = tempfile.mkdtemp(prefix="shardex-scale-")
    try:
        prom = Path(data) / "prometheus.yml"
        url = f"http://127.0.0.1:{free_layout(1).base_port}"
        cluster = Cluster(1, "--prometheus-config", str(prom), "--prometheus-reload", url,
                          data_dir=data, redis="embedded")  # fmt: skip
        with _prometheus(prom, url, Path(data) / "tsdb") as scraped:
            before = _grow_and_shrink(cluster, prom, scraped)
        restarted = Cluster(1, data_dir=data)  # the data dir's count and map agree: it starts
        try:
            assert "refusing" not in restarted.output()
            assert _resting(restarted) == {**before, "BTC-USD": [1]}
            assert json.loads((Path(data) / "shards.json").read_text()) == {"shards": 1}
        finally:
            restarted.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def _prometheus(cfg: Path, url: str, tsdb: Path):
    """A real Prometheus reading ``cfg`` (lifecycle API on) at ``url``, ready; yields a function
    giving the engine shard ports among its active targets."""
    exe = shutil.which("prometheus")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed: .ci/run must install it")
        require(False, "prometheus not installed (apt-get install prometheus)")
    proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                             f"--web.listen-address={url.split('//')[1]}",
                             "--web.enable-lifecycle"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def engine_ports() -> set[int]:
        body = json.loads(urllib.request.urlopen(url + "/api/v1/targets", timeout=10).read())
        return {int(t["scrapeUrl"].split(":")[2].split("/")[0])
                for t in body["data"]["activeTargets"]
                if t["labels"].get("job") == "shardex-engine"}  # fmt: skip

    def ready() -> bool:
        try:
            return bool(engine_ports())
        except OSError:
            return False

    try:
        _wait(ready, "prometheus to serve its targets")
        yield engine_ports
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _engine_targets(prom: Path) -> int:
    """How many engine shard exporters the Prometheus config ``shardex up`` wrote scrapes."""
    job = prom.read_text().split("job_name: shardex-engine", 1)[1].split("job_name:", 1)[0]
    return len(re.findall(r"'[^']+:\d+'", job))


def _grow_and_shrink(cluster: Cluster, prom: Path,
                     scraped: Callable[[], set[int]]) -> dict[str, list[int]]:  # fmt: skip
    """1 -> 3 -> 1 shard processes with resting orders; the orders before (then stopped)."""
    data = cluster.data_dir
    try:
        assert _engine_targets(prom) == 1
        with cluster.client(account="rest") as c:
            for s in PAIRS:
                for k in range(2):
                    assert c.place(s, "buy", "1", str(50 + k), id=f"R{k}-{s}").ok
        before = _resting(cluster)
        assert before == {s: [2] for s in PAIRS}
        bridge = cluster.child_pid("bridge")
        r = _redis(cluster)

        grow = _reshard(cluster, 3)
        assert grow.returncode == 0, grow.stdout + grow.stderr
        assert "asked shardex up" in grow.stdout and "the router serves 3 engine shard(s)" in \
            grow.stdout, grow.stdout  # fmt: skip
        with cluster.client() as c:
            topo = c.topology()
            assert topo["shards"] == 3 and all(t.get("pid") for t in topo["topology"])
            extra = [t["pid"] for t in topo["topology"][1:]]
            assert {s: c.book(s)["shard"] for s in PAIRS} == {s: default_owner(s, 3)
                                                              for s in PAIRS}  # fmt: skip
        assert {default_owner(s, 3) for s in PAIRS} == {0, 1, 2}  # (the pairs do spread)
        assert _resting(cluster) == before  # each order on exactly one shard
        rec = json.loads((Path(data) / "endpoints.json").read_text())
        assert len(rec["shards"]) == 3
        assert _engine_targets(prom) == 3  # (rewritten for the new shards)
        three = {cluster.layout.shard_metrics_port(i) for i in range(3)}
        _wait(lambda: scraped() == three, lambda: f"prometheus's targets {scraped()}: {three}")
        assert cluster.child_pid("bridge") == bridge  # followed live, not restarted
        for i in (1, 2):  # the new shards' adoptions reach their streams
            moved_in = {s for s in DEFAULT_MARKETS if default_owner(s, 3) == i}
            _wait(lambda i=i, m=moved_in: _adopted(r, i) == m,
                  lambda i=i, m=moved_in: f"shard {i}'s adoptions {m}: {_adopted(r, i)}")

        again = _reshard(cluster, 3)  # safe to re-run: nothing to start, nothing to move
        assert again.returncode == 0 and ": 0 move(s)" in again.stdout, again.stdout

        shrink = _reshard(cluster, 1)
        assert shrink.returncode == 0, shrink.stdout + shrink.stderr
        assert _gone(extra), "the emptied shard processes were not stopped"
        assert _engine_targets(prom) == 1
        one = {cluster.layout.shard_metrics_port(0)}
        _wait(lambda: scraped() == one, lambda: f"prometheus's targets {scraped()}: {one}")
        with cluster.client() as c:
            topo = c.topology()
            assert topo["shards"] == 1 and topo["placement"]["shards"] == 1
            assert {c.book(s)["shard"] for s in PAIRS} == {0}
            assert c.cancel("BTC-USD", "R0-BTC-USD", account="rest").ok  # moved back, still live
        assert _resting(cluster) == {**before, "BTC-USD": [1]}
        back = {s for s in DEFAULT_MARKETS if default_owner(s, 3) != 0}
        _wait(lambda: back <= _adopted(r, 0), "shard 0's adoptions back")
        _wait(lambda: "let go of shard 1" in cluster.output(), "the bridge letting shard 1 go")
        assert cluster.child_pid("bridge") == bridge
        seqs = [int(f["seq"]) for _, f in r.xrange("shardex:events:0")]
        assert seqs == list(range(1, len(seqs) + 1))  # no hole, no copy
        return before
    finally:
        cluster.stop()
