"""The gateway learns a pair listed at runtime: its periodic look at the cluster's shards
(``Hub.discover``, whose shard count also learns the shards' market tables into the one table
the gateway shares) starts reading the pair's trades stream (from its top), a WebSocket
request may name it, and the market list (REST and the ``markets`` op) shows it."""

from __future__ import annotations

import asyncio
import json

from shardex.accounts.assets import AssetTable
from shardex.client.market_data import MarketData
from shardex.engine import DEFAULT_MARKETS
from shardex.gateway.hub import Hub
from shardex.gateway.messages import parse
from shardex.gateway.server import Gateway, GatewayConfig
from shardex.wire.listed import learn_tables, shard_tables

NEW = "AAPL-USD"
TABLE = {NEW: ["0.01", "0.001", "100000", "1000000000"]}


class _Redis:
    """Empty streams: the positions the hub starts from are the streams' tops (none)."""

    async def xrevrange(self, *args, **kwargs) -> list:
        return []


async def _no_book(symbol: str, depth: int) -> dict:
    raise AssertionError("no book is read here")


def test_a_listed_pair_joins_the_streams_the_requests_and_the_market_list() -> None:
    markets = {"BTC-USD": DEFAULT_MARKETS["BTC-USD"]}
    listed: list = []

    async def shards() -> int:
        topology = {"topology": [{"markets": dict(listed and TABLE)}]}
        learn_tables(markets, AssetTable(markets), shard_tables(topology))
        return 1

    hub = Hub(_Redis(), _no_book, markets, shards=shards)
    cfg = GatewayConfig("127.0.0.1", 1, "redis://unused", "tcp://unused", markets)
    gw = Gateway(cfg, hub, MarketData(r=_Redis(), markets=markets))
    asyncio.run(hub.start_positions())
    assert set(hub.pos) == {"shardex:trades:BTC-USD", "shardex:events:0"}
    assert [m["symbol"] for m in json.loads(gw.markets_frame)["markets"]] == ["BTC-USD"]
    listed.append(1)  # the pair is listed: the next look learns it
    asyncio.run(hub.discover())
    assert hub.pos["shardex:trades:" + NEW] == "0-0"
    assert [m["symbol"] for m in json.loads(gw.markets_frame)["markets"]] == [NEW, "BTC-USD"]
    req = parse(json.dumps({"op": "subscribe", "channel": "trades", "symbol": NEW}), markets)
    assert req.symbol == NEW
