"""Binance names for shardex's pairs, and numbers written the way Binance writes them (pure).

The rule: a pair ``BASE-QUOTE`` (one dash, both sides ``A-Z0-9``) is the Binance symbol
``BASEQUOTE`` (``BTC-USD`` is ``BTCUSD``; stream names take it in lower case, ``btcusd``).
Two pairs that would get the same name (``AB-CD`` and ``ABC-D`` are both ``ABCD``) are
*ambiguous*: neither is offered under that name (not in ``exchangeInfo``, and a request naming
it is refused ``-1121 Invalid symbol.`` with a message saying why), since guessing would trade
the wrong pair. A market whose name is not ``BASE-QUOTE`` has no Binance name.

Prices and quantities are decimal strings with ``PLACES`` (8) decimals, as Binance writes them
(``"0.00100000"``; a level removed from the book is ``"0.00000000"``, which clients compare as
a string), or more places when the market's grid is finer. Never a float.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from shardex.engine import Market

PLACES = 8
PAIR_RE = re.compile(r"([A-Z0-9]{1,12})-([A-Z0-9]{1,12})")
ORDER_ID_BITS = 53  # an orderId stays exact in a JavaScript number


@dataclass(frozen=True)
class Pair:
    """One pair under its Binance name: the shardex symbol, its assets, its market."""

    name: str
    symbol: str
    base: str
    quote: str
    market: Market


@dataclass
class SymbolMap:
    """Binance name ↔ shardex pair for a set of markets (``ambiguous``: names refused)."""

    pairs: dict[str, Pair] = field(default_factory=dict)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, markets: Mapping[str, Market]) -> SymbolMap:
        seen: dict[str, list[Pair]] = {}
        for symbol, mk in sorted(markets.items()):
            m = PAIR_RE.fullmatch(symbol)
            if m is None:
                continue
            pair = Pair(m.group(1) + m.group(2), symbol, m.group(1), m.group(2), mk)
            seen.setdefault(pair.name, []).append(pair)
        out = cls()
        for name, pairs in seen.items():
            if len(pairs) == 1:
                out.pairs[name] = pairs[0]
            else:
                out.ambiguous[name] = [p.symbol for p in pairs]
        return out

    def get(self, name: object) -> Pair | str:
        """The pair a request's ``symbol`` names (any case), or why there is none."""
        if type(name) is not str or not name:
            return "Invalid symbol."
        key = name.upper()
        if key in self.ambiguous:
            return (f"Invalid symbol. {key} is ambiguous here (pairs "
                    f"{', '.join(self.ambiguous[key])}): use the shardex API.")  # fmt: skip
        pair = self.pairs.get(key)
        return pair if pair is not None else "Invalid symbol."

    def name_of(self, symbol: str) -> str | None:
        """The Binance name of shardex ``symbol`` (None: it has none, or it is ambiguous)."""
        m = PAIR_RE.fullmatch(symbol)
        name = m.group(1) + m.group(2) if m else None
        return name if name in self.pairs else None


def places(mk: Market) -> int:
    """Decimals a number of this market is written with: 8, or the grid's when finer."""
    exps = [-int(v.as_tuple().exponent) for v in (mk.tick, mk.lot)]
    return max(PLACES, *exps)


def fmt(value: Decimal | str | int | None, n: int = PLACES) -> str:
    """A number as Binance writes it: a plain decimal string with ``n`` places."""
    if value is None:
        return fmt(0, n)
    d = Decimal(value) if not isinstance(value, Decimal) else value
    return f"{d.quantize(Decimal(1).scaleb(-n)):f}"


def amount(value: Decimal) -> str:
    """A balance: ``PLACES`` decimals, or the asset's own when it has more (never rounded)."""
    return fmt(value, max(PLACES, -int(value.as_tuple().exponent)))


def decimal(raw: object) -> Decimal | None:
    """A request's number (a plain decimal string) or None when it is not one."""
    if type(raw) is not str or not raw or len(raw) > 40:
        return None
    if not all(c.isdigit() or c == "." for c in raw):
        return None
    try:
        d = Decimal(raw)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def order_id(client_id: str) -> int:
    """The numeric ``orderId`` of an order, from its client order id (shardex's order id):
    a 53-bit hash, stable across gateways and restarts (``clientOrderId`` is the id itself)."""
    digest = hashlib.sha256(client_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - ORDER_ID_BITS)
