"""The bridge follows the engine shard count live (``shardex.node.bridge.follow``), and its
handshake watches stop exactly the watch asked (``Watches.drop``)."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from shardex.node.bridge.follow import added, retirable
from shardex.node.bridge.links import Watches
from shardex.node.bridge.tracker import ShardTracker
from shardex.wire.layouts import EV_SEQ


def test_new_shards_are_the_ones_past_the_followed_count() -> None:
    assert list(added(1, [{}, {}, {}])) == [1, 2]
    assert list(added(3, [{}, {}, {}])) == []
    assert list(added(3, [{}])) == []  # (a shrink adds nothing)


def test_a_dropped_shard_is_let_go_only_once_its_events_are_written() -> None:
    tr = ShardTracker(2)
    tr.resume(10, 0.0)
    tr.shard_seq = 12  # its last status answer: two more events than written
    assert not retirable(tr)
    tr.accept([(0, 11, "BTC-USD"), (0, 12, "BTC-USD")])
    assert not retirable(tr)  # received, not written
    tr.verified = True  # (its first status answer agreed with Redis)
    batch = tr.take(10)
    assert [ev[EV_SEQ] for ev in batch] == [11, 12]
    assert not retirable(tr)  # taken by the writer, not yet written
    tr.written(12, 1.0)
    assert retirable(tr)


def test_dropping_one_watch_leaves_a_later_one_running() -> None:
    """``drop`` closed the monitor of the watch started last, not the one asked: with the
    leader follower and the shard count follower each asking the router for the topology at
    once, one closed the other's (or a new shard link's) monitor, whose task then died with
    ``CancelledError`` and took the bridge down."""

    async def body() -> None:
        ctx = zmq.asyncio.Context()
        socks = [ctx.socket(zmq.DEALER) for _ in range(2)]
        watches = Watches(key=object(), alert=lambda *a: None)  # type: ignore[arg-type]
        try:
            first = watches.watch(socks[0], {})
            second = watches.watch(socks[1], {})
            assert first is not None and second is not None
            await watches.drop(first)
            for _ in range(20):  # (the loop runs what a closed monitor would wake)
                await asyncio.sleep(0)
            assert not second.done()
            await watches.drop(second)
        finally:
            watches.close()
            for s in socks:
                s.close(0)
            ctx.term()

    asyncio.run(body())
