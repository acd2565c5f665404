"""Configuration read from files: the markets TOML (``--markets FILE``).

File reading lives here, outside ``shardex/engine`` (which stays pure: no I/O). The engine takes a
ready market table; this module turns a file into one.

File format::

    [markets.AAPL-USD]
    tick = "0.01"
    lot = "1"
    max_price = "100000"   # optional, default 1000000
    max_qty = "1000000"    # optional, default 1000000000
    min_qty = "10"         # optional, default 0 (one lot): smaller new orders are refused

and, optionally, the fee schedule of the account tier (``shardex.accounts.fees``)::

    [fees.tiers.base]      # tiers in rank order: the first is the default
    maker = 2              # basis points; a negative maker rate is a rebate
    taker = 5
    [fees.tiers.vip]
    maker = -1
    taker = 4
    volume = { asset = "USD", min = "1000000" }   # 30-day volume that earns it
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.accounts.fees import FeeSchedule
from shardex.engine.markets import DEFAULT_MARKETS, Market, MarketError, markets_from_table


def read_markets_file(path: str | Path) -> dict[str, Any]:
    """The ``[markets]`` table of a TOML file (MarketError when unreadable or not TOML)."""
    return _read(path).get("markets")


def _read(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise MarketError(f"cannot read markets file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MarketError(f"markets file {path} is not valid TOML: {exc}") from exc
    return data


def load_markets(path: str | Path | None = None) -> dict[str, Market]:
    """The built-in markets, extended (or overridden per symbol) by a TOML file's (a file
    holding only a ``[fees]`` table changes no market)."""
    markets = dict(DEFAULT_MARKETS)
    if path is not None:
        data = _read(path)
        if "markets" in data or "fees" not in data:
            markets.update(markets_from_table(data.get("markets"), f"markets file {path}"))
    return markets


def load_fees(path: str | Path | None, markets: dict[str, Market]) -> FeeSchedule | None:
    """The ``[fees]`` table of a markets file as a checked schedule; None when there is no
    file or no table (the default tier). MarketError naming the file and the entry."""
    if path is None:
        return None
    table = _read(path).get("fees")
    if table is None:
        return None
    try:
        return FeeSchedule.from_table(table, AssetTable(markets))
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise MarketError(f"markets file {path}: {exc}") from exc
