"""The private ``user`` channel's pure parts: the feed joins the orders, events and balances
streams' entries (as the bridge writes them) into per-account messages, holds an engine event
until its owner is known and a fill until its trade is, and sends nothing of accounts nobody
follows; the login is checked like a signed REST request (HMAC-SHA256 of ts + GET + /v1/ws +
login, computed here with the stdlib) with its receive window and replay check."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from shardex.gateway.signing import ApiKey, Verifier
from shardex.gateway.userauth import LoginRefused, parse_user, verify_login
from shardex.gateway.userfeed import HOLD_SECONDS, UserFeed, long, short
from shardex.wire.codes import BAD_MESSAGE, REPLAYED, STALE_REQUEST, UNAUTHORIZED

ORD, E, B = "shardex:orders:0", "shardex:events:1", "shardex:balances:0"


def _new(oid: str, account: str, side: str = "buy") -> dict[str, str]:
    return {"account": account, "side": side, "type": "limit", "price": "50000.00",
            "qty": "0.5000", "tif": "gtc", "post_only": "false", "stp": "none",
            "symbol": "BTC-USD", "id": oid, "eshard": "1", "seq": "7", "ts": "5", "shard": "0"}


def _ev(ev: str, oid: str, **kw: str) -> dict[str, str]:
    return {"ev": ev, "symbol": "BTC-USD", "id": oid, "seq": "9", "ts": "6", "shard": "1", **kw}


def _trade(tid: str, taker: str, maker: str) -> dict[str, str]:
    return {"ev": "trade", "symbol": "BTC-USD", "price": "50000.00", "qty": "0.2000",
            "taker": taker, "maker": maker, "taker_side": "sell", "trade_id": tid, "seq": "12",
            "ts": "8", "shard": "1"}  # fmt: skip


def _fill(account: str, oid: str, tid: str, role: str) -> dict[str, str]:
    return {"ev": "fill", "account": account, "symbol": "BTC-USD", "id": oid, "ref": f"t{tid}",
            "role": role, "fee_bps": "10", "fee": "0.0002", "fee_asset": "BTC", "seq": "20",
            "ts": "9", "shard": "0"}  # fmt: skip


def test_order_updates_fills_and_balances_go_to_their_own_account_only() -> None:
    feed = UserFeed(lambda a: a == "alice")
    out = feed.orders(ORD, [("7-0", _new("a1", "alice")), ("8-0", _new("b1", "bob", "sell"))], 0)
    assert [(a, m["type"], m["status"], m["id"], m["order_type"], m["src"], m["src_seq"])
            for a, m in out] == [("alice", "order", "new", "a1", "limit", "o0", 7)]
    out = feed.events(E, [("9-0", _ev("accepted", "a1")), ("10-0", _ev("accepted", "b1")),
                          ("11-0", _ev("cancelled", "a1", reason="deadman", qty="0.3000")),
                          ("12-0", _trade("4", "b1", "a1"))], 0)  # fmt: skip
    assert [(a, m["status"]) for a, m in out] == [
        ("alice", "accepted"), ("alice", "cancelled"), ("alice", "traded")]
    assert out[1][1]["reason"] == "deadman" and out[1][1]["qty"] == "0.3000"
    traded = out[2][1]
    assert (traded["role"], traded["side"], traded["price"], traded["qty"],
            traded["trade_id"]) == ("maker", "buy", "50000.00", "0.2000", 4)
    out = feed.balances(B, [("20-0", _fill("alice", "a1", "4", "maker")),
                            ("21-0", _fill("bob", "b1", "4", "taker")),
                            ("22-0", {"ev": "balance", "account": "alice", "asset": "BTC",
                                      "available": "1.2000", "held": "0", "why": "trade",
                                      "ref": "t4", "seq": "22", "ts": "9", "shard": "0"})], 0)
    assert [(a, m["type"]) for a, m in out] == [("alice", "fill"), ("alice", "balance")]
    fill, bal = out[0][1], out[1][1]
    assert (fill["price"], fill["qty"], fill["side"], fill["fee"], fill["fee_asset"],
            fill["role"], fill["trade_id"]) == ("50000.00", "0.2000", "buy", "0.0002", "BTC",
                                                "maker", 4)  # fmt: skip
    assert (bal["free"], bal["held"], bal["src"], bal["src_seq"]) == ("1.2000", "0", "b0", 22)
    json.dumps(out)  # (every message is JSON as it is)


def test_an_event_read_before_its_owner_waits_for_it_and_a_fill_for_its_trade() -> None:
    feed = UserFeed()
    assert feed.events(E, [("9-0", _ev("accepted", "a1")), ("12-0", _trade("4", "x", "a1"))],
                       0) == []  # fmt: skip
    assert feed.balances(B, [("20-0", _fill("alice", "a1", "5", "taker"))], 0) == []
    out = feed.orders(ORD, [("7-0", _new("a1", "alice"))], 1)
    assert [(m["status"], m["src"], m["src_seq"]) for _, m in out] == [
        ("new", "o0", 7), ("accepted", "e1", 9), ("traded", "e1", 12)]
    out = feed.events(E, [("13-0", _trade("5", "a1", "y"))], 2)
    assert [(m["type"], m.get("status"), m["price"]) for _, m in out] == [
        ("fill", None, "50000.00"), ("order", "traded", "50000.00")]
    assert feed.waiting_owner.count == 2  # (x and y: nobody's known orders)
    assert feed.expire(2 + HOLD_SECONDS + 1) == [] and feed.dropped == 2


def test_a_fill_whose_trade_never_comes_goes_without_a_price_and_replays_hold_nothing() -> None:
    feed = UserFeed()
    assert feed.balances(B, [("20-0", _fill("alice", "a1", "9", "taker"))], 0) == []
    (_, late), = feed.expire(HOLD_SECONDS + 1)
    assert late["price"] is None and late["side"] is None and late["fee"] == "0.0002"
    # a replay (live False) drops what it cannot resolve instead of holding it
    assert feed.events(E, [("9-0", _ev("accepted", "zz"))], 0, live=False) == []
    assert feed.waiting_owner.count == 0 and feed.dropped == 1


def test_stream_short_names_round_trip() -> None:
    for key in (ORD, E, B):
        assert long(short(key)) == key
    assert long("x1") is None and long("e") is None and long("e99999") is None


SECRET = b"s3cret"
NOW = 1_796_600_000_000


def _login(ts: int = NOW, sig: str | None = None, **kw: object) -> str:
    want = hmac.new(SECRET, f"{ts}GET/v1/wslogin".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"op": "login", "key": "k1", "ts": ts, "sig": sig or want, "id": 3, **kw})


def test_login_is_checked_like_a_signed_request_with_window_and_replay() -> None:
    verifier = Verifier({"k1": ApiKey("k1", SECRET, "trader", frozenset({"alice"}))})
    req = parse_user(_login(cancel_on_disconnect=True))
    assert req is not None and req.cod and req.id == 3
    assert verify_login(verifier, req, NOW + 100).accounts == {"alice"}
    for raw, now, code in ((_login(), NOW, REPLAYED), (_login(NOW - 10_000), NOW, STALE_REQUEST),
                           (_login(sig="00" * 32), NOW, UNAUTHORIZED),
                           (_login().replace('"k1"', '"k2"'), NOW, UNAUTHORIZED)):  # fmt: skip
        with pytest.raises(LoginRefused) as exc:
            verify_login(verifier, parse_user(raw), now)  # type: ignore[arg-type]
        assert exc.value.code == code and exc.value.id == 3


@pytest.mark.parametrize("raw", [
    json.dumps({"op": "login", "key": "k1", "ts": "x" * 200, "sig": "a"}),
    json.dumps({"op": "login", "key": 5, "ts": 1, "sig": "a"}),
    json.dumps({"op": "login", "key": "k", "ts": 1, "sig": "a", "cancel_on_disconnect": 1}),
    json.dumps({"op": "subscribe", "channel": "user", "since": {"q1": 3}}),
    json.dumps({"op": "subscribe", "channel": "user", "since": {"e0": -1}}),
    json.dumps({"op": "subscribe", "channel": "user", "since": [1]}),
])
def test_bad_user_messages_are_refused_with_bad_message(raw: str) -> None:
    with pytest.raises(LoginRefused) as exc:
        parse_user(raw)
    assert exc.value.code == BAD_MESSAGE


def test_other_messages_are_left_to_the_public_parser_and_since_is_normalised() -> None:
    for raw in ("not json", "[]", json.dumps({"op": "subscribe", "channel": "book"})):
        assert parse_user(raw) is None
    req = parse_user(json.dumps({"op": "subscribe", "channel": "user", "since": {"e01": 4}}))
    assert req is not None and req.since == {"e1": 4}


def test_a_replayed_fill_takes_its_price_from_a_trade_replayed_before_it() -> None:
    feed = UserFeed()
    feed.orders(ORD, [("7-0", _new("a1", "alice"))], 0, live=False)
    feed.events(E, [("12-0", _trade("4", "x", "a1"))], 0, live=False)
    (_, fill), = feed.balances(B, [("20-0", _fill("alice", "a1", "4", "maker"))], 0, live=False)
    assert (fill["price"], fill["qty"], fill["side"]) == ("50000.00", "0.2000", "buy")
