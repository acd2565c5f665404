"""The simulator's stream check (``shardex.sim.invariants.stream_exact``) against what the real
bridge wrote to a real redis-server: the in-process cluster's streams read back
(``shardex.sim.extract.read_streams``) pass every check once bridged, and an entry deleted
from Redis is named as missing. Redis is the one real process."""

from __future__ import annotations

import asyncio

import pytest
import redis

from shardex.accounts.core import account_shard_for
from shardex.client import audit_report
from shardex.inproc import InProcCluster
from shardex.sim.extract import cluster_state, read_streams
from shardex.sim.invariants import check_final
from tests.support.inproc import plan

# two accounts on each of the two account shards (both balance streams get entries)
NAMES = [f"s-{i}" for i in range(40)]
ACCOUNTS = [a for j in (0, 1) for a in [n for n in NAMES if account_shard_for(n, 2) == j][:2]]


@pytest.mark.timeout(90)
def test_the_streams_the_bridge_wrote_pass_and_a_lost_entry_is_named(redis_server, tmp_path):
    r = redis.Redis.from_url(redis_server.url)  # (bytes: the extractor reads either)
    p = plan(2, 2, redis=redis_server.url, data_dir=str(tmp_path / "data"))

    async def main() -> None:
        async with InProcCluster(p) as cluster, cluster.client() as cl:
            for a in ACCOUNTS:
                assert (await cl.deposit(a, "USD", "100000", ref=f"{a}-usd")).ok
                assert (await cl.deposit(a, "BTC", "100", ref=f"{a}-btc")).ok
            for k in range(40):
                side = ("buy", "sell")[k % 2]
                assert (await cl.place("BTC-USD", side, "0.01", str(99 + k % 3),
                                       account=ACCOUNTS[k % 4])).ok  # fmt: skip

            async def bridged() -> bool:
                if not audit_report(await cl.audit())[1] or await cl.audit_orders():
                    return False
                s = cluster_state(cluster, streams=read_streams(r, 2, 2), replay=False)
                return not [v for v in check_final(s) if v.check == "stream_exact"]

            await cluster.until(bridged, 30, "every event bridged")
            state = cluster_state(cluster, streams=read_streams(r, 2, 2))
            assert check_final(state) == []
            assert any(state.streams[f"shardex:events:{e.shard}"] for e in state.engines)
            assert all(state.streams[f"shardex:balances:{j}"] for j in range(2))
            busy = max(state.engines, key=lambda e: e.seq)
            r.xdel(f"shardex:events:{busy.shard}", "3-0")  # (as a failed-over Redis may lose)
            lost = cluster_state(cluster, streams=read_streams(r, 2, 2))
            found = [str(v) for v in check_final(lost) if v.check == "stream_exact"]
            assert found and "missing 3-0" in found[0], found

    asyncio.run(main())
