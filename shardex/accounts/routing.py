"""Where an account shard forwards each pair's orders: a journaled placement map (pure).

An account shard forwards new orders and amends to the engine shard that owns their pair. When
a pair moves (``shardex move``), that owner changes on a running cluster, so the map the shard
routes by is state, not configuration: it changes only by the journaled command
``(A_PLACE, map)`` (``map``: ``PlacementMap.to_wire()``), applied between two commands like
any other, so a replay of the journal (recovery, a standby, the simulator, a forward re-send
regenerated from the journal) forwards each order exactly where the live shard did.

* A map applies when the machine holds none journaled yet, or when it is newer (a higher
  version) than the one it holds; an older or equal one changes nothing (a re-run mover, a
  second start with the same stored map). A newer map may be over another engine shard count
  (``shardex reshard`` growing the engine tier: the grown map pins every pair where it is);
  the holder's count (``engines``) follows the map it routes by. The node refuses a live map
  over more engine shards than it has links to before anything is journaled
  (``node.account_routing``), so every map a journal holds was routed by.
* ``A_PLACE`` emits no event and takes no seq (it is journaled at the seq of the command it
  precedes, as ``OP_TIME`` is): the balance events and the forward chains are untouched.
* Until the first ``A_PLACE`` the machine routes by the configured map (what journals written
  before this command were routed by). The node journals the map it started with before its
  first write (``due``), so from then on the journal alone says where every order went, even
  when the stored map has moved on by the time it is replayed.
* Snapshots carry the map (``"placement"``); an older snapshot has none.

The engine shards of a cluster with the account tier check each forward's pair against the
same kind of journaled map (``(OP_PLACE, map)`` in their journal, ``SettledEngine``): a replay
then refuses or accepts each forward as the live shard did, whatever the stored map says now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.accounts.codes import A_PLACE
from shardex.placement.core import PlacementMap

__all__ = ["A_PLACE", "apply_place", "due", "is_place", "place_command", "restore_routing",
           "routing_state"]  # fmt: skip


def place_command(pmap: PlacementMap) -> tuple[int, dict[str, Any]]:
    """The journaled command that makes an account shard route by ``pmap``."""
    return (A_PLACE, pmap.to_wire())


def is_place(cmd: Any, op: int = A_PLACE) -> bool:
    """Whether ``cmd`` is an ``(op, map)`` command (its shape; the map is checked on apply)."""
    return type(cmd) is tuple and len(cmd) == 2 and cmd[0] == op


def parse(wire: Any, engines: int | None) -> PlacementMap | None:
    """The map ``wire`` holds if it is one for ``engines`` engine shards (None: unchecked),
    else None (nothing applies)."""
    try:
        pmap = PlacementMap.from_wire(wire)
    except (ValueError, TypeError):
        return None
    return pmap if engines is None or pmap.shards == engines else None


def newer(machine: Any, pmap: PlacementMap) -> bool:
    """Whether ``pmap`` would change what ``machine`` (an ``AccountMachine``) routes by."""
    held = machine.placement
    return held is None or pmap.version > held.version


def taken(holder: Any, cmd: tuple) -> PlacementMap | None:
    """The map of ``(op, map)`` if it applies to ``holder`` (newer than its ``placement``),
    now held by it, its ``engines`` the map's count; else None. Never raises on input."""
    pmap = parse(cmd[1], None)
    if pmap is None or not newer(holder, pmap):
        return None
    holder.placement = pmap
    holder.engines = pmap.shards
    return pmap


def apply_place(machine: Any, cmd: tuple) -> bool:
    """Apply ``(A_PLACE, map)`` to ``machine``: route by ``map`` from now on when it is newer
    (see the module docstring); whether it applied."""
    pmap = taken(machine, cmd)
    if pmap is not None:
        machine.core.engine_for = pmap.owner
    return pmap is not None


def due(machine: Any, configured: PlacementMap) -> PlacementMap | None:
    """The map the node must journal before its first write: ``configured`` (the map it
    started with) when the journal holds none yet or an older one, else None."""
    return configured if newer(machine, configured) else None


def routing_state(machine: Any) -> dict[str, Any] | None:
    """The journaled map as plain data for a snapshot (None: none journaled yet)."""
    return machine.placement.to_wire() if machine.placement is not None else None


def restored(holder: Any, state: Mapping[str, Any]) -> PlacementMap | None:
    """Install a snapshot's map (``routing_state``) on ``holder`` and return it (None: the
    snapshot has none); ``holder.engines`` becomes its count (the routing the journal after
    the snapshot was written under, until a newer map in it); ValueError for one that does
    not parse."""
    wire = state.get("placement")
    if wire is None:
        return None
    pmap = parse(wire, None)
    if pmap is None:
        raise ValueError("snapshot: its placement map is unusable here")
    holder.placement = pmap
    holder.engines = pmap.shards
    return pmap


def restore_routing(machine: Any, state: Mapping[str, Any]) -> None:
    """Install a snapshot's map on a restored account ``machine`` (``restored``)."""
    pmap = restored(machine, state)
    if pmap is not None:
        machine.core.engine_for = pmap.owner
