"""Unit tests of the engine through its public JSON edge: order types, tif, amend, STP, rejects."""

from __future__ import annotations

import pytest

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import OP_AMEND, OP_CANCEL, OP_NEW
from shardex.wire.protocol import command_from_json, event_to_json


class Harness:
    def __init__(self) -> None:
        self.engine = Engine(DEFAULT_MARKETS)
        self.n = 0

    def send(self, **fields) -> list[dict]:
        out: list = []
        self.engine.apply(command_from_json(fields, DEFAULT_MARKETS), out)
        return [event_to_json(e, DEFAULT_MARKETS) for e in out]

    def raw(self, cmd) -> list[dict]:
        out: list = []
        self.engine.apply(cmd, out)
        return [event_to_json(e, DEFAULT_MARKETS) for e in out]

    def limit(self, oid, side, price, qty, account="alice", symbol="BTC-USD", **kw):
        return self.send(
            op="new",
            symbol=symbol,
            id=oid,
            account=account,
            side=side,
            type="limit",
            price=price,
            qty=qty,
            **kw,
        )

    def market(self, oid, side, qty, account="bob", **kw):
        return self.send(
            op="new",
            symbol="BTC-USD",
            id=oid,
            account=account,
            side=side,
            type="market",
            qty=qty,
            **kw,
        )

    def book(self, symbol="BTC-USD"):
        return self.engine.books[symbol].level_orders(0), self.engine.books[symbol].level_orders(1)


def kinds(events):
    return [e["ev"] for e in events]


def trades(events):
    return [(e["price"], e["qty"], e["taker"], e["maker"]) for e in events if e["ev"] == "trade"]


@pytest.fixture
def h():
    return Harness()


def test_design_examples_end_to_end(h):
    assert h.limit("o-1", "buy", "30000.50", "0.25", tif="gtc", post_only=False) == [
        {"ev": "accepted", "symbol": "BTC-USD", "id": "o-1", "seq": 1}
    ]
    ev = h.market("o-2", "sell", "0.1")
    assert ev == [
        {"ev": "accepted", "symbol": "BTC-USD", "id": "o-2", "seq": 2},
        {
            "ev": "trade",
            "symbol": "BTC-USD",
            "price": "30000.50",
            "qty": "0.1000",
            "taker": "o-2",
            "maker": "o-1",
            "taker_side": "sell",
            "trade_id": 1,
            "seq": 3,
        },
    ]
    assert h.send(op="amend", symbol="BTC-USD", id="o-1", account="alice", qty="0.10") == [
        {
            "ev": "amended",
            "symbol": "BTC-USD",
            "id": "o-1",
            "qty": "0.1000",
            "price": "30000.50",
            "seq": 4,
        }
    ]
    assert h.send(op="cancel", symbol="BTC-USD", id="o-1", account="alice") == [
        {
            "ev": "cancelled",
            "symbol": "BTC-USD",
            "id": "o-1",
            "reason": "user",
            "qty": "0.1000",
            "seq": 5,
        }
    ]


def test_price_time_priority_best_price_then_fifo(h):
    h.limit("a", "sell", "101", "1", account="m1")
    h.limit("b", "sell", "100", "1", account="m2")
    h.limit("c", "sell", "100", "1", account="m3")
    h.limit("d", "sell", "102", "1", account="m4")
    ev = h.limit("t", "buy", "101", "2.5", account="taker")
    assert trades(ev) == [
        ("100.00", "1.0000", "t", "b"),
        ("100.00", "1.0000", "t", "c"),
        ("101.00", "0.5000", "t", "a"),
    ]
    # trade ids increase in matching order, seqs are consecutive
    tids = [e["trade_id"] for e in ev if e["ev"] == "trade"]
    assert tids == [1, 2, 3]
    assert [e["seq"] for e in ev] == list(range(ev[0]["seq"], ev[0]["seq"] + len(ev)))
    bids, asks = h.book()
    assert asks == [[("a", 5000)], [("d", 10000)]] and bids == []


def test_limit_rests_remainder_after_partial_fill(h):
    h.limit("m", "sell", "100", "1", account="m")
    ev = h.limit("t", "buy", "100.50", "3", account="t")
    assert kinds(ev) == ["accepted", "trade"]
    bids, asks = h.book()
    assert bids == [[("t", 20000)]] and asks == []


def test_market_order_remainder_cancelled_ioc(h):
    h.limit("m", "sell", "100", "1", account="m")
    ev = h.market("t", "buy", "1.5")
    assert kinds(ev) == ["accepted", "trade", "cancelled"]
    assert ev[-1]["reason"] == "ioc" and ev[-1]["qty"] == "0.5000"


def test_market_order_on_empty_book_is_cancelled(h):
    ev = h.market("t", "buy", "1")
    assert kinds(ev) == ["accepted", "cancelled"] and ev[1]["reason"] == "ioc"


def test_ioc_never_rests(h):
    h.limit("m", "sell", "100", "1", account="m")
    ev = h.limit("t", "buy", "100", "2", tif="ioc", account="t")
    assert kinds(ev) == ["accepted", "trade", "cancelled"]
    assert h.book() == ([], [])


def test_fok_fills_completely_or_not_at_all(h):
    h.limit("m1", "sell", "100", "1", account="m")
    h.limit("m2", "sell", "101", "1", account="m")
    ev = h.limit("t1", "buy", "101", "2.5", tif="fok", account="t")
    assert kinds(ev) == ["accepted", "cancelled"] and ev[1]["reason"] == "fok"
    assert ev[1]["qty"] == "2.5000"
    assert h.book()[1] == [[("m1", 10000)], [("m2", 10000)]]  # untouched
    ev = h.limit("t2", "buy", "101", "2", tif="fok", account="t")
    assert kinds(ev) == ["accepted", "trade", "trade"]
    assert h.book() == ([], [])


def test_fok_market(h):
    h.limit("m1", "sell", "100", "1", account="m")
    assert kinds(h.market("t", "buy", "2", tif="fok")) == ["accepted", "cancelled"]
    assert kinds(h.market("t2", "buy", "1", tif="fok")) == ["accepted", "trade"]


def test_post_only_rests_or_is_rejected(h):
    h.limit("m", "sell", "100", "1", account="m")
    assert kinds(h.limit("p1", "buy", "99.99", "1", post_only=True)) == ["accepted"]
    ev = h.limit("p2", "buy", "100", "1", post_only=True)
    assert ev[0]["ev"] == "rejected"
    assert ev[0]["reason"] == "post_only order would cross best ask 100.00"
    assert ev[0]["code"] == "post_only_cross"


def test_amend_reduce_keeps_priority(h):
    h.limit("a", "buy", "100", "2", account="x")
    h.limit("b", "buy", "100", "2", account="y")
    h.send(op="amend", symbol="BTC-USD", id="a", account="x", qty="1")
    assert h.book()[0] == [[("a", 10000), ("b", 20000)]]
    ev = h.market("t", "sell", "1")
    assert trades(ev) == [("100.00", "1.0000", "t", "a")]


def test_amend_price_loses_priority(h):
    h.limit("a", "buy", "100", "1", account="x")
    h.limit("b", "buy", "100", "1", account="y")
    h.send(op="amend", symbol="BTC-USD", id="a", account="x", price="99")
    h.send(op="amend", symbol="BTC-USD", id="a", account="x", price="100")
    assert h.book()[0] == [[("b", 10000), ("a", 10000)]]


def test_amend_price_can_match_at_once(h):
    h.limit("s", "sell", "101", "1", account="m")
    h.limit("a", "buy", "100", "2", account="x")
    ev = h.send(op="amend", symbol="BTC-USD", id="a", account="x", price="101")
    assert kinds(ev) == ["amended", "trade"]
    assert trades(ev) == [("101.00", "1.0000", "a", "s")]
    assert h.book()[0] == [[("a", 10000)]]


def test_amend_post_only_to_crossing_price_rejected(h):
    h.limit("s", "sell", "101", "1", account="m")
    h.limit("a", "buy", "100", "1", account="x", post_only=True)
    ev = h.send(op="amend", symbol="BTC-USD", id="a", account="x", price="101")
    assert ev[0]["ev"] == "rejected" and "post_only" in ev[0]["reason"]
    assert ev[0]["code"] == "post_only_cross"
    assert h.book()[0] == [[("a", 10000)]]


@pytest.mark.parametrize(
    "mode,expected_kinds,left_asks",
    [
        ("none", ["accepted", "trade"], []),
        ("cancel_taker", ["accepted", "cancelled"], [[("own", 10000)]]),
        ("cancel_maker", ["accepted", "cancelled", "trade"], []),
        ("cancel_both", ["accepted", "cancelled", "cancelled"], []),
    ],
)
def test_self_trade_prevention(h, mode, expected_kinds, left_asks):
    h.limit("own", "sell", "100", "1", account="alice")
    h.limit("other", "sell", "100", "1", account="bob")
    ev = h.limit("t", "buy", "100", "1", account="alice", stp=mode)
    assert kinds(ev) == expected_kinds
    cancels = [(e["id"], e["reason"]) for e in ev if e["ev"] == "cancelled"]
    if mode == "cancel_taker":
        assert cancels == [("t", "stp")]
    elif mode == "cancel_maker":
        assert cancels == [("own", "stp")] and trades(ev) == [("100.00", "1.0000", "t", "other")]
    elif mode == "cancel_both":
        assert cancels == [("own", "stp"), ("t", "stp")]
    else:
        assert trades(ev) == [("100.00", "1.0000", "t", "own")]
    asks = h.book()[1]
    expect = left_asks[0] if left_asks else []
    remaining = [o for level in asks for o in level if o[0] == "own"]
    assert remaining == expect
    assert not h.engine.books["BTC-USD"].orders.get("t")


REJECTS = [
    (
        {
            "op": "new",
            "symbol": "NOPE-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
        },
        "unknown symbol NOPE-USD",
        "unknown_symbol",
    ),
    (
        {"op": "explode", "symbol": "BTC-USD", "id": "x", "account": "a"},
        "unknown op 'explode' (expected new, cancel or amend)",
        "unknown_op",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "up",
            "type": "limit",
            "price": "1",
            "qty": "1",
        },
        "unknown side 'up' (expected one of buy, sell)",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "stop",
            "price": "1",
            "qty": "1",
        },
        "unknown type 'stop' (expected one of limit, market, stop_market, stop_limit, "
        "take_profit, take_profit_limit)",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
            "tif": "gtx",
        },
        "unknown tif 'gtx' (expected one of gtc, ioc, fok, gtd, day)",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
            "stp": "maybe",
        },
        "unknown stp 'maybe' (expected one of none, cancel_taker, cancel_maker, cancel_both)",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "qty": "1",
        },
        "limit order needs a price",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
        },
        "missing field 'account'",
        "malformed",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": 1,
        },
        "qty must be a decimal string, got int",
        "malformed",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": 7,
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
        },
        "field 'id' must be a non-empty string",
        "malformed",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
            "colour": "red",
        },
        "unknown field 'colour' for op new",
        "malformed",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "0",
            "qty": "1",
        },
        "price must be > 0",
        "out_of_range",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "-2",
        },
        "qty must be > 0",
        "out_of_range",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1.001",
            "qty": "1",
        },
        "price not on tick grid 0.01",
        "off_grid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "0.00001",
        },
        "qty not on lot grid 0.0001",
        "off_grid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "20000000",
            "qty": "1",
        },
        "price 20000000 above max 10000000",
        "out_of_range",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1e9",
        },
        "qty '1e9' is not a plain decimal string",
        "malformed",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "20000",
        },
        "qty 20000 above max 10000",
        "out_of_range",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "NaN",
            "qty": "1",
        },
        "price 'NaN' is not a plain decimal string",
        "malformed",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "market",
            "price": "1",
            "qty": "1",
        },
        "market order must not have a price",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "market",
            "qty": "1",
            "post_only": True,
        },
        "post_only market order is not allowed",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "market",
            "qty": "1",
            "tif": "gtc",
        },
        "market order tif must be ioc or fok",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
            "tif": "fok",
            "post_only": True,
        },
        "post_only requires tif gtc (got fok)",
        "invalid",
    ),
    (
        {
            "op": "new",
            "symbol": "BTC-USD",
            "id": "x",
            "account": "a",
            "side": "buy",
            "type": "limit",
            "price": "1",
            "qty": "1",
            "post_only": "yes",
        },
        "post_only must be true or false",
        "malformed",
    ),
    (
        {"op": "cancel", "symbol": "BTC-USD", "id": "ghost", "account": "a"},
        "order is not live (unknown or finished)",
        "not_live",
    ),
    (
        {"op": "amend", "symbol": "BTC-USD", "id": "ghost", "account": "a", "qty": "1"},
        "order is not live (unknown or finished)",
        "not_live",
    ),
    (
        {"op": "amend", "symbol": "BTC-USD", "id": "live", "account": "a"},
        "amend needs qty and/or price",
        "invalid",
    ),
]


@pytest.mark.parametrize("cmd,reason,code", REJECTS, ids=[r for _, r, _ in REJECTS])
def test_every_reject_reason_and_nothing_changes(h, cmd, reason, code):
    h.limit("live", "sell", "100", "1", account="a")
    before = h.book()
    ev = h.send(**cmd)
    assert len(ev) == 1 and ev[0]["ev"] == "rejected"
    assert ev[0]["reason"] == reason
    assert ev[0]["code"] == code
    assert h.book() == before


def test_duplicate_live_or_recently_finished_id_rejected(h):
    h.limit("x", "buy", "100", "1")
    ev = h.limit("x", "buy", "99", "1")
    assert ev[0]["reason"] == "duplicate id: a live order has it"
    assert ev[0]["code"] == "duplicate_id"
    h.send(op="cancel", symbol="BTC-USD", id="x", account="alice")
    # a retry of a finished order can never place it twice within the window
    ev = h.limit("x", "buy", "99", "1")
    assert ev[0]["reason"] == "duplicate id x (recently finished)"
    assert ev[0]["code"] == "duplicate_id"
    # ids are per symbol: the same id may live on another pair
    assert kinds(h.limit("x", "buy", "99", "1", symbol="ETH-USD")) == ["accepted"]


def test_finished_id_reusable_once_it_left_the_window():
    h = Harness()
    h.engine = Engine(DEFAULT_MARKETS, recent=2)
    h.limit("x", "buy", "100", "1")
    h.send(op="cancel", symbol="BTC-USD", id="x", account="alice")
    for oid in ("y", "z"):  # two more orders finish: x drops out of the FIFO window
        assert kinds(h.limit(oid, "buy", "100", "1", tif="ioc")) == ["accepted", "cancelled"]
        assert h.engine.order_status("BTC-USD", "alice", "x")["state"] == (
            "cancelled" if oid == "y" else "unknown"
        )
    assert kinds(h.limit("x", "buy", "99", "1")) == ["accepted"]
    h.engine.check_integrity()


def test_cancel_and_amend_need_the_owning_account(h):
    h.limit("x", "buy", "100", "1", account="alice")
    ev = h.send(op="cancel", symbol="BTC-USD", id="x", account="mallory")
    assert ev[0]["reason"] == "order belongs to another account"
    assert ev[0]["code"] == "wrong_account"
    ev = h.send(op="amend", symbol="BTC-USD", id="x", account="mallory", qty="0.5")
    assert ev[0]["reason"] == "order belongs to another account"
    assert ev[0]["code"] == "wrong_account"
    assert h.book()[0] == [[("x", 10000)]]


def test_amend_cannot_increase_qty(h):
    h.limit("x", "buy", "100", "1")
    ev = h.send(op="amend", symbol="BTC-USD", id="x", account="alice", qty="2")
    assert ev[0]["reason"] == "amend cannot increase qty (open 1.0000, asked 2.0000)"
    assert ev[0]["code"] == "amend_increase"


def test_cancel_of_filled_order_rejected(h):
    h.limit("m", "sell", "100", "1", account="m")
    h.market("t", "buy", "1")
    ev = h.send(op="cancel", symbol="BTC-USD", id="m", account="m")
    assert ev[0]["reason"] == "order is not live (unknown or finished)"
    assert ev[0]["code"] == "not_live"


@pytest.mark.parametrize(
    "cmd,code",
    [
        (None, "malformed"),
        (5, "malformed"),
        ("new", "unknown_op"),  # indexable: op "n" (the edge refuses non-arrays first)
        (b"\x00", "unknown_op"),
        ((), "malformed"),
        ([], "malformed"),
        ((OP_NEW,), "malformed"),
        ((OP_NEW,) * 11, "malformed"),
        ((99, "BTC-USD"), "unknown_op"),
        ((OP_NEW, "BTC-USD", "x", "a", 0, 0, 1.5, 1, 0, False, 0), "malformed"),
        ((OP_NEW, "BTC-USD", "x", "a", True, 0, 100, 1, 0, False, 0), "malformed"),
        ((OP_NEW, "BTC-USD", "x", "a", 0, 0, 100, 10**30, 0, False, 0), "out_of_range"),
        ((OP_NEW, "BTC-USD", "x", "a", 0, 0, -5, 1, 0, False, 0), "out_of_range"),
        ((OP_NEW, "BTC-USD", "x", "a", 0, 0, None, 1, 0, False, 0), "invalid"),
        ((OP_NEW, "BTC-USD", "x", "a", 7, 0, 100, 1, 0, False, 0), "invalid"),
        ((OP_NEW, "BTC-USD", "x", "a", 0, 0, 100, 1, 0, False, 9), "invalid"),
        ((OP_NEW, "BTC-USD", ["x"], "a", 0, 0, 100, 1, 0, False, 0), "malformed"),
        ((OP_NEW, ["BTC-USD"], "x", "a", 0, 0, 100, 1, 0, False, 0), "malformed"),
        ((OP_NEW, "NOPE-USD", "x", "a", 0, 0, 100, 1, 0, False, 0), "unknown_symbol"),
        ((OP_NEW, "BTC-USD", "x" * 65, "a", 0, 0, 100, 1, 0, False, 0), "malformed"),
        ((OP_NEW, "BTC-USD", "x", "a", 0, 0, 100, 1, 0, 1, 0), "malformed"),
        ((OP_CANCEL, "BTC-USD", {"x": 1}, "a"), "malformed"),
        ((OP_CANCEL, "BTC-USD"), "malformed"),
        ((OP_CANCEL, "NOPE-USD", "live", "a"), "unknown_symbol"),
        ((OP_AMEND, "BTC-USD", "live", "a", "1", None), "malformed"),
        ((OP_AMEND, "BTC-USD", "live", "a", None, 10**40), "out_of_range"),
        ((OP_AMEND, "BTC-USD", "live", "a", None, "100"), "malformed"),
        ((OP_AMEND, "BTC-USD", "live", "a", 0, None), "out_of_range"),
    ],
)
def test_raw_garbage_never_raises_and_changes_nothing(h, cmd, code):
    h.limit("live", "sell", "100", "1", account="a")
    before = h.book()
    seq = h.engine.seq
    ev = h.raw(cmd)
    assert len(ev) == 1 and ev[0]["ev"] == "rejected" and ev[0]["reason"]
    assert ev[0]["code"] == code
    assert ev[0]["seq"] == seq + 1
    assert h.book() == before


def test_hundred_thousand_resting_orders_over_a_thousand_levels():
    """Deep books stay usable: sweep, cancels and depth work with 100k resting orders."""
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    n = 0
    for level in range(1000):
        for _ in range(100):
            n += 1
            engine.apply(
                (OP_NEW, "BTC-USD", f"s{n}", "m", 1, 0, 1_000_000 + level, 1, 0, False, 0), out
            )
    book = engine.books["BTC-USD"]
    assert book.resting() == 100_000
    bids, asks = book.depth(5)
    assert [a[0] for a in asks] == [1_000_000 + i for i in range(5)] and all(
        a[1] == 100 and a[2] == 100 for a in asks
    )
    for i in range(1, 100_001, 2):
        engine.apply((OP_CANCEL, "BTC-USD", f"s{i}", "m"), out)
    out.clear()
    engine.apply((OP_NEW, "BTC-USD", "big", "t", 0, 1, None, 30_000, 1, False, 0), out)
    assert sum(e[4] for e in out if e[0] == 1) == 30_000
    assert book.resting() == 50_000 - 30_000
    assert book.best(1) == 1_000_000 + 600
    engine.apply((OP_AMEND, "BTC-USD", "s60002", "m", None, 999_999), out)
    assert book.best(1) == 999_999


def test_edge_reject_reason_is_bounded(h):
    from shardex.engine.codes import OP_REJECT

    ev = h.raw((OP_REJECT, "BTC-USD", "x", "y" * 100_000))
    assert ev[0]["ev"] == "rejected" and len(ev[0]["reason"]) == 200
    ev = h.raw((OP_REJECT, "BTC-USD", "x", 5))
    assert ev[0]["reason"] == "rejected"
    ev = h.raw((OP_NEW, "BTC-USD", "x", "a", "z" * 10_000, 0, 100, 1, 0, False, 0))
    assert ev[0]["reason"].startswith("unknown side 'zzz") and len(ev[0]["reason"]) == 200
    assert ev[0]["code"] == "malformed"


def test_edge_reject_code_is_its_fifth_field_or_malformed(h):
    """A coded OP_REJECT keeps its code; one from before codes (4 fields) or with a code the
    engine does not know is ``malformed``: an old journal replays to the same events plus that."""
    from shardex.engine.codes import OP_REJECT, REJ_NOT_ALLOWED, REJ_WRONG_SHARD, REJECT_NAMES

    out: list = []
    h.engine.apply((OP_REJECT, "BTC-USD", "x", "account a not allowed for this key",
                    REJ_NOT_ALLOWED), out)  # fmt: skip
    h.engine.apply((OP_REJECT, "BTC-USD", "x", "symbol BTC-USD belongs to shard 1, not 0",
                    REJ_WRONG_SHARD), out)  # fmt: skip
    h.engine.apply((OP_REJECT, "BTC-USD", "x", "line 3: invalid JSON"), out)
    for bad in (-1, len(REJECT_NAMES), 10**30, True, "wrong_shard", None, 1.0):
        h.engine.apply((OP_REJECT, "BTC-USD", "x", "why", bad), out)
    codes = [event_to_json(e, DEFAULT_MARKETS)["code"] for e in out]
    assert codes == ["not_allowed", "wrong_shard"] + ["malformed"] * 8
    assert [e[4] for e in out[:3]] == [
        "account a not allowed for this key",
        "symbol BTC-USD belongs to shard 1, not 0",
        "line 3: invalid JSON",
    ]
    assert all(len(e) == 6 for e in out)


def test_edge_codes_survive_the_line_prefix_and_the_edge():
    """``command_from_json_line`` prefixes the reason and keeps the code; ``edge_command``
    passes a client's coded or old-style OP_REJECT and codes what it refuses itself."""
    from shardex.engine.codes import (
        OP_REJECT,
        REJ_MALFORMED,
        REJ_OFF_GRID,
        REJ_UNKNOWN_OP,
        REJ_UNKNOWN_SYMBOL,
    )
    from shardex.wire.protocol import command_from_json_line, edge_command

    line = b'{"op":"new","symbol":"BTC-USD","id":"x","account":"a","side":"buy",' \
        b'"type":"limit","price":"1.001","qty":"1"}'  # fmt: skip
    cmd = command_from_json_line(line, DEFAULT_MARKETS, "line 7: ")
    assert cmd == (OP_REJECT, "BTC-USD", "x", "line 7: price not on tick grid 0.01", REJ_OFF_GRID)
    cmd = command_from_json_line(b'{"op":"new","symbol":"NOPE"}', DEFAULT_MARKETS, "line 8: ")
    assert cmd[3:] == ("line 8: unknown symbol NOPE", REJ_UNKNOWN_SYMBOL)
    assert command_from_json_line(b"{", DEFAULT_MARKETS)[4] == REJ_MALFORMED
    assert command_from_json_line(b"\xff", DEFAULT_MARKETS)[4] == REJ_MALFORMED
    coded = (OP_REJECT, "BTC-USD", "x", "why", REJ_OFF_GRID)
    assert edge_command(coded) == coded
    assert edge_command(coded[:4]) == coded[:4]
    assert edge_command((OP_REJECT, "BTC-USD", "x", "y" * 500, 5)) == (
        OP_REJECT, "BTC-USD", "x", "y" * 200, 5)  # fmt: skip
    assert edge_command((77, "BTC-USD", "x"))[3:] == ("unknown op 77", REJ_UNKNOWN_OP)
    assert edge_command("garbage")[4] == REJ_MALFORMED
    assert edge_command((OP_REJECT, "BTC-USD", "x", "why", 5, 6))[4] == REJ_MALFORMED
    assert edge_command((OP_CANCEL, "BTC-USD", ["x"], "a"))[4] == REJ_MALFORMED


def test_client_reject_with_a_non_string_reason_passes_the_edge(h):
    """Regression: ``edge_command`` raised TypeError (len of an int) on a client's
    ``(OP_REJECT, symbol, id, 5)``, which the shard counted as an internal error."""
    from shardex.engine.codes import OP_REJECT
    from shardex.wire.protocol import edge_command

    for reason in (5, None, 1.5, True):
        cmd = edge_command((OP_REJECT, "BTC-USD", "x", reason))
        ev = h.raw(cmd)
        assert len(ev) == 1 and ev[0]["reason"] == "rejected" and ev[0]["code"] == "malformed"


def test_reject_names_are_the_public_contract():
    """Names are what JSON and metrics show: one per code, unique, never renamed (append only);
    anything that is not a known code reads as ``invalid``."""
    from shardex.engine import codes

    assert codes.REJECT_NAMES[:13] == (
        "malformed", "invalid", "unknown_op", "unknown_symbol", "out_of_range", "off_grid",
        "duplicate_id", "not_live", "wrong_account", "post_only_cross", "amend_increase",
        "wrong_shard", "not_allowed",
    )  # fmt: skip
    for name in codes.REJECT_CODES:  # (numbers kept for later codes read as ``invalid``)
        assert getattr(codes, "REJ_" + name.upper()) == codes.REJECT_CODES[name]
        assert codes.reject_name(codes.REJECT_CODES[name]) == name
    for bad in (None, -1, len(codes.REJECT_NAMES), True, "3", 2.0):
        assert codes.reject_name(bad) == "invalid"
    for number, name in enumerate(codes.REJECT_NAMES):
        if name not in codes.REJECT_CODES:
            assert codes.reject_name(number) == "invalid"
