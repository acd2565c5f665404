"""The bridge's logic without sockets: decoders over arbitrary input, and ``ShardTracker`` (seq
tracking, gap repair, loss, stall, Redis ahead of the shard) driven by a fake shard and a fake
Redis in plain Python, as ``ShardCore`` is tested for the shard."""

from __future__ import annotations

import math

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.accounts.assets import AssetTable
from shardex.config import load_markets
from shardex.engine.codes import EV_ACCEPTED, EV_CANCELLED, EV_REJECTED, EV_TRADE
from shardex.node.bridge import (
    Bridge,
    BridgeConfig,
    EntryFormatter,
    ShardTracker,
    denied,
    parse_events_reply,
    parse_status,
)
from shardex.wire.errors import events_gone
from shardex.wire.protocol import ERR_OVERLOADED, VERSION, decode_reply, encode_reply
from shardex.wire.pub import MAX_SEQ, Malformed, check_event, decode_pub, encode_events
from tests.support.depth import examples

MARKETS = load_markets()


def trade(seq: int, symbol: str = "BTC-USD") -> tuple:
    return (EV_TRADE, seq, symbol, 3_000_000 + seq, 10, f"t{seq}", f"m{seq}", seq & 1, seq)


# -- decoders over hostile input ------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 64) + 1, max_value=(1 << 64) - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.sampled_from(["BTC-USD", "NOPE-USD", "", "buy"])
    | st.sampled_from([0, 1, 2, 3, 4, 5, -1, MAX_SEQ, MAX_SEQ + 1])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(scalars, inner, max_size=4),
    max_leaves=30,
)
# a field of an event: a scalar or a small nested value (a 30-leaf value in each of an event's
# eight positions, up to six events a message, made drawing most of this file's CPU; what the
# decoder does with a field is check its type, which a small value exercises as well)
fields = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(scalars, inner, max_size=2),
    max_leaves=6,
)
# events that look almost right: the right kind and arity, any value in any position
near_events = st.one_of(
    st.tuples(st.sampled_from([EV_TRADE]), *[fields] * 8),
    st.tuples(st.sampled_from([EV_ACCEPTED, EV_REJECTED, EV_CANCELLED]), *[fields] * 5),
)


def _packable(v):
    try:
        return msgpack.packb(v, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return None


@settings(max_examples=examples(75), deadline=None)
@given(st.one_of(values, st.tuples(st.just(VERSION), values, st.lists(near_events | values,
                                                                         max_size=6))))  # fmt: skip
def test_decode_pub_never_raises_anything_but_malformed(msg):
    payload = _packable(msg)
    if payload is None:
        return
    try:
        shard, events, bad = decode_pub(payload, 2, MARKETS)
    except Malformed:
        return
    assert shard in (0, 1) and bad >= 0
    entries = EntryFormatter(MARKETS, AssetTable(MARKETS))  # only the formatter: no Redis
    for ev in events:
        assert check_event(ev, MARKETS)
        eid, fields, *_ = entries.item(ev, shard)  # every accepted event can be written
        assert eid == f"{ev[1]}-0" and all(type(f) is str for f in fields)


@settings(max_examples=examples(75), deadline=None)
@given(values, st.integers(1, 100), st.integers(0, 100))
def test_reply_parsers_never_raise_anything_but_malformed(result, first, span):
    payload = _packable((VERSION, None, (result,)))
    if payload is None:
        return
    error, results = decode_reply(payload)
    for parse in (
        lambda: parse_status(error, results),
        lambda: parse_events_reply(error, results, first, first + span, MARKETS),
    ):
        try:
            out = parse()
        except Malformed:
            continue
        if isinstance(out, tuple):
            evs, gone, seq, bad = out
            assert evs is None or all(first <= ev[1] <= first + span for ev in evs)
            assert gone is None or type(gone) is str
        else:
            assert type(out) is int and out >= 0


def test_decode_pub_examples():
    ok = encode_events(1, [trade(5), (EV_ACCEPTED, 6, "BTC-USD", "o1")])
    assert decode_pub(ok, 2, MARKETS) == (1, [trade(5), (EV_ACCEPTED, 6, "BTC-USD", "o1")], 0)
    for bad in (
        b"\xc1",  # never valid msgpack
        msgpack.packb((VERSION + 1, 0, ())),
        msgpack.packb((VERSION, 2, ())),  # shard out of range
        msgpack.packb((VERSION, True, ())),
        msgpack.packb((VERSION, 0, {"a": 1})),
        msgpack.packb([VERSION, 0]),
    ):
        try:
            decode_pub(bad, 2, MARKETS)
            raise AssertionError(f"accepted {bad!r}")
        except Malformed:
            pass
    junk = encode_events(0, [
        trade(1), (EV_TRADE, 2.0, "BTC-USD", 1, 1, "t", "m", 0, 1),  # float seq
        (EV_TRADE, 3, "NOPE-USD", 1, 1, "t", "m", 0, 1),  # unknown symbol
        (EV_TRADE, 4, "BTC-USD", math.nan, 1, "t", "m", 0, 1),  # NaN price
        (EV_TRADE, 5, "BTC-USD", 1, 1, "t", "m", True, 1),  # bool side
        (EV_TRADE, MAX_SEQ + 1, "BTC-USD", 1, 1, "t", "m", 0, 1),  # seq beyond a stream ID
        [EV_ACCEPTED, 7, "BTC-USD"], "x", None,
        (EV_REJECTED, 9, "NOPE-USD", "o", "unknown symbol NOPE-USD", 3),  # fine: a real reject
    ])  # fmt: skip
    shard, events, bad = decode_pub(junk, 1, MARKETS)
    assert [ev[1] for ev in events] == [1, 9] and bad == 8


def test_events_reply_keeps_only_the_asked_range():
    err, res = decode_reply(encode_reply([{"events": [trade(s) for s in range(3, 9)], "seq": 20}]))
    evs, gone, seq, bad = parse_events_reply(err, res, 4, 6, MARKETS)
    assert [e[1] for e in evs] == [4, 5, 6] and gone is None and seq == 20 and bad == 3
    err, res = decode_reply(encode_reply([{**events_gone(1, 3, "events 1..3 are gone"), "seq": 9}]))
    evs, gone, seq, bad = parse_events_reply(err, res, 1, 3, MARKETS)
    assert (evs, gone, seq, bad) == (None, "events 1..3 are gone", 9, 0)
    assert gone is not None and gone.name == "events_gone" and not denied(gone)
    for reply in (encode_reply(None, ERR_OVERLOADED), encode_reply([1, 2]), b"junk"):
        err, res = decode_reply(reply)
        try:
            parse_events_reply(err, res, 1, 3, MARKETS)
            raise AssertionError("accepted")
        except Malformed:
            pass


# -- ShardTracker over a fake transport -----------------------------------------------------------


class FakeShard:
    """The shard side: its events, what reaches PUB, what a repair re-sends."""

    def __init__(self, keep: int | None = None) -> None:
        self.events: list[tuple] = []
        self.keep = keep  # the ring/journal holds only the last ``keep`` events

    @property
    def seq(self) -> int:
        return len(self.events)

    def make(self, n: int) -> list[tuple]:
        evs = [trade(s) for s in range(self.seq + 1, self.seq + n + 1)]
        self.events.extend(evs)
        return evs

    def resend(self, first: int, last: int) -> tuple[list[tuple] | None, int]:
        if self.keep is not None and first <= self.seq - self.keep:
            return None, self.seq
        return self.events[first - 1 : min(last, first + 9, self.seq)], self.seq  # ≤ 10 a reply


class Loop:
    """The bridge loop's decisions, played synchronously: write to a fake Redis, repair from the
    fake shard, with a fake clock."""

    def __init__(self, shard: FakeShard, redis_last: int = 0, **kw) -> None:
        self.shard = shard
        self.redis: dict[int, tuple] = {}
        self.now = 100.0
        self.tr = ShardTracker(0, hole_wait=0.1, stall_after=5.0, **kw)
        self.tr.resume(redis_last, self.now)
        self.repairs: list[tuple[int, int]] = []

    def status(self):
        self.now += 0.5
        return self.tr.on_status(self.shard.seq, self.now - 0.01, self.now)

    def drain(self, rounds: int = 50, repair: bool = True) -> None:
        for _ in range(rounds):
            while batch := self.tr.take(4):
                assert [e[1] for e in batch] == list(range(self.tr.last + 1, self.tr.last + 1
                                                           + len(batch)))  # fmt: skip
                for ev in batch:
                    assert ev[1] not in self.redis, "written twice"
                    self.redis[ev[1]] = ev
                self.tr.written(batch[-1][1], self.now)
            gap = self.tr.gap(self.now)
            if gap is None:
                self.now += 0.05
                continue
            self.repairs.append(gap)
            if repair:
                evs, seq = self.shard.resend(*gap)
                if evs is None:
                    self.tr.lose(*gap)
                else:
                    self.tr.accept_repair(evs, seq)


def test_in_order_no_gaps_writes_everything_once():
    shard = FakeShard()
    loop = Loop(shard)
    loop.status()  # the first status check lets writes start
    loop.tr.accept(shard.make(10))
    loop.drain()
    assert sorted(loop.redis) == list(range(1, 11)) and not loop.repairs


def test_nothing_is_written_before_the_shard_confirmed_its_seq():
    shard = FakeShard()
    loop = Loop(shard)
    loop.tr.accept(shard.make(3))
    loop.drain(5)
    assert loop.redis == {} and loop.tr.gap(loop.now) is None
    loop.status()
    loop.drain()
    assert sorted(loop.redis) == [1, 2, 3]


def test_interleaved_messages_are_sorted_and_a_young_hole_waits_for_pub():
    shard = FakeShard()
    loop = Loop(shard)
    loop.status()
    evs = shard.make(6)
    loop.tr.accept([evs[0], evs[2], evs[4]])  # one batch is one PUB message per symbol
    assert loop.tr.take(10) == [evs[0]]
    loop.redis[1] = evs[0]
    loop.tr.written(1, loop.now)
    assert loop.tr.gap(loop.now) is None  # a hole younger than hole_wait: no repair yet
    loop.tr.accept([evs[1], evs[3], evs[5], evs[3]])  # and a second copy
    loop.drain()
    assert sorted(loop.redis) == [1, 2, 3, 4, 5, 6] and not loop.repairs


def test_dropped_middle_and_tail_are_repaired_in_ranges():
    shard = FakeShard()
    loop = Loop(shard)
    loop.status()
    loop.tr.accept(shard.make(5))
    shard.make(25)  # dropped by PUB
    loop.tr.accept(shard.make(5))
    shard.make(7)  # the tail: no later event reveals it
    loop.drain()
    assert sorted(loop.redis) == list(range(1, 36))
    assert loop.repairs[0] == (6, 30)  # the hole, asked again from where each reply stopped
    loop.status()  # the shard is at 42: maybe still in flight
    loop.drain()
    assert len(loop.redis) == 35
    loop.status()  # a poll later it is still not there: repair the tail
    loop.drain()
    assert sorted(loop.redis) == list(range(1, 43)) and loop.tr.lag == 0


def test_a_range_the_shard_no_longer_has_is_counted_lost_and_later_events_flow():
    shard = FakeShard(keep=10)
    loop = Loop(shard)
    loop.status()
    loop.tr.accept(shard.make(2))
    shard.make(30)
    loop.tr.accept(shard.make(3))
    loop.drain()
    assert loop.tr.lost == 30 and sorted(loop.redis) == [1, 2, 33, 34, 35]


def test_pending_cap_drops_and_the_drops_are_repaired():
    shard = FakeShard()
    loop = Loop(shard, max_pending=10)
    loop.status()
    for _ in range(5):
        loop.tr.accept(shard.make(6))
    assert loop.tr.dropped == 18
    loop.status()
    loop.status()
    loop.drain(200)
    assert sorted(loop.redis) == list(range(1, 31))


def test_a_seq_beyond_the_shard_is_discarded_when_a_repair_reveals_it():
    shard = FakeShard()
    loop = Loop(shard)
    loop.status()
    loop.tr.accept(shard.make(3))
    loop.tr.accept([trade(10**12)])  # well formed, but the shard never had it
    loop.drain()
    assert sorted(loop.redis) == [1, 2, 3] and loop.tr.pending == [] and loop.tr.dropped == 1


def test_stall_is_raised_only_while_reachable_and_behind_and_then_cleared():
    shard = FakeShard()
    loop = Loop(shard)
    assert loop.status().stalled is None
    loop.tr.accept(shard.make(2))
    shard.make(5)  # a hole the shard will not re-send (below)
    loop.tr.accept(shard.make(2))
    loop.drain(3, repair=False)
    changes = [loop.status().stalled for _ in range(12)]  # 6 s of polls, no progress
    assert changes.count(True) == 1 and loop.tr.stalled
    assert changes.index(True) >= 9  # not before stall_after (5 s) without progress
    loop.drain()
    assert loop.status().stalled is False and not loop.tr.stalled
    assert sorted(loop.redis) == list(range(1, 10))
    # an idle shard (nothing to write) never stalls
    assert all(loop.status().stalled is None for _ in range(20))


def test_redis_ahead_of_the_shard_rewinds_instead_of_dropping_in_silence():
    """The shard lost its state (or a foreign entry tops the stream): its seq is below what Redis
    holds. The tracker says so; after the rewind its events are written again (and a real Redis
    then reports each one that meets an entry as a conflict)."""
    shard = FakeShard()
    loop = Loop(shard, redis_last=40)
    loop.tr.accept(shard.make(3))
    out = loop.status()
    assert out.behind and loop.tr.behind_at == 3
    loop.tr.rewind(0, loop.now)  # the loop found no entry of ours at or below seq 3
    loop.drain()
    assert sorted(loop.redis) == [1, 2, 3]
    # at run time: the shard restarts without its journal, its seq goes back
    loop.tr.accept(shard.make(2))
    loop.status()
    loop.drain()
    shard.events = shard.events[:1]
    out = loop.status()
    assert out.behind and loop.tr.behind_at == 1


def test_a_write_that_failed_is_put_back_and_written_once():
    shard = FakeShard()
    loop = Loop(shard)
    loop.status()
    loop.tr.accept(shard.make(6))
    batch = loop.tr.take(4)
    loop.tr.putback(batch)  # Redis went away before the write
    loop.drain()
    assert sorted(loop.redis) == list(range(1, 7))


def test_rejected_events_need_their_code_and_write_its_name():
    """A rejected event is (kind, seq, symbol, id, reason, code): without an int code it is
    dropped as malformed; with one, the Redis fields carry the reason and the code's name."""
    from shardex.engine.codes import REJ_UNKNOWN_SYMBOL
    from shardex.node.bridge import event_fields

    good = (EV_REJECTED, 9, "NOPE-USD", "o", "unknown symbol NOPE-USD", REJ_UNKNOWN_SYMBOL)
    assert check_event(good, MARKETS)
    fields = event_fields(good, MARKETS, 0, 1796000000123)
    assert dict(zip(fields[::2], fields[1::2], strict=True)) == {
        "ev": "rejected", "symbol": "NOPE-USD", "id": "o", "reason": "unknown symbol NOPE-USD",
        "code": "unknown_symbol", "seq": "9", "ts": "1796000000123", "shard": "0",
    }  # fmt: skip
    for bad in (good[:5], good[:5] + ("unknown_symbol",), good[:5] + (True,), good[:5] + (None,)):
        assert not check_event(bad, MARKETS), bad


def test_a_redis_blip_that_heals_before_the_first_retry_is_still_alerted(caplog):
    """A failed Redis call whose server answers again at once (restarted within ~0.1 s) used
    to leave no log line and no metric: nothing was lost, but the outage was invisible."""
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError

    from shardex.node.bridge import ALERTS

    bridge = Bridge(
        BridgeConfig(router="tcp://127.0.0.1:9", redis_url="redis://127.0.0.1:9/0", markets=MARKETS)
    )

    class AnswersAtOnce:
        async def ping(self) -> bool:
            return True

    bridge.store.redis = AnswersAtOnce()  # type: ignore[assignment]
    before = ALERTS.labels("redis", "redis")._value.get()
    with caplog.at_level("ERROR", logger="shardex.bridge"):
        asyncio.run(bridge.store.outage(RedisConnectionError("Connection reset by peer")))
    assert ALERTS.labels("redis", "redis")._value.get() == before + 1
    assert any("answered again at once" in r.getMessage() for r in caplog.records)
    bridge.ctx.term()
