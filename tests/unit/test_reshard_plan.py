"""The reshard planner (``shardex.placement.reshard``, pure): which pairs move where when the
pairs are spread over N of the running engine shards, and what a re-run after a crash does."""

from __future__ import annotations

import pytest

from shardex.cli.placement import render
from shardex.engine import DEFAULT_MARKETS
from shardex.move_metrics import MoveStats
from shardex.placement import PlacementMap, default_owner
from shardex.placement.reshard import Move, ReshardError, describe, plan

PAIRS = [f"P{k:02d}-USD" for k in range(64)]


def test_shrinking_to_one_shard_moves_every_pair_off_the_others() -> None:
    pmap = PlacementMap(3, 4)
    p = plan(pmap, PAIRS, 1)
    assert {m.symbol for m in p.moves} == {s for s in PAIRS if pmap.owner(s) != 0}
    assert all(m.target == 0 and m.source == pmap.owner(m.symbol) for m in p.moves)
    assert p.after[0] == tuple(sorted(PAIRS)) and p.emptied == [1, 2, 3]


def test_growing_moves_only_the_pairs_whose_default_is_a_new_shard() -> None:
    one = PlacementMap(5, 4, {s: 0 for s in PAIRS})  # everything on shard 0 (a shrink's result)
    to_two = plan(one, PAIRS, 2)
    assert {m.symbol for m in to_two.moves} == {s for s in PAIRS if default_owner(s, 2) == 1}
    assert all((m.source, m.target) == (0, 1) for m in to_two.moves)
    two = PlacementMap(9, 4, {s: default_owner(s, 2) for s in PAIRS})
    to_four = plan(two, PAIRS, 4)
    assert to_four.moves and all(m.target in (2, 3) for m in to_four.moves)  # none between 0, 1
    assert 8 <= len(to_four.moves) <= 56  # about half of 64 (rendezvous: ~(4-2)/4)
    assert to_four.emptied == []


def test_a_finished_reshard_plans_nothing_and_a_move_in_progress_is_finished_first() -> None:
    done = PlacementMap(7, 2, {s: default_owner(s, 2) for s in PAIRS})
    assert plan(done, PAIRS, 2).moves == ()
    assert plan(PlacementMap(1, 2), DEFAULT_MARKETS, 2).moves == ()  # (defaults: in place)
    a, b = PAIRS[0], PAIRS[1]
    want_a = default_owner(a, 1)
    crashed = PlacementMap(8, 2, {**done.pins, a: 1 - want_a}, {a: (1 - want_a, want_a),
                                                                 b: (0, 1)})  # fmt: skip
    p = plan(crashed, PAIRS, 1)
    assert p.moves[:2] == (Move(a, 1 - want_a, want_a, True), Move(b, 0, 1, True))
    assert Move(b, 1, 0) in p.moves  # finished where it was going, then moved on to shard 0
    assert [m.symbol for m in p.moves].count(a) == 1  # (it was already going to its target)
    lines = describe(p)
    assert lines[0].startswith("reshard to 1 of 2 engine shard(s) from placement v8")
    assert "(in progress: finishing it)" in lines[1]


def test_a_count_outside_the_running_shards_is_refused_with_what_to_do() -> None:
    for n in (0, 3):
        with pytest.raises(ReshardError, match="shardex up --shards"):
            plan(PlacementMap(1, 2), PAIRS, n)


def test_pinned_pairs_outside_the_market_table_are_placed_too() -> None:
    p = plan(PlacementMap(2, 2, {"ZZZ-USD": 1}), [], 1)
    assert p.moves == (Move("ZZZ-USD", 1, 0),)


def test_a_pause_ends_when_a_map_pins_the_pair_to_its_new_shard_and_no_earlier() -> None:
    stats = MoveStats()
    stats.handed("A", 1, now=10.0)
    stats.handed("B", 2, now=10.5)
    still = PlacementMap(3, 3, {"A": 1}, {"A": (0, 1)})  # (the move recorded, not finished)
    assert stats.published(still.owner, still.moving, now=10.7) == []
    pinned = PlacementMap(4, 3, {"A": 1})
    assert stats.published(pinned.owner, pinned.moving, now=11.25) == [1.25]
    assert list(stats.pending) == ["B"] and sum(stats.pause_counts) == 1
    stats.step("handoff", "repeat")
    fams = {f.name: f for f in stats.families("0", engine_moving=7)}
    refusals = {s.labels["kind"]: s.value for s in fams["shardex_move_refusals"].samples}
    assert refusals == {"command": 7, "read": 0}
    moves = {(s.labels["step"], s.labels["outcome"]): s.value
             for s in fams["shardex_moves"].samples}  # fmt: skip
    assert moves[("handoff", "repeat")] == 1 and len(moves) == 6
    hist = {s.name: s.value for s in fams["shardex_move_pause_seconds"].samples
            if "le" not in s.labels}  # fmt: skip
    assert hist == {"shardex_move_pause_seconds_count": 1, "shardex_move_pause_seconds_sum": 1.25}


def test_shardex_placement_shows_a_move_in_progress() -> None:
    pmap = PlacementMap(6, 2, {"BTC-USD": 0}, {"BTC-USD": (0, 1)})
    lines = render(pmap, list(DEFAULT_MARKETS), "from the router")
    assert "  moving: BTC-USD shard 0 -> shard 1" in lines
    assert lines[0].startswith("placement v6: 2 shard(s), 1 pinned pair(s)")
