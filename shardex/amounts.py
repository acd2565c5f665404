"""The one parser of decimal strings at the edge (prices, quantities, amounts, budgets).

Only plain ASCII decimals are money: ``12``, ``12.50``, and ``-12.5`` where the caller says a
sign is meaningful. ``Decimal()`` (and a regex with ``\\d``) also takes ``+5``, ``1e2``, ``.5``,
``5.``, blanks, ``_`` and any Unicode digit (``١٢`` is 12); each of those was accepted as an
amount somewhere, so each parser of the code base now calls ``parse_decimal`` instead.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

MAX_LEN = 64  # longer is no amount anybody means (and is refused before any arithmetic)
_PLAIN = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # [0-9], not \d: ASCII digits only
RULE = "ASCII digits with an optional single '.' (e.g. 12 or 12.50)"


def parse_decimal(text: Any, *, signed: bool = False) -> Decimal | None:
    """``text`` as an exact ``Decimal``, or None when it is not a plain ASCII decimal string
    (``signed``: a leading '-' is allowed, for callers where a negative value has a meaning or
    a more precise range reject of its own)."""
    if type(text) is not str or not 0 < len(text) <= MAX_LEN or not _PLAIN.fullmatch(text):
        return None
    if text[0] == "-" and not signed:
        return None
    return Decimal(text)


def plain(value: Decimal | int) -> str:
    """A ``Decimal`` or int as the string ``parse_decimal`` takes back (never an exponent:
    ``str(Decimal("1E+2"))`` is ``"1E+2"``)."""
    return format(value, "f")


def at_precision(value: Decimal, unit: Decimal) -> str:
    """``value`` with exactly as many decimals as ``unit`` has (an asset's precision), so a
    column of one asset's balances lines up (``10`` and ``30.0075`` USD at unit 0.000001 →
    ``10.000000`` and ``30.007500``); exact: a value finer than ``unit`` keeps its digits."""
    places = max(0, -unit.normalize().as_tuple().exponent)
    q = value.quantize(Decimal(1).scaleb(-places)) if value.is_finite() else value
    return plain(q if q == value else value)
