"""An account shard's side of a pair move: the mover's ``(OP_PLACE, map)`` (socket-free, like
``account_service``).

The mover (``shardex move``) sends every account shard the map that pins the moved pair to its
new engine shard, after the adoption and before the engine shards get it. The account shard
journals it as ``(A_PLACE, map)`` (``shardex.accounts.routing``), so its new orders and amends
of the pair go to the new owner from that seq on, and a replay of its journal forwards each
order where the live shard did. Sent again, or older than the shard's map, it journals nothing
and answers the version held (every step of a move may be re-run).
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.routing import newer, parse, place_command
from shardex.wire.codes import INVALID, MALFORMED, NOT_ALLOWED
from shardex.wire.errors import read_error


def place_write(h: Any, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
    """``(OP_PLACE, map)`` on account handler ``h`` (admin keys only): ``{"placement":
    version}`` (the version routed by now), or a refusal map; refused before anything is
    journaled."""
    if h.key is not None and h.key.role != "admin":
        return read_error(NOT_ALLOWED, "place: admin keys only")
    machine = h.machine
    wire = cmd[1] if len(cmd) == 2 else None
    pmap = parse(wire, None)
    if pmap is None:
        return read_error(MALFORMED, "place: expected (op, placement map)")
    # (the engine shards this process has links to, opened at its start: a map over more
    # waits for the restart that links them; without the node's count, the map it routes by)
    links = getattr(h, "engine_links", None)
    if links is None:
        links = h.place_due.shards if h.place_due is not None else machine.engines
    if links is not None and pmap.shards != links:
        return read_error(INVALID, f"place: a map of {pmap.shards} engine shards, not "
                          f"{links}")  # fmt: skip
    if newer(machine, pmap):
        h.journal_apply(place_command(pmap), out)
    return {"placement": machine.placement.version}
