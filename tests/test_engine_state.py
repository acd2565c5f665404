"""The engine owns its state: snapshot/restore (whole engine and per pair) and integrity checks."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from test_engine_props import commands

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.book import IntegrityError, Order, rest_order
from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW, SELL
from shardex.workload import Workload


def _roundtrip(state):
    """What a snapshot file gives back: msgpack with tuples, as journal.read_snapshot decodes."""
    return msgpack.unpackb(
        msgpack.packb(state, use_bin_type=True), raw=False, strict_map_key=False, use_list=False
    )


def _limit(oid, side, price, qty, account="a", symbol="BTC-USD"):
    return (OP_NEW, symbol, oid, account, side, LIMIT, price, qty, GTC, False, 0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands, commands)
def test_restore_continues_exactly_like_the_original(before, after):
    engine = Engine(DEFAULT_MARKETS)
    engine.apply_many(before)
    restored = Engine.restore(_roundtrip(engine.snapshot()), DEFAULT_MARKETS)
    restored.check_integrity()
    assert _roundtrip(restored.snapshot()) == _roundtrip(engine.snapshot())
    assert restored.apply_many(after) == engine.apply_many(after)
    restored.check_integrity()


def test_pair_moves_to_another_engine_and_trades_there_identically():
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=5)
    src = Engine(DEFAULT_MARKETS)
    src.apply_many(wl.warmup(200) + wl.take(2000))
    dst = Engine(DEFAULT_MARKETS, seq=77)
    dst.restore_pair("ETH-USD", _roundtrip(src.snapshot_pair("ETH-USD")))
    dst.check_integrity()
    assert dst.seq == 77, "moving a pair does not touch the target's seq"
    assert set(dst.books) == {"ETH-USD"}
    a, b = src.books["ETH-USD"], dst.books["ETH-USD"]
    assert (a.trade_id, a.level_orders(0), a.level_orders(1)) == (
        b.trade_id,
        b.level_orders(0),
        b.level_orders(1),
    )
    taker = (OP_NEW, "ETH-USD", "sweep", "t", BUY, 1, None, 500_000, 1, False, 0)
    strip = [e[:1] + e[2:] for e in src.apply_many([taker])]  # same events but for the seq
    assert strip == [e[:1] + e[2:] for e in dst.apply_many([taker])]


def test_restore_pair_refuses_unknown_market_and_a_pair_with_live_orders():
    eng = Engine(DEFAULT_MARKETS)
    with pytest.raises(ValueError, match="unknown market 'NOPE-USD'"):
        eng.restore_pair("NOPE-USD", {"trade_id": 0, "bids": [], "asks": []})
    eng.apply_many([_limit("x", BUY, 100, 1)])
    with pytest.raises(ValueError, match="already has live orders"):
        eng.restore_pair("BTC-USD", {"trade_id": 0, "bids": [], "asks": []})
    assert eng.books["BTC-USD"].orders["x"].qty == 1


@pytest.mark.parametrize(
    "bids, asks, match",
    [
        ([("x", "a", 100, 0, 0, False)], [], "bad order entry"),
        ([("x", "a", -5, 1, 0, False)], [], "bad order entry"),
        ([("x", "a", 100, 1, 9, False)], [], "bad order entry"),
        ([("x", "a", 100, 1, 0, False), ("x", "a", 99, 1, 0, False)], [], "appears twice"),
        ([("x", "a", 101, 1, 0, False)], [("y", "b", 100, 1, 0, False)], "crossed book"),
        ([("x", "a", 100, 1, 0, False, "extra?")], [], None),  # longer entries: newer format
    ],
)
def test_restore_validates_every_entry(bids, asks, match):
    eng = Engine(DEFAULT_MARKETS)
    state = {"trade_id": 3, "bids": bids, "asks": asks}
    if match is None:
        eng.restore_pair("BTC-USD", state)
        assert eng.books["BTC-USD"].level_orders(0) == [[("x", 1)]]
        return
    with pytest.raises(ValueError, match=match):
        eng.restore_pair("BTC-USD", state)
    assert "BTC-USD" not in eng.books, "a failed restore leaves no half book behind"


def _engine_with_book():
    eng = Engine(DEFAULT_MARKETS)
    eng.apply_many(
        [
            _limit("b1", BUY, 100, 5),
            _limit("b2", BUY, 100, 3),
            _limit("b3", BUY, 99, 2),
            _limit("s1", SELL, 105, 4),
            _limit("s2", SELL, 106, 1),
        ]
    )
    eng.check_integrity()
    return eng, eng.books["BTC-USD"]


def _corrupt_total(book):
    book.sides[0].levels[-100].total += 1


def _corrupt_live(book):
    book.sides[1].levels[105].live = 2


def _corrupt_index_missing(book):
    del book.orders["b2"]


def _corrupt_index_extra(book):
    book.orders["ghost"] = Order("ghost", "a", 0, 100, 1, 0, False)


def _corrupt_heap(book):
    book.sides[0].heap.remove(-99)


def _corrupt_heap_order(book):
    book.sides[1].heap[:] = [106, 105]


def _corrupt_crossed(book):
    rest_order(book, Order("c", "a", 0, 110, 1, 0, False))


def _corrupt_empty_level(book):
    lvl = book.sides[1].levels[106]
    lvl.orders[0].qty = 0
    lvl.total = lvl.live = 0
    del book.orders["s2"]


def _corrupt_wrong_price(book):
    book.sides[0].levels[-100].orders[0].price = 98


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_corrupt_total, "BTC-USD bids level 100: counters total=9 live=2, orders say total=8"),
        (_corrupt_live, "asks level 105: counters total=4 live=2, orders say total=4 live=1"),
        (_corrupt_index_missing, "order 'b2' missing from the index"),
        (_corrupt_index_extra, "index holds orders resting nowhere: ['ghost']"),
        (_corrupt_heap, "BTC-USD bids: level keys [-99] not in heap"),
        (_corrupt_heap_order, "BTC-USD asks: heap order broken at index 1"),
        (_corrupt_crossed, "crossed book, best bid 110 >= best ask 105"),
        (_corrupt_empty_level, "BTC-USD asks level 106: empty level kept"),
        (_corrupt_wrong_price, "order 'b1' is side 0 price 98"),
    ],
)
def test_check_integrity_names_each_kind_of_damage(corrupt, message):
    eng, book = _engine_with_book()
    corrupt(book)
    with pytest.raises(IntegrityError) as exc:
        eng.check_integrity()
    assert message in str(exc.value)


def test_check_integrity_holds_on_a_long_realistic_stream():
    wl = Workload(symbols=("BTC-USD", "SOL-USD"), seed=11)
    eng = Engine(DEFAULT_MARKETS)
    eng.apply_many(wl.warmup(300))
    for _ in range(20):
        eng.apply_many(wl.take(500))
        eng.check_integrity()
    assert eng.resting() > 100
