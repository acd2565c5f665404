"""Pure matching engine: no sockets, no clock, no I/O. See ``engine.py`` for the contract.

Two builds of the same sources: the interpreted one (the reference, always there) and an
optional mypyc-compiled one, made by ``python -m shardex.engine.build`` into a cache directory
keyed by a hash of these sources (``source_key``). The compiled build is used only when its key
matches the sources being imported, so a stale build can never run with newer sources.
``SHARDEX_ENGINE`` chooses: ``auto`` (default: compiled if a matching build exists),
``interpreted``, or ``compiled`` (an ImportError when there is no matching build).
``implementation()`` says which one runs.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# what the compiled build holds
SOURCES = ("codes.py", "markets.py", "book.py", "state.py", "engine.py")
_HERE = Path(__file__).resolve().parent


def source_key() -> str:
    """Hash of the engine sources, the interpreter's ABI tag and the machine: names a build."""
    h = hashlib.sha256(f"{sys.implementation.cache_tag} {os.uname().machine}".encode())
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (_HERE / name).read_bytes() + b"\0")
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """Where the compiled build of these exact sources lives (it may not exist)."""
    root = os.environ.get("SHARDEX_ENGINE_CACHE") or Path.home() / ".cache" / "shardex" / "engine"
    return Path(root) / source_key()


def _compiled_dir() -> Path | None:
    d = cache_dir() / "shardex" / "engine"
    ok = all((d / f"{n[:-3]}{EXTENSION_SUFFIXES[0]}").is_file() for n in SOURCES)
    return d if ok and (cache_dir() / "COMPLETE").is_file() else None


_MODE = os.environ.get("SHARDEX_ENGINE", "auto")
_IMPL = "interpreted"
if _MODE not in ("auto", "interpreted", "compiled"):
    raise ImportError(f"SHARDEX_ENGINE={_MODE!r}: expected auto, interpreted or compiled")
if _MODE != "interpreted":
    _dir = _compiled_dir()
    if _dir is not None:
        # The build's submodules shadow the .py files of this package; its shared runtime
        # library is a top-level module of the cache directory.
        sys.path.append(str(_dir.parent.parent))
        __path__.insert(0, str(_dir))  # noqa: F821 - a package's __path__
        _IMPL = "compiled"
    elif _MODE == "compiled":
        raise ImportError(
            f"SHARDEX_ENGINE=compiled but no build of these sources in {cache_dir()} "
            "(run: python -m shardex.engine.build)"
        )


def implementation() -> str:
    """``"compiled"`` (the mypyc build of these sources) or ``"interpreted"``."""
    return _IMPL


from shardex.engine.codes import *  # noqa: E402,F403 - the codes are this package's vocabulary
from shardex.engine.engine import Engine  # noqa: E402
from shardex.engine.markets import DEFAULT_MARKETS, Market, MarketError  # noqa: E402

__all__ = ["DEFAULT_MARKETS", "Engine", "Market", "MarketError", "implementation"]
