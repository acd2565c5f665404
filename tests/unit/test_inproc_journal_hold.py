"""An engine shard whose journal cannot write holds the batch it could not make durable --
its replies, its events *and its settlements*: an account shard must never apply a settlement
of a trade that a crash could still erase. Found by the simulator (an EIO spell, then a crash
point in the retried write: the account shard had applied settlements of engine seq 2, the
engine came back at seq 1, and funds stayed held for orders on no book)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from shardex.client import AsyncClient
from shardex.inproc import InProcCluster
from shardex.journal import JournalUnavailable
from tests.support.inproc import plan
from tests.support.inproc import run as run_on

pytestmark = pytest.mark.timeout(60)


def test_settlements_of_a_batch_the_journal_could_not_write_wait_until_it_is_durable(tmp_path):
    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=5) as c:
            await _scenario(cl, c)

    run_on(plan(1, 1, data_dir=str(tmp_path)), body)


async def _scenario(cl: InProcCluster, c: AsyncClient) -> None:
    assert (await c.deposit("alice", "USD", "1000", ref="a")).ok
    assert (await c.deposit("bob", "BTC", "1", ref="b")).ok
    assert (await c.place("BTC-USD", "sell", "0.5", "100", account="bob", id="s1")).ok

    async def resting() -> bool:
        return (await c.order_status("BTC-USD", "s1", account="bob"))["state"] == "live"

    await cl.until(resting, what="bob's sell resting")
    engine = cl.engines[0]
    journal = engine.core.journal
    commit = journal.commit

    def broken() -> None:
        raise JournalUnavailable("simulated: the disk fails every write")

    journal.commit = broken  # the journal cannot write from now on
    sent = engine.link_counts["settlements"]
    # the buy trades against the sell: settlements for both accounts, in a batch that fails
    assert (await c.place("BTC-USD", "buy", "0.5", "100", account="alice", id="b1")).ok
    await cl.until(lambda: engine.core.journal_down is not None, what="the journal held")
    await c.book("BTC-USD")  # a read: the shard serves it, releasing what it may
    await c.book("BTC-USD")
    assert engine.link_counts["settlements"] == sent, "a settlement left before it was durable"
    journal.commit = commit  # the disk works again: the retry writes it, then it all goes

    async def settled() -> Any:
        return (await c.balance("alice")).get("BTC") == (D("0.5"), D("0"))

    try:
        await cl.until(settled, what="alice's trade settled after the retry")
    except TimeoutError:
        raise AssertionError((await c.balance("alice"), engine.link_counts, engine.held)) from None
    assert engine.link_counts["settlements"] > sent
