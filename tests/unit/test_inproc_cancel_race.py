"""A cancel sent after its order's "ok" must find the order, even when the engine shard reads
it before the order's forward (two connections into the engine shard have no order between
them: under CPU starvation libzmq's I/O thread can hand over the router's cancel before the
account link's forward, though the forward was sent first).

The in-memory transport's air (``MemHub.shaper``) makes that order happen on purpose: the
account link's messages toward the engine shard stay in the air while the client places and
cancels, and land only when the test lets them."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

import pytest

from shardex.inproc import InProcCluster
from shardex.node.parked import Parked
from tests.support.inproc import Hold, plan, run

pytestmark = pytest.mark.timeout(60)


def _cancel_after_ok(held_forward: bool, release: bool = True):
    async def body(cl: InProcCluster) -> tuple[Any, Any, int, dict[str, int], bool]:
        engine = cl.engines[0]
        hub = cl.net.hub  # type: ignore[attr-defined]
        hold = Hold(lambda _, peer: peer is engine.alink)  # the link toward the engine shard
        hub.shaper = hold
        engine.parked.wait = 0.3  # (the deadline: ``PARK_DEADLINE_S`` is for real links)
        async with cl.client(timeout=5) as c:
            assert (await c.deposit("alice", "USD", "1000", ref="race-a")).ok
            hold.held = held_forward
            placed = await c.place("BTC-USD", "buy", "0.1", "100", account="alice", id="r-1")
            assert placed.ok
            task = asyncio.ensure_future(c.cancel("BTC-USD", "r-1", account="alice"))
            # the cancel reaches the engine shard before the forward: answered, or parked
            await cl.until(lambda: task.done() or engine.link_counts.get("parked", 0) > 0,
                           what="the cancel read")  # fmt: skip
            if release:
                hold.held = False
                hub.release(0.0)
            result = await task
            forwards = engine.link_counts["forwards"]
            status = await c.order_status("BTC-USD", "r-1", account="alice")

            async def released() -> bool:
                return await c.balance("alice") == {"USD": (D("1000"), D(0))}

            freed = result.ok and await cl.until(released, what="the hold released")
            return result, status, forwards, dict(engine.link_counts), freed

    return run(plan(1, 1), body)


def test_a_cancel_read_before_its_forward_waits_for_it_and_cancels():
    """Failed on main (before the engine shard parked such cancels): the cancel was refused
    (``not_live``) and the order stayed on the book, its funds held."""
    result, status, forwards, counts, freed = _cancel_after_ok(held_forward=True)
    assert result.ok, (result.code, result.reason)
    assert [(e["ev"], e["id"]) for e in result.events] == [("cancelled", "r-1")]
    assert status["state"] == "cancelled"
    assert forwards == 1  # the forward was applied before the parked cancel ran
    assert counts["parked"] == 1 and counts["park_late"] == counts["unfound"] == 0
    assert freed  # the hold released


def test_a_parked_cancel_runs_at_its_deadline_when_the_link_says_nothing():
    """The forward and the MARK's answer never arrive (an account shard cut off): after
    its deadline the cancel runs as before, refused as unknown, and is counted."""
    result, status, forwards, counts, _ = _cancel_after_ok(held_forward=True, release=False)
    assert result.code == "not_live" and status["state"] == "unknown"
    assert forwards == 0
    assert counts["parked"] == counts["park_late"] == counts["unfound"] == 1


def test_a_cancel_that_finds_its_order_is_not_parked():
    result, status, forwards, counts, _ = _cancel_after_ok(held_forward=False)
    assert result.ok and status["state"] == "cancelled"
    assert forwards == 1 and counts["parked"] == 0


def _parked(limit: int = 3) -> tuple[Parked, dict[str, int]]:
    counts: dict[str, int] = {}
    return Parked(2, counts, limit=limit, wait=1.0), counts


def test_parked_runs_once_every_owner_answered_past_its_forwards():
    p, counts = _parked()
    assert p.check(frozenset({0, 1}), park=True)
    p.park("a", now=0.0)
    assert p.take_ask() == (1, [0, 1])
    assert p.take_ask() == (1, [])  # (nothing parked since: no MARK)
    have = {0: 5, 1: 7}
    assert p.ready(0.1, have.__getitem__) == []
    p.answered(0, 1, 5)
    assert p.ready(0.1, have.__getitem__) == []  # account shard 1 has not answered
    p.answered(1, 1, 9)  # it sent forwards up to 9: 8 and 9 are not applied here yet
    assert p.ready(0.1, have.__getitem__) == []
    have[1] = 9
    assert p.ready(0.1, have.__getitem__) == ["a"]
    assert counts["parked"] == 1 and counts["park_late"] == 0


def test_parked_keeps_order_ignores_stale_answers_and_runs_at_the_deadline():
    p, counts = _parked()
    assert p.check(frozenset({0}), park=True)
    p.park("a", now=0.0)
    p.take_ask()
    assert p.check(frozenset({0}), park=True)
    p.park("b", now=0.5)
    assert p.take_ask() == (2, [0])
    p.answered(0, 1, 0)
    p.answered(0, 3, 0)  # a token never sent: ignored
    assert p.ready(0.6, lambda j: 0) == ["a"]  # b waits for the answer to MARK 2
    p.answered(0, 1, 0)  # (late, older: changes nothing)
    assert p.ready(1.4, lambda j: 0) == []
    assert p.ready(1.5, lambda j: 0) == ["b"]  # its deadline
    assert counts["park_late"] == 1


def test_parked_is_bounded_and_counts_what_ran_unfound():
    p, counts = _parked(limit=1)
    assert not p.check(frozenset(), park=True)  # nothing unknown: runs
    assert p.check(frozenset({1}), park=True)
    p.park("a", now=0.0)
    assert not p.check(frozenset({1}), park=True)  # full: runs now (refused as unknown)
    assert not p.check(frozenset({1}), park=False)  # a parked one, run: still unknown
    assert counts == {"parked": 1, "park_late": 0, "park_full": 1, "unfound": 2}
