"""A WebSocket logged in to the ``user`` channel by a browser session stops when that session
ends: the whole gateway app in-process (``Gateway`` with its login middleware, ``UserHub``, a
fake Redis and a fake SDK), a real aiohttp WebSocket with the session cookie; after the page
logs out, the next tick tells the socket ``session_ended`` and its user messages stop. Also
the pieces alone: the upgrade's liveness check follows logout and expiry without extending the
session, and the hub ends only the sessions that died."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import fakeredis
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from shardex.client.market_data import MarketData
from shardex.engine import DEFAULT_MARKETS
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.hub import Conn, Hub
from shardex.gateway.login import COOKIE, CSRF_HEADER, Login
from shardex.gateway.outbox import Outbox
from shardex.gateway.rest import Rest
from shardex.gateway.rest_common import SESSION_ALIVE
from shardex.gateway.server import Gateway, GatewayConfig
from shardex.gateway.sessions import SessionStore
from shardex.gateway.signing import ApiKey
from shardex.gateway.userhub import UserHub
from shardex.wire.codes import SESSION_ENDED

SECRET = "cd" * 32
KEY = ApiKey("ak1", SECRET.encode(), "trader", frozenset({"alice"}))
BALANCES = "shardex:balances:0"


class NoClient:
    """The per-key SDK client ``Rest`` would make (nothing here reaches the cluster)."""

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    async def close(self) -> None:
        pass


def _rest() -> Rest:
    rest = Rest("tcp://127.0.0.1:1", None, DEFAULT_MARKETS, client=NoClient)
    rest.auth.records = {"ak1": ApiKeyRecord(KEY, "/keys/alice.key")}
    rest.auth.verifier.keys = {"ak1": KEY}
    return rest


def _signed_login() -> dict[str, str]:
    ts = str(int(time.time() * 1000))
    mac = hmac.new(SECRET.encode(), f"{ts}POST/v1/session{{}}".encode(), hashlib.sha256)
    return {"X-SHARDEX-KEY": "ak1", "X-SHARDEX-TIMESTAMP": ts,
            "X-SHARDEX-SIGNATURE": mac.hexdigest()}  # fmt: skip


def _balance(seq: int) -> tuple[str, dict[str, str]]:
    return (f"{seq}-0", {"ev": "balance", "account": "alice", "asset": "USD", "available": "1",
                         "held": "0", "why": "deposit", "ref": f"d{seq}", "ts": "1"})  # fmt: skip


async def _next(ws: Any, want: str) -> dict[str, Any]:
    """The next message of type ``want`` (heartbeats and acks skipped), within 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if msg.get("type") == want:
            return msg
    raise AssertionError(f"no {want} message")


def _gateway() -> tuple[Gateway, Hub]:
    async def nothing() -> Any:
        return 1

    r = fakeredis.FakeAsyncRedis(decode_responses=True)
    hub = Hub(r, nothing, DEFAULT_MARKETS)  # type: ignore[arg-type]
    rest = _rest()
    hub.pos[BALANCES] = "5-0"
    hub.user = UserHub(r, rest, nothing, hub.pos)
    cfg = GatewayConfig("127.0.0.1", 0, "redis://unused", "tcp://127.0.0.1:1", DEFAULT_MARKETS)
    md = MarketData(r=fakeredis.FakeRedis(decode_responses=True), markets=DEFAULT_MARKETS)
    return Gateway(cfg, hub, md, rest), hub


def test_a_websocket_of_a_browser_session_is_told_and_stops_when_the_session_logs_out() -> None:
    async def main() -> None:
        gw, hub = _gateway()
        async with TestClient(TestServer(gw.app), cookie_jar=DummyCookieJar()) as client:
            login = await client.post("/v1/session", data=b"{}", headers=_signed_login())
            assert login.status == 200, await login.text()
            cookie, csrf = login.cookies[COOKIE].value, (await login.json())["csrf"]
            origin = f"http://{client.host}:{client.port}"
            ws = await client.ws_connect("/v1/ws", headers={
                "Cookie": f"{COOKIE}={cookie}", "Origin": origin})  # fmt: skip
            await ws.send_json({"op": "subscribe", "channel": "user"})
            await _next(ws, "subscribed")
            hub.user.entries(BALANCES, [_balance(6)])
            assert (await _next(ws, "balance"))["src_seq"] == 6
            hub.user.tick()  # (the session lives: nothing happens)
            out = await client.delete("/v1/session", headers={
                "Cookie": f"{COOKIE}={cookie}", CSRF_HEADER: csrf})  # fmt: skip
            assert (await out.json())["ended"] is True
            hub.user.tick()  # (the gateway's 1 s tick)
            ended = await _next(ws, "error")
            assert ended["code"] == SESSION_ENDED and ended["name"] == "session_ended"
            hub.user.entries(BALANCES, [_balance(7)])
            await ws.send_json({"op": "ping", "id": "after"})
            pong = await _next(ws, "pong")  # (in order: any balance would have come first)
            assert pong["id"] == "after"
            assert not hub.user.sessions and not hub.user.followers
            await ws.close()

    asyncio.run(main())


def test_the_upgrades_liveness_follows_logout_and_expiry_without_extending_the_session() -> None:
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    async def main() -> None:
        clock, rest = Clock(), _rest()
        login = Login(rest, SessionStore(idle=60, max_age=600), clock=clock)
        seen: list[Any] = []

        async def probe(request: web.Request) -> web.Response:
            seen.append(request.get(SESSION_ALIVE))
            return web.json_response({})

        app = web.Application()
        login.install(app)
        app.router.add_get("/probe", probe)
        async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as client:
            async def session() -> str:
                got = await client.post("/v1/session", data=b"{}", headers=_signed_login())
                return got.cookies[COOKIE].value

            up = {"Upgrade": "websocket", "Connection": "Upgrade"}
            one, two = await session(), await session()
            for c in (one, two):
                await client.get("/probe", headers={**up, "Cookie": f"{COOKIE}={c}"})
            alive_one, alive_two = seen
            assert alive_one() and alive_two()
            login.store.drop(one)  # (what DELETE /v1/session does)
            assert not alive_one() and alive_two()
            for _ in range(3):  # asking is not using: the idle time still runs out
                clock.now += 25
                alive_two()
            assert not alive_two()

    asyncio.run(main())


def test_the_hub_ends_only_the_connections_whose_session_died() -> None:
    async def main() -> None:
        async def nothing() -> int:
            return 1

        async def no_close() -> None:
            pass

        hub = UserHub(None, _rest(), nothing, {BALANCES: "5-0"})
        lives = {"a": True, "b": True}
        conns = {k: Conn(Outbox(100), no_close) for k in ("a", "b", "signed")}
        rec = _rest().records["ak1"]
        hub.login_session(conns["a"], rec, lambda: lives["a"])
        hub.login_session(conns["b"], rec, lambda: lives["b"])
        hub.login_session(conns["signed"], rec)  # (no session to end: a signed login's)
        for conn in conns.values():
            await hub.handle(conn, json.dumps({"op": "subscribe", "channel": "user"}))
            conn.outbox.take()
        lives["a"] = False
        hub.tick()
        assert json.loads(conns["a"].outbox.take() or "{}")["code"] == SESSION_ENDED
        hub.entries(BALANCES, [_balance(6)])
        assert conns["a"].outbox.take() is None
        for k in ("b", "signed"):
            assert json.loads(conns[k].outbox.take() or "{}")["type"] == "balance"

    asyncio.run(main())
