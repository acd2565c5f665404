"""kill -9 of the ``shardex up`` supervisor at each step of ``shardex reshard`` (real processes):
its children stop with it (SIGTERM on the supervisor's death: each shard snapshots), ``shardex
up`` is started again on the data dir with the count it records (what a plain ``shardex up``
does), and ``reshard`` run again finishes. The steps, in one data dir:

1. grow 1 -> 3, the supervisor killed once the map over 3 is stored (no request yet);
2. shrink 3 -> 1, the supervisor and ``reshard`` killed right after a hand-off is journaled
   (a move half done: the map records it as in progress);
3. grow 1 -> 3, the supervisor killed right after the request is written (it may not have
   read it: the restarted supervisor must not carry it out on its own);
4. shrink 3 -> 1, the supervisor killed once the map over 1 is stored, before it stops the
   emptied shards.

After each restart every pair's resting order is on at most one shard (before the re-run) and on
exactly one, at its default over N, after it; the processes run N shards, and a further run
plans nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shardex.datadir import recorded_shards
from shardex.engine import DEFAULT_MARKETS
from shardex.placement import default_owner
from tests.support.cluster import ROOT, Cluster, alive, resting_by_shard

pytestmark = pytest.mark.timeout(420)

# (the count asked for, the progress line after which the supervisor dies, reshard too)
STEPS = ((3, "every pair pinned where it is", False), (1, "hand-off journaled", True),
         (3, "asked shardex up", False), (1, ": 1 shard(s)", False))  # fmt: skip


def _argv(cluster: Cluster, n: int) -> list[str]:
    return [sys.executable, "-m", "shardex.cli", "reshard", "--shards", str(n), "--data-dir",
            cluster.data_dir, "--endpoint", cluster.endpoint]  # fmt: skip


def _env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "SHARDEX_KEY": str(cluster.key)}


def _run(cluster: Cluster, n: int) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(cluster, n), cwd=ROOT, text=True, capture_output=True,
                          timeout=200, env=_env(cluster))  # fmt: skip


def _kill_supervisor_at(cluster: Cluster, n: int, marker: str, with_reshard: bool) -> str:
    """Run ``reshard --shards n``; when it prints ``marker`` kill -9 ``shardex up`` (and the
    reshard first when ``with_reshard``); wait until every child of ``up`` is gone. Returns
    the reshard's output (it fails: its supervisor died)."""
    proc = subprocess.Popen(_argv(cluster, n), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_env(cluster))  # fmt: skip
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # (ends when it exits: a bounded wait, the test's timeout)
        seen.append(line)
        if marker in line:
            if with_reshard:
                proc.kill()
            os.kill(cluster.proc.pid, signal.SIGKILL)
            cluster.proc.wait(10)  # (reaped: the reshard sees it gone, not a zombie)
            break
    seen.append(proc.communicate(timeout=60)[0])
    out = "".join(seen)
    assert marker in out, out
    if not with_reshard:  # it notices and says to run it again, promptly
        assert proc.returncode == 1 and "run it again" in out, out
    # every child it ever started, also those it started during this step (read now: it is
    # dead, its log complete), and anything else running on the data dir
    deadline = time.monotonic() + 90  # (each shard snapshots on its way out)
    while left := _on_data_dir(cluster):
        assert time.monotonic() < deadline, left
        time.sleep(0.2)
    cluster.stop()
    return out


def _on_data_dir(cluster: Cluster) -> list[int]:
    """The processes of the killed ``shardex up`` still running: its children by its log, and
    any process whose command line names the data dir (a shard still writing its snapshot
    would share its journal with the next cluster's)."""
    pids = {int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", cluster.output())}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cluster.data_dir.encode() in cmdline:
                pids.add(int(entry.name))
    return sorted(p for p in pids if p != os.getpid() and alive(p))


def _holders(cluster: Cluster) -> dict[str, list[int]]:
    """Each pair's shards holding resting orders (one entry: one owner)."""
    with cluster.client(timeout=10) as c:
        return {s: sorted(held) for s, held in resting_by_shard(c).items()}


def test_kill_9_of_the_supervisor_at_each_reshard_step_then_restart_and_run_again() -> None:
    data = tempfile.mkdtemp(prefix="shardex-sup-kill-")
    cluster = Cluster(1, data_dir=data)
    try:
        with cluster.client(account="rest") as c:
            for s in DEFAULT_MARKETS:
                assert c.place(s, "buy", "1", "50", id=f"R-{s}").ok
        for n, marker, with_reshard in STEPS:
            _kill_supervisor_at(cluster, n, marker, with_reshard)
            recorded = recorded_shards(data)
            assert recorded is not None
            cluster = Cluster(recorded, data_dir=data)  # (a plain shardex up: the recorded N)
            assert "Traceback" not in cluster.output()
            started = set(re.findall(r"started (engine\.\d+) \(pid", cluster.output()))
            assert started == {f"engine.{i}" for i in range(recorded)}, (marker, started)
            held = _holders(cluster)
            assert all(len(v) <= 1 for v in held.values()), (marker, held)
            again = _run(cluster, n)
            assert again.returncode == 0, again.stdout + again.stderr
            if with_reshard:
                assert "(in progress: finishing it)" in again.stdout, again.stdout
            with cluster.client(timeout=10) as c:
                topo = c.topology()
                assert topo["shards"] == n and all(t.get("pid") for t in topo["topology"])
                assert {s: c.book(s)["shard"] for s in DEFAULT_MARKETS} == {
                    s: default_owner(s, n) for s in DEFAULT_MARKETS}  # fmt: skip
            assert _holders(cluster) == {s: [default_owner(s, n)] for s in DEFAULT_MARKETS}
            done = _run(cluster, n)
            assert done.returncode == 0 and ": 0 move(s)" in done.stdout, done.stdout
            assert recorded_shards(data) == n
            assert "Traceback" not in cluster.output()
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)
