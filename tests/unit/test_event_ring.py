"""The one event ring (``shardex.ring.EventRing``) of every sequenced node: the engine shard's
published events, a standby's, and the account machine's (its tail in the snapshot)."""

from __future__ import annotations

import random

import pytest

from shardex import ring
from shardex.accounts.machines import AccountMachineFactory
from shardex.config import load_markets
from shardex.engine import Engine
from shardex.node.nulljournal import NullJournal
from shardex.node.shard_core import ShardCore
from shardex.ring import EventRing


def _evs(first: int, last: int) -> list[tuple]:
    return [("ev", s) for s in range(first, last + 1)]


def test_serves_a_range_only_when_it_holds_all_of_it():
    r = EventRing(4)
    assert r.get(1, 1) is None and r.tail(3) == []  # empty
    r.extend(_evs(1, 3))
    assert r.get(1, 3) == _evs(1, 3) and r.get(2, 2) == _evs(2, 2)
    assert r.get(2, 4) is None and r.get(0, 1) is None  # past the newest / before the oldest
    r.extend(_evs(4, 10))  # wraps the slots twice
    assert (r.first, r.last) == (7, 10) and r.get(7, 10) == _evs(7, 10) and r.get(6, 7) is None
    assert r.tail(2) == _evs(9, 10) and r.tail(99) == _evs(7, 10)


def test_a_hole_restarts_it():
    r = EventRing(8)
    r.extend(_evs(1, 3))
    r.extend(_evs(6, 7))  # 4 and 5 never came: nothing across the hole is served
    assert r.first == 6 and r.get(3, 6) is None and r.get(1, 1) is None
    assert r.get(6, 7) == _evs(6, 7)


@pytest.mark.parametrize(("size", "chunk"), [(7, 1), (7, 3), (50, 4), (7, 1024)])
def test_any_batches_and_holes_serve_exactly_what_a_plain_model_holds(monkeypatch, size, chunk):
    """Batches of 1..9 events, now and then a hole, over chunks of every size: the ring serves
    a range exactly when a plain model (the last ``size`` events since the last hole) holds
    all of it, and then exactly those events."""
    monkeypatch.setattr(ring, "CHUNK", chunk)
    rng = random.Random(size * 100 + chunk)
    r, seq, run = EventRing(size), 0, []
    for _ in range(400):
        gap = rng.random() < 0.05
        batch = _evs(seq + 1 + 2 * gap, seq + 2 * gap + rng.randint(1, 9))
        seq = batch[-1][1]
        run = (batch if gap else run + batch)[-size:]
        r.extend(batch)
        assert (r.first, r.last, r.tail(3)) == (run[0][1], seq, run[-3:])
        lo = rng.randint(max(1, seq - size - 3), seq)
        hi = rng.randint(lo, seq + 1)
        want = [ev for ev in run if lo <= ev[1] <= hi]
        held = lo >= run[0][1] and hi <= seq
        assert r.get(lo, hi) == (want if held else None), (lo, hi)


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        EventRing(0)


def test_the_engine_shard_and_the_account_machine_keep_the_same_ring():
    markets = load_markets(None)
    core = ShardCore(0, 1, markets, Engine(markets), NullJournal(), ring_size=8)
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(markets)
    assert type(core.ring) is type(machine.events) is EventRing
