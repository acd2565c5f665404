"""The history's pure parts: the bridge's ``shardex:orders:<j>`` entries, stream entries →
rows, an order's status from its events, and the query's parsing (times, cursors, limits)."""

from __future__ import annotations

import pytest

from shardex.accounts.codes import AE_BALANCE, AE_FORWARD
from shardex.engine.codes import BUY, EV_TRADE, OP_CANCEL, SELL
from shardex.history.query import Query, QueryError, order_status, parse_cursor, parse_time
from shardex.history.rows import WAIT, balance_row, engine_rows, order_row
from shardex.history.schema import FILLS
from tests.support.history import FMT, balance_entry, engine_entry, forward, order_entry


def test_a_forwarded_new_order_becomes_an_orders_entry_with_its_fields():
    eid, f = order_entry(forward(7, "alice", "o1", SELL, 10_050, 25), shard=1)
    assert eid == "7-0"
    assert f == {"symbol": "BTC-USD", "id": "o1", "account": "alice", "side": "sell",
                 "type": "limit", "price": "100.50", "qty": "0.0025", "tif": "gtc",
                 "post_only": "false", "stp": "none", "eshard": "0", "seq": "7", "ts": "0",
                 "shard": "1"}  # fmt: skip
    assert order_row(1, f) == ("alice", "BTC-USD", "o1", "sell", "limit", "100.50", "0.0025",
                               "gtc", 0, "none", 0, 1, 7, None)  # fmt: skip


@pytest.mark.parametrize("ev", [
    (AE_FORWARD, 3, 0, 0, (OP_CANCEL, "BTC-USD", "o1", "alice")),  # not a new order
    (AE_FORWARD, 3, 0, 0, (1, "BTC-USD", "o3")),  # truncated
    (AE_FORWARD, 3, 0, 0, (1, "NOPE", "o", "a", 0, 0, 1, 1, 0, False, 0)),  # unknown symbol
    (AE_FORWARD, 3, 0, 0, (1, "BTC-USD", 5, "a", 0, 0, 1, 1, 0, False, 0)),  # id not a string
    (AE_FORWARD, 3, 0, 0, "junk"),
    (AE_FORWARD, 3),
    (AE_BALANCE, 3, "a", "USD", 1, 0, "deposit", "r"),
])  # fmt: skip
def test_anything_but_a_well_formed_new_order_gives_no_orders_entry(ev):
    assert FMT.order_item(ev, 0) is None


def test_a_trade_gives_two_fills_with_their_accounts_or_waits_for_them():
    _, f = engine_entry((EV_TRADE, 9, "BTC-USD", 10_000, 40, "tk", "mk", BUY, 77))
    known = {("BTC-USD", "tk"): "bob", ("BTC-USD", "mk"): "alice"}
    rows = engine_rows(0, f, lambda s, o: known.get((s, o)))
    assert rows == [
        (FILLS.name, ("bob", "BTC-USD", "tk", "taker", "buy", "100.00", "0.0040", 77, 0, 9, None)),
        (FILLS.name, ("alice", "BTC-USD", "mk", "maker", "sell", "100.00", "0.0040", 77, 0, 9,
                      None)),
    ]  # fmt: skip
    assert engine_rows(0, f, lambda s, o: known.get((s, o)) if o == "tk" else None) is WAIT


def test_exchange_time_is_stored_when_an_entry_has_one():
    eid, f = balance_entry((AE_BALANCE, 4, "alice", "USD", 100, 0, "deposit", "d1"))
    assert f["ts"] == "0" and balance_row(0, f)[-1] is None  # (0: the bridge did not know it)
    f["ts"] = "1796640000123"
    assert balance_row(0, f)[-1] == 1796640000123
    f["ts"] = "garbage"
    assert balance_row(0, f)[-1] is None


@pytest.mark.parametrize(("qty", "events", "want"), [
    ("1.0", [], ("pending", "0")),
    ("1.0", [(1, "accepted", None)], ("open", "0")),
    ("1.0", [(1, "accepted", None), (2, "fill", "0.4")], ("open", "0.4")),
    ("1.0", [(1, "accepted", None), (2, "fill", "0.4"), (3, "fill", "0.6")], ("filled", "1.0")),
    ("1.0", [(1, "accepted", None), (2, "fill", "0.4"), (5, "cancelled", "0.6")],
     ("cancelled", "0.4")),
    ("1.0", [(1, "accepted", None), (2, "amended", "0.5"), (3, "fill", "0.5")],
     ("filled", "0.5")),
    ("1.0", [(1, "rejected", None)], ("rejected", "0")),
    # a late cancel of a filled order is refused (not_live): the order stays filled
    ("1.0", [(1, "accepted", None), (2, "fill", "1.0"), (3, "rejected", None)],
     ("filled", "1.0")),
])  # fmt: skip
def test_order_status_follows_the_engine_events_in_order(qty, events, want):
    assert order_status(qty, events) == want


def test_times_cursors_and_limits_are_checked_with_stable_codes():
    assert parse_time("1796640000123") == 1796640000123
    assert parse_time("2026-12-07T00:00:00Z") == parse_time("2026-12-07T00:00:00") == 1796601600000
    assert parse_cursor("fills", "f42") == 42 and parse_cursor("orders", None) == 0
    for bad, code in (
        (lambda: parse_time("yesterday"), "bad_time"),
        (lambda: parse_cursor("orders", "f42"), "bad_cursor"),
        (lambda: parse_cursor("orders", "o-1"), "bad_cursor"),
        (lambda: parse_cursor("orders", "o" + "9" * 40), "bad_cursor"),
        (lambda: Query("a", kind="trades").checked(), "bad_kind"),
        (lambda: Query("a", limit=0).checked(), "bad_limit"),
        (lambda: Query("", kind="fills").checked(), "bad_account"),
    ):
        with pytest.raises(QueryError) as info:
            bad()
        assert info.value.code == code
