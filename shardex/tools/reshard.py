"""``shardex reshard --shards N``'s coordinator: the plan (``shardex.placement.reshard``) carried
out one pair at a time by the live mover (``shardex.tools.mover.move_pair``).

The plan is made from the newest map the cluster knows (the placement store's, or the one the
router routes by), so a reshard killed at any point is run again and continues: a move the map
records as in progress is finished first, every step of a move is decided from what the shards
say now, and pairs already where they belong are not touched. One move at a time keeps each
pair's pause short and the rest of the cluster serving.

Shard processes: on a cluster ``shardex up`` supervises (``sup``), growing past the running
count first starts the new shard processes (with the account tier the supervisor also restarts
the account shards and routers, which link to the engine shards at start) and shrinking stops
the emptied ones after the moves (with the account tier once they settled with every account
shard, then restarting the account shards and routers: ``shardex.tools.scale``); with
``--replicas 2`` the supervisor starts and stops both processes of a shard. Elsewhere (honcho,
systemd) the process count changes with a restart, and ``reshard`` spreads the pairs over N
of the R running processes, emptied shards staying up, idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shardex.client import AsyncClient
from shardex.placement.core import PlacementMap
from shardex.placement.reshard import ReshardError, ReshardPlan, describe, plan
from shardex.placement.scale import grown
from shardex.placement.store import DirStore, Store
from shardex.tools import scale
from shardex.tools.move_map import newest
from shardex.tools.mover import MoveError, move_pair

Say = Callable[[str], None]


async def current(client: AsyncClient, store: Store | None) -> tuple[PlacementMap, list[str]]:
    """The newest map (the store's or the router's) and the cluster's pairs."""
    await client._ready(markets=True)  # (the SDK's connection set-up, and the market table)
    info = await client.topology()
    found = [info.get("placement") if isinstance(info, dict) else None]
    if store is not None:
        stored = store.load()
        found.append(None if stored is None else stored.to_wire())
    pmap = newest(found)
    if pmap is None:
        raise MoveError("the router did not say which placement map it routes by")
    return pmap, sorted(client.markets)


async def reshard(
    client: AsyncClient, n: int, say: Say = print, store: Store | None = None,
    dry_run: bool = False, sup: scale.Supervised | None = None,
) -> ReshardPlan:  # fmt: skip
    """Place every pair at its default over ``n`` shards, one live move at a time, saying each
    step; with ``sup`` (the ``shardex up`` running the cluster) start or stop shard processes
    to run ``n`` of them. The plan it carried out (``dry_run``: only said)."""
    if sup is not None and store is None:
        store = DirStore(sup.data_dir)
    pmap, symbols = await current(client, store)
    running = sup.shards if sup is not None else pmap.shards
    # (a map already over n with fewer processes: a grow stopped before the supervisor's step;
    # with the account tier only under shardex up, which restarts what links to the shards)
    grow = n > pmap.shards or sup is not None and running < n
    if grow and (sup is not None or not client.accounts):
        if sup is None:
            raise ReshardError(scale.not_supervised(n, pmap.shards))
        if dry_run:
            say(f"would start engine shard processes {running}..{n - 1}, then:")
            pmap = grown(pmap, symbols, n)
        else:
            await scale.grow(client, sup, pmap, symbols, n, say)
            pmap, symbols = await current(client, store)
    elif sup is not None and not dry_run:
        # (a grow killed after its request: the supervisor started the shards, which may still
        # be recovering; the moves wait for them as the grow would have. The router serves
        # the map's count: below the processes' after a shrink killed before its stop.)
        # (with the account tier the routers' and account shards' count is the processes':
        # they are restarted with it)
        serving = running if client.accounts else min(running, pmap.shards)
        await scale.registered(client, serving, say)
        if client.accounts:
            await scale.relinked(client, serving, set(), say)
    p = plan(pmap, symbols, n)
    for line in describe(p):
        say(line)
    shrinking = sup is not None and n < running
    if dry_run:
        if shrinking:
            say(f"then would stop engine shard processes {n}..{running - 1}")
        return p
    if p.moves:
        await _moves(client, p, store, say)
    if shrinking:
        assert sup is not None
        pmap, symbols = await current(client, store)
        await scale.shrink(client, sup, pmap, symbols, n, say)
    return p


async def _moves(client: AsyncClient, p: ReshardPlan, store: Store | None, say: Say) -> None:
    """The plan's moves, one at a time, with a progress line each."""
    t0 = time.perf_counter()
    total = len(p.moves)
    for k, m in enumerate(p.moves, 1):
        say(f"[{k}/{total}] {m.symbol}: shard {m.source} -> shard {m.target}")
        await move_pair(client, m.symbol, m.target, say=lambda line: say(f"    {line}"),
                        store=store, shards=p.processes)  # fmt: skip
    idle = ", ".join(map(str, p.emptied)) or "none"
    say(f"resharded to {p.shards} shard(s): {total} move(s) in {time.perf_counter() - t0:.1f} s; "
        f"shards holding no pair: {idle}")


def after_plan(p: ReshardPlan) -> dict[str, Any]:
    """The plan as plain data (``--json``)."""
    return {
        "shards": p.shards,
        "processes": p.processes,
        "version": p.version,
        "moves": [{"symbol": m.symbol, "from": m.source, "to": m.target, "resumed": m.resumed}
                  for m in p.moves],  # fmt: skip
        "after": {i: list(pairs) for i, pairs in enumerate(p.after)},
        "emptied": p.emptied,
    }
