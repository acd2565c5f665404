"""``shardex market add --shard I``: pin a pair about to be listed to engine shard I.

The placement map decides which engine shard owns a symbol (``shardex.placement``: rendezvous
hashing over the shards, unless pinned). Before the listing, the new symbol is pinned to the
chosen shard the way a move's last step pins a pair: the next map version is recorded in the
placement store (when given: the data dir's ``placement.json`` or Redis, so a restart keeps
it) and sent (``OP_PLACE``) to every account shard and engine shard, shard I first. The pin is
refused for a symbol already listed on another shard (its book would be cut off from its
routing: that is a move, ``shardex move``). A pin whose listing is then refused by the account
tier stays in the map, harmless: it routes a symbol nobody trades, and a later listing of the
symbol goes to the shard asked for.
"""

from __future__ import annotations

from typing import Any

from shardex.placement.core import PlacementMap, initial
from shardex.placement.store import Store
from shardex.tools.move_map import MapPublisher, finished


async def pin_new_pair(client: Any, symbol: str, shard: int, store: Store | None = None
                       ) -> PlacementMap | None:  # fmt: skip
    """Pin ``symbol`` to engine shard ``shard`` before it is listed; the map now in force.
    ValueError for a shard out of range or a symbol already listed on another shard."""
    topo = await client.topology()
    shards = len(topo.get("topology") or ())
    if not 0 <= shard < shards:
        raise ValueError(f"--shard {shard}: the cluster has engine shards 0..{shards - 1}")
    where = (await client.market_rules()).get(symbol)
    if where is not None and where["shard"] != shard:
        raise ValueError(f"{symbol} is already listed on shard {where['shard']}: move it "
                         f"with `shardex move {symbol} --to {shard}`")  # fmt: skip
    try:
        seen = PlacementMap.from_wire(topo.get("placement"))
    except ValueError:
        seen = initial(shards)
    maps = MapPublisher(client, shards, store)
    return await maps.apply(seen, lambda b: finished(b, symbol, shard), first=shard,
                            accounts=client.accounts or 0)  # fmt: skip
