"""How deep the suite's randomized tests go: ``SHARDEX_TEST_DEPTH`` (default 1) scales every
property test's example count and the simulator's seed sweep.

README's test command must stay a few minutes on 2 cores, so the default counts are the ones
that catch a regression on most runs (CI draws a new hypothesis seed every run, so coverage
adds up across runs); a change to the engine, the account core or the wire deserves a deeper
run before it lands: ``SHARDEX_TEST_DEPTH=4 bash tests/run.sh tests/unit`` (docs/test-suite.md).
"""

from __future__ import annotations

import os


def _depth() -> float:
    raw = os.environ.get("SHARDEX_TEST_DEPTH", "1")
    try:
        depth = float(raw)
    except ValueError:
        depth = -1.0
    if not 0 < depth <= 1000:
        raise ValueError(f"SHARDEX_TEST_DEPTH={raw!r}: expected a number > 0 (1 is the default)")
    return depth


DEPTH = _depth()


def examples(n: int) -> int:
    """A property test's ``max_examples``: ``n`` at the default depth, scaled (at least 1)."""
    return max(1, round(n * DEPTH))


def count(n: int, multiple: int = 1) -> int:
    """A sweep's size (seeds, rounds): ``n`` scaled, rounded up to a multiple of ``multiple``."""
    scaled = max(multiple, round(n * DEPTH))
    return -(-scaled // multiple) * multiple
