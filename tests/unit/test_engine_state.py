"""The engine owns its state: snapshot/restore (whole engine and per pair) and integrity checks."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.book import IntegrityError, Order, rest_order
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    RECENT_TRADES,
    REJ_DUPLICATE_ID,
    SELL,
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_LIVE,
    STATE_UNKNOWN,
    STP_CANCEL_BOTH,
)
from shardex.tools.workload import Workload
from tests.support.depth import examples
from tests.support.engine_gen import ACCOUNTS, IDS, SYMBOLS, Logged, long_commands, windows


def _roundtrip(state):
    """What a snapshot file gives back: msgpack with tuples, as journal.read_snapshot decodes."""
    return msgpack.unpackb(
        msgpack.packb(state, use_bin_type=True), raw=False, strict_map_key=False, use_list=False
    )


def _limit(oid, side, price, qty, account="a", symbol="BTC-USD"):
    return (OP_NEW, symbol, oid, account, side, LIMIT, price, qty, GTC, False, 0)


def _finished(engine):
    """Every book's recent results by generation (previous, current), in recording order."""
    return {
        s: (list(b.prev.items()), list(b.done.items()), engine._left)
        for s, b in engine.books.items()
    }


def _statuses(engine, source=None):
    """Every status; trades looked up in ``source``'s log (default: the engine's own)."""
    events = (source or engine).events
    return [engine.order_status(s, a, i, events) for s in SYMBOLS for a in ACCOUNTS for i in IDS]


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_commands, long_commands, windows)
def test_restore_continues_exactly_like_the_original(before, after, window):
    """Including the recent-results index: later duplicate rejects and statuses are identical."""
    engine = Logged(DEFAULT_MARKETS, recent=window)
    engine.apply_many(before)
    restored = Logged.restore(_roundtrip(engine.snapshot()), DEFAULT_MARKETS, recent=window)
    restored.check_integrity()
    assert _roundtrip(restored.snapshot()) == _roundtrip(engine.snapshot())
    # the same seq line: the original's events serve the restored engine's trade look-ups
    assert _statuses(restored, engine) == _statuses(engine)
    assert restored.apply_many(after) == engine.apply_many(after)
    restored.check_integrity()
    assert _statuses(restored, engine) == _statuses(engine)
    assert _finished(restored) == _finished(engine)


def test_version1_snapshot_is_still_read():
    """A snapshot written before the recent-results index (6-field orders, no version)."""
    v1 = {
        "seq": 12,
        "books": {
            "BTC-USD": {
                "trade_id": 4,
                "bids": ((("b1", "alice", 100, 5, 0, False),)),
                "asks": (("s1", "bob", 105, 2, 1, True), ("s2", "bob", 105, 3, 0, False)),
            },
            "ETH-USD": {"trade_id": 0, "bids": (), "asks": ()},
        },
    }
    eng = Logged.restore(_roundtrip(v1), DEFAULT_MARKETS)
    eng.check_integrity()
    assert eng.seq == 12 and eng.books["BTC-USD"].trade_id == 4
    assert eng.books["BTC-USD"].level_orders(1) == [[("s1", 2), ("s2", 3)]]
    st_ = eng.order_status("BTC-USD", "bob", "s1")
    assert st_ == {
        "state": STATE_LIVE,
        "symbol": "BTC-USD",
        "id": "s1",
        "side": SELL,
        "price": 105,
        "qty": 2,
        "filled": 0,
        "trades": [],
    }
    out = eng.apply_many([_limit("t", BUY, 105, 3, account="carol")])
    assert [e[1] for e in out] == [13, 14, 15] and out[1][-1] == 5  # seq and trade ids go on
    assert eng.snapshot()["version"] == 4


def test_restore_refuses_a_newer_version():
    # (5: version 4 plus pair moves; 6: plus pending stop orders)
    with pytest.raises(ValueError, match="version 7"):
        Logged.restore({"version": 7, "seq": 0, "books": {}}, DEFAULT_MARKETS)


def test_pair_moves_to_another_engine_and_trades_there_identically():
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=5)
    src = Logged(DEFAULT_MARKETS)
    src.apply_many(wl.warmup(200) + wl.take(2000))
    dst = Logged(DEFAULT_MARKETS, seq=77)
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
    a_book, b_book = src.books["ETH-USD"], dst.books["ETH-USD"]
    finished = [*a_book.prev, *a_book.done]
    assert finished and [*b_book.prev, *b_book.done] == finished
    for oid in finished[-50:]:
        acct = (a_book.done.get(oid) or a_book.prev[oid])[0]
        # another engine's seq line: the moved records keep fate and fill, their trades are
        # not looked up there (no ``trades`` key: unknown)
        want = src.order_status("ETH-USD", acct, oid)
        del want["trades"]
        assert dst.order_status("ETH-USD", acct, oid) == want
    taker = (OP_NEW, "ETH-USD", "sweep", "t", BUY, 1, None, 500_000, 1, False, 0)
    strip = [e[:1] + e[2:] for e in src.apply_many([taker])]  # same events but for the seq
    assert strip == [e[:1] + e[2:] for e in dst.apply_many([taker])]


def test_restore_pair_refuses_unknown_market_and_a_pair_with_live_orders():
    eng = Logged(DEFAULT_MARKETS)
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
    eng = Logged(DEFAULT_MARKETS)
    state = {"trade_id": 3, "bids": bids, "asks": asks}
    if match is None:
        eng.restore_pair("BTC-USD", state)
        assert eng.books["BTC-USD"].level_orders(0) == [[("x", 1)]]
        return
    with pytest.raises(ValueError, match=match):
        eng.restore_pair("BTC-USD", state)
    assert "BTC-USD" not in eng.books, "a failed restore leaves no half book behind"


def _engine_with_book():
    eng = Logged(DEFAULT_MARKETS)
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
    eng = Logged(DEFAULT_MARKETS)
    eng.apply_many(wl.warmup(300))
    for _ in range(20):
        eng.apply_many(wl.take(500))
        eng.check_integrity()
    assert eng.resting() > 100


# ---------------------------------------------------------------------- order status


def _st(eng, oid, account="a", symbol="BTC-USD"):
    return eng.order_status(symbol, account, oid)


def test_status_live_filled_and_every_cancel_reason():
    eng = Logged(DEFAULT_MARKETS)
    eng.apply_many(
        [
            _limit("m1", SELL, 100, 3, account="m"),
            _limit("m2", SELL, 101, 3, account="m"),
            _limit("t1", BUY, 101, 4, account="t"),  # takes m1 (3) and 1 of m2
        ]
    )
    assert _st(eng, "m1", "m") == {
        "state": STATE_FILLED,
        "symbol": "BTC-USD",
        "id": "m1",
        "filled": 3,
        "trades": [(100, 3, 1)],
    }
    assert _st(eng, "t1", "t") == {
        "state": STATE_FILLED,
        "symbol": "BTC-USD",
        "id": "t1",
        "filled": 4,
        "trades": [(100, 3, 1), (101, 1, 2)],
    }
    live = _st(eng, "m2", "m")
    assert live == {
        "state": STATE_LIVE,
        "symbol": "BTC-USD",
        "id": "m2",
        "side": SELL,
        "price": 101,
        "qty": 2,
        "filled": 1,
        "trades": [(101, 1, 2)],
    }
    eng.apply_many(
        [
            (OP_NEW, "BTC-USD", "ioc", "t", BUY, LIMIT, 101, 5, IOC, False, 0),
            (OP_NEW, "BTC-USD", "fok", "t", BUY, MARKET, None, 5, FOK, False, 0),
            _limit("m3", SELL, 102, 1, account="m"),
            (OP_NEW, "BTC-USD", "self", "m", BUY, LIMIT, 102, 1, GTC, False, STP_CANCEL_BOTH),
            _limit("u", BUY, 90, 1),
            (OP_CANCEL, "BTC-USD", "u", "a"),
        ]
    )
    ioc = _st(eng, "ioc", "t")
    assert (ioc["state"], ioc["reason"], ioc["filled"]) == (STATE_CANCELLED, "ioc", 2)
    assert ioc["trades"] == [(101, 2, 3)]
    fok = _st(eng, "fok", "t")
    assert (fok["state"], fok["reason"], fok["filled"], fok["trades"]) == (
        STATE_CANCELLED,
        "fok",
        0,
        [],
    )
    for oid in ("m3", "self"):
        assert _st(eng, oid, "m")["reason"] == "stp"
    assert _st(eng, "u") == {
        "state": STATE_CANCELLED,
        "symbol": "BTC-USD",
        "id": "u",
        "filled": 0,
        "trades": [],
        "reason": "user",
    }


def test_status_never_leaks_another_accounts_order_nor_rejects():
    eng = Logged(DEFAULT_MARKETS)
    eng.apply_many([_limit("x", BUY, 100, 1, account="alice"), _limit("y", BUY, 0, 1)])
    assert _st(eng, "x", "mallory") == {"state": STATE_UNKNOWN, "symbol": "BTC-USD", "id": "x"}
    assert _st(eng, "y")["state"] == STATE_UNKNOWN  # rejected: never executed
    eng.apply_many([(OP_CANCEL, "BTC-USD", "x", "alice")])
    assert _st(eng, "x", "mallory")["state"] == STATE_UNKNOWN
    assert _st(eng, "x", "alice")["state"] == STATE_CANCELLED


@pytest.mark.parametrize(
    "args",
    [
        (None, None, None),
        ("BTC-USD", "a", None),
        ("BTC-USD", None, "x"),
        (["BTC-USD"], "a", "x"),
        ("BTC-USD", {"a": 1}, "x"),
        ("BTC-USD", "a", {"x"}),
        ("NOPE-USD", "a", "x"),
        ("BTC-USD", "a", "x" * 100_000),
        (b"BTC-USD", b"a", b"x"),
        (float("nan"), 10**30, -1),
    ],
)
def test_status_of_garbage_is_unknown_and_never_raises(args):
    eng = Logged(DEFAULT_MARKETS)
    eng.apply_many([_limit("x", BUY, 100, 1)])
    got = eng.order_status(*args)
    assert got["state"] == STATE_UNKNOWN
    assert all(len(v) <= 64 for v in got.values()), "nothing long is echoed back"
    assert "BTC-USD" not in eng.books or eng.books["BTC-USD"].orders["x"].qty == 1


def test_status_keeps_the_most_recent_trades_only():
    eng = Logged(DEFAULT_MARKETS)
    eng.apply_many([_limit("big", SELL, 100, 100, account="m")])
    for i in range(40):
        eng.apply_many([_limit(f"t{i}", BUY, 100, 1, account="t")])
    live = _st(eng, "big", "m")
    assert live["filled"] == 40 and live["qty"] == 60
    assert len(live["trades"]) == RECENT_TRADES
    assert live["trades"][0] == (100, 1, 40 - RECENT_TRADES + 1) and live["trades"][-1][2] == 40
    # a reprice that trades merges the old and new trades, still capped
    eng.apply_many(
        [_limit("s", SELL, 99, 5, account="x"), (OP_AMEND, "BTC-USD", "big", "m", None, 98)]
    )
    assert _st(eng, "big", "m")["trades"][-1][2] == 40
    sweep = (OP_NEW, "BTC-USD", "sweep", "t", BUY, LIMIT, 100, 200, IOC, False, 0)
    eng.apply_many([sweep])
    done = _st(eng, "big", "m")
    assert (done["state"], done["filled"], len(done["trades"])) == (STATE_FILLED, 100, 32)
    eng.check_integrity()


def test_snapshot_of_default_window_engine_stays_bounded():
    eng = Logged(DEFAULT_MARKETS, recent=50)
    wl = Workload(symbols=("BTC-USD",), seed=2)
    eng.apply_many(wl.warmup(100) + wl.take(3000))
    held = sum(len(b.done) + len(b.prev) for b in eng.books.values())
    assert 26 <= held <= 50  # two generations of 25: the last 26..50 finished orders
    assert sum(len(p["recent"]) for p in eng.snapshot()["books"].values()) == held


def _ioc(oid, account="a"):
    """An IOC buy far below any ask: accepted, then cancelled at once (one finished order)."""
    return (OP_NEW, "BTC-USD", oid, account, BUY, LIMIT, 1, 1, IOC, False, 0)


def test_window_is_two_generations_of_half_the_window():
    """recent=4: generations of 2. The engine remembers the last 3..4 finished orders; an id
    is refused while remembered and accepted again once its generation is dropped."""
    eng = Logged(DEFAULT_MARKETS, recent=4)
    eng.apply_many([_ioc(f"f{i}") for i in range(1, 6)])
    known = [i for i in range(1, 6) if _st(eng, f"f{i}", "a")["state"] != STATE_UNKNOWN]
    assert known == [3, 4, 5]  # f5 rotated the generations: f1 and f2 were dropped together
    assert eng.apply_many([_ioc("f3")])[0][5] == REJ_DUPLICATE_ID
    assert [e[0] for e in eng.apply_many([_ioc("f1")])] == [EV_ACCEPTED, EV_CANCELLED]
    eng.check_integrity()
    one = Logged(DEFAULT_MARKETS, recent=1)  # window 1: exactly the last finished order
    one.apply_many([_ioc("x"), _ioc("y")])
    assert _st(one, "x", "a")["state"] == STATE_UNKNOWN != _st(one, "y", "a")["state"]
    one.check_integrity()


def test_version2_snapshot_is_still_read():
    """A version-2 state (recent results with their FIFO position ``n``) is recorded again
    oldest first: with a smaller window only the newest survive, in generations."""
    v2 = {
        "version": 2,
        "seq": 9,
        "books": {
            "BTC-USD": {
                "trade_id": 1,
                "bids": (("b1", "alice", 100, 5, 0, False, 1, ((100, 1, 1),)),),
                "asks": (),
                "recent": (
                    ("c", "carol", STATE_CANCELLED, 0, (), "user", 2),
                    ("s", "bob", STATE_FILLED, 1, ((100, 1, 1),), None, 1),
                    ("a", "alice", STATE_CANCELLED, 0, (), "ioc", 0),
                ),
            }
        },
    }
    eng = Logged.restore(_roundtrip(v2), DEFAULT_MARKETS)
    eng.check_integrity()
    assert list(eng.books["BTC-USD"].done) == ["a", "s", "c"]  # by n, not by listing order
    # versions before 4 kept trade lists, not seq ranges: the fate and fill stay, the
    # trades are unknown (no ``trades`` key)
    assert _st(eng, "s", "bob") == {
        "state": STATE_FILLED, "symbol": "BTC-USD", "id": "s", "filled": 1,
    }  # fmt: skip
    small = Logged.restore(_roundtrip(v2), DEFAULT_MARKETS, recent=2)  # generations of 1
    small.check_integrity()
    assert (list(small.books["BTC-USD"].prev), list(small.books["BTC-USD"].done)) == (["s"], ["c"])
    assert small.snapshot()["version"] == 4


def test_version3_snapshot_under_another_window_is_recorded_again():
    eng = Logged(DEFAULT_MARKETS, recent=6)
    eng.apply_many([_ioc(f"f{i}") for i in range(8)])
    state = _roundtrip(eng.snapshot())
    same = Logged.restore(state, DEFAULT_MARKETS, recent=6)
    assert _finished(same) == _finished(eng)
    other = Logged.restore(state, DEFAULT_MARKETS, recent=2)
    other.check_integrity()
    book = other.books["BTC-USD"]
    assert (list(book.prev), list(book.done)) == (["f6"], ["f7"])
    bad = dict(state, recent_left=99)  # a left count that does not fit: recorded again too
    again = Logged.restore(bad, DEFAULT_MARKETS, recent=6)
    again.check_integrity()
    assert {*again.books["BTC-USD"].prev, *again.books["BTC-USD"].done} == {
        *eng.books["BTC-USD"].prev,
        *eng.books["BTC-USD"].done,
    }


def test_trades_are_looked_up_in_the_event_source_within_the_order_s_seq_range():
    """Nothing per fill: the engine knows each order's seq range, the source has the trades."""
    eng = Logged(DEFAULT_MARKETS)
    eng.apply_many([_limit("m", SELL, 100, 10, account="m")])
    for i in range(3):  # the maker's fills are far apart, between other orders' events
        eng.apply_many([_limit(f"b{i}", BUY, 90, 1, account="x"), _limit(f"t{i}", BUY, 100, 2)])
    first, last = eng.trade_range("BTC-USD", "m")
    assert (first, last) == (1, eng.seq)
    assert eng.trade_range("BTC-USD", "nope") is None and eng.trade_range(3, "m") is None
    live = eng.order_status("BTC-USD", "m", "m")
    assert live["filled"] == 6 and live["trades"] == [(100, 2, 1), (100, 2, 2), (100, 2, 3)]
    # without a source the status says nothing about trades (the client reads "not known")
    plain = Engine.order_status(eng, "BTC-USD", "m", "m")
    assert "trades" not in plain and plain["filled"] == 6
    # a source that no longer holds the older events: only what it has, never a wrong trade
    base = eng.log[-1][1] - 1

    def tail(f, la):
        return eng.events(f, la) if f >= base else None

    recent = eng.order_status("BTC-USD", "m", "m", tail)
    assert recent["trades"] == [(100, 2, 3)]
    # the scan is bounded: nothing beyond ``scan`` events back from the last one
    assert eng.order_status("BTC-USD", "m", "m", scan=1)["trades"] == [(100, 2, 3)]
    # a finished order keeps its range (accepted .. last event), so its trades stay found
    eng.apply_many([(OP_CANCEL, "BTC-USD", "m", "m")])
    done = eng.order_status("BTC-USD", "m", "m")
    assert (done["state"], done["reason"], done["filled"]) == (STATE_CANCELLED, "user", 6)
    assert done["trades"] == live["trades"] and eng.trade_range("BTC-USD", "m") == (1, eng.seq)


def test_version3_snapshot_is_still_read():
    """Version 3: orders and recent results with trade lists; fates and fills are kept."""
    v3 = {
        "version": 3, "seq": 9, "recent": 100_000, "recent_left": 49_999,
        "books": {"BTC-USD": {
            "trade_id": 2,
            "bids": (("b1", "alice", 100, 5, 0, False, 2, ((100, 1, 1), (100, 1, 2))),),
            "asks": (),
            "recent": (("s", "bob", STATE_FILLED, 2, ((100, 1, 1), (100, 1, 2)), None, 1),),
        }},
    }  # fmt: skip
    eng = Logged.restore(_roundtrip(v3), DEFAULT_MARKETS)
    eng.check_integrity()
    assert eng.books["BTC-USD"].orders["b1"].filled == 2
    assert eng.trade_range("BTC-USD", "s") is None  # range unknown
    assert _st(eng, "s", "bob") == {
        "state": STATE_FILLED, "symbol": "BTC-USD", "id": "s", "filled": 2,
    }  # fmt: skip
    assert _st(eng, "b1", "alice")["trades"] == []  # none since the restore
    eng.apply_many([_limit("s2", SELL, 100, 1, account="bob")])
    assert _st(eng, "b1", "alice")["trades"] == [(100, 1, 3)]
    assert _st(eng, "s", "bob")["state"] == STATE_FILLED
    assert eng.apply_many([_limit("s", SELL, 200, 1, account="bob")])[0][5] == REJ_DUPLICATE_ID


def test_integrity_check_sees_a_bad_generation_count_and_a_future_seq():
    eng = Logged(DEFAULT_MARKETS, recent=4)
    eng.apply_many([_limit(f"i{i}", BUY, 100, 1) for i in range(3)])
    eng.apply_many([(OP_CANCEL, "BTC-USD", f"i{i}", "a") for i in range(3)])
    eng.check_integrity()
    book = eng.books["BTC-USD"]
    book.nprev += 5
    with pytest.raises(IntegrityError, match="previous of"):
        eng.check_integrity()
    book.nprev -= 5
    eng.apply_many([_limit("z", BUY, 100, 1)])
    book.orders["z"].seq = eng.seq + 1
    with pytest.raises(IntegrityError, match="accepted at"):
        eng.check_integrity()
