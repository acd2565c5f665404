"""Pure matching engine: no sockets, no clock, no I/O. See ``engine.py`` for the contract."""

from shardex.engine.codes import *  # noqa: F403 - the codes are this package's vocabulary
from shardex.engine.engine import Engine
from shardex.engine.markets import DEFAULT_MARKETS, Market, MarketError

__all__ = ["DEFAULT_MARKETS", "Engine", "Market", "MarketError"]
