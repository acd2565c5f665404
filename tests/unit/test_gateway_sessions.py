"""The web page's sessions (``shardex.gateway.sessions``, ``shardex.gateway.login``) on an
in-process aiohttp app: a signed login makes an HttpOnly, SameSite=Strict cookie and a CSRF
token; a session stands for its API key on the private routes only with its token; a missing or
forged token, an expired or logged-out session, a tampered or replayed login are refused with
their codes. Also the page's own routes (``shardex.gateway.page``) and the store's bounds."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from shardex.client.market_data import MarketData
from shardex.engine import DEFAULT_MARKETS
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.login import COOKIE, CSRF_HEADER, SESSION_KEY, Login
from shardex.gateway.page import Page
from shardex.gateway.rest import Rest
from shardex.gateway.sessions import SessionStore
from shardex.gateway.signing import ApiKey
from shardex.wire.codes import BAD_CSRF, NO_SESSION, REPLAYED, UNAUTHORIZED, UNKNOWN_SYMBOL

SECRET = "ab" * 32
KEY = ApiKey("ak1", SECRET.encode(), "trader", frozenset({"alice"}))


class FakeClient:
    """What ``Rest`` sends orders with: records the calls (which key file, which account)."""

    made: list[str] = []

    def __init__(self, endpoint: str, key: str, **_: Any) -> None:
        self.key = key
        FakeClient.made.append(key)
        self.placed: list[tuple[Any, ...]] = []

    async def place(self, symbol: str, side: str, qty: str, price: Any, **kw: Any) -> Any:
        self.placed.append((symbol, side, qty, price, kw["account"]))
        cmd = {"id": kw.get("id")}
        return type("Res", (), {"ok": True, "code": 0, "command": cmd, "events": [],
                                "error": None, "fate": None})()  # fmt: skip

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app(clock: Clock) -> tuple[web.Application, Rest]:
    rest = Rest("tcp://127.0.0.1:1", None, {"BTC-USD": None}, client=FakeClient)
    rest.auth.records = {"ak1": ApiKeyRecord(KEY, "/keys/alice.key")}
    rest.auth.verifier.keys = {"ak1": KEY}
    app = web.Application()
    rest.routes(app)
    Login(rest, SessionStore(idle=60, max_age=600), clock=clock).install(app)

    async def probe(request: web.Request) -> web.Response:
        rec = request.get(SESSION_KEY)
        return web.json_response({"key": rec.key.key_id if rec else None})

    app.router.add_get("/probe", probe)
    app.router.add_post("/probe", probe)
    return app, rest


def _signed(ts: int | None = None, body: bytes = b"{}", secret: str = SECRET) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time() * 1000))
    mac = hmac.new(secret.encode(), f"{stamp}POST/v1/session".encode() + body,
                   hashlib.sha256).hexdigest()  # fmt: skip
    return {"X-SHARDEX-KEY": "ak1", "X-SHARDEX-TIMESTAMP": stamp, "X-SHARDEX-SIGNATURE": mac}


def _run(test: Callable[[TestClient, Clock, Rest], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = Clock()
        app, rest = _app(clock)
        async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as client:
            await test(client, clock, rest)

    asyncio.run(main())


async def _login(client: TestClient) -> tuple[str, str]:
    """(cookie, csrf) of a fresh signed login."""
    resp = await client.post("/v1/session", data=b"{}", headers=_signed())
    assert resp.status == 200, await resp.text()
    return resp.cookies[COOKIE].value, (await resp.json())["csrf"]


async def _code(resp: Any) -> tuple[int, int]:
    return resp.status, (await resp.json())["code"]


def test_a_signed_login_sets_an_httponly_strict_cookie_and_the_session_places_orders() -> None:
    async def test(client: TestClient, clock: Clock, rest: Rest) -> None:
        resp = await client.post("/v1/session", data=b"{}", headers=_signed())
        body = await resp.json()
        morsel = resp.cookies[COOKIE]
        assert resp.status == 200 and body["key_id"] == "ak1" and body["accounts"] == ["alice"]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and not morsel["secure"]
        assert body["csrf"] and body["csrf"] != morsel.value and SECRET not in json.dumps(body)
        auth = {"Cookie": f"{COOKIE}={morsel.value}", CSRF_HEADER: body["csrf"]}
        order = {"symbol": "BTC-USD", "side": "buy", "qty": "1", "price": "5", "id": "w1"}
        resp = await client.post("/v1/order", json=order, headers=auth)
        assert resp.status == 200, await resp.text()
        assert rest.clients["ak1"].placed == [("BTC-USD", "buy", "1", "5", "alice")]
        assert rest.clients["ak1"].key == "/keys/alice.key"
        who = await client.get("/v1/session", headers={"Cookie": auth["Cookie"]})
        assert (await who.json())["csrf"] == body["csrf"]  # a reloaded page gets its token

    _run(test)


def test_a_missing_or_forged_csrf_token_is_refused_and_never_stands_for_the_key() -> None:
    async def test(client: TestClient, clock: Clock, rest: Rest) -> None:
        cookie, csrf = await _login(client)
        jar = {"Cookie": f"{COOKIE}={cookie}"}
        order = {"symbol": "BTC-USD", "side": "buy", "qty": "1", "price": "5"}
        assert await _code(await client.post("/v1/order", json=order, headers=jar)) == (
            403, BAD_CSRF)
        forged = {**jar, CSRF_HEADER: csrf[:-2] + "xx"}
        assert await _code(await client.post("/v1/order", json=order, headers=forged)) == (
            403, BAD_CSRF)
        assert await _code(await client.post("/probe", headers=forged)) == (403, BAD_CSRF)
        # a read without the token goes on unauthenticated: a private read wants a signature
        assert (await (await client.get("/probe", headers=jar)).json())["key"] is None
        resp = await client.get("/v1/order?symbol=BTC-USD&id=w1", headers=jar)
        assert await _code(resp) == (401, UNAUTHORIZED)
        assert "ak1" not in rest.clients  # nothing reached the cluster
        ok = await client.get("/probe", headers={**jar, CSRF_HEADER: csrf})
        assert (await ok.json())["key"] == "ak1"

    _run(test)


def test_an_expired_or_logged_out_session_is_refused_so_the_page_logs_in_again() -> None:
    async def test(client: TestClient, clock: Clock, rest: Rest) -> None:
        cookie, csrf = await _login(client)
        auth = {"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf}
        clock.now += 59  # used within the idle time: it lives on (each use extends it)
        assert (await (await client.get("/probe", headers=auth)).json())["key"] == "ak1"
        clock.now += 61  # idle longer than 60 s
        assert await _code(await client.get("/probe", headers=auth)) == (401, NO_SESSION)
        assert await _code(await client.get("/v1/session", headers=auth)) == (401, NO_SESSION)
        cookie, csrf = await _login(client)
        auth = {"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf}
        for _ in range(11):  # used every 55 s: the idle time never passes, the max age does
            clock.now += 55
            last = await client.post("/probe", headers=auth)
        assert await _code(last) == (401, NO_SESSION)
        cookie, csrf = await _login(client)
        auth = {"Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf}
        out = await client.delete("/v1/session", headers=auth)
        assert out.status == 200 and out.cookies[COOKIE].value == ""
        assert await _code(await client.post("/probe", headers=auth)) == (401, NO_SESSION)

    _run(test)


def test_a_tampered_or_replayed_login_is_refused_and_makes_no_session() -> None:
    async def test(client: TestClient, clock: Clock, rest: Rest) -> None:
        headers = _signed(body=b"{}")
        tampered = await client.post("/v1/session", data=b'{"x":1}', headers=headers)
        assert await _code(tampered) == (401, UNAUTHORIZED) and COOKIE not in tampered.cookies
        wrong = await client.post("/v1/session", data=b"{}", headers=_signed(secret="cd" * 32))
        assert await _code(wrong) == (401, UNAUTHORIZED)
        first = await client.post("/v1/session", data=b"{}", headers=headers)
        assert first.status == 200
        again = await client.post("/v1/session", data=b"{}", headers=headers)
        assert await _code(again) == (401, REPLAYED) and COOKIE not in again.cookies
        login = Login(rest)  # (the store of the app under test holds one session)
        assert len(login.store) == 0

    _run(test)


def test_a_websocket_upgrade_with_the_cookie_is_the_session_only_from_the_same_origin() -> None:
    async def test(client: TestClient, clock: Clock, rest: Rest) -> None:
        cookie, _ = await _login(client)
        up = {"Cookie": f"{COOKIE}={cookie}", "Upgrade": "websocket", "Connection": "Upgrade"}
        evil = await client.get("/probe", headers={**up, "Origin": "http://evil.example"})
        assert await _code(evil) == (403, BAD_CSRF)
        own = f"http://{client.host}:{client.port}"
        ok = await client.get("/probe", headers={**up, "Origin": own})
        assert (await ok.json())["key"] == "ak1"
        proxied = await client.get("/probe", headers={**up, "Origin": own.replace("http", "https")})
        assert (await proxied.json())["key"] == "ak1"  # (TLS ended by a proxy in front)
        other_port = await client.get("/probe", headers={**up, "Origin": own + "1"})
        assert await _code(other_port) == (403, BAD_CSRF)
        behind = await client.post("/v1/session", data=b"{}", headers={
            **_signed(), "X-Forwarded-Proto": "https"})  # fmt: skip
        assert behind.cookies[COOKIE]["secure"]

    _run(test)


def test_the_store_is_bounded_and_each_session_is_its_own() -> None:
    store = SessionStore(idle=10, max_age=100, limit=2)
    store.create("k", "c1", "t1", 0)
    store.create("k", "c2", "t2", 1)
    store.create("k", "c3", "t3", 2)
    assert len(store) == 2 and store.get("c1", 3) is None  # the oldest went
    assert store.get("c2", 3).csrf == "t2" and store.get("nope", 3) is None
    store.create("k", "c4", "t4", 20)  # a new login drops the dead ones
    assert len(store) == 1 and store.remaining(store.get("c4", 25), 25) == 10


def test_the_page_and_its_public_reads() -> None:
    async def main() -> None:
        markets = DEFAULT_MARKETS
        app = web.Application()
        md = MarketData(r=fakeredis.FakeRedis(decode_responses=True), markets=markets)
        Page(md, markets).install(app)
        async with TestClient(TestServer(app)) as client:
            index = await client.get("/")
            assert index.status == 200 and "/web/app.js" in await index.text()
            assert "script-src 'self'" in index.headers["Content-Security-Policy"]
            js = await client.get("/web/app.js")
            assert js.status == 200 and js.content_type == "text/javascript"
            assert (await client.get("/web/secrets.json")).status == 404
            sym = sorted(markets)[0]
            got = await client.get(f"/v1/candles?symbol={sym}&interval=1m")
            assert got.status == 200 and (await got.json())["candles"] == []
            assert await _code(await client.get("/v1/candles?symbol=NOPE")) == (
                400, UNKNOWN_SYMBOL)
            assert (await client.get(f"/v1/candles?symbol={sym}&interval=2m")).status == 400
            assert (await client.get(f"/v1/candles?symbol={sym}&limit=0")).status == 400
            tick = await (await client.get(f"/v1/ticker?symbol={sym}")).json()
            assert tick["symbol"] == sym and tick["trades"] == 0 and tick["volume"] == "0"
            every = await (await client.get("/v1/ticker")).json()
            assert [t["symbol"] for t in every["tickers"]] == sorted(markets)

    asyncio.run(main())
