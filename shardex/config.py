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
from pathlib import Path
from typing import Any

from shardex.engine.markets import DEFAULT_MARKETS, Market, MarketError, markets_from_table


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
