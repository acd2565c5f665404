"""bench/perps.py end to end at a tiny size: the spot stream and its perp twin do the same
trades with no refusal, every size's tick leaves everyone open, and the breaching tick takes
over exactly the thin account inside that very command; the tables print. Numbers are the
script's to print, never checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--commands", "2000", "--depth", "200", "--rounds", "2", "--index-every", "300",
        "--positions", "50,200", "--ticks", "5"]  # fmt: skip


def _run(*extra: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "perps.py"), *TINY, *extra], capture_output=True,
        text=True, env=env, timeout=120, check=True,
    ).stdout  # fmt: skip


def test_perps_bench_compares_the_same_stream_and_liquidates_in_the_breaching_tick() -> None:
    report = json.loads(_run("--json"))
    t = report["throughput"]
    assert t["orders"] == 2000 and t["rounds"] == 2
    spot_trades, spot_rejects = t["spot_trades_rejects"]
    assert spot_trades > 0 and t["perp_trades_rejects"] == [spot_trades, spot_rejects] == [
        spot_trades, 0]  # fmt: skip
    assert t["spot_cmds_per_s"] > 0 and t["perp_cmds_per_s"] > 0
    assert [r["positions"] for r in report["ticks"]] == [50, 200]
    for r in report["ticks"]:
        assert r["ticks"] == 5 and r["us_per_tick"] > 0
        liq = r["liq"]
        assert liq["accounts"] == ["thin"] and liq["commands_to_first_liquidation_order"] == 0
    text = _run("--only", "ticks")
    assert "commands to the first liquidation order" in text and "1. " not in text
