"""bench/paths.py's bookkeeping, in-process: per-round ratios pair only the rounds where both
sides measured a metric (a replica that took over during a round has no CPU for its role)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import paths  # noqa: E402


def _run(acked: float, **cpu: float) -> dict:
    return {"acked_per_s": acked, "errors": 0, "cpu_us": cpu}


def test_a_round_without_a_role_is_left_out_of_that_roles_ratio() -> None:
    raw = {"both closed-1": {
        "A": [_run(100, router=10, engine=20), _run(100, router=10)],
        "B": [_run(200, router=5, engine=40), _run(300, router=20, engine=1)],
    }}  # fmt: skip
    row = paths.summarize(raw)["both closed-1"]
    assert row["B/A"]["acked_per_s"] == {"min": 2.0, "median": 2.5, "max": 3.0}
    assert row["B/A"]["cpu_us engine"] == {"min": 2.0, "median": 2.0, "max": 2.0}  # round 1
    assert row["B/A"]["cpu_us router"] == {"min": 0.5, "median": 1.25, "max": 2.0}
    assert row["A"]["cpu_us engine"] == {"min": 20, "median": 20, "max": 20}


def test_parse_args_takes_known_names_only() -> None:
    args = paths.parse_args(["--configs", "default,echo", "--loads", "open-1k"])
    assert args.configs == ["default", "echo"] and args.loads == ["open-1k"]
    assert args.ref == paths.REF
