"""``conftest.require``: a test that cannot run here is skipped with its reason, or fails when
``SHARDEX_TESTS_STRICT=1`` asks that nothing be skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STRICT_ENV, require


def test_require_skips_with_the_reason_by_default(monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    require(True, "never said")  # a condition that holds: the test goes on
    with pytest.raises(pytest.skip.Exception, match="needs a widget"):
        require(False, "needs a widget")


def test_require_fails_instead_when_strict(monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")
    require(1, "never said")
    with pytest.raises(pytest.fail.Exception, match=r"needs a widget \(SHARDEX_TESTS_STRICT=1"):
        require(None, "needs a widget")
    monkeypatch.setenv(STRICT_ENV, "0")  # only "1" is strict
    with pytest.raises(pytest.skip.Exception):
        require(False, "needs a widget")


# Probes for the strict-mode test below: collected only by its own pytest run (named probe_*).
@pytest.mark.skipif(True, reason="a box without a widget")
def probe_a_marked_skip() -> None:
    raise AssertionError("never runs")


def probe_a_skip_call() -> None:
    pytest.skip("no widget here")


def probe_a_pass() -> None:
    pass


@pytest.mark.parametrize("strict", ["0", "1"])
def test_strict_mode_turns_every_kind_of_skip_into_a_failure(strict: str) -> None:
    """A ``skipif`` mark and a ``pytest.skip`` call, not only ``require``: with
    ``SHARDEX_TESTS_STRICT=1`` both fail the run with their reason; without it both are
    skipped."""
    env = {**os.environ, STRICT_ENV: strict}
    env.pop("CI", None)  # (no seed header needed here)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-o", "python_functions=probe_*", "-rA", __file__],
        capture_output=True, text=True, timeout=120, env=env,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    tail = out.stdout.strip().splitlines()[-1]
    if strict == "1":
        # (a skip in setup, as a skipif mark's, fails as an error: either fails the run)
        assert out.returncode == 1 and "1 failed, 1 passed, 1 error" in tail, out.stdout[-2000:]
        assert "asks that nothing be: a box without a widget" in out.stdout
        assert "asks that nothing be: no widget here" in out.stdout
    else:
        assert out.returncode == 0 and "1 passed, 2 skipped" in tail, out.stdout[-2000:]
