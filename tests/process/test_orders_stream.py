"""The bridge writes every new order an account shard forwards to ``shardex:orders:<j>``, with
the fields no engine event carries (account, side, type, price, qty...), each once, in the
account shard's seq order. The in-process cluster and its bridge against a real redis-server
(the one real process)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis

from shardex.accounts.core import account_shard_for
from shardex.inproc import InProcCluster
from tests.support.inproc import plan

NAMES = [f"o-{i}" for i in range(40)]
ACCOUNTS = [a for j in (0, 1) for a in [n for n in NAMES if account_shard_for(n, 2) == j][:2]]


@pytest.mark.timeout(90)
def test_each_forwarded_order_is_in_its_account_shards_orders_stream(redis_server):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    p = plan(2, 2, redis=redis_server.url)
    placed: dict[str, tuple] = {}

    async def main() -> None:
        async with InProcCluster(p) as cluster, cluster.client() as cl:
            for a in ACCOUNTS:
                assert (await cl.deposit(a, "USD", "100000", ref=f"{a}-usd")).ok
                assert (await cl.deposit(a, "BTC", "100", ref=f"{a}-btc")).ok
                assert (await cl.deposit(a, "ETH", "100", ref=f"{a}-eth")).ok
            for k in range(24):
                side, acct = ("buy", "sell")[k % 2], ACCOUNTS[k % 4]
                sym = ("BTC-USD", "ETH-USD")[k % 3 == 0]
                price = "99.5" if sym == "BTC-USD" else "2000"
                tif = ("gtc", "ioc")[k % 5 == 0]
                res = await cl.place(sym, side, "0.01", price, id=f"x{k}", account=acct,
                                     tif=tif)  # fmt: skip
                assert res.ok, res
                placed[f"x{k}"] = (acct, sym, side, tif)

            def bridged() -> bool:
                return sum(r.xlen(f"shardex:orders:{j}") for j in range(2)) == len(placed)

            await cluster.until(bridged, 30, "every order in shardex:orders:<j>")

    asyncio.run(main())
    for j in range(2):
        entries = r.xrange(f"shardex:orders:{j}")
        seqs = [int(eid.split("-")[0]) for eid, _ in entries]
        assert seqs == sorted(set(seqs)) and entries
        for eid, f in entries:
            assert f["seq"] == eid.split("-")[0] and f["shard"] == str(j)
            assert account_shard_for(f["account"], 2) == j
            assert (f["account"], f["symbol"], f["side"], f["tif"]) == placed[f["id"]]
            assert f["type"] == "limit" and Decimal(f["qty"]) == Decimal("0.01")
            assert f["post_only"] == "false" and f["stp"] == "none"
