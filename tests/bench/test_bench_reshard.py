"""bench/reshard.py runs end to end at a tiny size (a real ``shardex up``): with ``--changing``
the prober's own orders (placed, and cancelled turn about) are all cancelled before the count,
so every resting order is counted once. What is checked is that the script works, never how
long a pause is."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_layout

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(150)


def test_the_reshard_bench_moves_a_changing_pair_and_counts_every_order() -> None:
    base = free_layout(2).base_port
    out = subprocess.run(
        [sys.executable, "bench/reshard.py", "--orders", "60", "--moves", "3", "--changing",
         "--base-port", str(base)],
        cwd=ROOT, capture_output=True, text=True, timeout=140,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "60 resting orders, 3 moves (the book changing)" in out.stdout, out.stdout
    counted = out.stdout.split("resting orders after the moves, per shard: ")[1].splitlines()[0]
    assert sorted(ast.literal_eval(counted).values()) == [0, 60], out.stdout  # (one owner)
