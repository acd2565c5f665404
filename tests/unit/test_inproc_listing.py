"""Listing a new pair on a running cluster in one process (``shardex.inproc``, ``shardex up
--shards 2 --accounts 2``): list AAPL-USD (a new asset against an existing one), deposit it,
trade it, audit clean; a listing that would change USD's unit is refused ``unit_conflict`` with
nothing listed anywhere; a client that learned the table before the listing learns the pair on
its first order; after a restart with the original markets file the pair is still there (from
the shutdown's snapshots, and from the journals alone)."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from shardex.accounts.core import account_shard_for
from shardex.client import AsyncClient, audit_report
from shardex.inproc import InProcCluster
from shardex.placement import default_owner
from shardex.tools.list_pin import pin_new_pair
from shardex.tools.mover import move_pair
from tests.support.inproc import plan, run

pytestmark = pytest.mark.timeout(120)

NEW = "AAPL-USD"
SPEC = {"tick": "0.01", "lot": "0.001", "max_price": "100000", "max_qty": "100000"}
AL = next(a for a in (f"al{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
BO = next(a for a in (f"bo{k}" for k in range(50)) if account_shard_for(a, 2) == 1)


def _balance(c: AsyncClient, account: str, asset: str, want: tuple[D, D]):
    async def pred() -> bool:
        return (await c.balance(account)).get(asset) == want

    return pred


async def _list_and_trade(cl: InProcCluster, c: AsyncClient, early: AsyncClient) -> None:
    bad = await c.list_market("FOO-USD", {"tick": "0.0000001", "lot": "0.001"})
    assert bad["ok"] is False and bad["code"] == "unit_conflict", bad
    assert "FOO-USD" not in (await c.market_rules())
    res = await c.list_market(NEW, SPEC, fee=(1, 3))
    assert res["ok"] and res["tick"] == "0.01" and res["lot"] == "0.001", res
    again = await c.list_market(NEW, SPEC, fee=(1, 3))  # a repeated listing: a no-op
    assert again["ok"], again
    other = await c.list_market(NEW, {**SPEC, "tick": "0.1"})
    assert other["ok"] is False and other["code"] == "invalid", other
    assert (await c.market_rules())[NEW]["shard"] == default_owner(NEW, 2)
    assert (await c.deposit(AL, "USD", "10000", ref="d-al")).ok
    assert (await c.deposit(BO, "AAPL", "10", ref="d-bo")).ok
    assert (await c.place(NEW, "sell", "2", "150.25", account=BO, id="s1")).ok
    # ``early`` learned the table before the listing: it learns the pair on its first order
    assert NEW not in early.markets
    assert (await early.place(NEW, "buy", "1.5", "150.25", account=AL, id="b1")).ok
    assert NEW in early.markets
    # 1.5 × 150.25 = 225.375 USD; al pays the taker fee, 3 bps: 0.0676125, rounded up to
    # USD's unit (0.000001, unchanged by the listing)
    await cl.until(_balance(c, AL, "AAPL", (D("1.5"), D(0))), what="the trade settled")
    await cl.until(_balance(c, AL, "USD", (D("9774.557387"), D(0))), what="al's fee charged")
    await cl.until(_balance(c, BO, "AAPL", (D("8"), D("0.5"))), what="bo's rest held")
    lines, ok = audit_report(await c.audit())
    assert ok, lines


def test_list_a_pair_at_runtime(tmp_path: Path) -> None:
    p = plan(2, accounts=2, data_dir=str(tmp_path))

    async def live(cl: InProcCluster) -> dict[str, Any]:
        async with cl.client(timeout=10.0) as early, cl.client(timeout=10.0) as c:
            await early.market_rules()  # (learns the table now, before the listing)
            await _list_and_trade(cl, c, early)
            return {"rules": await c.market_rules(), "al": await c.balance(AL)}

    before = run(p, live)
    assert NEW in before["rules"]

    async def restarted(cl: InProcCluster) -> dict[str, Any]:
        async with cl.client(timeout=10.0) as c:
            assert (await c.cancel(NEW, "s1", account=BO)).ok  # the listed pair's book is back
            await cl.until(_balance(c, BO, "AAPL", (D("8.5"), D(0))), what="the hold released")
            assert (await c.place(NEW, "sell", "0.5", "150", account=BO, id="s2")).ok
            lines, ok = audit_report(await c.audit())
            assert ok, lines
            return {"rules": await c.market_rules(), "al": await c.balance(AL)}

    after = run(p, restarted)  # (from the shutdown's snapshots)
    assert after == before
    for snap in tmp_path.glob("*/snapshot-*"):
        snap.unlink()

    async def replayed(cl: InProcCluster) -> dict[str, Any]:
        async with cl.client(timeout=10.0) as c:
            assert (await c.balance(BO)).get("AAPL") == (D("8"), D("0.5"))
            lines, ok = audit_report(await c.audit())
            assert ok, lines
            return {"rules": await c.market_rules(), "al": await c.balance(AL)}

    assert run(p, replayed) == before  # (every journal replayed from its start)


def test_list_a_pair_pinned_to_a_shard() -> None:
    """``shardex market add --shard I``'s steps: the new symbol pinned to the shard its
    default does not give it, then listed there; an order of it rests on that shard."""
    sym = "SOL-EUR"
    target = 1 - default_owner(sym, 2)

    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=10.0) as c:
            await pin_new_pair(c, sym, target)
            res = await c.list_market(sym, {"tick": "0.01", "lot": "0.01"}, shard=target)
            assert res["ok"], res
            assert (await c.market_rules())[sym]["shard"] == target
            with pytest.raises(ValueError, match="already listed on shard"):
                await pin_new_pair(c, sym, 1 - target)  # (that would be a move)
            assert (await c.deposit(BO, "SOL", "3", ref="d-sol")).ok
            assert (await c.place(sym, "sell", "1", "20", account=BO, id="e1")).ok
            await cl.until(_balance(c, BO, "SOL", (D("2"), D("1"))), what="the sell held")
            books = cl.engines[target].core.engine.books
            await cl.until(lambda: sym in books and "e1" in books[sym].orders, what="e1 rests")

    run(plan(2, accounts=2), body)


def test_a_listed_pair_moves_with_its_definition() -> None:
    """A live move of a listed pair: the target shard never saw the listing; the pair's state
    carries its definition, so the target adopts the book and serves it (an order resting
    before the move trades after it)."""
    sym = "ADA-EUR"
    source = default_owner(sym, 2)

    async def body(cl: InProcCluster) -> None:
        async with cl.client(timeout=10.0) as c:
            assert (await c.list_market(sym, {"tick": "0.0001", "lot": "1"}))["ok"]
            assert (await c.deposit(BO, "ADA", "100", ref="d-ada")).ok
            assert (await c.deposit(AL, "EUR", "100", ref="d-eur")).ok
            assert (await c.place(sym, "sell", "10", "0.5", account=BO, id="m1")).ok
            books = cl.engines[source].core.engine.books
            await cl.until(lambda: sym in books and "m1" in books[sym].orders, what="m1 rests")
            await move_pair(c, sym, 1 - source, say=lambda line: None, shards=2)
            assert (await c.market_rules())[sym]["shard"] == 1 - source
            assert (await c.place(sym, "buy", "4", "0.5", account=AL, id="m2")).ok
            await cl.until(_balance(c, AL, "ADA", (D("4"), D(0))), what="m2 traded m1")
            lines, ok = audit_report(await c.audit())
            assert ok, lines

    run(plan(2, accounts=2), body)
