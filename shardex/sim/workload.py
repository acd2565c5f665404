"""The seeded workload of a simulated run: accounts funded once, then clients placing orders.

Its own ``random.Random`` (from the seed, one stream per client) decides each order (account,
pair, side, price around a mid, quantity) and the think time before the next, so the
workload is the same for one seed whatever the network and the scheduler do -- only when each
order is sent (after the previous one's reply) depends on them.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

from shardex.client import AsyncClient, ShardexError
from shardex.client.results import EXECUTED, NOT_EXECUTED, UNKNOWN
from shardex.clock import VirtualClock
from shardex.wire.protocol import STATE_UNKNOWN

PAIRS = {"BTC-USD": (Decimal(100), "0.01"), "ETH-USD": (Decimal(20), "0.1")}
FUNDS = (("USD", "1000000"), ("BTC", "1000"), ("ETH", "10000"))


class Workload:
    """Accounts and orders of one seed (see the module)."""

    def __init__(self, seed: int, clients: int, accounts: int = 4, think_s: float = 0.02,
                 timeout_s: float = 1.0) -> None:  # fmt: skip
        self.seed = seed
        self.clients = clients
        self.accounts = [f"acct-{i}" for i in range(accounts)]
        self.think_s = think_s  # mean pause between one client's orders (exponential)
        self.timeout_s = timeout_s  # the clients' request timeout (virtual)

    async def fund(self, client: AsyncClient) -> None:
        """Every account deposits ``FUNDS`` (once: the reference makes a retry idempotent)."""
        for acct in self.accounts:
            for asset, amount in FUNDS:
                r = await client.deposit(acct, asset, amount, ref=f"fund-{acct}-{asset}")
                if not r.ok:
                    raise RuntimeError(f"funding {acct} {asset} failed: {r.reason}")

    async def client(self, k: int, cl: AsyncClient, end: float,
                     clock: VirtualClock) -> list[dict[str, Any]]:  # fmt: skip
        """Client ``k`` places orders until virtual time ``end``; one record per order."""
        rng = random.Random(f"work-{self.seed}-{k}")
        out: list[dict[str, Any]] = []
        n = 0
        while clock.now < end:
            await asyncio.sleep(rng.expovariate(1 / self.think_s))
            symbol = rng.choice(sorted(PAIRS))
            mid, qty = PAIRS[symbol]
            price = mid * (1 + Decimal(rng.randint(-3, 3)) / 100)
            n += 1
            side = rng.choice(("buy", "sell"))
            order = {"client": f"client-{k}", "id": f"c{k}-o{n}", "symbol": symbol,
                     "account": rng.choice(self.accounts), "side": side, "qty": qty,
                     "price": str(price), "sent": clock.now}  # fmt: skip
            try:
                r = await cl.place(order["symbol"], order["side"], qty, order["price"],
                                   account=order["account"], id=order["id"])  # fmt: skip
                order.update(fate=r.fate or (NOT_EXECUTED if r.rejected else EXECUTED),
                             code=r.code)  # fmt: skip
            except ShardexError as exc:
                order.update(fate=UNKNOWN, code=getattr(exc, "code", type(exc).__name__))
            order["first_fate"] = order["fate"]
            order["done"] = clock.now
            out.append(order)
        return out

    async def settle(self, cl: AsyncClient, orders: list[dict[str, Any]], tries: int = 50,
                     pause_s: float = 0.1) -> None:  # fmt: skip
        """After the heal: ask the fate of every order still ``unknown`` from its shard (a new
        order the shard knows ran; one it does not know never will), each up to ``tries``
        times ``pause_s`` apart while the shard cannot answer."""
        for order in orders:
            for _ in range(tries if order["fate"] == UNKNOWN else 0):
                try:
                    st = await cl.order_status(order["symbol"], order["id"], order["account"])
                except ShardexError:
                    await asyncio.sleep(pause_s)
                    continue
                order["fate"] = NOT_EXECUTED if st.get("state") == STATE_UNKNOWN else EXECUTED
                break


__all__ = ["FUNDS", "PAIRS", "Workload"]
