"""Configuration read from files: the markets TOML (``--markets FILE``).

File reading lives here, outside ``shardex/engine`` (which stays pure: no I/O). The engine takes a
ready market table; this module turns a file into one.

File format::

    [markets.AAPL-USD]
    tick = "0.01"
    lot = "1"
    max_price = "100000"   # optional, default 1000000
    max_qty = "1000000"    # optional, default 1000000000
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from shardex.engine.markets import DEFAULT_MARKETS, Market, MarketError

MARKET_KEYS = frozenset(("tick", "lot", "max_price", "max_qty"))


def markets_from_table(table: Any, where: str = "markets") -> dict[str, Market]:
    """``{symbol: {tick, lot[, max_price, max_qty]}}`` (decimal strings or numbers) → Markets.

    Pure (no I/O): the parsed ``[markets]`` table of a TOML file, or the same shape from anywhere
    else. ``where`` prefixes every error (e.g. "markets file m.toml"). Belongs in
    ``shardex/engine/markets.py`` beside ``Market``; it is here until that file's owner moves it.
    """
    if not isinstance(table, Mapping) or not table:
        raise MarketError(f"{where}: expected one or more [markets.SYMBOL] tables")
    out: dict[str, Market] = {}
    for symbol, spec in table.items():
        if not isinstance(spec, Mapping):
            raise MarketError(f"{where}: markets.{symbol} must be a table")
        unknown = set(spec) - MARKET_KEYS
        if unknown:
            raise MarketError(f"{where}: markets.{symbol}: unknown keys {sorted(unknown)}")
        try:
            values = {k: Decimal(str(spec[k])) for k in ("tick", "lot") if k in spec}
            if set(values) != {"tick", "lot"}:
                raise MarketError(f"{where}: markets.{symbol} needs tick and lot")
            values["max_price"] = Decimal(str(spec.get("max_price", "1000000")))
            values["max_qty"] = Decimal(str(spec.get("max_qty", "1000000000")))
        except InvalidOperation as exc:
            raise MarketError(f"{where}: markets.{symbol}: bad decimal") from exc
        out[symbol] = Market(symbol, **values)
    return out


def read_markets_file(path: str | Path) -> dict[str, Any]:
    """The ``[markets]`` table of a TOML file (MarketError when unreadable or not TOML)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise MarketError(f"cannot read markets file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MarketError(f"markets file {path} is not valid TOML: {exc}") from exc
    return data.get("markets")


def load_markets(path: str | Path | None = None) -> dict[str, Market]:
    """The built-in markets, extended (or overridden per symbol) by a TOML file's."""
    markets = dict(DEFAULT_MARKETS)
    if path is not None:
        markets.update(markets_from_table(read_markets_file(path), f"markets file {path}"))
    return markets
