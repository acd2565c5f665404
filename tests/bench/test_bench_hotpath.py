"""bench/hotpath.py end to end at a tiny size: every node of the default path gets its row,
every order is taken (no refusal), and ``--profile`` counts each node's calls apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hotpath_prints_each_nodes_cost_per_order() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hotpath.py"), "--orders", "300", "--profile",
         "--top", "1"], capture_output=True, text=True, env=env, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "300 orders, 100 per frame, 4 frames in flight; 0 refused" in out
    for node in ("router", "engine", "accounts"):
        row = re.search(rf"^  {node} +[\d.]+ µs/order +[\d.]+ turns/order +([\d.]+) calls/order",
                        out, re.M)  # fmt: skip
        assert row is not None, out
        assert float(row.group(1)) > 0
        assert f"== {node}" in out
