"""The placement map: which engine shard owns each pair, versioned (pure: no I/O, no clock).

API (what routers, shards, clients and the mover use):

``default_owner(symbol, shards) -> int``
    A pair's shard when nothing pins it: rendezvous (highest-random-weight) hashing over shards
    ``0..N-1`` with a stable hash (blake2b, the same in every process and on every host). Growing
    N to N+1 moves only the pairs whose top weight is the new shard's, about 1/(N+1) of them;
    ``crc32 % N`` moved most of them.
``PlacementMap(version, shards, pins, moving)``
    Immutable. ``owner(symbol)`` is the pin, else the default. ``with_pin(symbol, shard)``,
    ``without_pin(symbol)``, ``with_shards(n)`` and ``with_moving(moving)`` return a new map with
    ``version + 1``: a newer version always wins, so a process holding an older map can tell
    it is stale. ``moving`` (symbol -> (from, to)) is a move in progress (the mover fills it;
    ``owner`` still answers ``from`` until the move pins the pair to ``to``).
``to_wire()`` / ``from_wire(obj)``
    Plain dicts of str/int/list (msgpack and JSON alike); ``from_wire`` raises ``ValueError`` on
    anything malformed (a map is read from files, Redis and the network).

Why a map and not a formula: a pair's book lives in one shard's journal, so its owner must
follow the data, not the shard count; a count change or a hot pair's move pins pairs, and only
new pairs take the default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

MAX_SHARDS_HASHED = 4096  # sanity bound of a map read from outside (``from_wire``)
MAX_SYMBOL_BYTES = 64  # the wire's symbol bound; longer keys are never pinned
_CACHE_MAX = 100_000  # owners remembered per map (garbage symbols must not grow memory)


# The hash's key: any constant works for the spread; this one keeps the eight default markets
# where ``crc32 % 2`` put them under two shards (the common lab layout: data dirs, docs and
# examples written before the map keep their places there without a pin).
_SALT = (24104).to_bytes(8, "little")


def _weight(key: bytes, shard: int) -> int:
    """Shard ``shard``'s weight for ``key``: 8 bytes of keyed blake2b over the shard and key."""
    person = shard.to_bytes(16, "little")
    digest = hashlib.blake2b(key, digest_size=8, key=_SALT, person=person).digest()
    return int.from_bytes(digest, "little")


def default_owner(symbol: str | bytes, shards: int) -> int:
    """The shard a pair nothing pins goes to: the shard of highest weight (rendezvous).

    Stable across processes and hosts; adding shard N moves a pair only if N's weight is now
    the highest, so ~1/(N+1) of the pairs move and none moves between old shards.
    """
    if shards <= 1:
        return 0
    key = symbol.encode() if isinstance(symbol, str) else bytes(symbol)
    best, owner = -1, 0
    for i in range(shards):
        w = _weight(key, i)
        if w > best:
            best, owner = w, i
    return owner


@dataclass(frozen=True)
class PlacementMap:
    """Pair -> engine shard, at a version. Pins override the default (``default_owner``)."""

    version: int
    shards: int
    pins: Mapping[str, int] = field(default_factory=dict)
    moving: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    _cache: dict[str | bytes, int] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version < 0:
            raise ValueError("placement: version must be an integer >= 0")
        if type(self.shards) is not int or not 1 <= self.shards <= MAX_SHARDS_HASHED:
            raise ValueError(f"placement: shards must be an integer 1..{MAX_SHARDS_HASHED}")
        for symbol, shard in self.pins.items():
            if type(symbol) is not str or type(shard) is not int or not 0 <= shard < self.shards:
                raise ValueError(f"placement: bad pin {str(symbol)[:32]!r} -> {shard!r}")
        for symbol, pair in self.moving.items():
            if (
                type(symbol) is not str
                or len(pair) != 2
                or not all(type(s) is int and 0 <= s < self.shards for s in pair)
            ):
                raise ValueError(f"placement: bad move {str(symbol)[:32]!r} -> {pair!r}")
        # read-only views: a map is shared between threads and must never change under them
        object.__setattr__(self, "pins", MappingProxyType(dict(self.pins)))
        moving = {s: (int(a), int(b)) for s, (a, b) in self.moving.items()}
        object.__setattr__(self, "moving", MappingProxyType(moving))

    def owner(self, symbol: str | bytes) -> int:
        """The shard that owns ``symbol`` (str or its UTF-8 bytes) under this map."""
        owner = self._cache.get(symbol)
        if owner is None:
            name = symbol.decode(errors="replace") if isinstance(symbol, bytes) else symbol
            owner = self.pins.get(name)
            if owner is None:
                owner = default_owner(symbol, self.shards)
            if len(self._cache) < _CACHE_MAX:
                self._cache[symbol] = owner
        return owner

    def pairs_of(self, symbols: list[str]) -> dict[int, list[str]]:
        """``symbols`` grouped by owner, every shard 0..N-1 present (an empty list if none)."""
        out: dict[int, list[str]] = {i: [] for i in range(self.shards)}
        for symbol in symbols:
            out[self.owner(symbol)].append(symbol)
        return out

    def with_pin(self, symbol: str, shard: int) -> PlacementMap:
        """A new map (version + 1) where ``symbol`` is pinned to ``shard``."""
        return PlacementMap(self.version + 1, self.shards, {**self.pins, symbol: shard},
                            self.moving)  # fmt: skip

    def without_pin(self, symbol: str) -> PlacementMap:
        """A new map (version + 1) where ``symbol`` takes the default again."""
        pins = {s: i for s, i in self.pins.items() if s != symbol}
        return PlacementMap(self.version + 1, self.shards, pins, self.moving)

    def with_shards(self, shards: int) -> PlacementMap:
        """A new map (version + 1) over ``shards`` shards. Pins stay (a pin to a shard that
        would no longer exist is refused: move the pair first)."""
        return PlacementMap(self.version + 1, shards, self.pins, self.moving)

    def with_moving(self, moving: Mapping[str, tuple[int, int]]) -> PlacementMap:
        """A new map (version + 1) whose moves in progress are ``moving``."""
        return PlacementMap(self.version + 1, self.shards, self.pins, moving)

    def to_wire(self) -> dict[str, Any]:
        """Plain data (msgpack- and JSON-able); ``from_wire`` reads it back."""
        return {
            "version": self.version,
            "shards": self.shards,
            "pins": dict(sorted(self.pins.items())),
            "moving": {s: list(p) for s, p in sorted(self.moving.items())},
        }

    @staticmethod
    def from_wire(obj: Any) -> PlacementMap:
        """Inverse of ``to_wire``; ``ValueError`` on anything malformed."""
        if not isinstance(obj, Mapping):
            raise ValueError("placement: expected a map")
        pins = obj.get("pins", {})
        moving = obj.get("moving", {})
        if not isinstance(pins, Mapping) or not isinstance(moving, Mapping):
            raise ValueError("placement: pins and moving must be maps")
        if not all(isinstance(p, list | tuple) for p in moving.values()):
            raise ValueError("placement: a move is a [from, to] pair")
        return PlacementMap(obj.get("version"), obj.get("shards"), dict(pins),
                            {s: tuple(p) for s, p in moving.items()})  # fmt: skip


def initial(shards: int) -> PlacementMap:
    """The map of a cluster that has never stored one: version 0, no pins (every pair at its
    default). Every process computes the same one, so a cluster without any store agrees."""
    return PlacementMap(0, shards)
