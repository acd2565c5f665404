"""bench/accounts.py runs end to end with tiny parameters (two real clusters, real loadgen) and
reports every mode for both sides. What is checked is that the script works and cleans up,
never how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def test_accounts_bench_smoke():
    out = subprocess.run(
        [sys.executable, "bench/accounts.py", "--smoke", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert set(rep["results"]) == {"b1", "bB", "open"}
    for sides in rep["results"].values():
        assert set(sides) == {"off", "on"}
        for runs in sides.values():
            assert len(runs) == 1 and runs[0]["errors"] == 0 and runs[0]["acked_per_s"] > 0
    metrics = {(row["mode"], row["metric"]) for row in rep["summary"]}
    assert ("closed b=1", "acked/s") in metrics and ("open 200/s", "p99_us") in metrics
