"""The gateway's pure parts: the book feed (deltas that reproduce every read, chained by seq,
with the documented checksum), the per-client queue policy and the client-message parser."""

from __future__ import annotations

import asyncio
import binascii
import json
import random

import pytest

from shardex.gateway.book import BookFeed, apply, checksum, checksum_text, diff
from shardex.gateway.hub import Conn, Hub
from shardex.gateway.messages import MAX_MESSAGE, Refused, parse
from shardex.gateway.outbox import BEHIND, CLOSE, OK, Outbox
from shardex.wire.codes import BAD_MESSAGE, UNKNOWN_CHANNEL, UNKNOWN_SYMBOL


def test_the_checksum_is_crc32_of_asks_then_bids_digits_without_point_or_leading_zeros():
    bids = [("50000.00", "0.3000"), ("49999.50", "1.0000")]
    asks = [("50010.00", "0.0500"), ("50011.25", "12.0000")]
    # asks lowest first, then bids highest first; "0.0500" -> "500", "50000.00" -> "5000000"
    text = "5001000" "500" "5001125" "120000" "5000000" "3000" "4999950" "10000"
    assert checksum_text(bids, asks) == text
    assert checksum(bids, asks) == binascii.crc32(text.encode())
    assert checksum([], []) == binascii.crc32(b"")


def test_the_checksum_covers_only_the_top_ten_levels_of_each_side():
    bids = [(f"{100 - i}.00", "1") for i in range(12)]
    asks = [(f"{200 + i}.00", "1") for i in range(12)]
    changed_deep = bids[:10] + [("88.00", "5"), ("87.00", "7")]
    assert checksum(changed_deep, asks) == checksum(bids, asks)
    assert checksum(bids[:9] + [("91.00", "2")], asks) != checksum(bids, asks)


def _book(rnd: random.Random, depth: int) -> tuple[list, list]:
    """A random book read: bids below 1000, asks above, best first, qty strings."""
    bid_prices = sorted(rnd.sample(range(900, 1000), rnd.randrange(0, depth + 1)), reverse=True)
    ask_prices = sorted(rnd.sample(range(1001, 1100), rnd.randrange(0, depth + 1)))
    lv = lambda p: (f"{p // 100}.{p % 100:02d}", f"0.{rnd.randrange(1, 999):03d}")  # noqa: E731
    return [lv(p) for p in bid_prices], [lv(p) for p in ask_prices]


def test_deltas_chained_by_seq_reproduce_every_read_and_carry_its_checksum():
    rnd = random.Random(7)
    feed = BookFeed("X-Y", depth=8)
    first = feed.update(5, 0, *_book(rnd, 8))
    assert first is not None and first["type"] == "snapshot" and first["seq"] == 5
    bids, asks, seq = first["bids"], first["asks"], first["seq"]
    for k in range(300):
        read = _book(rnd, 8) if rnd.random() < 0.7 else (feed.bids, feed.asks)
        msg = feed.update(seq + 1 + k, 0, *read)
        if msg is None:  # nothing changed: nothing sent, the chain is unbroken
            assert (read[0], read[1]) == (feed.bids, feed.asks)
            continue
        assert msg["type"] == "update" and msg["prev_seq"] == seq
        bids = apply([tuple(x) for x in bids], [tuple(x) for x in msg["bids"]], True)
        asks = apply([tuple(x) for x in asks], [tuple(x) for x in msg["asks"]], False)
        assert (bids, asks) == (list(read[0]), list(read[1]))
        assert msg["checksum"] == checksum(bids, asks)
        seq = msg["seq"]
        json.dumps(msg)  # plain JSON


def test_a_stale_read_is_ignored_and_a_new_shard_is_a_snapshot():
    feed = BookFeed("X-Y")
    feed.update(10, 0, [("1.00", "1")], [])
    assert feed.update(10, 0, [("1.00", "2")], []) is None  # not newer
    assert feed.update(9, 0, [("1.00", "2")], []) is None
    moved = feed.update(3, 1, [("1.00", "2")], [])  # the pair moved: another seq space
    assert moved is not None and moved["type"] == "snapshot" and moved["seq"] == 3
    assert feed.snapshot()["bids"] == [["1.00", "2"]]


def test_diff_removes_levels_with_qty_zero():
    assert diff([("1.00", "1"), ("0.90", "2")], [("0.90", "3")]) == [("0.90", "3"), ("1.00", "0")]


def test_a_full_queue_drops_its_frames_and_the_third_strike_within_the_window_closes():
    box = Outbox(limit=3, max_strikes=3, window=60.0)
    assert [box.offer(f"f{i}", 0.0) for i in range(3)] == [OK] * 3
    assert box.offer("f3", 1.0) == BEHIND and len(box) == 0
    box.control("resync_required")
    assert box.take() == "resync_required"
    for _ in range(3):
        box.offer("x", 2.0)
    assert box.offer("x", 100.0) == BEHIND  # the first strike (t=1) is out of the window
    for _ in range(3):
        box.offer("x", 101.0)
    assert box.offer("x", 102.0) == BEHIND  # strikes at 100 and 102 (and 1 expired): 2
    for _ in range(3):
        box.offer("x", 103.0)
    assert box.offer("x", 104.0) == CLOSE
    assert box.offer("y", 105.0) == CLOSE and box.take() is None


SYMBOLS = {"BTC-USD"}


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"\xff\xfe", BAD_MESSAGE),
        ("not json", BAD_MESSAGE),
        ("[1, 2]", BAD_MESSAGE),
        ('{"channel": "book"}', BAD_MESSAGE),
        ('{"op": "dance"}', UNKNOWN_CHANNEL),
        ('{"op": "subscribe", "channel": "l3", "symbol": "BTC-USD"}', UNKNOWN_CHANNEL),
        ('{"op": "subscribe", "channel": "book", "symbol": 5}', BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "book", "symbol": "NOPE"}', UNKNOWN_SYMBOL),
        ('{"op": "subscribe", "channel": "trades", "symbol": "BTC-USD", "from_seq": -1}',
         BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "trades", "symbol": "BTC-USD", "from_seq": 1.5}',
         BAD_MESSAGE),
        ('{"op": "subscribe", "channel": "book", "symbol": "BTC-USD", "from_seq": 3}',
         BAD_MESSAGE),
        ("{" + " " * MAX_MESSAGE + "}", BAD_MESSAGE),
    ],  # fmt: skip
)
def test_bad_messages_are_refused_with_a_stable_code(raw, code):
    with pytest.raises(Refused) as info:
        parse(raw, SYMBOLS)
    err = info.value.error()
    assert err["code"] == code and err["type"] == "error" and err["message"]


def test_good_messages_parse_and_the_id_is_echoed_only_when_short():
    req = parse('{"op": "subscribe", "channel": "trades", "symbol": "BTC-USD", "from_seq": 42,'
                ' "id": "a1"}', SYMBOLS)  # fmt: skip
    assert (req.op, req.channel, req.symbol, req.from_seq, req.id) == \
        ("subscribe", "trades", "BTC-USD", 42, "a1")  # fmt: skip
    assert parse('{"op": "ping", "id": "' + "x" * 65 + '"}', SYMBOLS).id is None


class _Books:
    """A stand-in for the engine's book reads: the test sets what the next read returns."""

    def __init__(self) -> None:
        self.seq, self.bids, self.asks = 1, [("100.00", "1.0", 1)], [("101.00", "2.0", 1)]

    async def read(self, symbol: str, depth: int) -> dict:
        return {"symbol": symbol, "shard": 0, "seq": self.seq, "bids": self.bids,
                "asks": self.asks}  # fmt: skip


def _conn(limit: int = 100) -> Conn:
    async def close() -> None:
        return None

    return Conn(Outbox(limit=limit), close)


def test_one_encoding_goes_to_every_subscriber_and_deltas_continue_each_snapshot():
    async def run() -> None:
        books = _Books()
        hub = Hub(None, books.read, {"X-Y": None})  # type: ignore[dict-item]
        a, b = _conn(), _conn()
        await hub.subscribe_book(a, "X-Y")
        books.seq, books.bids = 5, [("100.00", "3.0", 2)]
        await hub.refresh("X-Y")
        await hub.subscribe_book(b, "X-Y")  # joins after the delta: the snapshot at seq 5
        books.seq, books.asks = 9, []
        await hub.refresh("X-Y")
        fa, fb = a.outbox.messages(), b.outbox.messages()
        assert fa[-1] is fb[-1]  # the same str object: encoded once
        snap_b, delta = json.loads(fb[0]), json.loads(fb[1])
        assert (snap_b["type"], snap_b["seq"], delta["prev_seq"]) == ("snapshot", 5, 5)
        assert [json.loads(f)["seq"] for f in fa] == [1, 5, 9]

    asyncio.run(run())


def test_a_full_queue_turns_book_deltas_off_until_the_client_resyncs():
    async def run() -> None:
        books = _Books()
        hub = Hub(None, books.read, {"X-Y": None})  # type: ignore[dict-item]
        slow, fine = _conn(limit=2), _conn()
        await hub.subscribe_book(slow, "X-Y")
        await hub.subscribe_book(fine, "X-Y")
        for k in range(2, 6):
            books.seq, books.bids = k, [("100.00", f"{k}.0", 1)]
            await hub.refresh("X-Y")
        notices = [json.loads(f) for f in slow.outbox.messages()]
        assert notices[0]["type"] == "resync_required" and notices[0]["code"] == 123
        assert all(n["type"] == "resync_required" for n in notices)  # no deltas after it
        assert [json.loads(f)["seq"] for f in fine.outbox.messages()] == [1, 2, 3, 4, 5]
        while slow.outbox.take() is not None:
            pass
        hub.resync(slow, "X-Y")
        assert json.loads(slow.outbox.messages()[-1])["seq"] == 5  # a snapshot, deltas from it
        books.seq, books.bids = 6, []
        await hub.refresh("X-Y")
        assert json.loads(slow.outbox.messages()[-1])["prev_seq"] == 5

    asyncio.run(run())


def test_a_book_nobody_follows_is_read_afresh_for_its_next_subscriber():
    """Regression: the feed of a book whose subscribers all left was no longer refreshed, and
    the next subscriber got its old snapshot (stale until the pair's next event)."""

    async def run() -> None:
        books = _Books()
        hub = Hub(None, books.read, {"X-Y": None})  # type: ignore[dict-item]
        first, later = _conn(), _conn()
        await hub.subscribe_book(first, "X-Y")
        hub.remove(first, "book", "X-Y")
        books.seq, books.bids = 7, [("99.00", "4.0", 1)]
        hub.mark("X-Y")  # an event while nobody follows the book
        await hub.subscribe_book(later, "X-Y")
        snap = json.loads(later.outbox.messages()[0])
        assert (snap["seq"], snap["bids"]) == (7, [["99.00", "4.0"]])

    asyncio.run(run())


def test_a_book_that_cannot_be_read_is_an_error_not_an_empty_snapshot():
    async def run() -> None:
        async def down(symbol: str, depth: int) -> dict:
            raise TimeoutError("no reply")

        hub = Hub(None, down, {"X-Y": None})  # type: ignore[dict-item]
        conn = _conn()
        await hub.subscribe_book(conn, "X-Y")
        (msg,) = [json.loads(f) for f in conn.outbox.messages()]
        assert (msg["type"], msg["name"]) == ("error", "gateway_unavailable")
        assert not conn.subs and "X-Y" not in hub.feeds

    asyncio.run(run())


def test_subscribers_arriving_together_share_one_first_read_of_the_book():
    """Regression: every client resubscribing to a restarted gateway read the book itself
    (N clients, N engine reads at once)."""

    async def run() -> None:
        books = _Books()
        reads = []

        async def slow_read(symbol: str, depth: int) -> dict:
            reads.append(symbol)
            await asyncio.sleep(0.01)
            return await books.read(symbol, depth)

        hub = Hub(None, slow_read, {"X-Y": None})  # type: ignore[dict-item]
        conns = [_conn() for _ in range(50)]
        await asyncio.gather(*(hub.subscribe_book(c, "X-Y") for c in conns))
        assert len(reads) == 1
        assert {json.loads(c.outbox.messages()[0])["seq"] for c in conns} == {1}

    asyncio.run(run())


def test_subscribers_arriving_together_via_the_server_path_all_get_the_snapshot():
    """Regression: the server's subscribe first drops the connection's old subscription
    (``hub.remove``); with no subscriber added yet that dropped the book's feed while its first
    read was in flight, and every client subscribing to a cold book at once got
    ``gateway_unavailable`` instead of a snapshot (seen by bench/gateway.py's fleets)."""

    async def run() -> None:
        books = _Books()

        reading, answer = asyncio.Event(), asyncio.Event()

        async def slow_read(symbol: str, depth: int) -> dict:
            reading.set()
            await answer.wait()
            return await books.read(symbol, depth)

        hub = Hub(None, slow_read, {"X-Y": None})  # type: ignore[dict-item]
        conns = [_conn() for _ in range(3)]

        async def subscribe(c: Conn) -> None:
            hub.remove(c, "book", "X-Y")  # as GatewayServer.subscribe does first
            await hub.subscribe_book(c, "X-Y")

        first = asyncio.ensure_future(subscribe(conns[0]))
        await reading.wait()  # the others come while the first read is in flight
        later = [asyncio.ensure_future(subscribe(c)) for c in conns[1:]]
        await asyncio.sleep(0)
        answer.set()
        await asyncio.gather(first, *later)
        firsts = [json.loads(c.outbox.messages()[0]) for c in conns]
        assert [(f["type"], f.get("seq")) for f in firsts] == [("snapshot", 1)] * 3
        assert all(("book", "X-Y") in c.subs for c in conns)

    asyncio.run(run())
