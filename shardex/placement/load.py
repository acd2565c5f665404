"""The placement map a process starts with (I/O: reads the data dir's store).

``map_for(data_dir, shards) -> PlacementMap``
    What a process (engine shard, account shard) routes by: the map stored in
    ``DATA_DIR/placement.json``, else ``initial(shards)`` (no data dir, or none stored yet:
    every process computes the same one). ``PlacementError`` when the stored map is for another
    shard count than the process was started with (it would misroute, so it does not start).

The map a data dir's journals call for is settled before any process starts
(``shardex.datadir.check_shard_count`` → ``settle_placement``: rebuilt from what each
``shard-K`` directory holds, stored with a compare-and-set).
"""

from __future__ import annotations

from pathlib import Path

from shardex.placement.core import PlacementMap, initial
from shardex.placement.store import DirStore, StoreError


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
