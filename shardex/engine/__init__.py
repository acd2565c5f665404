"""Pure matching engine: no sockets, no clock, no I/O. See ``engine.py`` for the contract.

Two builds of the same sources: the interpreted one (the reference, always there) and the
mypyc-compiled one (with the account core's), made once by ``shardex up`` or
``python -m shardex.engine.build`` into a cache directory keyed by a hash of these sources;
``shardex.compiled`` decides which is imported (``SHARDEX_ENGINE``: auto, interpreted,
compiled). ``implementation()`` says which one runs.
"""

from __future__ import annotations

from shardex import compiled as _compiled

# what the compiled build holds of this package (shardex.compiled names the build's sources)
SOURCES = _compiled.PACKAGES["engine"]
source_key = _compiled.source_key
cache_dir = _compiled.cache_dir
_IMPL = _compiled.activate("engine", __path__)  # noqa: F821 - a package's __path__


def implementation() -> str:
    """``"compiled"`` (the mypyc build of these sources) or ``"interpreted"``."""
    return _IMPL


from shardex.engine.codes import *  # noqa: E402,F403 - the codes are this package's vocabulary
from shardex.engine.engine import Engine  # noqa: E402
from shardex.engine.markets import DEFAULT_MARKETS, Market, MarketError  # noqa: E402

__all__ = ["DEFAULT_MARKETS", "Engine", "Market", "MarketError", "implementation"]
