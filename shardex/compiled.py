"""Which build of the pure cores runs: the interpreted sources or their mypyc build.

The matching engine (``shardex.engine``) and the account core (``shardex.accounts``) are pure
Python, and they are the reference. The same sources compiled by mypyc run the engine 1.5-2x
faster. One build holds the modules listed in ``PACKAGES``, in a cache directory named by a
hash of exactly those sources (``source_key``), the interpreter's ABI and the machine, so a
stale build can never run with newer sources: an edit to any of them names a new directory.
``shardex.engine.build`` makes it (``shardex up`` runs it once, before starting the shards,
when no build of these sources exists).

``SHARDEX_ENGINE`` chooses for both packages: ``auto`` (default: the build if a complete one
of these sources exists), ``interpreted`` (never the build, and ``shardex up`` makes none), or
``compiled`` (an ImportError when there is no matching build). ``SHARDEX_ENGINE_CACHE`` moves
the cache; ``SHARDEX_ENGINE_BUILD=off`` stops ``shardex up`` from building (the tests set it:
a build is a minute of CPU).

No imports from the rest of shardex here: both packages' ``__init__`` call ``activate``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The modules of each package that the build holds (the rest of the package stays interpreted
# and is imported from its .py files as always). The account core is wired in (its package
# activates the build like the engine's) but holds no module: compiled, its classes (mixins of
# AccountCore over one Ledger, which mypyc can only build as plain Python classes) ran no
# faster than interpreted (docs/performance.md, "Compiled account core"); a module listed
# here is compiled, loaded and checked byte for byte by tests/process/test_engine_compiled.py.
PACKAGES: dict[str, tuple[str, ...]] = {
    "engine": ("codes.py", "markets.py", "book.py", "moves.py", "admin.py", "expiry.py",
               "listing.py", "stops.py", "state.py", "engine.py", "perps.py", "positions.py",
               "funding.py", "adl.py", "liqindex.py", "liquidation.py"),
    "accounts": (),
}
MODES = ("auto", "interpreted", "compiled")
_ROOT = Path(__file__).resolve().parent


def files() -> list[str]:
    """The compiled sources, as paths relative to the directory holding ``shardex``."""
    return [f"shardex/{pkg}/{name}" for pkg, names in PACKAGES.items() for name in names]


def source_key() -> str:
    """Hash of the compiled sources, the interpreter's ABI tag and the machine: names a build."""
    h = hashlib.sha256(f"{sys.implementation.cache_tag} {os.uname().machine}".encode())
    for rel in files():
        h.update(rel.encode() + b"\0" + (_ROOT.parent / rel).read_bytes() + b"\0")
    return h.hexdigest()[:24]


def cache_root() -> Path:
    """The directory holding one build per source key."""
    env = os.environ.get("SHARDEX_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "shardex" / "engine"


def cache_dir() -> Path:
    """Where the build of these exact sources lives (it may not exist)."""
    return cache_root() / source_key()


def mode() -> str:
    """``SHARDEX_ENGINE``, checked: a typo must not silently mean ``auto``."""
    m = os.environ.get("SHARDEX_ENGINE", "auto")
    if m not in MODES:
        raise ImportError(f"SHARDEX_ENGINE={m!r}: expected auto, interpreted or compiled")
    return m


def complete() -> bool:
    """A finished build of these sources is in the cache (every module, and its marker last)."""
    top = cache_dir()
    if not (top / "COMPLETE").is_file():
        return False
    suffix = EXTENSION_SUFFIXES[0]
    return all((top / rel).with_suffix("").with_name(Path(rel).stem + suffix).is_file()
               for rel in files())  # fmt: skip


def activate(package: str, path: list[str]) -> str:
    """Put the build's modules of ``shardex.<package>`` ahead of its .py files when the mode
    allows and a complete build exists; ``"compiled"`` or ``"interpreted"``. ``path`` is the
    package's ``__path__``: the build's extension modules shadow the .py files of the same
    name, its shared runtime library is a top-level module of the cache directory."""
    m = mode()
    if m != "interpreted" and PACKAGES[package]:
        if complete():
            top = str(cache_dir())
            if top not in sys.path:
                sys.path.append(top)
            path.insert(0, os.path.join(top, "shardex", package))
            return "compiled"
        if m == "compiled":
            raise ImportError(
                f"SHARDEX_ENGINE=compiled but no build of these sources in {cache_dir()} "
                "(run: python -m shardex.engine.build)"
            )
    return "interpreted"
