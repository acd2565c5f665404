"""bench/paths.py end to end with tiny parameters: a worktree of HEAD and this tree, one
configuration's real ``shardex up`` clusters, a closed-loop ``shardex loadgen`` and the open-loop
client, CPU per order from /proc, the table printed. What is checked is that the script works
and cleans up, never how fast anything is. ~15 CPU s (mostly the four cluster processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import paths  # noqa: E402

from tests.support.bench import bench_env, worktrees  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def test_paths_measures_both_trees_per_role_and_removes_its_worktree(capsys, tmp_path) -> None:
    before = worktrees()
    r = subprocess.run(
        [sys.executable, "bench/paths.py", "HEAD", "--configs", "insecure", "--loads",
         "closed-1,open-1k", "--rounds", "1", "--seconds", "0.5", "--warmup", "0",
         "--procs", "1", "--connections", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=170, env=bench_env(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "round 1 closed-1" in r.stderr  # (progress on stderr, the report alone on stdout)
    rep = json.loads(r.stdout)
    assert set(rep["rows"]) == {"insecure closed-1", "insecure open-1k"}
    closed = rep["raw"]["insecure closed-1"]
    for side in ("A", "B"):
        (run,) = closed[side]
        assert run["acked_per_s"] > 0
        assert run["cpu_us"]["router"] > 0 and run["cpu_us"]["engine"] > 0
        assert "accounts" not in run["cpu_us"]  # (--accounts 0: no account shard runs)
    (opened,) = rep["raw"]["insecure open-1k"]["B"]
    # a latency, or (half a second on a loaded box can leave every reply late) the orders it
    # lost counted: never a silent zero
    assert opened["p50_us"] > 0 or opened["errors"] > 0, opened
    assert rep["rows"]["insecure closed-1"]["B/A"]["acked_per_s"]["median"] > 0
    # removed again (its own: another bench test's worktree may exist meanwhile)
    assert not {w for w in worktrees() - before if w.startswith(str(tmp_path))}

    paths.print_report(rep)
    table = capsys.readouterr().out
    assert "| insecure closed-1 |" in table and "| insecure open-1k |" in table


def test_paths_rejects_an_unknown_configuration() -> None:
    r = subprocess.run(
        [sys.executable, "bench/paths.py", "--configs", "fastest"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0 and "--configs" in r.stderr
