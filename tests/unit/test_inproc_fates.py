"""The SDK's fate of a write that timed out, through a whole cluster in one process
(``shardex.inproc``): a shard frozen while the request is in flight (``InProcCluster.freeze``,
as a SIGSTOPped process, a long GC pause or a wedged disk would be) answers after the client's
timeout. Every path: the engine shard alone (the fate is unknown while it cannot answer, and a
retry with the same id is refused as a duplicate), and writes through the account shard
(``Retry`` asks it first, a timed-out amend stays unknown while it cannot answer).
tests/chaos/test_accounts_stops.py keeps ``shardex loadgen`` against a real SIGSTOP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from typing import Any

import pytest

from shardex.client import UNKNOWN, AsyncClient, Retry
from shardex.inproc import InProcCluster
from shardex.wire import codes
from shardex.wire.errors import ErrorText
from tests.support.inproc import plan
from tests.support.inproc import run as run_on

pytestmark = pytest.mark.timeout(60)

SYMBOL = "BTC-USD"
Body = Callable[[InProcCluster, AsyncClient], Awaitable[Any]]


def run(accounts: int, body: Body) -> Any:
    """``body(cluster, admin client)`` on one engine shard (and ``accounts`` account shards,
    with r1, a1 and a2 funded 1000 USD each), in this process."""

    async def funded(cluster: InProcCluster) -> Any:
        async with cluster.client() as admin:
            if accounts:
                for who in ("r1", "a1", "a2"):
                    assert (await admin.deposit(who, "USD", "1000", ref=f"edge-{who}")).ok
            return await body(cluster, admin)

    return run_on(plan(1, accounts), funded)


def _state(c: AsyncClient, oid: str, account: str, want: str):
    async def pred() -> bool:
        return (await c.order_status(SYMBOL, oid, account=account))["state"] == want

    return pred


def _released(c: AsyncClient, account: str):
    async def pred() -> bool:
        return (await c.balance(account))["USD"] == (D("1000.00"), D(0))

    return pred


def test_fate_of_a_timed_out_order_and_a_safe_retry() -> None:
    """Freeze the shard: the order times out and its shard cannot be asked → unknown; after
    the thaw the order ran (live), and sending the same id again is refused as a duplicate."""

    async def body(cl: InProcCluster, _: AsyncClient) -> None:
        async with cl.client(account="f", timeout=0.5) as c:
            c.markets_source = "given"
            cmd = c.order("BTC-USD", "buy", "1", "100", id="fate-1")
            cl.freeze(cl.engines[0])
            try:
                (r,) = await c.submit_many([cmd])
            finally:
                cl.thaw(cl.engines[0])
            assert r.error.startswith("timeout") and r.fate == UNKNOWN
            await cl.until(_state(c, "fate-1", "f", "live"), what="the order live")
            (again,) = await c.submit_many([cmd])
            assert again.fate == "executed" and again.rejected and "duplicate" in again.reason
            assert (await c.order_status("BTC-USD", "fate-1"))["qty"] == D("1")

    run(0, body)


def test_retried_new_asks_the_account_shard_and_is_not_sent_again():
    """Regression (``Retry``): a ``new`` that timed out while its account shard was stopped
    was asked of the engine shard alone, judged "not executed" (the engine had never seen
    it) and sent again — a second attempt queued behind the first, saved only by the
    account shard's duplicate-id check (and a different id, as the docs allow after "not
    executed", would have run twice). Now the retry asks the account shard first: it answers
    once it runs again, ``held`` → executed, one attempt."""

    async def body(cl: InProcCluster, _: AsyncClient) -> None:
        async with cl.client(timeout=1.0, retry=Retry(deadline=8.0)) as c:
            cl.freeze(cl.accounts[0], 1.6)
            r = await c.place(SYMBOL, "buy", "0.01", "10", account="r1", id="r-new-1")
            assert r.fate == "executed", (r.fate, r.status, r.error)
            assert r.attempts == 1, f"sent {r.attempts} times (fate asked of the engine shard only)"
            assert r.status and r.status["state"] == "held", r.status
            await cl.until(_state(c, "r-new-1", "r1", "live"), what="the order on the book")
            assert (await c.cancel(SYMBOL, "r-new-1", account="r1")).ok
            await cl.until(_released(c, "r1"), what="hold released")

    run(1, body)


def test_async_client_retry_asks_the_account_shard_too():
    """``AsyncClient`` runs the same decision (``ClientCore.fate_steps``): a retried amend
    whose account shard was stopped past the timeout is one attempt, executed."""

    async def body(cl: InProcCluster, admin: AsyncClient) -> None:
        async with cl.client(timeout=1.0, retry=Retry(8.0)) as c:
            assert (await c.place(SYMBOL, "buy", "0.03", "10", account="a1", id="as-1")).ok
            # settled on the book: the amend needs it live
            await cl.until(_state(c, "as-1", "a1", "live"), 15, "as-1 on the book")
            cl.freeze(cl.accounts[0], 1.6)
            r = await c.amend(SYMBOL, "as-1", qty="0.01", account="a1")
            assert r.fate == "executed" and r.attempts == 1, (r.fate, r.attempts, r.status)
            assert (await c.cancel(SYMBOL, "as-1", account="a1")).ok
        await cl.until(_released(admin, "a1"), what="hold released")

    run(1, body)


def test_timed_out_amend_is_unknown_while_its_account_shard_cannot_answer():
    """Regression (no retry): an ``amend`` goes through the account shard (a buy's raised
    price needs more hold first). Timed out while that shard was stopped, its fate was asked
    of the engine shard alone, which still showed the old qty: "not executed" — and then the
    amend ran. Now the account shard is asked first; while it cannot answer the fate stays
    ``unknown``."""

    async def body(cl: InProcCluster, _: AsyncClient) -> None:
        async with cl.client(timeout=0.5) as c:
            assert (await c.place(SYMBOL, "buy", "0.02", "10", account="a1", id="am-1")).ok
            await cl.until(_state(c, "am-1", "a1", "live"), what="live")
            cl.freeze(cl.accounts[0], 1.6)  # > the amend's and its fate query's timeouts
            r = await c.amend(SYMBOL, "am-1", qty="0.01", account="a1")
            assert r.error and r.error.startswith("timeout after"), r.error
            assert r.fate == "unknown", (r.fate, r.status)  # it did run: "not executed" was a lie

            async def amended() -> bool:
                st = await c.order_status(SYMBOL, "am-1", account="a1")
                return st.get("qty") == D("0.01")

            await cl.until(amended, what="the timed-out amend ran after the thaw")

            async def reachable() -> bool:  # the account shard answers through the router
                return "error" not in (await c.account_status())[0]

            await cl.until(reachable, what="the router routes to the account shard again")
            # answered now: the account shard forwarded it, the engine shard shows it → executed
            cmd = c.command(c._amend_cmd(SYMBOL, "am-1", "0.01", None, "a1"))
            timeout = ErrorText(codes.TIMEOUT, "timeout after 0.5s")
            fate, status = (await c._fates([cmd], [(timeout, None)], 1))[0]
            assert fate == "executed" and status["qty"] == D("0.01"), (fate, status)
            assert (await c.cancel(SYMBOL, "am-1", account="a1")).ok
            await cl.until(_released(c, "a1"), what="hold released")

    run(1, body)


def test_retried_amend_asks_the_account_shard_and_is_not_sent_again():
    """Regression (``Retry``): the same timed-out amend was judged "not executed" from the
    engine shard's old qty and sent again (two amends forwarded; had a fill come between,
    the second would have been refused as an increase and reported as the amend's outcome).
    Now: asked of the account shard first, then the engine shard; one attempt, executed."""

    async def body(cl: InProcCluster, _: AsyncClient) -> None:
        async with cl.client(timeout=1.0, retry=Retry(deadline=8.0)) as c:
            assert (await c.place(SYMBOL, "buy", "0.03", "10", account="a2", id="am-2")).ok
            await cl.until(_state(c, "am-2", "a2", "live"), what="live")
            cl.freeze(cl.accounts[0], 1.6)
            r = await c.amend(SYMBOL, "am-2", qty="0.01", account="a2")
            assert r.fate == "executed", (r.fate, r.status, r.error)
            assert r.attempts == 1, f"sent {r.attempts} times (fate asked of the engine shard only)"
            assert r.status and r.status["qty"] == D("0.01"), r.status
            assert (await c.cancel(SYMBOL, "am-2", account="a2")).ok
            await cl.until(_released(c, "a2"), what="hold released")

    run(1, body)
