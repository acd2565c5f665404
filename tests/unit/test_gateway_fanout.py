"""The gateway's fan-out per step: a step's messages of a channel go to every subscriber as
one shared chunk (one queue entry, one write), trades may be batched into one message per
step with the seq chain intact, and the writer writes at once when the socket takes bytes."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shardex.gateway.fanout import Chunk, batch_msg
from shardex.gateway.hub import Conn, Hub
from shardex.gateway.messages import Refused, parse
from shardex.gateway.outbox import BEHIND, OK, Outbox
from shardex.gateway.wsframe import FrameCache, drain_into, text_frame
from shardex.gateway.wswriter import Flusher, Writer
from shardex.wire.codes import BAD_MESSAGE

SYMBOL = "X-Y"


class _Redis:
    """The two reads the hub makes of the trades streams: ``XREAD`` (one answer per call,
    then nothing) and ``XRANGE`` (from a stored stream)."""

    def __init__(self, stream: list[tuple[str, dict[str, str]]] | None = None) -> None:
        self.answers: list[list[Any]] = []
        self.stream = stream or []

    async def xread(self, pos: dict[str, str], count: int, block: int) -> list[Any]:
        return self.answers.pop(0) if self.answers else []

    async def xrange(self, key: str, min: str, max: str, count: int) -> list[Any]:  # noqa: A002
        lo = tuple(map(int, min.split("-")))
        return [e for e in self.stream if tuple(map(int, e[0].split("-"))) >= lo][:count]


def _trade(seq: int, tid: int) -> tuple[str, dict[str, str]]:
    return (f"{seq}-0", {"trade_id": str(tid), "price": "100.00", "qty": "1.0",
                         "taker_side": "buy", "ts": str(1_700_000_000_000 + seq)})  # fmt: skip


def _conn(limit: int = 1000) -> Conn:
    async def close() -> None:
        return None

    return Conn(Outbox(limit=limit), close)


def _hub(r: _Redis) -> Hub:
    async def no_book(symbol: str, depth: int) -> dict[str, Any]:
        raise AssertionError("no book in these tests")

    hub = Hub(r, no_book, {SYMBOL: None})  # type: ignore[dict-item]
    hub.pos = {f"shardex:trades:{SYMBOL}": "0-0"}
    hub.trade_seq[SYMBOL] = 10
    return hub


def _msgs(conn: Conn) -> list[dict[str, Any]]:
    return [json.loads(f) for f in conn.outbox.messages()]


def test_a_steps_trades_reach_every_subscriber_as_one_shared_queue_entry() -> None:
    """Regression: every published message was one queue entry and one wake-up per
    subscriber (the fan-out was O(messages × subscribers) at 1,000 clients)."""

    async def run() -> None:
        r = _Redis()
        hub = _hub(r)
        conns = [_conn() for _ in range(3)]
        for c in conns:
            await hub.subscribe_trades(c, SYMBOL, None)
            c.outbox.take()  # (the "subscribed" answer)
        r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(11, 1), _trade(12, 2),
                                                       _trade(15, 3)])])  # fmt: skip
        assert await hub.step() == 3
        entries = [list(c.outbox.frames) for c in conns]
        assert all(len(e) == 1 for e in entries) and len({id(e[0]) for e in entries}) == 1
        assert all(len(c.outbox) == 3 for c in conns)  # still 3 frames against the limit
        got = _msgs(conns[0])
        assert [(m["seq"], m["prev_seq"]) for m in got] == [(11, 10), (12, 11), (15, 12)]
        assert all(c.subs[("trades", SYMBOL)].last == 15 for c in conns)

    asyncio.run(run())


def test_batch_subscribers_get_one_message_per_step_with_the_same_seq_chain() -> None:
    async def run() -> None:
        r = _Redis()
        hub = _hub(r)
        plain, batched = _conn(), _conn()
        await hub.subscribe_trades(plain, SYMBOL, None)
        await hub.subscribe_trades(batched, SYMBOL, None, batch=True)
        r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(11, 1), _trade(12, 2)])])
        r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(14, 3)])])
        await hub.step()
        await hub.step()
        singles = [m for m in _msgs(plain) if m.get("channel") == "trades" and "type" not in m]
        batches = [m for m in _msgs(batched) if m.get("type") == "batch"]
        assert [(b["prev_seq"], b["seq"], len(b["trades"])) for b in batches] == [
            (10, 12, 2), (12, 14, 1)]  # fmt: skip
        flat = [t for b in batches for t in b["trades"]]
        assert flat == [{k: s[k] for k in ("seq", "trade_id", "price", "qty", "side", "ts")}
                        for s in singles]  # fmt: skip

    asyncio.run(run())


def test_a_batch_resume_replays_in_batches_then_goes_live_with_no_gap_and_no_repeat() -> None:
    async def run() -> None:
        stream = [_trade(s, i) for i, s in enumerate((3, 5, 8, 11), 1)]
        r = _Redis(stream)
        hub = _hub(r)
        hub.trade_seq[SYMBOL] = 11
        conn = _conn()
        await hub.subscribe_trades(conn, SYMBOL, 5, batch=True)
        r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(13, 5)])])
        await hub.step()
        msgs = _msgs(conn)
        (ack,) = [m for m in msgs if m.get("type") == "subscribed"]
        assert ack["resumed"] is True and ack["replayed"] == 2
        chain = [(m["prev_seq"], m["seq"]) for m in msgs if m.get("type") == "batch"]
        assert chain == [(5, 11), (11, 13)]

    asyncio.run(run())


def test_a_batch_subscriber_falls_behind_after_its_queues_worth_of_trades_not_of_batches() -> None:
    """Regression: a batch counted as one frame in the client's queue, whatever the trades in
    it: a batch client that did not read was let queue 1,000 steps of trades (minutes at a
    few steps a second) before it was told to resync, where a client taking one message
    per trade was told after 1,000 trades."""

    async def run() -> None:
        r = _Redis()
        hub, conn = _hub(r), _conn(limit=10)
        await hub.subscribe_trades(conn, SYMBOL, None, batch=True)
        conn.outbox.take()  # (the ack, as if written)
        seq = 10
        for step in range(3):  # three steps of four trades: 12 trades queued, unread
            entries = [_trade(seq + k + 1, seq + k + 1) for k in range(4)]
            seq += 4
            r.answers.append([(f"shardex:trades:{SYMBOL}", entries)])
            await hub.step()
            if step < 2:
                assert len(conn.outbox) == 4 * (step + 1)  # a batch counts as its trades
        (notice,) = [m for m in _msgs(conn) if m.get("type") == "resync_required"]
        assert notice["channel"] == "trades" and notice["last_seq"] == 10

    asyncio.run(run())


def test_an_empty_queue_takes_a_chunk_larger_than_its_limit_a_full_one_falls_behind() -> None:
    big = Chunk([f'{{"seq":{k}}}' for k in range(5)], list(range(5)))
    box = Outbox(limit=3)
    assert box.offer(big, 0.0) == OK and len(box) == 5  # one step's messages: not behind
    assert box.offer("x", 0.0) == BEHIND and len(box) == 0
    assert box.offer("y", 1.0) == OK and box.offer(big, 1.0) == BEHIND


def test_a_chunks_frames_are_built_once_and_written_with_the_rest_of_the_queue() -> None:
    chunk = Chunk(['{"a":1}', '{"b":2}'], [1, 2])
    assert chunk.wire is chunk.wire and chunk.wire == b"".join(
        text_frame(f.encode()) for f in chunk.frames)  # fmt: skip
    box, writes = Outbox(), []

    class T:
        write = writes.append

    box.control('{"ack":1}')
    box.offer(chunk, 0.0)
    assert drain_into(box, FrameCache(), T()) == 3 and len(writes) == 1
    assert writes[0] == text_frame(b'{"ack":1}') + chunk.wire


@pytest.mark.parametrize("raw", [
    '{"op": "subscribe", "channel": "trades", "symbol": "X-Y", "batch": 1}',
    '{"op": "subscribe", "channel": "book", "symbol": "X-Y", "batch": true}',
])  # fmt: skip
def test_batch_must_be_a_boolean_and_only_for_trades(raw: str) -> None:
    with pytest.raises(Refused) as exc:
        parse(raw, {SYMBOL})
    assert exc.value.code == BAD_MESSAGE
    req = parse('{"op": "subscribe", "channel": "trades", "symbol": "X-Y", "batch": true}',
                {SYMBOL})  # fmt: skip
    assert req.batch is True


def test_batch_msg_keeps_the_chain_of_its_first_and_last_trade() -> None:
    trades = [{"seq": s, "prev_seq": p, "trade_id": i, "price": "1", "qty": "2", "side": "buy",
               "ts": 5} for i, (p, s) in enumerate(((None, 4), (4, 9)))]  # fmt: skip
    msg = batch_msg(SYMBOL, trades)
    assert (msg["prev_seq"], msg["seq"], [t["seq"] for t in msg["trades"]]) == (None, 9, [4, 9])


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


class _Protocol:
    def __init__(self) -> None:
        self.writing_paused = False
        self.drained = asyncio.Event()

    async def _drain_helper(self) -> None:
        await self.drained.wait()
        self.writing_paused = False


class _Request:
    def __init__(self) -> None:
        self.transport, self.protocol = _Transport(), _Protocol()


class _Ws:
    closed = False


def test_kicks_are_written_once_per_step_and_a_paused_socket_waits_in_its_task() -> None:
    async def run() -> None:
        req, conn = _Request(), _conn()
        flusher = Flusher()
        w = Writer(_Ws(), conn, req, FrameCache(), flusher)
        conn.kick = w.kick  # type: ignore[method-assign]
        task = asyncio.create_task(w.run())
        await asyncio.sleep(0)  # (the task waits for something to write)
        conn.offer('{"n":1}', 0.0)
        conn.offer('{"n":2}', 0.0)
        assert req.transport.writes == [] and list(flusher.ready) == [w]
        flusher.flush()  # (what call_soon runs after the step)
        assert req.transport.writes == [text_frame(b'{"n":1}') + text_frame(b'{"n":2}')]
        req.protocol.writing_paused = True
        conn.offer('{"n":3}', 0.0)
        flusher.flush()
        assert len(req.transport.writes) == 1 and len(conn.outbox) == 1
        for _ in range(3):
            await asyncio.sleep(0)
        assert w.draining and len(req.transport.writes) == 1  # the task waits for the drain
        req.protocol.drained.set()
        deadline = asyncio.get_running_loop().time() + 5
        while len(req.transport.writes) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0)
        assert req.transport.writes[1] == text_frame(b'{"n":3}') and not conn.outbox
        task.cancel()

    asyncio.run(run())


def test_steps_within_the_write_window_go_out_in_one_write_per_connection() -> None:
    """Regression: every step (a trades read, each pair's book read right after it) was its
    own write per connection, a syscall per client each: at 1,000 clients the writes were
    most of the gateway's CPU. Kicks within the window now share one write."""

    async def run() -> None:
        flusher = Flusher(window=30.0)  # (flushed by hand below: no waiting on a clock)
        pairs = [(_Request(), _conn()) for _ in range(3)]
        for req, conn in pairs:
            w = Writer(_Ws(), conn, req, FrameCache(), flusher)
            conn.kick = w.kick  # type: ignore[method-assign]
        for step in range(3):  # three steps, each in its own turn of the loop
            for _, conn in pairs:
                conn.offer(f'{{"step":{step}}}', 0.0)
            await asyncio.sleep(0)
        assert all(req.transport.writes == [] for req, _ in pairs)  # (still in the window)
        flusher.flush()  # (what the window's timer runs)
        want = b"".join(text_frame(f'{{"step":{k}}}'.encode()) for k in range(3))
        assert all(req.transport.writes == [want] for req, _ in pairs)

    asyncio.run(run())


def test_a_write_round_counts_its_writes_and_each_steps_read_and_written_hops() -> None:
    async def run() -> None:
        r, conn = _Redis(), _conn()
        hub = _hub(r)
        flusher = Flusher(window=30.0, stamps=hub.stamps)
        req = _Request()
        w = Writer(_Ws(), conn, req, FrameCache(), flusher)
        conn.kick = w.kick  # type: ignore[method-assign]
        await hub.subscribe_trades(conn, SYMBOL, None)
        r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(11, 1), _trade(12, 2)])])
        hops = ("trade_read", "trade_written", "read_written")
        before = {h: _sample(f"shardex_gateway_{h}_seconds_count") for h in hops}
        rounds = _sample("shardex_gateway_write_rounds_total")
        await hub.step()
        # (the step's oldest trade, one per pair: its exchange time, and when it was read)
        assert hub.stamps == [(1_700_000_000_011, hub.read_at)] and hub.read_at > 0
        assert _sample("shardex_gateway_trade_read_seconds_count") == before["trade_read"] + 1
        flusher.flush()
        assert hub.stamps == [] and len(req.transport.writes) == 1
        assert all(_sample(f"shardex_gateway_{h}_seconds_count") == before[h] + 1 for h in hops)
        assert _sample("shardex_gateway_write_rounds_total") == rounds + 1

    asyncio.run(run())


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_queue_full_before_its_write_round_is_written_not_dropped_unless_the_socket_is_full(
) -> None:  # fmt: skip
    """Regression: with writes in rounds, a client's queue filled between two rounds (a
    gateway short of CPU at 5,000 clients wrote a round a second) and every client was told
    to resync though its socket took bytes; only a socket that takes none means the client
    does not read."""

    async def run() -> None:
        flusher = Flusher(window=30.0)
        for paused in (False, True):
            req, conn = _Request(), _conn(limit=5)
            w = Writer(_Ws(), conn, req, FrameCache(), flusher)
            conn.kick, conn.spill = w.kick, w.spill  # type: ignore[method-assign]
            req.protocol.writing_paused = paused
            for k in range(4):
                conn.offer(f'{{"n":{k}}}', 0.0)
            assert conn.offer(Chunk(['{"a":1}', '{"b":2}'], [None, None]), 0.0) is not paused
            if paused:  # (fallen behind: its queue dropped)
                assert req.transport.writes == [] and len(conn.outbox) == 0
            else:  # (the four written before the round; the chunk queued for it)
                assert len(req.transport.writes) == 1 and len(conn.outbox) == 2

    asyncio.run(run())


def test_without_a_window_a_step_is_written_at_the_end_of_its_turn() -> None:
    async def run() -> None:
        flusher, (req, conn) = Flusher(window=0), (_Request(), _conn())
        w = Writer(_Ws(), conn, req, FrameCache(), flusher)
        conn.kick = w.kick  # type: ignore[method-assign]
        conn.offer('{"n":1}', 0.0)
        await asyncio.sleep(0)
        assert req.transport.writes == [text_frame(b'{"n":1}')]

    asyncio.run(run())


def test_a_slow_trades_client_is_told_the_last_seq_it_was_sent_not_the_last_one_dropped() -> None:
    """Regression: ``resync_required``'s ``last_seq`` was the last trade *queued*, though the
    queue holding it was just dropped: a client resuming from it (as the docs say) lost every
    dropped trade without a sign."""

    async def run() -> None:
        r = _Redis()
        hub = _hub(r)
        slow = _conn(limit=2)
        await hub.subscribe_trades(slow, SYMBOL, None)
        slow.outbox.take()  # (the "subscribed" answer)
        sent = []
        for seq in (11, 12, 13, 14):  # one trade per step; only 11 reaches the socket
            r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(seq, seq)])])
            await hub.step()
            if seq == 11:
                sent.append(json.loads(slow.outbox.messages()[0]))
                slow.outbox.take()
        (notice,) = [m for m in _msgs(slow) if m.get("type") == "resync_required"]
        assert sent[0]["seq"] == 11 and notice["last_seq"] == 11  # resume from 11: 12, 13, 14
        r.answers.append([(f"shardex:trades:{SYMBOL}", [_trade(15, 15)])])
        await hub.step()
        assert slow.subs[("trades", SYMBOL)].last == 15

    asyncio.run(run())


def _frames(data: bytes) -> list[dict[str, Any]]:
    """The JSON messages in a run of the server's unmasked text frames (short ones)."""
    out, pos = [], 0
    while pos < len(data):
        n = data[pos + 1] & 0x7F
        off = pos + 2
        if n == 126:
            n, off = int.from_bytes(data[off:off + 2]), off + 2
        out.append(json.loads(data[off:off + n]))
        pos = off + n
    return out


def test_a_write_round_sends_each_clients_queue_in_one_write_with_the_chains_intact() -> None:
    """The round's common case (``wsframe.write_all``, and ``Conn.queue``'s inline offer):
    a fleet of batch and single-trade subscribers over several steps and rounds gets every
    trade once, in order, each chain link continuing the last; a queue past ``WRITE_MAX``
    goes out in pieces; a client whose socket takes nothing is told to resync, with the last
    seq it was sent, and is closed when it keeps falling behind."""

    async def run() -> None:
        r, hub, flusher = _Redis(), _hub(_Redis()), Flusher(window=30.0)
        hub.r = r
        fleet = []
        for k in range(6):  # a big queue for the ones that get a whole step per message
            req, conn = _Request(), _conn(limit=3 if k == 5 else 1000)
            w = Writer(_Ws(), conn, req, FrameCache(), flusher)
            conn.kick, conn.spill = w.kick, w.spill  # type: ignore[method-assign]
            await hub.subscribe_trades(conn, SYMBOL, None, batch=k % 2 == 0)
            fleet.append((req, conn))
        fleet[5][0].protocol.writing_paused = True  # (a client that does not read)
        seq, closes = 10, _sample("shardex_gateway_slow_closes_total")
        for rnd in range(4):
            for _ in range(2):  # two steps per round; the third round's second one is big
                n = 300 if rnd == 2 else 3
                r.answers.append([(f"shardex:trades:{SYMBOL}",
                                   [_trade(seq + i, seq + i) for i in range(1, n + 1)])])
                seq += n
                await hub.step()
            flusher.flush()
        for req, conn in fleet[:5]:
            got = [m for data in req.transport.writes for m in _frames(data)]
            trades = [m for m in got if m.get("channel") == "trades" and "prev_seq" in m]
            seqs = [t["seq"] for m in trades for t in m.get("trades", [m])]
            assert seqs == list(range(11, seq + 1))  # every trade once, in order
            assert all(b["prev_seq"] == a["seq"] for a, b in itertools.pairwise(trades))
            assert not conn.outbox and not any(m.get("type") == "resync_required" for m in got)
        assert len(fleet[1][0].transport.writes) > 4  # (single trades: past WRITE_MAX, pieces)
        slow_req, slow = fleet[5]
        assert slow_req.transport.writes == [] and slow.closed  # told thrice, then closed
        notices = [json.loads(f) for f in slow.outbox.messages()] if slow.outbox.frames else []
        assert all(m["type"] == "resync_required" for m in notices)
        assert _sample("shardex_gateway_slow_closes_total") == closes + 1

    asyncio.run(run())
