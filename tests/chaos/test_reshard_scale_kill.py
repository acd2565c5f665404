"""kill -9 of ``shardex reshard`` between the placement map's change and the supervisor's answer
(real processes, ``shardex up``): grown 1 -> 2 with the reshard killed right after the map is
stored (no request yet), then 2 -> 3 killed right after the request is written (the supervisor
answers nobody). Each time a second run finishes from where the cluster stands: the shard
processes run, the pairs sit at their defaults, every resting order is on exactly one shard,
and a further run plans nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from shardex.engine import DEFAULT_MARKETS
from shardex.placement import default_owner
from tests.support.cluster import ROOT, Cluster, resting_by_shard

pytestmark = pytest.mark.timeout(240)

# (the count, the progress line after which reshard dies: map stored / request written)
KILLS = ((2, "every pair pinned where it is"), (3, "asked shardex up"))


def _argv(cluster: Cluster, n: int) -> list[str]:
    return [sys.executable, "-m", "shardex.cli", "reshard", "--shards", str(n), "--data-dir",
            cluster.data_dir, "--endpoint", cluster.endpoint]  # fmt: skip


def _env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "SHARDEX_KEY": str(cluster.key)}


def _killed_after(cluster: Cluster, n: int, marker: str) -> str:
    """Run ``reshard --shards n`` and kill -9 it as soon as it prints ``marker``; its output."""
    proc = subprocess.Popen(_argv(cluster, n), cwd=ROOT, env=_env(cluster), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # (ends when it exits: a bounded wait, the test's timeout)
            seen.append(line)
            if marker in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(30)
    out = "".join(seen)
    assert marker in out, out
    return out


def _resting(cluster: Cluster) -> dict[str, list[int]]:
    with cluster.client() as c:
        return {s: list(held.values()) for s, held in resting_by_shard(c).items()}


def test_reshard_killed_between_the_map_and_the_supervisors_answer_is_run_again() -> None:
    data = tempfile.mkdtemp(prefix="shardex-scale-kill-")
    cluster = Cluster(1, data_dir=data)
    try:
        with cluster.client(account="rest") as c:
            for s in DEFAULT_MARKETS:
                assert c.place(s, "buy", "1", "50", id=f"R-{s}").ok
        before = _resting(cluster)
        for n, marker in KILLS:
            _killed_after(cluster, n, marker)
            again = subprocess.run(_argv(cluster, n), cwd=ROOT, env=_env(cluster), text=True,
                                   capture_output=True, timeout=180)  # fmt: skip
            assert again.returncode == 0, again.stdout + again.stderr
            with cluster.client() as c:
                topo = c.topology()
                assert topo["shards"] == n and all(t.get("pid") for t in topo["topology"])
                assert {s: c.book(s)["shard"] for s in DEFAULT_MARKETS} == {
                    s: default_owner(s, n) for s in DEFAULT_MARKETS}  # fmt: skip
            assert _resting(cluster) == before  # each order on exactly one shard
            done = subprocess.run(_argv(cluster, n), cwd=ROOT, env=_env(cluster), text=True,
                                  capture_output=True, timeout=180)  # fmt: skip
            assert done.returncode == 0 and ": 0 move(s)" in done.stdout, done.stdout
        assert "Traceback" not in cluster.output()
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)
