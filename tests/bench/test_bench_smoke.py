"""The scaling and before/after benches run end to end with tiny parameters and print their tables.

Real ``shardex up`` clusters, real ``shardex loadgen`` processes, a real git worktree: what is
checked is that the scripts work (and clean up), never how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import scaling  # noqa: E402

from shardex.wire.protocol import shard_for  # noqa: E402
from tests.support.bench import bench_env, worktrees  # noqa: E402
from tests.support.ports import ephemeral_low  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402


def run_bench(*argv: str, timeout: float = 110, tmpdir: Any = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env=bench_env(tmpdir),
    )  # fmt: skip


def test_benches_take_ports_below_the_ephemeral_range(monkeypatch) -> None:
    lo, _, hi = bench_env()["SHARDEX_BENCH_PORTS"].partition("-")
    assert 10000 <= int(lo) < int(hi) <= ephemeral_low()
    monkeypatch.setenv("SHARDEX_BENCH_PORTS", f"{lo}-{hi}")
    base = scaling.free_base(420)  # what a bench then picks lies in that range
    assert int(lo) <= base and base + 420 <= int(hi)


def test_scaling_helpers() -> None:
    """The driver's own rendezvous hash is the cluster's default routing; the synthetic pairs
    reach every shard of the counts the bench uses; shard counts double up to the maximum."""
    syms = scaling.all_symbols(64)
    assert len(syms) == 64 and len(set(syms)) == 64
    for n in (1, 2, 3, 4, 8, 16):
        assert [scaling.symbol_shard(s, n) for s in syms] == [shard_for(s, n) for s in syms]
        per_shard = [sum(1 for s in syms if shard_for(s, n) == k) for k in range(n)]
        assert min(per_shard) >= 1  # every shard gets work
        if n & (n - 1) == 0:  # powers of two: balanced to within the built-ins' lumps
            assert max(per_shard) - min(per_shard) <= 2, per_shard
    assert scaling.shard_counts(1) == [1]
    assert scaling.shard_counts(2) == [1, 2]
    assert scaling.shard_counts(6) == [1, 2, 4, 6]
    text = (
        "shardex cluster\n  router (clients)   tcp://127.0.0.1:5555\n  router (shards) tcp://x:1\n"
    )
    assert scaling.router_endpoints(text) == ["tcp://127.0.0.1:5555"]


def test_scaling_markets_file_is_accepted(tmp_path: Path) -> None:
    """The generated markets file parses with the project's own parser (exact decimals)."""
    from shardex.config import load_markets

    path = scaling.write_markets(tmp_path / "m.toml", 12)
    markets = load_markets(str(path))
    assert list(markets) == scaling.all_symbols(12)  # built-ins first, as loadgen --symbols takes
    last = markets[scaling.all_symbols(12)[-1]]
    assert str(last.tick) == "0.01" and str(last.lot) == "0.001"


def test_scaling_runs_and_prints_its_table(capsys) -> None:
    """Two shard counts behind R = 2 routers (``shardex up --routers 2``), two frame sizes: one
    cluster per shard count, every loadgen process acked through its router."""
    assert scaling.supports_routers(ROOT)
    r = run_bench(
        "bench/scaling.py", "--shards", "1,2", "--routers", "2", "--batches", "1,10",
        "--seconds", "0.2", "--loadgens", "2", "--concurrency", "1", "--window", "2",
        "--pairs", "12", "--ephemeral", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    got = {(x["shards"], x["batch"]) for x in rep["results"]}
    assert got == {(1, 1), (1, 10), (2, 1), (2, 10)}
    for x in rep["results"]:
        assert x["acked_per_s"] > 0 and x["routers"] == 2
        if x["shards"] == 1:
            assert x["speedup"] == 1.0 and x["efficiency"] == 1.0
    assert "[2/2] 2 shard(s), 2 router(s)" in r.stderr  # progress on stderr

    scaling.print_table(rep)
    table = capsys.readouterr().out
    assert "| routers | orders/frame | shards | acked orders/s |" in table
    assert table.count("\n| 2 | ") == 4


def test_scaling_rejects_bad_lists() -> None:
    r = run_bench("bench/scaling.py", "--shards", "1,x")
    assert r.returncode != 0 and "--shards" in r.stderr
    r = run_bench("bench/scaling.py", "--batches", "0")
    assert r.returncode != 0 and "--batches" in r.stderr


def test_compare_runs_interleaved_and_removes_its_worktree(capsys, tmp_path) -> None:
    """HEAD against this tree, for real: a worktree, both trees' clusters, their open-loop
    clients and the bare echo each measured once, the ratios there, and the temp worktree gone
    afterwards. One phase (latency: the one with processes of its own, the echo and the
    open-loop client); every phase's bookkeeping runs in tests/unit/test_bench_compare_flow.py."""
    before = worktrees()
    r = run_bench(
        "bench/cluster.py",  # --compare is reachable from the cluster bench
        "--compare",
        "HEAD",
        "--phases",
        "latency",
        "--rounds",
        "1",
        "--seconds",
        "0.2",
        "--warmup",
        "0",
        "--rate",
        "300",
        "--procs",
        "1",
        "--connections",
        "1",
        "--json",
        tmpdir=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    for side in ("ref", "current", "echo"):
        assert len(rep["raw"][side]["p50_us"]) == 1 and rep["raw"][side]["p50_us"][0] > 0
    assert rep["labels"]["ref"].startswith("HEAD (") and rep["config"]["phases"] == ["latency"]
    assert set(rep["ratios"]) >= {"p50 current/ref", "p50 current/echo", "p50 ref/echo"}
    # removed again (its own: another bench test's worktree may exist meanwhile)
    assert not {w for w in worktrees() - before if w.startswith(str(tmp_path))}

    compare.print_report(rep)
    table = capsys.readouterr().out
    assert "| p50 µs at 300/s open loop |" in table
    assert "| p50 current/echo |" in table


def test_compare_rejects_an_unknown_ref() -> None:
    r = run_bench("bench/compare.py", "no-such-ref-xyz")
    assert r.returncode != 0 and "not a commit" in r.stderr


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_bench_killed_by_sigkill_leaves_no_cluster_behind() -> None:
    """A bench killed by SIGKILL (a test's subprocess timeout) ran no ``finally`` and left its
    ``shardex up`` running in a session of its own, ports and CPU held (seen: six clusters of
    timed-out ``compare`` runs still up an hour later). Now the kernel stops it with the bench."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(BENCH)!r}); import cluster; "
        "proc, layout = cluster.start_cluster(1, False); "
        "print(proc.pid, layout.frontend, flush=True); time.sleep(600)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline().split()
        assert line, "the bench's cluster did not come up"
        up = int(line[0])
        assert not _gone(up), "the cluster must be running before the bench is killed"
    finally:
        child.kill()
        child.wait(10)
    wait_until(lambda: _gone(up), 30, "the killed bench's `shardex up` to stop")
