"""Shedding by time queued through a whole cluster in one process, on a virtual clock: an
account shard that stops taking requests while orders keep arriving. The router, having
measured how fast that shard answers, refuses with ``overloaded`` (at once, fate ``not
executed``) the orders that would wait past ``--max-queue-ms`` behind it, long before its
in-flight cap (1000); the orders it admitted all run once the shard is back. About 1 CPU s."""

from __future__ import annotations

import asyncio

import pytest

from shardex.client.results import EXECUTED, NOT_EXECUTED
from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.node.sojourn import LIMIT_S
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(60)

SLOT = 1  # account shard 0 of ``--shards 1 --accounts 1``: the router's slot N + 0
STEP = 0.01  # one order every 10 ms (virtual)


def test_orders_behind_a_stalled_account_shard_are_shed_by_their_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHARDEX_MAX_QUEUE_MS", "20")  # (off by default)
    clock = VirtualClock()
    cluster = InProcCluster(plan(shards=1, accounts=1), net=mem_transport(clock=clock))
    router = cluster.routers[0].router
    accounts = cluster.accounts[0]

    async def place(cl, k: int):  # type: ignore[no-untyped-def]
        return await cl.place("BTC-USD", "buy", "0.01", "100", account="acct-1", id=f"o{k}")

    async def main() -> None:
        async with cluster:
            await cluster.until(lambda: len(router.topology) == router.slots, what="hellos")
            async with cluster.client(timeout=30) as cl:
                assert (await cl.deposit("acct-1", "USD", "100000", ref="d1")).ok
                # the router measures the account shard: 10 orders answered after 0.15 s
                cluster.freeze(accounts)
                first = [asyncio.ensure_future(place(cl, k)) for k in range(10)]
                await cluster.until(lambda: router.shard_inflight[SLOT] == 10, what="10 held")
                clock.advance(0.15)
                cluster.thaw(accounts)
                assert all(r.ok for r in await asyncio.gather(*first))
                rate = router.rates[SLOT].rate
                assert 0 < rate < 100  # ~67 a second: 2 queued already wait past the limit
                # it stalls again while an order arrives every 10 ms
                cluster.freeze(accounts)
                later = []
                for k in range(10, 50):
                    seen = router.forwarded[SLOT] + router.rejected["overloaded"]
                    later.append(asyncio.ensure_future(place(cl, k)))
                    await cluster.until(
                        lambda s=seen: router.forwarded[SLOT] + router.rejected["overloaded"] > s,
                        what="the router took the order",
                    )
                    clock.advance(STEP)
                queued = router.shard_inflight[SLOT]
                # the refused ones are answered at once, while the shard is still stalled
                shed = router.codel[SLOT].shed
                await cluster.until(lambda: sum(t.done() for t in later) >= shed,
                                    what="the refusals")  # fmt: skip
                refused = [t.result() for t in later if t.done()]
                assert refused and {r.code for r in refused} == {"overloaded"}
                assert {r.fate for r in refused} == {NOT_EXECUTED}
                assert len(refused) == shed
                # what was admitted is what waits within the limit at the measured rate, plus
                # what came in before the standing queue was recognised (two intervals)
                assert queued == 40 - len(refused) and queued < router.cfg.max_inflight
                assert queued / rate > LIMIT_S  # (so the count cap alone would not shed)
                cluster.thaw(accounts)
                done = await asyncio.gather(*later)
                admitted = [r for r in done if r.code != "overloaded"]
                assert len(admitted) == queued and all(r.ok for r in admitted)
                assert {r.fate for r in admitted} == {EXECUTED}

    asyncio.run(main())
