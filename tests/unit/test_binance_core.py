"""The Binance-compatible subset's pure parts: symbol names (and the refusal of ambiguous
ones), numbers as Binance writes them, Binance's documented signature examples (checked with
the secret of Binance's own docs), the receive window and replays, shardex codes mapped to
Binance's, and order parameters read the way Binance reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shardex.engine import DEFAULT_MARKETS, Market
from shardex.gateway.binance import errors as E
from shardex.gateway.binance.auth import BinanceVerifier, split_signature
from shardex.gateway.binance.errors import BinanceError, cancel_error, order_error
from shardex.gateway.binance.orders import new_order
from shardex.gateway.binance.symbols import SymbolMap, amount, fmt, order_id, places
from shardex.gateway.signing import ApiKey

# Binance's docs (SIGNED endpoint examples): this secret signs these parameters
SECRET = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
QUERY = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
         "&recvWindow=5000&timestamp=1499827319559")  # fmt: skip
SIG_ALL = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
SIG_MIXED = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
TS = 1499827319559
KEY = ApiKey("vmPUZE6m", SECRET, "trader", frozenset({"alice"}))
HEADERS = {"X-MBX-APIKEY": "vmPUZE6m"}


def _m(symbol: str, tick: str = "0.01", lot: str = "0.001") -> Market:
    return Market(symbol, Decimal(tick), Decimal(lot), Decimal("1000"), Decimal("1000"))


def test_pairs_are_named_base_and_quote_joined_and_ambiguous_names_are_refused():
    names = SymbolMap.of({**DEFAULT_MARKETS, "AB-CD": _m("AB-CD"), "ABC-D": _m("ABC-D"),
                          "ODD": _m("ODD")})  # fmt: skip
    btc = names.get("BTCUSD")
    assert not isinstance(btc, str) and (btc.symbol, btc.base, btc.quote) == (
        "BTC-USD", "BTC", "USD")
    assert names.get("btcusd") == btc and names.name_of("BTC-USD") == "BTCUSD"
    assert names.get("BTC-USD") == "Invalid symbol."  # the Binance name only
    why = names.get("ABCD")
    assert isinstance(why, str) and "AB-CD, ABC-D" in why and why.startswith("Invalid symbol.")
    assert names.name_of("AB-CD") is None and names.name_of("ODD") is None
    assert "ABCD" not in names.pairs and len(names.pairs) == len(DEFAULT_MARKETS)


def test_numbers_are_written_with_eight_places_or_the_grids_own_and_never_rounded():
    assert fmt("0.1") == "0.10000000" and fmt(Decimal("50000.00")) == "50000.00000000"
    assert fmt("0") == "0.00000000" and fmt(None) == "0.00000000"
    fine = _m("FI-NE", tick="0.0000000001")
    assert places(fine) == 10 and fmt("1.5", places(fine)) == "1.5000000000"
    assert amount(Decimal("1.123456789012")) == "1.123456789012"
    assert order_id("c1") == order_id("c1") != order_id("c2") and order_id("c1") < 2**53


def test_binances_documented_signatures_verify_in_the_query_the_body_or_split():
    v = BinanceVerifier({KEY.key_id: KEY})
    key, params = v.check(HEADERS, "GET", f"{QUERY}&signature={SIG_ALL}", "", TS + 10)
    assert key is KEY and params["symbol"] == "LTCBTC" and "signature" not in params
    assert v.check(HEADERS, "POST", "", f"{QUERY}&signature={SIG_ALL}", TS)[0] is KEY
    q, b = QUERY.split("&quantity")
    assert v.check(HEADERS, "POST", q, f"quantity{b}&signature={SIG_MIXED}", TS)[0] is KEY
    assert split_signature("a=1&signature=x&b=2") == ("a=1&b=2", "x")


@pytest.mark.parametrize(
    "headers, query, now, code",
    [
        ({}, f"{QUERY}&signature={SIG_ALL}", TS, E.BAD_API_KEY_FMT),
        ({"X-MBX-APIKEY": "other"}, f"{QUERY}&signature={SIG_ALL}", TS, E.REJECTED_MBX_KEY),
        (HEADERS, QUERY.replace("price=0.1", "price=0.2") + f"&signature={SIG_ALL}", TS,
         E.INVALID_SIGNATURE),
        (HEADERS, f"{QUERY}&signature={'0' * 64}", TS, E.INVALID_SIGNATURE),
        (HEADERS, QUERY, TS, E.MANDATORY_PARAM),  # no signature
        (HEADERS, f"{QUERY}&signature={SIG_ALL}", TS + 5001, E.INVALID_TIMESTAMP),
        (HEADERS, f"{QUERY}&signature={SIG_ALL}", TS - 1001, E.INVALID_TIMESTAMP),  # ahead
        (HEADERS, QUERY.replace("5000", "60001") + "&signature=x", TS, E.BAD_RECV_WINDOW),
        (HEADERS, QUERY.replace("timestamp=", "ts=") + "&signature=x", TS, E.MANDATORY_PARAM),
    ],  # fmt: skip
)
def test_unsigned_tampered_stale_and_unknown_requests_get_binances_codes(headers, query, now,
                                                                         code):  # fmt: skip
    with pytest.raises(BinanceError) as info:
        BinanceVerifier({KEY.key_id: KEY}).check(headers, "GET", query, "", now)
    assert info.value.code == code


def test_a_write_is_refused_when_replayed_within_its_window_and_a_read_may_repeat():
    v = BinanceVerifier({KEY.key_id: KEY})
    signed = f"{QUERY}&signature={SIG_ALL}"
    v.check(HEADERS, "GET", signed, "", TS)
    v.check(HEADERS, "GET", signed, "", TS)
    v.check(HEADERS, "POST", signed, "", TS)
    with pytest.raises(BinanceError) as info:
        v.check(HEADERS, "POST", signed, "", TS + 100)
    assert info.value.code == E.INVALID_SIGNATURE and "replay" in info.value.msg


@pytest.mark.parametrize(
    "name, code, status",
    [("unknown_symbol", -1121, 400), ("off_grid", -1013, 400), ("out_of_range", -1013, 400),
     ("duplicate_id", -2010, 400), ("insufficient_funds", -2010, 400),
     ("post_only_cross", -2010, 400), ("not_allowed", -2015, 401), ("timeout", -1007, 503),
     ("overloaded", -1008, 503), ("unavailable", -1001, 503), (None, -1000, 500)],
)  # fmt: skip
def test_shardex_refusals_become_the_binance_codes_clients_know(name, code, status):
    err = order_error(name, "why")
    assert (err.code, err.status) == (code, status)
    assert err.body() == {"code": code, "msg": err.msg} and "why" in err.msg
    if name == "duplicate_id":
        assert err.msg.startswith("Duplicate order sent.")
    assert cancel_error("not_live", "gone").code == -2011


def _order(**p: str) -> tuple:
    names = SymbolMap.of(DEFAULT_MARKETS)
    return new_order(names.pairs["BTCUSD"], p, "gw1", 0)


def test_order_parameters_are_read_as_binance_reads_them():
    placed, kw = _order(symbol="BTCUSD", side="BUY", type="LIMIT", timeInForce="GTC",
                        quantity="0.5", price="30000", newClientOrderId="my-1")  # fmt: skip
    assert kw == {"symbol": "BTC-USD", "side": "buy", "qty": "0.5", "price": "30000",
                  "type": "limit", "tif": "gtc", "id": "my-1"}  # fmt: skip
    assert (placed.client_id, placed.qty) == ("my-1", Decimal("0.5"))
    _, kw = _order(side="SELL", type="MARKET", quantity="1")
    assert (kw["type"], kw["tif"], kw["price"], kw["id"]) == ("market", "ioc", None, "gw1")
    _, kw = _order(side="BUY", type="LIMIT_MAKER", quantity="1", price="5")
    assert kw["post_only"] is True and kw["tif"] == "gtc"


@pytest.mark.parametrize(
    "params, code",
    [({"side": "BUY", "type": "LIMIT", "quantity": "1", "price": "5"}, E.MANDATORY_PARAM),
     ({"side": "UP", "type": "LIMIT", "quantity": "1"}, E.INVALID_SIDE),
     ({"side": "BUY", "type": "STOP", "quantity": "1"}, E.INVALID_ORDER_TYPE),
     ({"side": "BUY", "type": "MARKET", "quantity": "1", "price": "5"},
      E.OPTIONAL_PARAMS_BAD_COMBO),
     ({"side": "BUY", "type": "MARKET", "quoteOrderQty": "5"}, E.OPTIONAL_PARAMS_BAD_COMBO),
     ({"side": "BUY", "type": "MARKET", "quantity": "1e3"}, E.MANDATORY_PARAM),
     ({"side": "BUY", "type": "MARKET", "quantity": "1", "timeInForce": "GTC"}, E.INVALID_TIF),
     ({"side": "BUY", "type": "MARKET", "quantity": "1", "newClientOrderId": "a b"},
      E.MANDATORY_PARAM)],
)  # fmt: skip
def test_bad_order_parameters_get_binances_codes(params, code):
    with pytest.raises(BinanceError) as info:
        _order(**params)
    assert info.value.code == code
