"""``conftest.require``: a test that cannot run here is skipped with its reason, or fails when
``SHARDEX_TESTS_STRICT=1`` asks that nothing be skipped."""

from __future__ import annotations

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
