"""Exchange time end to end: the in-process cluster (engine and account shards journaling to
disk) with its bridge, against a real redis-server. Every entry of ``shardex:events:I``,
``shardex:trades:SYMBOL`` and ``shardex:balances:J`` has ``ts``: a decimal integer of ms since
the Unix epoch, within the wall-clock time the test ran, never going backwards along the seqs
of a stream, and equal to the time ``shardex replay --journal`` gives the same event."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis

from shardex.engine.markets import DEFAULT_MARKETS
from shardex.inproc import InProcCluster
from shardex.tools.replay import replay_journal
from tests.support.inproc import plan

ACCOUNTS = ("t-0", "t-1", "t-2")


def _replayed_ts(directory: Path) -> dict[int, int]:
    """seq → ts of every event of a journal, as ``shardex replay --journal`` prints them."""
    lines: list[str] = []
    replay_journal(directory, DEFAULT_MARKETS, lines.append)
    objs = [json.loads(line) for line in lines if line != "\n"]
    return {obj["seq"]: obj["ts"] for obj in objs}


def _check(entries: list, want: dict[int, int], t0: int, t1: int, key: str) -> None:
    assert entries, f"{key} is empty"
    stamps = []
    for entry_id, fields in entries:
        seq = int(entry_id.split("-")[0])
        ts = fields["ts"]
        assert ts.isdigit() and t0 <= int(ts) <= t1, (key, entry_id, ts, t0, t1)
        assert int(ts) == want[seq], (key, seq, ts, want[seq])
        stamps.append(int(ts))
    assert stamps == sorted(stamps), f"{key}: time goes backwards {stamps}"


@pytest.mark.timeout(120)
def test_every_stream_entry_has_the_exchange_time_its_journal_replays(redis_server, tmp_path):
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    p = plan(1, 1, redis=redis_server.url, data_dir=str(tmp_path / "data"))
    t0 = int(time.time() * 1000)

    async def main() -> None:
        async with InProcCluster(p) as cluster, cluster.client() as cl:
            for a in ACCOUNTS:
                assert (await cl.deposit(a, "USD", "100000", ref=f"{a}-usd")).ok
                assert (await cl.deposit(a, "BTC", "10", ref=f"{a}-btc")).ok
            for k in range(4):  # several batches, at least a few ms apart on the wall clock
                side = ("buy", "sell")[k % 2]
                orders = [cl.place("BTC-USD", side, "0.01", "100", account=a) for a in ACCOUNTS]
                assert all(x.ok for x in await asyncio.gather(*orders))
                await asyncio.sleep(0.01)
            engine, accounts = cluster.engines[0], cluster.accounts[0]

            def bridged() -> bool:
                return (r.xlen("shardex:events:0") == engine.core.engine.seq
                        and r.xlen("shardex:trades:BTC-USD") > 0
                        and r.xlen("shardex:balances:0") > 0
                        and accounts.published == accounts.machine.seq
                        and int(r.xrevrange("shardex:balances:0", count=1)[0][0].split("-")[0])
                        >= _last_balance_seq(accounts))  # fmt: skip

            await cluster.until(bridged, 60, "every event in Redis")

    asyncio.run(main())
    t1 = int(time.time() * 1000)
    data = tmp_path / "data"
    engine_ts = _replayed_ts(data / "shard-0")
    _check(r.xrange("shardex:events:0"), engine_ts, t0, t1, "shardex:events:0")
    _check(r.xrange("shardex:trades:BTC-USD"), engine_ts, t0, t1, "shardex:trades:BTC-USD")
    _check(r.xrange("shardex:balances:0"), _replayed_ts(data / "accounts-0"), t0, t1,
           "shardex:balances:0")  # fmt: skip


def _last_balance_seq(node) -> int:
    """The seq of account shard ``node``'s newest balance or fee event."""
    evs = node.machine.events.tail(1000)
    return max((ev[1] for ev in evs if ev[0] in (0, 1)), default=0)
