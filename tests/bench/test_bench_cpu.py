"""The bench's CPU-per-order accounting (bench/proccpu.py) and its bounded port choice
(SHARDEX_BENCH_PORTS in bench/scaling.py), on this very process: no cluster needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import proccpu  # noqa: E402
import scaling  # noqa: E402


def test_role_is_the_subcommand_after_global_options() -> None:
    """``python -m shardex.cli --log-level INFO router ...`` is the router, not ``--log-level``."""
    code = "import sys, time; sys.stdout.write('ok\\n'); sys.stdout.flush(); time.sleep(30)"
    argv = [sys.executable, "-c", code, "-m", "shardex.cli", "--log-level", "INFO", "router"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ok\n"
        assert proccpu._role(p.pid) == "router"
        assert p.pid in proccpu.descendants(os.getpid())
    finally:
        p.kill()
        p.wait()


def test_per_role_sums_by_role_over_processes_alive_in_both() -> None:
    before = {1: ("engine", 1.0), 2: ("router", 2.0), 3: ("router", 0.5)}
    after = {1: ("engine", 1.5), 2: ("router", 2.25), 3: ("router", 0.75), 4: ("up", 9.0)}
    assert proccpu.per_role(before, after) == {"engine": 0.5, "router": 0.5}


def test_snapshot_of_this_process_counts_its_cpu() -> None:
    snap = proccpu.snapshot(os.getpid())
    assert os.getpid() in snap and snap[os.getpid()][1] > 0


def test_bounded_ports_skip_a_busy_layout_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within SHARDEX_BENCH_PORTS only a layout's ports need be free: a busy one at base+100
    moves the base on, a busy one at base+50 (no layout port) does not."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        lo = probe.getsockname()[1] // 10 * 10
    if lo + 1000 > 65535:
        pytest.skip("ephemeral port too high for the layout window")
    monkeypatch.setenv("SHARDEX_BENCH_PORTS", f"{lo}-{lo + 1000}")
    free = scaling.free_base(420)
    assert lo <= free and free + 420 <= lo + 1000
    with socket.socket() as busy:
        try:
            busy.bind(("127.0.0.1", free + 100))
        except OSError:
            pytest.skip("port taken by another process meanwhile")
        assert scaling.free_base(420) != free
    with socket.socket() as idle:
        try:
            idle.bind(("127.0.0.1", free + 50))
        except OSError:
            pytest.skip("port taken by another process meanwhile")
        assert scaling.free_base(420) == free
