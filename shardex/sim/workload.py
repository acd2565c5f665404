"""The seeded workload of a simulated run: accounts funded once, then clients placing orders
and cancelling some of them. With ``TIMED`` (``--timed-orders``) some orders are also
good-till-date, expiring a few hundred virtual ms later by exchange time (so the journaled
``OP_EXPIRE`` sweep runs under every fault), and now and then a client cancels all of an
account's orders in one pair (``cancel_all``).

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

PAIRS = {"BTC-USD": (Decimal(100), "0.01"), "ETH-USD": (Decimal(20), "0.1")}
# the timed-orders mix (``--timed-orders``): gtd orders expiring by the journaled sweep, cancel-all
TIMED = {"gtd_p": 0.2, "cancel_all_p": 0.05}
FUNDS = (("USD", "1000000"), ("BTC", "1000"), ("ETH", "10000"))


class Workload:
    """Accounts and orders of one seed (see the module)."""

    def __init__(self, seed: int, clients: int, accounts: int = 4, think_s: float = 0.02,
                 timeout_s: float = 1.0, cancel_p: float = 0.2, gtd_p: float = 0.0,
                 cancel_all_p: float = 0.0) -> None:  # fmt: skip
        self.seed = seed
        self.clients = clients
        self.accounts = [f"acct-{i}" for i in range(accounts)]
        self.think_s = think_s  # mean pause between one client's orders (exponential)
        self.timeout_s = timeout_s  # the clients' request timeout (virtual)
        self.cancel_p = cancel_p  # share of a client's steps that cancel an order it placed
        self.cancels: list[dict[str, Any]] = []  # every client's cancels, in the order sent
        # (0: not drawn at all, so a seed's workload stays what it was without them: ``TIMED``)
        self.gtd_p = gtd_p  # share of orders that are gtd (expire 20..400 virtual ms ahead)
        self.cancel_all_p = cancel_all_p  # share of steps that cancel-all an account's pair

    async def fund(self, client: AsyncClient) -> None:
        """Every account deposits ``FUNDS`` (once: the reference makes a retry idempotent)."""
        for acct in self.accounts:
            for asset, amount in FUNDS:
                r = await client.deposit(acct, asset, amount, ref=f"fund-{acct}-{asset}")
                if not r.ok:
                    raise RuntimeError(f"funding {acct} {asset} failed: {r.reason}")

    async def client(self, k: int, cl: AsyncClient, end: float,
                     clock: VirtualClock) -> list[dict[str, Any]]:  # fmt: skip
        """Client ``k`` places orders until virtual time ``end`` (and, ``cancel_p`` of the
        time, cancels one it placed before: into ``cancels``); one record per order."""
        rng = random.Random(f"work-{self.seed}-{k}")
        out: list[dict[str, Any]] = []
        while clock.now < end:
            await asyncio.sleep(rng.expovariate(1 / self.think_s))
            placed = [o for o in out if o["fate"] == EXECUTED and o["code"] is None]
            if placed and rng.random() < self.cancel_p:
                self.cancels.append(await self._cancel(cl, rng.choice(placed), clock))
                continue
            if self.cancel_all_p and rng.random() < self.cancel_all_p:
                await self._cancel_all(cl, rng.choice(sorted(PAIRS)), rng.choice(self.accounts))
                continue
            symbol = rng.choice(sorted(PAIRS))
            mid, qty = PAIRS[symbol]
            price = mid * (1 + Decimal(rng.randint(-3, 3)) / 100)
            side = rng.choice(("buy", "sell"))
            order: dict[str, Any] = {
                "client": f"client-{k}", "id": f"c{k}-o{len(out) + 1}", "symbol": symbol,
                "account": rng.choice(self.accounts), "side": side, "qty": qty,
                "price": str(price), "sent": clock.now}  # fmt: skip
            if self.gtd_p and rng.random() < self.gtd_p:  # (ms of the exchange's clock)
                order["expire"] = int(clock.time() * 1000) + rng.randint(20, 400)
            try:
                r = await cl.place(order["symbol"], order["side"], qty, order["price"],
                                   account=order["account"], id=order["id"],
                                   expire=order.get("expire"))  # fmt: skip
                order.update(fate=r.fate or (NOT_EXECUTED if r.rejected else EXECUTED),
                             code=r.code)  # fmt: skip
            except ShardexError as exc:
                order.update(fate=UNKNOWN, code=getattr(exc, "code", type(exc).__name__))
            order["first_fate"] = order["fate"]
            order["done"] = clock.now
            out.append(order)
        return out

    @staticmethod
    async def _cancel_all(cl: AsyncClient, symbol: str, account: str) -> None:
        """Cancel ``account``'s orders in ``symbol``: whatever it answers (a timeout, a
        refusal during a fault), the final checks judge the books and holds it leaves."""
        try:
            await cl.cancel_all(symbol, account=account)
        except ShardexError:
            pass

    async def _cancel(self, cl: AsyncClient, order: dict[str, Any],
                      clock: VirtualClock) -> dict[str, Any]:  # fmt: skip
        """Cancel ``order`` (it may have filled meanwhile: then the cancel does not run)."""
        rec = {"client": order["client"], "id": order["id"], "symbol": order["symbol"],
               "account": order["account"], "sent": clock.now}  # fmt: skip
        try:
            r = await cl.cancel(order["symbol"], order["id"], account=order["account"])
            rec.update(fate=r.fate or (NOT_EXECUTED if r.rejected else EXECUTED), code=r.code)
        except ShardexError as exc:
            rec.update(fate=UNKNOWN, code=getattr(exc, "code", type(exc).__name__))
        rec["done"] = clock.now
        return rec

    async def settle(self, cl: AsyncClient, records: list[dict[str, Any]], cancels: bool = False,
                     tries: int = 50, pause_s: float = 0.1) -> None:  # fmt: skip
        """After the heal: learn the fate of every order (or cancel) still ``unknown`` the
        way the SDK does after a timeout (``AsyncClient._ask_fates``, ``FateDecisions``: with
        the account tier, a new order's account shard first -- one it holds ran, or will --
        then the engine shard), up to ``tries`` rounds ``pause_s`` apart while any is left
        open. The same decision a client makes, so a bug in it shows in the run's checks."""
        open_ = [rec for rec in records if rec["fate"] == UNKNOWN]
        for _ in range(tries if open_ else 0):
            tuples = [cl.command(self._command(cl, rec, cancels)) for rec in open_]
            try:
                fates, _refused = await cl._ask_fates(tuples, list(range(len(open_))), 8, 4)
            except ShardexError:
                fates = {}
            for i, (fate, _status) in fates.items():
                if fate != UNKNOWN:
                    open_[i]["fate"] = fate
            open_ = [rec for rec in open_ if rec["fate"] == UNKNOWN]
            if not open_:
                break
            await asyncio.sleep(pause_s)

    @staticmethod
    def _command(cl: AsyncClient, rec: dict[str, Any], cancel: bool) -> dict[str, Any]:
        """The command ``rec`` was sent as (a new order, or the cancel of one)."""
        if cancel:
            return cl._cancel_cmd(rec["symbol"], rec["id"], rec["account"])
        return cl.order(rec["symbol"], rec["side"], rec["qty"], rec["price"],
                        account=rec["account"], id=rec["id"],
                        expire=rec.get("expire"))  # fmt: skip


__all__ = ["FUNDS", "PAIRS", "TIMED", "Workload"]
