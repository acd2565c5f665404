"""The bridge follows a moved pair (``shardex.node.bridge.moves`` and the write script): the
pair's trades stream keeps increasing IDs and contiguous trade ids although the target shard's
seqs are far below the source's, and an adoption is written only after its source's events up
to the hand-off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardex.engine.codes import BUY, EV_ADOPTED, EV_TRADE, GTC, LIMIT, OP_NEW, SELL
from shardex.inproc import InProcCluster
from shardex.node.bridge.moves import first_adoption, gate
from shardex.placement import default_owner
from shardex.sim.store import SimStore
from shardex.tools.mover import ask, move_pair
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(120)

P = "BTC-USD"
SRC = default_owner(P, 2)
DST = 1 - SRC


def _stream_top(store: SimStore, key: str) -> int:
    entries = store.client().xrevrange(key, count=1)
    return int(entries[0][0].split(b"-")[0]) if entries else 0


def test_the_trades_stream_of_a_moved_pair_keeps_increasing_ids_and_contiguous_trade_ids() -> None:
    store = SimStore()

    async def body(cluster: InProcCluster) -> dict[str, int]:
        async with cluster.client(account="al") as c:
            for k in range(40):  # the source's seqs climb well above the target's
                assert (await c.place(P, "buy", "1", "100", id=f"b{k}")).ok
            for k in range(5):  # 5 trades on the source
                assert (await c.place(P, "sell", "1", "100", id=f"s{k}", account="bo")).ok
            await move_pair(c, P, DST, say=lambda line: None, shards=2)
            for k in range(5):  # 5 more on the target (its seqs start low)
                cmd = (OP_NEW, P, f"t{k}", "cy", SELL, LIMIT, 10000, 100, GTC, False, 0)
                res = await ask(c, DST, cmd)
                assert res[-1][0] == EV_TRADE, res
            seqs = [(await ask(c, i, (11,)))["seq"] for i in range(2)]  # OP_STATUS
        for i in range(2):
            await cluster.until(lambda i=i: _stream_top(store, f"shardex:events:{i}") >= seqs[i],
                                what=f"events of shard {i} written")  # fmt: skip
        return {"src_seq": seqs[SRC], "dst_seq": seqs[DST]}

    async def main() -> dict[str, int]:
        async with InProcCluster(plan(2, redis="redis://sim/0"), store=store) as cluster:
            return await body(cluster)

    seqs = asyncio.run(main())
    assert seqs["dst_seq"] < seqs["src_seq"] - 20  # (the case the script handles)
    entries = store.client().xrange(f"shardex:trades:{P}")
    ids = [tuple(map(int, eid.split(b"-"))) for eid, _ in entries]
    trade_ids = [int(f[b"trade_id"]) for _, f in entries]
    assert trade_ids == list(range(1, 11))  # every trade once, in order, across the move
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert [f[b"shard"] for _, f in entries] == [str(SRC).encode()] * 5 + [str(DST).encode()] * 5


class _Tracker:
    def __init__(self, last: int = 0) -> None:
        self.last = last
        self.back: list[tuple] = []

    def putback(self, batch: list[tuple]) -> None:
        self.back[:0] = batch


class _Shard:
    def __init__(self, last: int) -> None:
        self.tracker = _Tracker(last)


class _Alerts:
    def __init__(self) -> None:
        self.raised: list[str] = []

    def alert(self, *args: Any) -> None:
        self.raised.append(args[2])


ADOPTION = (EV_ADOPTED, 3, P, 0, 50, 7, 2)
TRADE = (EV_TRADE, 4, P, 100, 1, "t", "m", BUY, 8)


def test_an_adoption_waits_for_its_sources_events_up_to_the_hand_off() -> None:
    assert first_adoption([(0, 1, P, "x"), ADOPTION, TRADE]) == 1
    assert first_adoption([(0, 1, P, "x"), TRADE]) == -1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        source = _Shard(40)
        mine, alerts = _Tracker(), _Alerts()
        before = [(0, 2, P, "x")]
        assert await gate(before + [ADOPTION, TRADE], mine, [source], alerts, "1",
                          loop.time) == before  # fmt: skip
        assert mine.back == [ADOPTION, TRADE]  # the rest goes back, taken again next
        waiting = asyncio.ensure_future(gate([ADOPTION, TRADE], mine, [source], alerts, "1",
                                             loop.time))  # fmt: skip
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the source wrote up to 40 of 50
        source.tracker.last = 50
        assert await asyncio.wait_for(waiting, 5) == [ADOPTION, TRADE]
        late = await gate([ADOPTION], mine, [_Shard(1)], alerts, "1", loop.time, max_wait=0.05)
        assert late == [ADOPTION] and alerts.raised == ["adoption unordered"]

    asyncio.run(main())
