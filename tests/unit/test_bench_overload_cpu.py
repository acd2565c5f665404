"""bench/overload.py's per-process CPU: read from /proc (user + system, None for a process
that is gone) and divided by the level's acked orders, so each process's CPU per order is
reported next to the latency it bought."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from overload import cpu_per_order  # noqa: E402
from overload_probes import cpu_s  # noqa: E402


def test_cpu_of_a_live_process_grows_and_a_gone_one_is_none() -> None:
    before = cpu_s(os.getpid())
    assert before is not None
    end = time.process_time() + 0.05
    while time.process_time() < end:  # (burn CPU: what /proc must then show)
        pass
    after = cpu_s(os.getpid())
    assert after is not None and after > before
    assert cpu_s(2**22 + 1) is None  # (above Linux's pid_max default: no such process)


def test_cpu_per_order_is_microseconds_per_acked_order() -> None:
    procs = {"router": {"cpu_s": 0.5}, "engine.0": {"cpu_s": 0.12}, "gone": {"cpu_s": None}}
    assert cpu_per_order(procs, 10_000) == {"router": 50, "engine.0": 12, "gone": None}
    assert cpu_per_order(procs, 0) == {"router": None, "engine.0": None, "gone": None}
