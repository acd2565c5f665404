"""The placement map's side of a move: recorded as in progress, then the pair pinned to its new
shard, in the placement store (compare-and-set), on every account shard (``OP_PLACE``,
journaled there: their new orders and amends of the pair go to the new shard from then on) and
on every engine shard (``OP_PLACE``: the shards' HELLOs carry the newer map to the routers,
which route the pair there from then on).

``begun`` and ``finished`` are pure (the next map from the current one); ``MapPublisher``
applies them: to the store when there is one (``shardex.placement.store``: Redis next to the
leases, or the data dir), and to the shards, which take only a newer map than theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from shardex.placement.core import PlacementMap
from shardex.placement.store import Store
from shardex.tools.shard_ask import ask, ask_account
from shardex.wire.protocol import OP_PLACE

_RACES = 5  # compare-and-set attempts (a loser reloads the winner's map and applies again)


def begun(base: PlacementMap, symbol: str, source: int, target: int) -> PlacementMap:
    """``base`` with the move of ``symbol`` recorded as in progress (``base`` if it is)."""
    if base.moving.get(symbol) == (source, target):
        return base
    return base.with_moving({**base.moving, symbol: (source, target)})


def finished(base: PlacementMap, symbol: str, target: int) -> PlacementMap:
    """``base`` with ``symbol`` pinned to ``target`` and its move no longer in progress
    (``base`` itself when it already says so: a re-run publishes nothing new)."""
    if base.pins.get(symbol) == target and symbol not in base.moving:
        return base
    moving = {s: m for s, m in base.moving.items() if s != symbol}
    return PlacementMap(base.version + 1, base.shards, {**base.pins, symbol: target}, moving)


def newest(maps: list[Any]) -> PlacementMap | None:
    """The newest of the shards' maps (``OP_PAIR``'s ``placement``; None where a shard gave
    none or one that does not parse)."""
    best = None
    for wire in maps:
        try:
            m = PlacementMap.from_wire(wire)
        except (ValueError, TypeError):
            continue
        if best is None or m.version > best.version:
            best = m
    return best


class MapPublisher:
    """Applies a move's map changes to ``store`` (None: none) and the engine shards."""

    def __init__(self, client: Any, shards: int, store: Store | None = None) -> None:
        self.client = client
        self.shards = shards
        self.store = store

    async def apply(self, seen: PlacementMap | None, change: Any, first: int = 0,
                    accounts: int = 0) -> PlacementMap | None:  # fmt: skip
        """``change(map) -> map`` over the newest map known (the store's, or ``seen``: the
        shards' newest), stored and sent to account shards ``0..accounts-1`` (together), then
        to every engine shard (together, shard ``first`` first: its HELLO is the one routers
        learn the map from soonest); the map now in force. Account shards first: once routers
        send the pair's cancels to the new shard, its new orders and amends go there too."""
        new = None
        for _ in range(_RACES):
            stored = self.store.load() if self.store is not None else None
            base = stored if stored is not None and (seen is None or stored.version
                                                     >= seen.version) else seen  # fmt: skip
            if base is None:
                return None
            new = change(base)
            if new is stored or self.store is None:
                break
            if self.store.compare_and_set(None if stored is None else stored.version, new):
                break
        else:
            raise RuntimeError("the placement store changed under the mover 5 times")
        if new is not None:
            wire = (OP_PLACE, new.to_wire())
            await _all(ask_account(self.client, j, wire) for j in range(accounts))
            order = sorted(range(self.shards), key=lambda i: i != first)
            await _all(ask(self.client, i, wire) for i in order)
        return new


async def _all(asks: Iterable[Awaitable[Any]]) -> None:
    """Await ``asks`` together (one round trip for all, not one each: the publish is inside
    the moved pair's pause); the first ``MoveError`` once every one has answered."""
    for res in await asyncio.gather(*asks, return_exceptions=True):
        if isinstance(res, BaseException):
            raise res
