"""A pair move's pre-copy (``shardex.node.precopy``): a book built from an older snapshot of the
pair, with every price level that changed since replaced (``engine.moves.apply_levels``), rests
exactly the newer snapshot's orders in its priority; the state the target expands from the
delta is the hand-off's; through the real node loops, a pre-copied move gives the target the
source's book (and its replay the same), and a stale or missing pre-copy falls back to the
whole state."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import (
    BUY,
    EV_ADOPTED,
    EV_TRADE,
    GTC,
    LIMIT,
    OP_ADOPT,
    OP_AMEND,
    OP_CANCEL,
    OP_HANDOFF,
    OP_NEW,
    SELL,
    STOP_LIMIT,
)
from shardex.engine.engine import Engine
from shardex.engine.moves import apply_levels, prebuild
from shardex.inproc import InProcCluster
from shardex.node.moves import pair_read
from shardex.node.precopy import (
    DELTA,
    PRECOPY,
    changed_levels,
    joined,
    levels_of,
    source_delta,
    source_read,
    target_expand,
    target_stage,
)
from shardex.placement import default_owner
from shardex.tools.mover import MoveError, ask, move_pair
from shardex.wire.codes import NOT_ALLOWED
from shardex.wire.envelope import packb
from shardex.wire.movestate import unpack_state
from shardex.wire.protocol import OP_PAIR
from tests.support.inproc import plan as cluster_plan
from tests.support.inproc import run

pytestmark = pytest.mark.timeout(120)

P = "BTC-USD"
SRC = default_owner(P, 2)
DST = 1 - SRC


def _churn(eng: Engine, rng: random.Random, n: int, tag: str) -> None:
    """``n`` random commands on ``P``: new orders (some crossing), cancels, amends of qty and
    price."""
    out: list = []
    for k in range(n):
        live = list(eng.books[P].orders) if P in eng.books else []
        r = rng.random()
        if live and r < 0.25:
            oid = rng.choice(live)
            eng.apply((OP_CANCEL, P, oid, eng.books[P].orders[oid].account), out)
        elif live and r < 0.4:
            o = eng.books[P].orders[rng.choice(live)]
            qty, price = (max(1, o.qty - 1), None) if rng.random() < 0.5 else (None, o.price + 1)
            eng.apply((OP_AMEND, P, o.id, o.account, qty, price), out)
        else:
            side = rng.choice((BUY, SELL))
            price = rng.randrange(60, 100) if side == BUY else rng.randrange(101, 141)
            if rng.random() < 0.1:  # (crossing: fills at the best levels)
                price = 120 if side == BUY else 80
            eng.apply((OP_NEW, P, f"{tag}{k}", f"a{k % 5}", side, LIMIT, price,
                       rng.randrange(1, 4), GTC, False, 0), out)  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_a_book_built_ahead_with_the_changed_levels_replaced_is_the_newer_book(seed: int) -> None:
    rng = random.Random(seed)
    eng = Engine(DEFAULT_MARKETS)
    _churn(eng, rng, 300, "a")
    before = eng.books[P].snapshot()
    book = prebuild(eng.markets[P], P, before["bids"], before["asks"])
    _churn(eng, rng, 10 + 10 * seed, "b")
    after = eng.books[P].snapshot()
    old, new = levels_of(before["bids"], before["asks"]), levels_of(after["bids"], after["asks"])
    changes = changed_levels(old, new)
    assert 0 < len(changes) < len(set(old) | set(new))  # (some levels changed, not all)
    apply_levels(book, changes)
    book.check_integrity()
    got = book.snapshot()
    assert (got["bids"], got["asks"]) == (after["bids"], after["asks"])
    for side, price, q in changes:  # (what the target does with its copy of the levels)
        if q:
            old[(side, price)] = q
        else:
            old.pop((side, price))
    assert joined(old) == (after["bids"], after["asks"])


def _engine(cluster: InProcCluster, i: int) -> Engine:
    (node,) = [n for n in cluster.engines if n.core.index == i]
    return node.core.engine


def _orders(state: dict) -> tuple:
    """A pair state's trade-id counter and resting orders in priority order (without their
    accept seq: the adopting engine gives them its own)."""
    return (state["trade_id"], tuple(tuple(e[:7]) for e in state["bids"]),
            tuple(tuple(e[:7]) for e in state["asks"]))  # fmt: skip


async def _rest(c: object, n: int) -> None:
    for k in range(n):
        side, price = ("buy", str(90 + k % 8)) if k % 2 else ("sell", str(110 + k % 8))
        r = await c.place(P, side, str(1 + k % 3), price, id=f"r{k}")  # type: ignore[attr-defined]
        assert r.ok, r


def test_a_pre_copied_move_gives_the_target_the_sources_book_and_its_replay_the_same(
    tmp_path: Path,
) -> None:
    seen: dict = {}

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="al") as c:
            await _rest(c, 60)
            view = await ask(c, SRC, (OP_PAIR, P, PRECOPY))
            at = view["precopy_at"]
            staged = await ask(c, DST, (OP_ADOPT, P, SRC, at, view["precopy_packed"], PRECOPY))
            assert staged == {"precopied": at}
            # the pair trades on at the source: a fill, a cancel, a reprice, new levels
            assert (await c.place(P, "sell", "2", "97", id="x1", account="bo")).ok
            assert (await c.cancel(P, "r11")).ok
            assert (await c.amend(P, "r3", price="91")).ok
            assert (await c.place(P, "buy", "1", "80", id="x2")).ok
            assert (await c.place(P, "sell", "1", "130", id="x3")).ok
            (moved,) = await ask(c, SRC, (OP_HANDOFF, P, DST))
            assert "state_packed" in await ask(c, SRC, (OP_PAIR, P, DELTA, at - 1))  # (no copy)
            view = await ask(c, SRC, (OP_PAIR, P, DELTA, at))
            delta = unpack_state(view["state_delta"])
            assert 0 < len(delta["levels"]) < 8 and "bids" not in delta
            wrong = packb({**delta, PRECOPY: at - 1})  # (a pre-copy the target does not hold)
            with pytest.raises(MoveError, match="no pre-copy"):
                await ask(c, DST, (OP_ADOPT, P, SRC, moved[1], wrong))
            (adopted,) = await ask(c, DST, (OP_ADOPT, P, SRC, moved[1], view["state_delta"]))
            assert adopted[0] == EV_ADOPTED, adopted
            handed = _engine(cluster, SRC).handed[P]
            live = _engine(cluster, DST).books[P]
            live.check_integrity()
            assert _orders(live.snapshot()) == _orders(handed)  # the source's book, exactly
            assert _engine(cluster, DST).prebuilt == {}
            # its replay (a fresh engine adopting the whole state) builds the same book
            replayed = Engine(DEFAULT_MARKETS)
            replayed.apply((OP_ADOPT, P, SRC, moved[1], handed), [])
            assert _orders(replayed.books[P].snapshot()) == _orders(handed)
            evs = await ask(
                c, DST, (OP_NEW, P, "x4", "cy", BUY, LIMIT, 11000, 10000, GTC, False, 0)
            )  # (a crossing order on the target: trade ids go on)
            trades = [e for e in evs if e[0] == EV_TRADE]
            assert trades and trades[0][8] == handed["trade_id"] + 1, evs
            seen["book"] = _orders(live.snapshot())

    async def after_restart(cluster: InProcCluster) -> None:
        # the target's journal replayed (the adoption with the whole state, then x4)
        assert _orders(_engine(cluster, DST).books[P].snapshot()) == seen["book"]

    run(cluster_plan(2, data_dir=str(tmp_path)), body)
    run(cluster_plan(2, data_dir=str(tmp_path)), after_restart)


def test_the_mover_copies_ahead_and_a_target_without_the_copy_gets_the_whole_state(
    tmp_path: Path,
) -> None:
    lines: list[str] = []

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="al") as c:
            await _rest(c, 40)
            done = await move_pair(c, P, DST, say=lines.append, shards=2)
            assert done["source"] == SRC
            assert _orders(_engine(cluster, DST).books[P].snapshot()) == _orders(
                _engine(cluster, SRC).handed[P])  # fmt: skip
            # a target that lost its copy between the copy and the hand-off (restarted, or
            # another copy since) refuses the delta: the mover sends the whole state

            def lose_copy(line: str) -> None:
                lines.append(line)
                if "copied ahead" in line:
                    [n.core.precopies.clear() for n in cluster.engines if n.core.index == SRC]

            back = await move_pair(c, P, SRC, say=lose_copy, shards=2)
            assert back["source"] == DST
            assert (await ask(c, SRC, (OP_PAIR, P)))["orders"] == 40

    run(cluster_plan(2, data_dir=str(tmp_path)), body)
    assert any("copied ahead" in line for line in lines), lines
    assert any("sending the whole state" in line for line in lines), lines


def test_the_live_adoption_with_the_book_built_ahead_equals_the_replays_adoption() -> None:
    """The whole engine, not only the resting orders: the target that adopted with the book
    built ahead (and the changed levels) snapshots exactly as one that adopted the journaled
    state from scratch (its replay), with stop orders and recent results in the state."""
    rng = random.Random(7)
    src = Engine(DEFAULT_MARKETS)
    _churn(src, rng, 400, "a")
    for k, (side, trigger) in enumerate(((BUY, 130), (SELL, 70))):
        src.apply((OP_NEW, P, f"stop{k}", "st", side, STOP_LIMIT, trigger, 1, GTC, False, 0,
                   None, {"trigger": trigger}), [])  # fmt: skip
    source = SimpleNamespace(engine=src, precopies={})
    live, replay = Engine(DEFAULT_MARKETS), Engine(DEFAULT_MARKETS)
    target = SimpleNamespace(engine=live, precopies={})
    view: dict = {}
    source_read(source, P, view)
    at = view["precopy_at"]
    assert target_stage(target, (OP_ADOPT, P, SRC, at, view["precopy_packed"], PRECOPY)) == {
        "precopied": at
    }
    _churn(src, rng, 12, "b")
    (moved,) = src.apply_many([(OP_HANDOFF, P, 1)])
    out: dict = {}
    source_delta(source, P, at, out)
    cmd = target_expand(target, (OP_ADOPT, P, SRC, moved[1], unpack_state(out["state_delta"])))
    assert type(cmd) is tuple and live.prebuilt
    # what the target journals: the hand-off's state, byte for byte as without a pre-copy
    assert packb(cmd[4]) == packb(src.handed[P])
    assert live.apply_many([cmd])[0][0] == EV_ADOPTED
    assert replay.apply_many([(OP_ADOPT, P, SRC, moved[1], src.handed[P])])[0][0] == EV_ADOPTED
    assert not live.prebuilt and live.books[P].stops and live.books[P].stops.orders
    assert live.snapshot() == replay.snapshot()
    more = [(OP_NEW, P, "c1", "cx", BUY, LIMIT, 125, 9, GTC, False, 0)]  # sweeps, triggers
    assert live.apply_many(more) == replay.apply_many(more)


def test_a_pre_copy_is_the_movers_alone() -> None:
    """A reader key may ask where a pair stands, not make its shard copy the book (a copy
    replaces the mover's, whose delta would then fall back to the whole state)."""
    core = SimpleNamespace(key=SimpleNamespace(role="reader"), precopies={})
    refused = pair_read(core, (OP_PAIR, P, PRECOPY), {})
    assert refused["error"][0] == NOT_ALLOWED and core.precopies == {}, refused


def test_a_copy_most_of_whose_orders_changed_since_is_sent_whole() -> None:
    eng = Engine(DEFAULT_MARKETS)
    for k in range(20):
        eng.apply((OP_NEW, P, f"o{k}", "al", BUY, LIMIT, 90 + k % 4, 1, GTC, False, 0), [])
    source = SimpleNamespace(engine=eng, precopies={})
    view: dict = {}
    source_read(source, P, view)
    for k in range(11):  # (11 of 20 gone: the changed levels hold them all)
        eng.apply((OP_CANCEL, P, f"o{k}", "al"), [])
    eng.apply_many([(OP_HANDOFF, P, 1)])
    out: dict = {}
    source_delta(source, P, view["precopy_at"], out)
    assert "state_delta" not in out and unpack_state(out["state_packed"])["bids"]
