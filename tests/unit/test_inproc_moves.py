"""A live move of one pair through the real node loops (``shardex.inproc``): the mover's steps
(``shardex.tools.mover``) journaled by the two engine shards, ``moving`` from the source, the
resting orders amended and cancelled on the target, an older order's status there, each step
safe to re-run, and both shards recovering the move from their journals after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardex.datadir import scan
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import OP_HANDOFF, OP_NEW, REJ_MOVING
from shardex.inproc import InProcCluster
from shardex.placement import default_owner, placed
from shardex.tools.mover import ADOPT, HANDOFF, PUBLISH, MoveError, Step, ask, move_pair, plan
from shardex.wire.protocol import OP_PAIR
from tests.support.inproc import plan as cluster_plan
from tests.support.inproc import run, run_virtual

pytestmark = pytest.mark.timeout(120)

P = "BTC-USD"
SRC = default_owner(P, 2)
DST = 1 - SRC


async def _place_book(cluster: InProcCluster) -> None:
    async with cluster.client(account="al") as c:
        for k in range(6):
            r = await c.place(P, "buy", "1", str(100 + k), id=f"b{k}")
            assert r.ok, r
        r = await c.place(P, "sell", "2", "105", id="s0", account="bo")  # fills b5, rests 1
        assert r.ok and r.events[-1]["ev"] == "trade", r


def test_a_pair_moves_with_its_book_and_each_step_may_be_re_run(tmp_path: Path) -> None:
    lines: list[str] = []

    async def body(cluster: InProcCluster) -> None:
        await _place_book(cluster)
        async with cluster.client(account="al") as c:
            done = await move_pair(c, P, DST, say=lines.append, shards=2)
            assert (done["source"], done["to"]) == (SRC, DST)
            again = await move_pair(c, P, DST, say=lines.append, shards=2)  # nothing left to do
            assert "source" not in again
            src = await ask(c, SRC, (OP_PAIR, P))
            dst = await ask(c, DST, (OP_PAIR, P))
            assert (src["where"], src["to"], dst["where"], dst["source"]) == (
                "moved", DST, "here", SRC)  # fmt: skip
            assert dst["source_at"] == src["at"] and dst["orders"] == 6
            late = await c.place(P, "buy", "1", "99", id="late")  # the router follows the map
            assert late.ok, late
            assert (await ask(c, DST, (OP_PAIR, P)))["orders"] == 7
            moving = await ask(c, SRC, (OP_NEW, P, "direct", "al", 0, 0, 9900, 1, 0, False, 0))
            assert moving[0][5] == REJ_MOVING, moving  # the old shard: moving, never a book

    run(cluster_plan(2, data_dir=str(tmp_path)), body)
    steps = [line.split(": ", 1)[1].split()[0] for line in lines]
    assert steps == ["placement", "resting", "hand-off", "adopted", "shard", "shard"], lines
    assert "copied ahead" in lines[1], lines  # (the pre-copy: ``shardex.node.precopy``)
    begun_v = int(lines[0].split("placement v")[1].split()[0])
    assert f"placement v{begun_v + 1} pins it to shard {DST}" in lines[4], lines
    assert lines[5].split(" (")[0] == lines[4].split(" (")[0]  # (a re-run: the same map)

    async def after_restart(cluster: InProcCluster) -> None:
        async with cluster.client(account="al", shard_endpoints=None) as c:
            src = await ask(c, SRC, (OP_PAIR, P))
            dst = await ask(c, DST, (OP_PAIR, P))
            assert (src["where"], dst["where"], dst["orders"]) == ("moved", "here", 7)
            book = await ask(c, DST, (10, P, 10))  # OP_BOOK on the target: b0..b4, late, s0
            assert (len(book["bids"]), len(book["asks"])) == (6, 1), book
            status = await ask(c, DST, (13, P, "al", "b5"))  # OP_ORDER: an older, filled order
            assert status["state"] == "filled"
            amended = await ask(c, DST, (3, P, "b4", "al", None, 9800))  # OP_AMEND: reprice
            assert amended[0][0] == 4, amended  # amended
            cancelled = await ask(c, DST, (2, P, "b3", "al"))
            assert cancelled[0][0] == 2, cancelled  # cancelled
            refused = await ask(c, SRC, (2, P, "b2", "al"))
            assert refused[0][5] == 17, refused  # moving, journaled by the source

    run(cluster_plan(2, data_dir=str(tmp_path)), after_restart)
    # the data dir check (``shardex up``) finds the pair where it went, on one shard only:
    # from the shutdown snapshots, and from the journals alone (as after a kill -9)
    assert placed(scan(tmp_path, DEFAULT_MARKETS))[P] == DST
    for snap in tmp_path.glob("shard-*/snapshot-*"):
        snap.unlink()
    assert placed(scan(tmp_path, DEFAULT_MARKETS))[P] == DST


def test_a_hand_off_to_a_shard_the_map_does_not_have_is_refused(tmp_path: Path) -> None:
    """A hand-off names its target; one outside the placement map's shards (a typo, a
    mutated command) was journaled: the pair then answered ``moving`` to "shard 10" of a
    2-shard cluster, forever. Now ``invalid``, nothing journaled, the pair keeps trading."""

    async def body(cluster: InProcCluster) -> None:
        await _place_book(cluster)
        async with cluster.client(account="al") as c:
            for to in (10, 2, -1, "1"):
                with pytest.raises(MoveError, match="invalid|shard"):
                    await ask(c, SRC, (OP_HANDOFF, P, to))
            here = await ask(c, SRC, (OP_PAIR, P))
            assert here["where"] == "here", here
            r = await c.place(P, "buy", "1", "99", id="after")
            assert r.ok, r

    run(cluster_plan(2, data_dir=str(tmp_path)), body)


def test_the_plan_follows_what_the_shards_say() -> None:
    here = {"where": "here"}
    away = {"where": "elsewhere"}
    assert plan(P, 1, [here, away]).kind == HANDOFF
    moved = {"where": "moved", "to": 1, "at": 9, "state": {"trade_id": 3}}
    step = plan(P, 1, [moved, away])
    assert (step.kind, step.source, step.at, step.state) == (ADOPT, 0, 9, {"trade_id": 3})
    assert plan(P, 1, [moved, {"where": "here", "source": 0, "source_at": 9}]).kind == PUBLISH
    assert plan(P, 1, [away, here]).kind == PUBLISH
    # moving back 1 -> 0 after 0 -> 1: shard 0's old record does not block it, at any step
    back = {"where": "here", "source": 0, "source_at": 9}
    assert plan(P, 0, [moved, back]) == Step(HANDOFF, 1)
    moved_back = {"where": "moved", "to": 0, "at": 30, "state": {}}
    assert plan(P, 0, [moved, moved_back]) == Step(ADOPT, 0, 1, 30, {})
    home = {"where": "here", "source": 1, "source_at": 30}
    assert plan(P, 0, [home, moved_back]).kind == PUBLISH
    with pytest.raises(MoveError, match="finish that move first"):
        plan(P, 2, [moved, away, away])
    with pytest.raises(MoveError, match="expected one"):
        plan(P, 1, [away, away])
    with pytest.raises(MoveError, match="--to 5"):
        plan(P, 5, [here, away])


def test_a_mover_that_died_after_the_hand_off_is_run_again_after_a_restart(
    tmp_path: Path,
) -> None:
    """The mover dies right after the source journaled the hand-off, and the whole cluster is
    restarted from its journals: the pair is on neither shard's book, and it is not lost (the
    source kept the state it handed off); running the mover again adopts and publishes it."""
    lines: list[str] = []

    async def died_after_handoff(cluster: InProcCluster) -> None:
        await _place_book(cluster)
        async with cluster.client(account="al") as c:
            await ask(c, SRC, (OP_HANDOFF, P, DST))  # (the mover's first step, then it died)

    async def resumed(cluster: InProcCluster) -> None:
        async with cluster.client(account="al") as c:
            assert (await ask(c, DST, (OP_PAIR, P)))["orders"] == 0
            done = await move_pair(c, P, DST, say=lines.append, shards=2)
            assert "source" not in done  # no second hand-off
            assert (await ask(c, DST, (OP_PAIR, P)))["orders"] == 6
            assert (await c.place(P, "sell", "1", "104", id="x", account="bo")).events[-1][
                "ev"] == "trade"  # fmt: skip

    run(cluster_plan(2, data_dir=str(tmp_path)), died_after_handoff)
    run(cluster_plan(2, data_dir=str(tmp_path)), resumed)
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == ["adopted", "shard"], lines


def test_replicated_shards_move_through_their_journals_and_keep_the_pair_after_a_failover(
    tmp_path: Path,
) -> None:
    """With two replicas per engine shard, the hand-off and the adoption reach the standbys
    like any command: the target's leader is killed after the move, its standby leads with
    the adopted book, and the source's new leader (killed too) still answers ``moving``."""

    async def body(cluster: InProcCluster) -> None:
        leaders = await cluster.until(lambda: len(cluster.leaders()) == 2 and cluster.leaders(),
                                      timeout=60, what="two leaders")  # fmt: skip
        for node in leaders:
            await cluster.until(lambda n=node: len(n.leader.replica.isr) == 2, timeout=60,
                                what="in sync")  # fmt: skip
        await _place_book(cluster)
        async with cluster.client(account="al", timeout=10.0) as c:
            await move_pair(c, P, DST, say=lambda line: None, shards=2)
            for node in cluster.leaders():
                cluster.freeze(node)  # both leaders die after the move
            await cluster.until(
                lambda: sum(r.leader is not None and r not in leaders for r in cluster.replicas)
                == 2, timeout=60, what="both standbys to lead")  # fmt: skip
            dst = await ask(c, DST, (OP_PAIR, P))
            src = await ask(c, SRC, (OP_PAIR, P))
            assert (dst["where"], dst["orders"], src["where"]) == ("here", 6, "moved")

    p = cluster_plan(2, redis="redis://sim/0", replicas=2, data_dir=str(tmp_path))
    run_virtual(p, body)
