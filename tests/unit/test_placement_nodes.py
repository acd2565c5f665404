"""The placement map inside the router and the engine shard core (in-process): the router takes
the newest map a shard's HELLO carries and routes by it, the shard serves the pairs its map
gives it and refuses the others with their owner and its map's version."""

from __future__ import annotations

from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW, STP_NONE
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.node.router import Router, RouterConfig
from shardex.node.shard_core import ShardCore, check_ownership
from shardex.placement import initial
from shardex.wire.protocol import OP_HELLO, decode_reply, encode_request, packb

V1 = initial(2).with_pin("BTC-USD", 1)  # (BTC-USD's default under 2 shards is 0)


def _hello(shard: int, placement: object) -> list[bytes]:
    info = {"shard": shard, "shards": 2, "pid": 10 + shard, "placement": placement}
    return [f"shard-{shard}".encode(), b"", b"HELLO", packb((OP_HELLO, info))]


def test_the_router_routes_by_the_newest_map_a_hello_carries() -> None:
    r = Router(2, RouterConfig(2, "", ""))
    assert r.shard_index_for(b"BTC-USD") == 0  # the map without pins: the default
    r.from_shard(_hello(0, V1.to_wire()), 0.0)
    assert r.placement == V1 and r.shard_index_for(b"BTC-USD") == 1  # (the cache was cleared)
    r.from_shard(_hello(1, initial(2).to_wire()), 0.1)  # an older map: ignored
    r.from_shard(_hello(1, {"version": 9, "shards": 2, "pins": {"X": 7}}), 0.2)  # malformed
    assert r.placement == V1 and r.shard_index_for(b"BTC-USD") == 1
    assert r.info(0.3)["placement"] == V1.to_wire()
    assert "placement" not in r.info(0.3)["topology"][0]  # (once, not per shard)
    assert {t["shard"] for t in r.info(0.3)["topology"]} == {0, 1}  # both registered


def _order(symbol: str, oid: str) -> tuple:
    return (OP_NEW, symbol, oid, "alice", BUY, LIMIT, 100, 1, GTC, False, STP_NONE)


def test_a_shard_serves_its_map_and_refuses_the_rest_with_owner_and_version() -> None:
    core = ShardCore(0, 2, DEFAULT_MARKETS)
    core.set_placement(V1)
    out: list = []
    _, (btc, ada) = decode_reply(core.handle(
        encode_request([_order("BTC-USD", "b1"), _order("ADA-USD", "a1")]), out, {}))  # fmt: skip
    assert btc[0][0] == 3 and btc[0][-1] == 11  # rejected, wrong_shard
    assert "belongs to shard 1, not 0 (placement v1)" in btc[0][-2]
    assert ada[0][0] == 0, ada  # ADA-USD stays shard 0's: accepted
    core.set_placement(initial(2))  # an older version: ignored
    assert core.owner("BTC-USD") == 1
    check_ownership(core.engine, 0, 2, "shard-0", V1)  # it holds ADA-USD only: fine
