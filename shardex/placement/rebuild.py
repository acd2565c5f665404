"""Rebuild the placement map from what the shards' journals hold (pure over a scan's result).

Each engine shard journals the pairs it owns, so the data dir itself says where every pair is
(``shardex.datadir.scan``: the newest snapshot's books plus the pairs journaled after it). A
data dir written under ``crc32 % N`` (before the map existed), or under another shard count,
becomes a map that pins each pair to the directory that holds it; pairs already at their
default stay unpinned, and pairs no journal holds take the default.

``placed(dirs) -> dict[str, int]``
    pair -> the shard directory that holds it; ``RebuildError`` when two directories hold the
    same pair (two owners: an operator must say which is right).
``rebuild(base, shards, found) -> PlacementMap``
    ``base`` (the stored map, or ``initial(shards)``) brought to ``shards`` shards with every
    pair of ``found`` pinned where it is (only where the default differs). Returns ``base``
    itself when nothing changes (no version step). ``RebuildError`` when a pair sits in a
    directory no shard of ``shards`` reads (a shrink: move it first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from shardex.placement.core import PlacementMap


class RebuildError(Exception):
    """The journals cannot be placed under the requested shard count; the message says why."""


class Holding(Protocol):
    """What a scanned shard directory offers (``shardex.datadir.ShardDir``)."""

    index: int
    pairs: set[str]


def placed(dirs: Iterable[Holding]) -> dict[str, int]:
    """Pair -> the shard directory that holds it (directories with a negative index skipped)."""
    out: dict[str, int] = {}
    for d in dirs:
        if d.index < 0:
            continue
        for symbol in d.pairs:
            other = out.setdefault(symbol, d.index)
            if other != d.index:
                a, b = sorted((other, d.index))
                raise RebuildError(
                    f"{symbol} is held by both shard-{a} and shard-{b}: a pair has one owner; "
                    "keep the directory with its real history and move the other away"
                )
    return out


def rebuild(base: PlacementMap, shards: int, found: Mapping[str, int]) -> PlacementMap:
    """``base`` over ``shards`` shards, each pair of ``found`` pinned to the shard holding it."""
    stranded = sorted(s for s, i in found.items() if i >= shards)
    if stranded:
        names = ", ".join(f"{s} (shard-{found[s]})" for s in stranded[:8])
        more = f" and {len(stranded) - 8} more" if len(stranded) > 8 else ""
        raise RebuildError(
            f"{len(stranded)} pair(s) sit in shard directories that {shards} shard(s) would not "
            f"read: {names}{more}; start with --shards {max(found.values()) + 1} and move them "
            f"to shards 0..{shards - 1} first"
        )
    # pins beyond the new count that hold nothing go back to the default; the journals
    # decide every pair they hold (a pin that disagrees with the data follows the data)
    pins = {s: i for s, i in base.pins.items() if i < shards}
    pins.update((s, i) for s, i in found.items() if s in pins)
    target = PlacementMap(base.version, shards, pins)
    for symbol, index in found.items():
        if target.owner(symbol) != index:
            pins[symbol] = index
    if shards == base.shards and pins == dict(base.pins):
        return base
    return PlacementMap(base.version + 1, shards, pins, base.moving)
