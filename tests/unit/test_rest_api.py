"""The private REST API in-process: the aiohttp app with a fake cluster client. Every route
of the OpenAPI description is served and vice versa (and the description is valid OpenAPI 3);
each route checks its key, its account and its input and answers decimal strings; a session's
key (``request["shardex_key"]``) stands in for a signature; fuzzed bodies and query strings
get JSON errors with stable codes, never a crash."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import test_utils as aiotest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from shardex.client.results import CancelAll, Result
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.fills import MAX_SCAN, FillReader, pick, shaped
from shardex.gateway.openapi import operations, spec
from shardex.gateway.rest import Rest
from shardex.gateway.signing import ApiKey
from shardex.wire.codes import (
    ADMIN_REQUIRED,
    BAD_MESSAGE,
    GATEWAY_UNAVAILABLE,
    INVALID,
    NOT_ALLOWED,
    UNAUTHORIZED,
)
from tests.support.rest import headers

ALICE = ApiKeyRecord(ApiKey("ka", b"sa", "trader", frozenset({"alice"})), "/none")
ADMIN = ApiKeyRecord(ApiKey("kadm", b"sadm", "admin"), "/none")


class FakeClient:
    """What the routes call on an ``AsyncClient``; records the calls, answers like the SDK."""

    accounts = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, args, kw))
            return self.answer(name, args, kw)

        return call

    @staticmethod
    def answer(name: str, args: tuple, kw: dict) -> Any:
        if name == "balance":
            return {"USD": (Decimal("1E+2"), Decimal("0.50")), "BTC": (Decimal(0), Decimal(0))}
        if name == "open_orders":
            return [{"symbol": "BTC-USD", "id": "o1", "side": "buy", "price": Decimal("100.00"),
                     "open": Decimal("0.2000"), "held": Decimal("20.0000"), "asset": "USD",
                     "pending_amends": 0}]  # fmt: skip
        if name == "order_status":
            return {"state": "live", "symbol": args[0], "id": args[1], "filled": Decimal("0.1")}
        if name == "fate":
            return "not executed", {"state": "unknown"}
        if name in ("cancel_all", "cancel_after"):
            ev = {"ev": "cancelled", "symbol": "BTC-USD", "id": "o1"}
            return CancelAll([Result({"op": name, "symbol": "BTC-USD"}, [ev])])
        if name == "topology":
            return {}
        cmd = {"op": name, "id": kw.get("id") or (args[1] if len(args) > 1 else None)}
        return Result(cmd, [{"ev": "accepted", "qty": Decimal("0.0100")}], fate="executed")

    async def close(self) -> None:
        pass


class FakeStreams:
    """``xrevrange`` over in-memory streams (entry ids ``<n>-0``)."""

    def __init__(self, streams: dict[str, list[dict[str, str]]]) -> None:
        self.streams = {k: [(f"{i + 1}-0", f) for i, f in enumerate(v)] for k, v in streams.items()}
        self.reads = 0

    async def xrevrange(self, name: str, max: str = "+", min: str = "-",  # noqa: A002
                        count: int | None = None) -> list[Any]:  # fmt: skip
        self.reads += 1
        top = float("inf") if max == "+" else int(max.lstrip("(").split("-")[0]) - 1
        rows = [e for e in reversed(self.streams.get(name, [])) if int(e[0].split("-")[0]) <= top]
        return rows[:count]


def _app(fills: Any = None) -> tuple[web.Application, Rest, FakeClient]:
    fake = FakeClient()
    rest = Rest("tcp://none", None, {}, client=lambda *a, **kw: fake, redis=fills)
    rest.auth.records = {"ka": ALICE, "kadm": ADMIN}
    rest.auth.verifier.keys = {k: r.key for k, r in rest.auth.records.items()}

    @web.middleware
    async def session(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("X-Test-Session") == "alice":  # (a session middleware's part)
            request["shardex_key"] = ALICE
        return await handler(request)

    app = web.Application(middlewares=[session])
    rest.routes(app)
    return app, rest, fake


async def _send(client: aiotest.TestClient, rec: ApiKeyRecord | None, method: str, path: str,
                obj: Any = None, raw: bytes | None = None) -> tuple[int, Any]:  # fmt: skip
    body = raw if raw is not None else (b"" if obj is None else json.dumps(obj).encode())
    head = {"X-Test-Session": "alice"} if rec is None else headers(
        rec.key.key_id, rec.key.secret.decode(), method, path, body)  # fmt: skip
    url = URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)  # sent as signed
    resp = await client.session.request(method, url, data=body or None, headers=head)
    return resp.status, json.loads(await resp.read())


def _run(check: Any, fills: Any = None) -> FakeClient:
    async def main() -> FakeClient:
        app, _, fake = _app(fills)
        async with aiotest.TestClient(aiotest.TestServer(app)) as client:
            await check(client)
        return fake

    return asyncio.run(main())


def test_every_route_is_described_and_every_description_served_and_the_spec_is_valid():
    openapi_spec_validator = pytest.importorskip("openapi_spec_validator")
    app, _, _ = _app()
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    assert served == {(m, p) for m, p, _ in operations()}
    openapi_spec_validator.validate(spec())

    async def check(client: aiotest.TestClient) -> None:
        resp = await client.get("/v1/openapi.json")  # public: no signature
        assert resp.status == 200 and (await resp.json())["paths"].keys() == spec()["paths"].keys()

    _run(check)


def test_each_route_acts_for_the_keys_account_with_decimal_strings_in_and_out():
    async def check(c: aiotest.TestClient) -> None:
        status, body = await _send(c, ALICE, "PUT", "/v1/order",
                                   {"symbol": "BTC-USD", "id": "o1", "price": "101.5"})
        assert status == 200 and body["ok"] and body["events"][0]["qty"] == "0.0100"
        status, body = await _send(c, ALICE, "DELETE", "/v1/orders?symbol=BTC-USD")
        assert (status, body["count"], body["cancelled"]) == (200, 1, [{"symbol": "BTC-USD",
                                                                       "id": "o1"}])
        status, body = await _send(c, ALICE, "GET", "/v1/openOrders")
        (o,) = body["orders"]
        assert (o["qty"], o["open"], o["filled"], o["price"]) == ("0.3000", "0.2000", "0.1",
                                                                  "100.00")
        status, body = await _send(c, None, "GET", "/v1/balances")  # a session: no signature
        assert body["balances"]["USD"] == {"free": "100", "held": "0.50"}  # never "1E+2"
        status, body = await _send(c, ALICE, "GET", "/v1/order?symbol=BTC-USD&id=x9&fate=1")
        assert (status, body["fate"]) == (200, "not executed")
        status, body = await _send(c, ALICE, "POST", "/v1/cancelAfter", {"seconds": 30})
        assert status == 200 and body["seconds"] == 30
        status, body = await _send(c, ADMIN, "POST", "/v1/deposit",
                                   {"account": "bob", "asset": "USD", "amount": "10.5"})
        assert status == 200, body

    fake = _run(check)
    names = [(n, a, kw) for n, a, kw in fake.calls]
    amend = {"qty": None, "price": "101.5", "account": "alice"}
    assert ("amend", ("BTC-USD", "o1"), amend) in names
    assert ("cancel_all", ("BTC-USD",), {"account": "alice"}) in names
    assert ("cancel_after", (30_000, None), {"account": "alice"}) in names
    assert ("fate", ("BTC-USD", "x9"), {"account": "alice"}) in names
    assert ("deposit", ("bob", "USD", "10.5"), {"ref": None}) in names


@pytest.mark.parametrize(
    "rec, method, path, obj, status, code",
    [
        (ALICE, "POST", "/v1/deposit", {"account": "alice", "asset": "USD", "amount": "1"}, 403,
         ADMIN_REQUIRED),
        (ALICE, "POST", "/v1/order", {"symbol": "BTC-USD", "side": "buy", "qty": 0.01}, 400,
         BAD_MESSAGE),  # a float: money never travels as a JSON number
        (ALICE, "POST", "/v1/order", {"symbol": "BTC-USD", "side": "buy", "qty": "1e3"}, 400,
         INVALID),
        (ALICE, "PUT", "/v1/order", {"symbol": "BTC-USD", "id": "o1"}, 400, BAD_MESSAGE),
        (ALICE, "GET", "/v1/balances?account=bob", None, 403, NOT_ALLOWED),
        (ALICE, "GET", "/v1/openOrders?symbl=BTC-USD", None, 400, BAD_MESSAGE),
        (ALICE, "GET", "/v1/fills?limit=0", None, 400, INVALID),
        (ALICE, "POST", "/v1/cancelAfter", {"seconds": -1}, 400, INVALID),
        (ADMIN, "GET", "/v1/balances", None, 400, INVALID),  # an admin names the account
    ],  # fmt: skip
)
def test_refusals_have_stable_codes_and_nothing_reaches_the_cluster(rec, method, path, obj,
                                                                    status, code):  # fmt: skip
    async def check(c: aiotest.TestClient) -> None:
        got = await _send(c, rec, method, path, obj)
        assert (got[0], got[1]["code"], got[1]["name"]) == (status, code, got[1]["name"]), got

    fake = _run(check)
    assert [n for n, _, _ in fake.calls if n != "topology"] == []


def test_a_query_signed_as_sent_is_accepted_whatever_its_percent_encoding():
    """The signature covers the request target as sent: a client that percent-encodes a
    query value (``urllib.parse.quote``, ``requests``) signs the encoded form."""

    async def check(c: aiotest.TestClient) -> None:
        for path in ("/v1/order?symbol=BTC-USD&id=a%3Ab", "/v1/order?symbol=BTC-USD&id=%41b"):
            status, body = await _send(c, ALICE, "DELETE", path)
            assert status == 200, body

    fake = _run(check)
    assert [a for n, a, _ in fake.calls if n == "cancel"] == [("BTC-USD", "a:b"), ("BTC-USD", "Ab")]


class DownStreams:
    async def xrevrange(self, *args: Any, **kw: Any) -> list[Any]:
        raise ConnectionError("Redis went away")


def test_fills_while_redis_is_away_are_a_json_error_not_a_crash():
    async def check(c: aiotest.TestClient) -> None:
        status, body = await _send(c, ALICE, "GET", "/v1/fills")
        assert (status, body["code"]) == (503, GATEWAY_UNAVAILABLE), body

    _run(check, DownStreams())


def test_an_unsigned_request_without_a_session_is_refused():
    async def check(c: aiotest.TestClient) -> None:
        resp = await c.get("/v1/balances")
        assert resp.status == 401 and (await resp.json())["code"] == UNAUTHORIZED

    _run(check)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
_field = st.sampled_from(["symbol", "side", "qty", "price", "id", "account", "seconds", "asset",
                          "amount", "ref", "type", "tif", "post_only", "limit", "after", "fate"])
_bodies = st.one_of(
    st.dictionaries(_field, _json, max_size=6).map(lambda d: json.dumps(d).encode()),
    _json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))
_queries = st.dictionaries(_field | st.text(max_size=6), st.text(max_size=12), max_size=4)
WRITES = [(m, p) for m, p, _ in operations() if m in ("POST", "PUT")]
READS = [(m, p) for m, p, _ in operations() if m in ("GET", "DELETE")]


def test_fuzzed_bodies_and_query_strings_get_json_errors_never_a_crash():
    loop = asyncio.new_event_loop()
    app, _, _ = _app(FakeStreams({}))

    async def start() -> aiotest.TestClient:
        c = aiotest.TestClient(aiotest.TestServer(app))
        await c.start_server()
        return c

    client = loop.run_until_complete(start())

    def check(method: str, path: str, body: bytes, rec: ApiKeyRecord) -> None:
        status, obj = loop.run_until_complete(_send(client, rec, method, path, raw=body))
        assert status in (200, 400, 403, 413, 501, 503), (status, obj)
        if status != 200:
            assert type(obj["code"]) is int and type(obj["name"]) is str and obj["message"]

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(WRITES), _bodies, st.sampled_from([ALICE, ADMIN]))
    def writes(route: tuple[str, str], body: bytes, rec: ApiKeyRecord) -> None:
        check(*route, body, rec)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(READS), _queries, st.sampled_from([ALICE, ADMIN]))
    def reads(route: tuple[str, str], query: dict[str, str], rec: ApiKeyRecord) -> None:
        qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
        check(route[0], route[1] + ("?" + qs if qs else ""), b"", rec)

    try:
        writes()
        reads()
    finally:
        loop.run_until_complete(client.close())
        loop.close()


def _fill(account: str, tid: int, role: str = "taker", symbol: str = "BTC-USD") -> dict:
    return {"ev": "fill", "account": account, "symbol": symbol, "id": f"o{tid}", "ref": f"t{tid}",
            "role": role, "fee_bps": "10", "fee": "0.05", "fee_asset": "USD", "ts": "17"}


def test_a_fill_takes_its_trades_price_and_size_and_the_makers_side_is_the_other():
    trade = {"trade_id": "7", "price": "100.00", "qty": "0.5000", "taker_side": "buy"}
    assert shaped(_fill("a", 7), trade) | {} == {
        "symbol": "BTC-USD", "id": "o7", "trade_id": 7, "side": "buy", "price": "100.00",
        "qty": "0.5000", "fee": "0.05", "fee_asset": "USD", "fee_bps": 10, "role": "taker",
        "ts": 17}  # fmt: skip
    assert shaped(_fill("a", 7, "maker"), trade)["side"] == "sell"
    assert shaped(_fill("a", 7), None)["price"] is None  # its trade trimmed away
    entries = [("1-0", _fill("a", 1)), ("2-0", _fill("b", 2)), ("3-0", {"ev": "balance"}),
               ("4-0", _fill("a", 3, symbol="ETH-USD"))]  # fmt: skip
    assert [e for e, _ in pick(entries, "a", None)] == ["1-0", "4-0"]
    assert [e for e, _ in pick(entries, "a", "ETH-USD")] == ["4-0"]


def test_fill_pages_are_newest_first_without_gaps_or_repeats_and_a_page_reads_boundedly():
    fills = [_fill("a" if i % 3 == 0 else "b", i) for i in range(1, 3001)]
    trades = [{"trade_id": str(i), "price": "1", "qty": "2", "taker_side": "sell"}
              for i in range(1, 3001)]  # fmt: skip
    store = FakeStreams({"shardex:balances:0": fills, "shardex:trades:BTC-USD": trades})
    reader = FillReader(store)

    async def walk() -> list[int]:
        seen, after = [], None
        while True:
            rows, after = await reader.page(0, "a", None, 300, after)
            assert all(r["price"] == "1" and r["side"] == "sell" for r in rows)
            seen += [r["trade_id"] for r in rows]
            if after is None:
                return seen

    assert asyncio.run(walk()) == list(range(3000, 0, -3))
    store.reads = 0
    rows, nxt = asyncio.run(reader.page(0, "nobody", None, 10, None))
    assert rows == [] and nxt is None and store.reads <= MAX_SCAN // 500 + 1
