"""What the bench tests share: the bench's ports from this worker's range, the repository's
git worktrees (a bench that checks a reference out must remove its worktree)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.ports import region

ROOT = Path(__file__).resolve().parents[2]


def bench_env(tmpdir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The benches' ports from this xdist worker's own range, below the ephemeral range: a
    bench left to pick among 20000-60000 once bound a port an outgoing connection held
    (``Address already in use``: the router of ``test_scaling_runs_two_routers`` died).
    ``tmpdir``: the bench's temp files (and a compare's worktree) there, so a test can tell
    its own worktree from another test's running at the same time."""
    lo, hi = region()
    env = {**os.environ, "SHARDEX_BENCH_PORTS": f"{lo}-{hi}"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def worktrees() -> set[str]:
    """The paths of the repository's worktrees (others' commits move their HEADs meanwhile)."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
    ).stdout
    return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")}
