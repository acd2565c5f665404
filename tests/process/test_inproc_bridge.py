"""The in-process cluster with its bridge, against a real redis-server: every engine event
reaches ``shardex:events:I`` exactly once (entry ids 1..seq, no hole, no copy, the same
events), and every balance change ``shardex:balances:J``, its last entry per (account, asset)
being the balance the account shard reports. The cluster itself runs in this process over the
in-memory transport (``shardex.inproc``); Redis is the one real process."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis

from shardex.client import audit_report
from shardex.engine.codes import EV_ACCEPTED, EV_TRADE
from shardex.inproc import InProcCluster
from tests.support.inproc import plan, published

ACCOUNTS = [f"b-{i}" for i in range(6)]
EVENT_NAMES = {EV_ACCEPTED: "accepted", EV_TRADE: "trade"}


@pytest.mark.timeout(90)
def test_in_process_cluster_bridges_every_event_exactly_once(redis_server):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    rng = random.Random(11)

    p = plan(2, 2, redis=redis_server.url)

    async def main() -> None:
        async with InProcCluster(p) as cluster, cluster.client() as cl:
            for a in ACCOUNTS:
                assert (await cl.deposit(a, "USD", "100000", ref=f"{a}-usd")).ok
                assert (await cl.deposit(a, "BTC", "100", ref=f"{a}-btc")).ok
            for _ in range(6):
                orders = [cl.place("BTC-USD", rng.choice(("buy", "sell")), "0.01",
                                   str(100 + rng.randint(-2, 2)), account=rng.choice(ACCOUNTS))
                          for _ in range(30)]  # fmt: skip
                assert all(x.ok for x in await asyncio.gather(*orders))

            def engines_bridged() -> bool:
                return all(r.xlen(f"shardex:events:{n.cfg.index}") == n.core.engine.seq
                           for n in cluster.engines)  # fmt: skip

            await cluster.until(engines_bridged, 30, "every engine event in Redis")
            for node in cluster.engines:
                i, events = node.cfg.index, published(node)
                entries = r.xrange(f"shardex:events:{i}")
                assert [e[0] for e in entries] == [f"{s}-0" for s in range(1, len(events) + 1)]
                for ev, (_, fields) in zip(events, entries, strict=True):
                    assert fields["seq"] == str(ev[1])
                    if ev[0] in EVENT_NAMES:
                        assert fields["ev"] == EVENT_NAMES[ev[0]], (ev, fields)
            assert any(ev[0] == EV_TRADE for n in cluster.engines for ev in published(n))
            lines, ok = audit_report(await cl.audit())
            assert ok, lines

            async def balances_bridged() -> bool:
                for a in ACCOUNTS:
                    for asset, (avail, held) in (await cl.balance(a)).items():
                        if _last_balance(r, a, asset) != (avail, held):
                            return False
                return True

            for _ in range(300):
                if await balances_bridged():
                    break
                await asyncio.sleep(0.02)
            assert await balances_bridged()
            streams = [[e[0] for e in r.xrange(f"shardex:balances:{j}")] for j in range(2)]
            assert all(streams), streams  # (the accounts span both account shards)
            for ids in streams:  # each change once, in the account shard's seq order
                assert len(ids) == len(set(ids)) and ids == sorted(ids, key=_seq)

    asyncio.run(main())


def _seq(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def _last_balance(r, account: str, asset: str):
    from decimal import Decimal

    for j in range(2):
        for _, f in reversed(r.xrange(f"shardex:balances:{j}")):
            if f.get("account") == account and f.get("asset") == asset:
                return Decimal(f["available"]), Decimal(f["held"])
    return None
