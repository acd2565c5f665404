"""``bench/compare.py``'s ``--phases``: a subset of the three measurements, checked up front
(the overload phase's offered rate comes from the saturation phase unless given), and kept
JSON-serialisable (the ``--json`` report carries the config)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import compare  # noqa: E402


def test_phases_default_to_all_and_serialise() -> None:
    args = compare.parse_args(["HEAD"])
    assert args.phases == ["latency", "overload", "saturation"]
    assert json.loads(json.dumps(vars(args)))["phases"] == args.phases


def test_a_subset_of_phases() -> None:
    assert compare.parse_args(["HEAD", "--phases", "latency"]).phases == ["latency"]
    both = compare.parse_args(["HEAD", "--phases", "overload", "--overload-rate", "900"])
    assert both.phases == ["overload"]


@pytest.mark.parametrize("phases", ["", "latency,speed", "overload"])
def test_bad_phases_are_refused(phases: str) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(["HEAD", "--phases", phases])
