"""Every error text rewritten to nonsense at the point an error is made (``ErrorText``'s
constructor), codes and data untouched: conftest's ``scramble`` fixture, for the tests that
check that decisions read the code, never the text (tests/process/test_codes_decisions.py,
tests/chaos/test_codes_restart.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shardex.wire.errors import ErrorText

NONSENSE = "lorem ipsum"


def rewrite_error_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Rewrite the text of every error made from now on (codes and data untouched), until
    ``monkeypatch`` undoes it; the list gets each original text as it is rewritten."""
    originals: list[str] = []
    new = ErrorText.__new__

    def nonsense(cls: type, code: int, text: str, data: Any = None) -> ErrorText:
        originals.append(text)
        return new(cls, code, f"{NONSENSE} {len(originals)}", data)  # type: ignore[arg-type]

    monkeypatch.setattr(ErrorText, "__new__", staticmethod(nonsense))
    return originals
