"""A stop order's way into Redis: the bridge writes the order with its type and trigger to its
account shard's ``shardex:orders:<j>`` and the ``triggered`` event (then its trade) to
``shardex:events:<i>``. The in-process cluster and its bridge against a real redis-server (the
one real process)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from shardex.inproc import InProcCluster
from tests.support.inproc import plan

S = "BTC-USD"


@pytest.mark.timeout(90)
def test_a_stop_order_and_its_trigger_reach_the_streams(redis_server):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def events() -> list[dict]:
        return [f for _, f in r.xrange("shardex:events:0")]

    async def main() -> None:
        async with InProcCluster(plan(1, 1, redis=redis_server.url)) as cluster, \
                cluster.client() as cl:  # fmt: skip
            for acct, asset in (("al", "USD"), ("mk", "BTC"), ("tk", "USD")):
                assert (await cl.deposit(acct, asset, "1000", ref=f"{acct}-in")).ok
            assert (await cl.place(S, "sell", "0.5", "100", account="mk")).ok
            assert (await cl.place(S, "buy", "0.5", "100", account="tk")).ok  # last: 100
            stop = await cl.place(S, "buy", "0.5", "102", type="stop_limit", trigger="101",
                                  account="al", id="al-stop")  # fmt: skip
            assert stop.ok, stop
            assert (await cl.place(S, "sell", "1", "101", account="mk", id="mk-101")).ok

            async def resting() -> bool:
                return (await cl.order_status(S, "mk-101", account="mk"))["state"] == "live"

            await cluster.until(resting, 30, "mk's ask at 101")
            assert (await cl.place(S, "buy", "0.5", "101", account="tk")).ok  # last: 101

            def bridged() -> bool:
                traded = any(f["ev"] == "trade" and f["taker"] == "al-stop" for f in events())
                return traded and r.xlen("shardex:orders:0") == 5

            await cluster.until(bridged, 30, "the stop's trade and the five orders in Redis")

    asyncio.run(main())
    evs = events()
    (fired,) = [i for i, f in enumerate(evs) if f["ev"] == "triggered"]
    assert (evs[fired]["id"], evs[fired]["last"], evs[fired]["trigger"]) == (
        "al-stop", "101.00", "101.00")  # fmt: skip
    trade = evs[fired + 1]
    assert (trade["ev"], trade["taker"], trade["maker"], trade["price"]) == (
        "trade", "al-stop", "mk-101", "101.00")  # fmt: skip
    assert int(trade["seq"]) == int(evs[fired]["seq"]) + 1 and "ts" in evs[fired]
    (order,) = [f for _, f in r.xrange("shardex:orders:0") if f["id"] == "al-stop"]
    assert (order["type"], order["trigger"], order["price"]) == ("stop_limit", "101.00", "102.00")
