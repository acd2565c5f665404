"""The placement map: pair -> engine shard, versioned, stored, rebuildable from the journals.

``core`` (pure): ``PlacementMap``, ``default_owner`` (rendezvous hashing), ``initial``.
``store``: ``DirStore`` (the data dir) and ``RedisStore`` (next to the leases), both with
``load()`` and ``compare_and_set(old_version, new)``.
``rebuild`` (pure over a scan): ``placed(dirs)`` and ``rebuild(base, shards, found)``.
docs/placement.md says it for operators.
"""

from shardex.placement.core import PlacementMap, default_owner, initial
from shardex.placement.rebuild import RebuildError, placed, rebuild
from shardex.placement.store import DirStore, RedisStore, StoreError

__all__ = [
    "DirStore",
    "PlacementMap",
    "RebuildError",
    "RedisStore",
    "StoreError",
    "default_owner",
    "initial",
    "placed",
    "rebuild",
]
