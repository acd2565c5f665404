"""The placement map a process starts with (I/O: reads the data dir's store).

``map_for(data_dir, shards) -> PlacementMap``
    What a process (engine shard, account shard) routes by: the map stored in
    ``DATA_DIR/placement.json``, else ``initial(shards)`` (no data dir, or none stored yet:
    every process computes the same one). ``PlacementError`` when the stored map is for another
    shard count than the process was started with (it would misroute, so it does not start).

``settle(data_dir, shards, dirs) -> PlacementMap``
    The map ``shards`` shards must use over ``data_dir``: the stored one (or ``initial``)
    rebuilt from what its scanned ``shard-K`` directories hold (``shardex.datadir.scan``;
    ``shardex.placement.rebuild``), stored with a compare-and-set when it changed. Safe to run
    from every process of a cluster at once: a loser of the race reloads and finds the
    winner's map already right. ``shardex.datadir.check_shard_count`` runs it before any
    process of a cluster starts.
``settled(data_dir, shards) -> bool``
    Whether a map for ``shards`` shards is stored (then nobody needs to scan again).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from shardex.placement.core import PlacementMap, initial
from shardex.placement.rebuild import Holding, RebuildError, placed, rebuild
from shardex.placement.store import DirStore, StoreError

_RACES = 5  # compare-and-set attempts before giving up (each loser reloads the winner's map)


class PlacementError(Exception):
    """The stored map cannot serve this process; the message says what and how to go on."""


def map_for(data_dir: str | Path | None, shards: int) -> PlacementMap:
    """The map stored in ``data_dir`` for ``shards`` shards, else ``initial(shards)``."""
    if not data_dir:
        return initial(shards)
    try:
        stored = DirStore(data_dir).load()
    except StoreError as exc:
        raise PlacementError(str(exc)) from None
    if stored is None:
        return initial(shards)
    if stored.shards != shards:
        raise PlacementError(
            f"{Path(data_dir) / 'placement.json'} places pairs on {stored.shards} shard(s), not "
            f"{shards}: start with --shards {stored.shards}, or let shardex up rebuild the map "
            f"for {shards} from the journals"
        )
    return stored


def settled(data_dir: str | Path, shards: int) -> bool:
    """Whether ``data_dir`` stores a readable map for ``shards`` shards."""
    try:
        stored = DirStore(data_dir).load()
    except StoreError:
        return False
    return stored is not None and stored.shards == shards


def settle(data_dir: str | Path, shards: int, dirs: Iterable[Holding]) -> PlacementMap:
    """The map ``shards`` shards use over ``data_dir``, rebuilt from ``dirs`` and stored."""
    store = DirStore(data_dir)
    try:
        found = placed(dirs)
        for _ in range(_RACES):
            stored = store.load()
            base = stored if stored is not None else initial(shards)
            new = rebuild(base, shards, found)
            if new is stored:
                return new
            if new is base:  # nothing stored and the initial map fits: store it (version 1)
                new = PlacementMap(base.version + 1, shards, base.pins, base.moving)
            if store.compare_and_set(None if stored is None else stored.version, new):
                return new
    except (RebuildError, StoreError) as exc:
        raise PlacementError(str(exc)) from None
    raise PlacementError(f"{store.path}: changed under us {_RACES} times; try again")
