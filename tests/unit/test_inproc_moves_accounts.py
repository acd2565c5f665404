"""A live move with the account tier on, through the real node loops (``shardex.inproc``): the
mover journals the new map on every account shard (``A_PLACE``), whose new orders and amends
of the moved pair then go to the new engine shard; every shard replaying its journal alone
(no snapshot) after a restart, under a stored map that has moved on since, does what the live
one did: the account shards forward every order where they did, the engine shards accept the
forwards they accepted (``shardex.accounts.routing``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from shardex.client import AsyncClient
from shardex.inproc import InProcCluster
from shardex.placement import default_owner
from shardex.placement.store import DirStore
from shardex.tools.mover import ask, move_pair
from shardex.wire.protocol import OP_PAIR
from tests.support.inproc import plan, run

pytestmark = pytest.mark.timeout(120)

P = "BTC-USD"
SRC = default_owner(P, 2)
DST = 1 - SRC


def _orders(c: AsyncClient, shard: int, n: int) -> Callable[[], Awaitable[bool]]:
    async def pred() -> bool:
        return (await ask(c, shard, (OP_PAIR, P)))["orders"] == n

    return pred


async def _ran_somewhere(c: AsyncClient, at: int, n: int) -> Callable[[], Awaitable[bool]]:
    """True once the target holds ``n`` orders of the pair, or the source journaled a command
    after ``at`` (its hand-off): a forward it refused ``moving`` (then the test fails at once
    instead of waiting out a deadline)."""

    async def pred() -> bool:
        if (await ask(c, DST, (OP_PAIR, P)))["orders"] == n:
            return True
        return (await ask(c, SRC, (OP_PAIR, P)))["seq"] > at

    return pred


def _routing(cluster: InProcCluster) -> list[Any]:
    """Each account shard's forward chains (last seq sent per engine shard), map version and
    halt; each engine shard's seq, forwards refused and the state it handed off (a replay that
    judged a forward otherwise differs)."""
    engines = [e.core.engine for e in cluster.engines]
    return [*[(dict(a.machine.core.outbox.last), a.machine.placement.version, a.handler.halted)
              for a in cluster.accounts],
            *[(e.seq, e.refusals, e.handed.get(P)) for e in engines]]  # fmt: skip


def test_after_a_move_the_account_tier_forwards_the_pair_to_its_new_shard(
    tmp_path: Path,
) -> None:
    async def moved(cluster: InProcCluster) -> list[Any]:
        async with cluster.client(account="al", timeout=10.0) as c:
            assert (await c.deposit("al", "USD", "100000", ref="d-al")).ok
            assert (await c.deposit("bo", "BTC", "100", ref="d-bo")).ok
            for k in range(3):
                assert (await c.place(P, "buy", "1", str(100 + k), id=f"b{k}")).ok
            await cluster.until(_orders(c, SRC, 3), timeout=30, what="3 bids on the source")
            done = await move_pair(c, P, DST, say=lambda line: None,
                                   store=DirStore(tmp_path), shards=2)  # fmt: skip
            assert (done["source"], done["to"]) == (SRC, DST)
            at = (await ask(c, SRC, (OP_PAIR, P)))["seq"]
            late = await c.place(P, "buy", "1", "99", id="late")  # held, forwarded
            assert late.ok and late.events == [], late
            await cluster.until(await _ran_somewhere(c, at, 4), timeout=30, what="the order")
            assert (await ask(c, DST, (OP_PAIR, P)))["orders"] == 4  # (not refused `moving`)
            amended = await c.amend(P, "b0", price="98")  # through the account shard
            assert amended.ok, amended
            book: dict[str, Any] = {}

            async def repriced() -> bool:
                book.update(await ask(c, DST, (10, P, 10)))  # OP_BOOK on the target
                return [b[0] for b in book["bids"]][-1:] == [9800]

            await cluster.until(repriced, timeout=30, what="b0 repriced on the target")
            sell = await c.place(P, "sell", "1", "101", id="s0", account="bo")
            assert sell.ok, sell
            await cluster.until(_orders(c, DST, 3), timeout=30, what="b2 filled on the target")

            async def settled() -> bool:  # (the fill on the target settles bo's sale)
                bal = await c.balance("bo")
                return bal["BTC"] == (D(99), D(0)) and bal.get("USD", (0, 0))[0] > 0

            await cluster.until(settled, timeout=30, what="bo's sale settled")
            assert (await ask(c, SRC, (OP_PAIR, P)))["seq"] == at  # nothing reached the source
        return _routing(cluster)

    p = plan(2, accounts=2, data_dir=str(tmp_path))
    before = run(p, moved)
    assert [v for _, v, _ in before[:2]] == [DirStore(tmp_path).load().version] * 2
    snaps = list(tmp_path.glob("*/snapshot-*"))
    assert len(snaps) == 4  # (the shutdown's: removed, so every shard replays every record)
    for snap in snaps:
        snap.unlink()

    async def replayed(cluster: InProcCluster) -> list[Any]:
        routing = _routing(cluster)
        async with cluster.client(account="al", timeout=10.0) as c:
            assert (await c.place(P, "buy", "1", "97", id="after")).ok
            await cluster.until(_orders(c, DST, 4), timeout=30, what="a bid after the restart")
        return routing

    assert run(p, replayed) == before  # the same chains, map and no halt: routed as live did
