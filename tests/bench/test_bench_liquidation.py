"""bench/liquidation.py at a tiny size: the crash index takes every long over, the book
fills the share it can and the rest are deleveraged, and the script prints its line."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import liquidation  # noqa: E402


def test_the_crash_takes_every_long_over_and_deleverages_the_share_the_book_cannot(
        capsys) -> None:  # fmt: skip
    cpu, events, taken, adl = liquidation.measure(40, 0.25, 1)
    assert taken == 40 and adl == 10 and events > 40 * 3 and cpu >= 0
    liquidation.main(["--longs", "20", "--adl-share", "0", "--repeat", "1"])
    line = capsys.readouterr().out
    assert line.startswith("longs 20: take-overs 20, adl 0,") and "us per take-over" in line
