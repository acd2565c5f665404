"""The gateway's Binance-compatible subset as Binance users meet it: python-binance (a client
library nobody here wrote) pointed at a real ``shardex up`` cluster's gateway with only its base
URLs changed. Exchange info, depth, an order placed, seen open, queried and cancelled, a trade
between two API keys and both balances after it, Binance's error codes; and python-binance's
own ``DepthCacheManager`` (Binance's local order book procedure: diffs with ``U``/``u``
buffered, a depth snapshot, diffs applied from ``lastUpdateId + 1``) keeping a book equal to
the depth endpoint and to the engine's."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from binance import DepthCacheManager
from binance.exceptions import BinanceAPIException

from shardex.client import AsyncClient
from tests.support.binance import api_key, async_client, sync_client
from tests.support.cluster import Cluster
from tests.support.shared_gateway import SharedGateway, tidy
from tests.support.wait import wait_until

# the accounts this module trades under (the cluster is shared: tests/support/shared_gateway.py)
ACCOUNTS = ("bn-a", "bn-b", "bn-m0", "bn-m1", "bn-m2")


@pytest.fixture(scope="module", autouse=True)
def _tidy() -> Iterator[None]:
    yield
    tidy(ACCOUNTS)


@pytest.fixture
def cluster(gateway_cluster: SharedGateway) -> Cluster:
    return gateway_cluster.cluster


def _url(cluster: Cluster) -> str:
    url = f"http://127.0.0.1:{cluster.layout.gateway_port(0)}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(up, 60, "the gateway is up")
    return url


async def _fund(cluster: Cluster, grants: dict[str, dict[str, str]]) -> None:
    async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as c:
        for account, assets in grants.items():
            for asset, amount in assets.items():
                assert (await c.deposit(account, asset, amount)).ok


def _code(call: Any) -> tuple[int, int]:
    with pytest.raises(BinanceAPIException) as info:
        call()
    return info.value.status_code, info.value.code


def test_python_binance_places_sees_cancels_and_trades_between_two_keys(cluster: Cluster):
    url = _url(cluster)
    alice, bob = api_key(cluster.data_dir, "bn-a"), api_key(cluster.data_dir, "bn-b")
    asyncio.run(_fund(cluster, {"bn-a": {"USD": "100000"}, "bn-b": {"BTC": "10"}}))
    a, b = sync_client(url, alice), sync_client(url, bob)
    info = a.get_symbol_info("BTCUSD")
    assert info is not None and (info["baseAsset"], info["quoteAsset"]) == ("BTC", "USD")
    price_filter = next(f for f in info["filters"] if f["filterType"] == "PRICE_FILTER")
    assert price_filter["tickSize"] == "0.01000000"
    assert a.get_symbol_info("BTC-USD") is None  # (the Binance name only)

    o = a.create_order(symbol="BTCUSD", side="BUY", type="LIMIT", timeInForce="GTC",
                       quantity="0.5", price="30000")  # fmt: skip
    assert (o["status"], o["origQty"], o["price"]) == ("NEW", "0.50000000", "30000.00000000")
    assert [x["orderId"] for x in a.get_open_orders(symbol="BTCUSD")] == [o["orderId"]]
    assert b.get_open_orders(symbol="BTCUSD") == []  # (bob's key sees bob's orders only)
    book = a.get_order_book(symbol="BTCUSD")
    assert book["bids"] == [["30000.00000000", "0.50000000"]] and book["lastUpdateId"] > 0
    assert _code(lambda: b.cancel_order(symbol="BTCUSD", orderId=o["orderId"])) == (400, -2011)
    gone = a.cancel_order(symbol="BTCUSD", orderId=o["orderId"])
    assert gone["status"] == "CANCELED" and a.get_open_orders() == []
    assert a.get_order(symbol="BTCUSD", orderId=o["orderId"])["status"] == "CANCELED"

    buy = a.order_limit_buy(symbol="BTCUSD", quantity="0.2", price="31000")
    sell = b.order_limit_sell(symbol="BTCUSD", quantity="0.2", price="31000")
    assert sell["status"] == "FILLED" and sell["executedQty"] == "0.20000000"
    assert sell["fills"][0]["price"] == "31000.00000000"
    assert a.get_order(symbol="BTCUSD", origClientOrderId=buy["clientOrderId"])["status"] == (
        "FILLED")
    fills = wait_until(lambda: a.get_my_trades(symbol="BTCUSD"), 30, "alice's fill")
    assert (fills[-1]["price"], fills[-1]["qty"], fills[-1]["isBuyer"]) == (
        "31000.00000000", "0.20000000", True)
    assert fills[-1]["isMaker"] is True and Decimal(fills[-1]["commission"]) > 0
    trades = a.get_recent_trades(symbol="BTCUSD")
    assert trades[-1]["price"] == "31000.00000000" and trades[-1]["isBuyerMaker"] is True
    mine = {x["asset"]: Decimal(x["free"]) for x in a.get_account()["balances"]}
    assert mine["BTC"] == Decimal("0.2") and Decimal("93700") < mine["USD"] < Decimal("93800")
    assert Decimal(b.get_asset_balance("USD")["free"]) > Decimal("6190")  # 6,200 less the fee

    bad_sig = sync_client(url, alice, secret="0" * 64)
    assert _code(bad_sig.get_account) == (400, -1022)
    assert _code(sync_client(url, {"key_id": "nope", "secret": "x"}).get_account) == (401, -2015)
    assert _code(lambda: a.order_limit_buy(symbol="NOPEUSD", quantity="1", price="1")) == (
        400, -1121)  # fmt: skip
    assert _code(lambda: a.order_limit_buy(symbol="BTCUSD", quantity="1", price="1.001")) == (
        400, -1013)  # fmt: skip
    assert _code(lambda: a.order_limit_buy(symbol="BTCUSD", quantity="100", price="31000")) == (
        400, -2010)  # fmt: skip  (insufficient balance)


async def _orders(c: AsyncClient, rnd: random.Random, n: int, tag: str) -> None:
    """``n`` random limit orders around 2000 (some crossing: trades, levels emptied)."""
    for k in range(n):
        side = rnd.choice(["buy", "sell"])
        price = 2000 + rnd.randrange(-20, 21)
        r = await c.place("ETH-USD", side, f"0.{rnd.randrange(1, 50):03d}", str(price),
                          id=f"{tag}{k}", account=f"bn-m{k % 3}")  # fmt: skip
        assert r.ok, r


def _levels(side: list[Any]) -> list[list[Decimal]]:
    return [[Decimal(p), Decimal(q)] for p, q, *_ in side]


def test_python_binances_depth_cache_keeps_the_depth_endpoints_book(cluster: Cluster) -> None:
    url = _url(cluster)
    asyncio.run(_fund(cluster, {f"bn-m{k}": {"USD": "10000000", "ETH": "10000"}
                                for k in range(3)}))  # fmt: skip

    async def run() -> None:
        bc, bm = async_client(url)
        try:
            await follow(bc, bm)
        finally:
            await bc.close_connection()

    async def follow(bc: Any, bm: Any) -> None:
        rnd = random.Random(5)
        async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as c:
            await _orders(c, rnd, 10, "dc0")
            dcm = DepthCacheManager(bc, "ETHUSD", bm=bm, limit=100, conv_type=Decimal)
            inits = 0
            first_init = dcm._init_cache

            async def counted() -> None:
                nonlocal inits
                inits += 1
                await first_init()

            dcm._init_cache = counted  # type: ignore[method-assign]
            async with dcm as socket:
                async def read() -> None:
                    while True:
                        await socket.recv()

                reader = asyncio.get_running_loop().create_task(read())
                try:
                    await _orders(c, rnd, 40, "dc1")
                    deadline = time.monotonic() + 60
                    while True:  # until the gateway has the engine's book and the cache has it
                        engine = await c.book("ETH-USD", 25)
                        snap = await bc.get_order_book(symbol="ETHUSD", limit=100)
                        if dcm._last_update_id == snap["lastUpdateId"] and all(
                                _levels(snap[s]) == _levels(engine[s]) for s in ("bids", "asks")):
                            break
                        assert time.monotonic() < deadline, (dcm._last_update_id, snap, engine)
                        await asyncio.sleep(0.1)
                    cache = dcm.get_depth_cache()
                    assert cache.get_bids() == _levels(snap["bids"]) == _levels(engine["bids"])
                    assert cache.get_asks() == _levels(snap["asks"]) == _levels(engine["asks"])
                    assert len(cache.get_bids()) + len(cache.get_asks()) >= 10
                    assert inits == 1  # every diff continued the last: never a resync
                finally:
                    reader.cancel()
                    # one more diff: the library's read loop sees it is closing at its next
                    # message (else it waits out its 10 s receive timeout)
                    await c.place("ETH-USD", "buy", "0.001", "1000", account="bn-m0")

    asyncio.run(run())
