"""A whole cluster in one process (``shardex.inproc``): the router, two engine shards and two
account shards over the in-memory transport, driven by the SDK's ``AsyncClient``, checked
against the invariants the process tests check: every order answered exactly once with a fate,
each executed order known to its engine shard exactly once, money conserved across the tiers,
and the account shards' open orders agreeing with the books. No port, no process."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal as D

import pytest

from shardex.client import audit_report
from shardex.client.fatesteps import FateDecisions
from shardex.client.results import EXECUTED, NOT_EXECUTED
from shardex.engine.codes import EV_ACCEPTED, EV_TRADE
from shardex.inproc import InProcCluster
from shardex.wire.errors import ERR_OVERLOADED
from tests.support.inproc import plan, published

SYMBOLS = ("BTC-USD", "ETH-USD", "ETH-BTC")
ACCOUNTS = [f"acct-{i}" for i in range(6)]
FATES = (EXECUTED, NOT_EXECUTED)  # an order's settled fates: the SDK's own spellings


def _orders(rng: random.Random, n: int) -> list[dict]:
    prices = {"BTC-USD": 100, "ETH-USD": 20, "ETH-BTC": D("0.2")}
    qty = {"BTC-USD": "0.01", "ETH-USD": "0.1", "ETH-BTC": "0.1"}
    out = []
    for k in range(n):
        sym = rng.choice(SYMBOLS)
        mid = prices[sym]
        price = mid * (1 + D(rng.randint(-3, 3)) / 100)
        side = rng.choice(("buy", "sell"))
        out.append({"symbol": sym, "side": side, "qty": qty[sym], "price": str(price),
                    "account": rng.choice(ACCOUNTS), "id": f"o{k}"})  # fmt: skip
    return out


async def _fund(cl) -> None:
    for a in ACCOUNTS:
        for asset, amount in (("USD", "100000"), ("BTC", "100"), ("ETH", "1000")):
            r = await cl.deposit(a, asset, amount, ref=f"{a}-{asset}")
            assert r.ok, r


def _events(cluster: InProcCluster, kind: int) -> list[tuple]:
    """Every event of ``kind`` the engine shards published (their rings, seq 1 to now), as a
    subscriber repairing from the start would read them."""
    return [ev for node in cluster.engines for ev in published(node) if ev[0] == kind]


def _accepted(cluster: InProcCluster) -> list[str]:
    return [ev[3] for ev in _events(cluster, EV_ACCEPTED)]  # (EV_ACCEPTED, seq, symbol, id)


def test_the_fates_the_cluster_test_accepts_are_the_sdks():
    """An order a batch error refused (it never ran) settles as the SDK spells it: the
    fates the whole-cluster test accepts must include that spelling, not a look-alike."""
    cmd = {"op": "new", "symbol": "BTC-USD", "id": "o1"}
    (refused,) = FateDecisions.results(None, [cmd], [(ERR_OVERLOADED, [])])  # type: ignore[arg-type]
    (ran,) = FateDecisions.results(None, [cmd], [(None, [])])  # type: ignore[arg-type]
    assert (ran.fate, refused.fate) == FATES


@pytest.mark.timeout(60)
def test_a_whole_cluster_in_one_process_keeps_every_invariant():
    rng = random.Random(7)
    orders = _orders(rng, 400)

    async def main() -> None:
        async with InProcCluster(plan(2, 2)) as cluster, cluster.client() as cl:
            await _fund(cl)
            results = []
            for i in range(0, len(orders), 40):  # (a window the router admits at once)
                chunk = orders[i : i + 40]
                results += await asyncio.gather(*[cl.place(**o) for o in chunk])
            # every order answered exactly once, with a fate
            assert len(results) == len(orders)
            assert all(r.fate in FATES for r in results), {
                r.fate for r in results
            }
            executed = [o["id"] for o, r in zip(orders, results, strict=True) if r.ok]
            assert len(executed) > len(orders) // 2
            # each executed order reached its engine shard exactly once
            await cluster.until(lambda: sorted(_accepted(cluster)) == sorted(executed),
                                what="every accept")  # fmt: skip
            # trades happened, settled, and money is conserved across the tiers
            assert _events(cluster, EV_TRADE)

            async def settled() -> bool:
                return not await cl.audit_orders() and audit_report(await cl.audit())[1]

            for _ in range(200):
                if await settled():
                    break
                await asyncio.sleep(0.01)
            lines, ok = audit_report(await cl.audit())
            assert ok, lines
            assert await cl.audit_orders() == []

    asyncio.run(main())
