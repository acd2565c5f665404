"""Open-loop clients: orders arrive at a seeded rate whether or not earlier ones were answered.

The default workload (``shardex.sim.workload.Workload``) is closed-loop: each client waits for
one order's reply before the next, so the load can never exceed what the cluster serves and
the overload paths never run. Real traffic does not wait. ``OpenWorkload`` (a world's
``workload={"rate_per_s": ...}``) draws each client's arrivals from a Poisson process of
``rate_per_s`` and places every order in a task of its own, up to ``inflight`` at once per
client (an arrival past that is *shed* by the client: counted, not sent -- a bounded client,
as a real one is). With a rate above what a paused or slowed shard serves, this runs what a
closed loop cannot:

* the router's admission caps (``client_max_inflight``, ``max_inflight``): ``overloaded``
  refusals, a reject with its stable code, the order ``not executed``;
* the pipes' HWMs filling behind a partition or a pause;
* the SDK's timeouts and retries: an order unanswered within the client's ``timeout`` has
  its fate asked of its shard (the ``unknown fate, then query`` path), and with ``retry_s``
  (the clients' ``Retry(deadline=retry_s)``, on the world's clock) one that never ran, or
  that a shard refused as ``overloaded``/unavailable, is sent again until the deadline.

Each order record has the shape ``Workload.client``'s have, so the world's settle and the
invariant checks read them unchanged. Its own seeded stream per client (``open-<seed>-<k>``).
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

from shardex.client import AsyncClient, ShardexError
from shardex.client.results import EXECUTED, NOT_EXECUTED, UNKNOWN, Retry
from shardex.clock import VirtualClock
from shardex.sim.workload import PAIRS, Workload


class OpenWorkload(Workload):
    """``Workload`` with open-loop clients (see the module)."""

    def __init__(self, seed: int, clients: int, rate_per_s: float = 200.0, inflight: int = 400,
                 retry_s: float = 0.0, **kw: Any) -> None:  # fmt: skip
        super().__init__(seed, clients, **kw)
        # the clients' retry policy (0: none, the SDK's default: one attempt, fate asked)
        self.retry = Retry(deadline=retry_s) if retry_s > 0 else None
        if rate_per_s <= 0 or inflight < 1:
            raise ValueError(f"open-loop clients need rate_per_s > 0 and inflight >= 1, not "
                             f"{rate_per_s!r}, {inflight!r}")  # fmt: skip
        self.rate_per_s = rate_per_s
        self.inflight = inflight
        self.shed = 0  # arrivals a client did not send: it had ``inflight`` orders open
        self.peak = 0  # the most orders one client had in flight at once

    async def client(self, k: int, cl: AsyncClient, end: float,
                     clock: VirtualClock) -> list[dict[str, Any]]:  # fmt: skip
        """Client ``k``'s orders arriving until virtual time ``end``, each placed in its own
        task; returns once every one has its fate (one record per order sent)."""
        rng = random.Random(f"open-{self.seed}-{k}")
        cl.retry = self.retry  # (the world made the client; the policy is the workload's)
        out: list[dict[str, Any]] = []
        live: set[asyncio.Future] = set()
        while True:
            await asyncio.sleep(rng.expovariate(self.rate_per_s))
            if clock.now >= end:
                break
            order = _draw(rng, k, len(out) + 1, self.accounts, clock)
            if len(live) >= self.inflight:
                self.shed += 1
                continue
            out.append(order)
            task = asyncio.ensure_future(_place(cl, order, clock))
            live.add(task)
            task.add_done_callback(live.discard)
            self.peak = max(self.peak, len(live))
        if live:
            await asyncio.gather(*live)
        return out


def _draw(rng: random.Random, k: int, n: int, accounts: list[str],
          clock: VirtualClock) -> dict[str, Any]:  # fmt: skip
    """The ``n``-th order client ``k`` draws (the fields ``Workload.client``'s have)."""
    symbol = rng.choice(sorted(PAIRS))
    mid, qty = PAIRS[symbol]
    price = mid * (1 + Decimal(rng.randint(-3, 3)) / 100)
    return {"client": f"client-{k}", "id": f"c{k}-o{n}", "symbol": symbol,
            "account": rng.choice(accounts), "side": rng.choice(("buy", "sell")), "qty": qty,
            "price": str(price), "sent": clock.now}  # fmt: skip


async def _place(cl: AsyncClient, order: dict[str, Any], clock: VirtualClock) -> None:
    """Place ``order`` with the SDK (its timeout, fate query and retries) and record its fate."""
    try:
        r = await cl.place(order["symbol"], order["side"], order["qty"], order["price"],
                           account=order["account"], id=order["id"])  # fmt: skip
        order.update(fate=r.fate or (NOT_EXECUTED if r.rejected else EXECUTED), code=r.code)
    except ShardexError as exc:
        order.update(fate=UNKNOWN, code=getattr(exc, "code", type(exc).__name__))
    order["first_fate"] = order["fate"]
    order["done"] = clock.now


def workload_of(seed: int, clients: int, settings: dict[str, Any]) -> Workload:
    """The world's workload: open-loop when ``settings`` name a ``rate_per_s``."""
    cls = OpenWorkload if "rate_per_s" in settings else Workload
    return cls(seed, clients, **settings)


__all__ = ["OpenWorkload", "workload_of"]
