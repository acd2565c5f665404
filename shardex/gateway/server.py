"""The gateway process: aiohttp on uvloop serving ``/v1/ws`` (WebSocket market data),
``/v1/markets``, ``/healthz`` and ``/metrics`` on one port, around the ``Hub``.

aiohttp (not ``websockets`` alone): one server for HTTP with request bodies (the REST API to
come) and WebSocket, and the faster of the two in ``bench/gateway_libs.py`` (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis
import redis.asyncio as aredis
import uvloop
from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shardex.accounts.assets import AssetTable
from shardex.aio import within
from shardex.client import AsyncClient
from shardex.client.market_data import MarketData
from shardex.engine import Market
from shardex.gateway import binance
from shardex.gateway import metrics as m
from shardex.gateway.book import DEFAULT_DEPTH
from shardex.gateway.hub import Conn, Hub, Sub, encode
from shardex.gateway.login import Login
from shardex.gateway.messages import Refused, error, parse
from shardex.gateway.ops import Fetcher, Ops, OpsScraper, Target, targets
from shardex.gateway.outbox import QUEUE_FRAMES, Outbox
from shardex.gateway.page import Page
from shardex.gateway.perpfeed import PERP_CHANNELS
from shardex.gateway.rest import Rest
from shardex.gateway.rest_common import SESSION_ALIVE
from shardex.gateway.userhub import UserHub
from shardex.gateway.wsframe import FrameCache
from shardex.gateway.wswriter import Flusher, Writer
from shardex.layout import Layout
from shardex.redisauth import mask_url, resolve_url
from shardex.wire.codes import GATEWAY_UNAVAILABLE, NOT_FOUND, NOT_PERP, TOO_MANY_SUBSCRIPTIONS
from shardex.wire.listed import learn_tables, shard_tables

log = logging.getLogger("shardex.gateway")
MAX_SUBS = 100  # subscriptions per connection
TICK = 1.0  # seconds between heartbeats, and between tickers
SNDBUF = 64 * 1024  # bytes of kernel send buffer per client (autotuning could take MBs)


@dataclass
class GatewayConfig:
    host: str
    port: int
    redis_url: str
    endpoint: str  # the routers' client endpoints (comma-separated)
    markets: Mapping[str, Market]
    key: Any = None  # what ``AsyncClient(key=...)`` takes (False: an --insecure cluster)
    keys_dir: str | None = None
    depth: int = DEFAULT_DEPTH
    queue: int = QUEUE_FRAMES
    layout: Layout | None = None  # the cluster's ports (the operator page scrapes its exporters)


def market_list(markets: Mapping[str, Market]) -> list[dict[str, str]]:
    """The market list (REST and the ``markets`` op): each pair's grid and bounds as strings;
    a perp pair says ``"kind": "perp"`` (its mark and funding channels exist)."""
    return [{"symbol": s, "tick": str(mk.tick), "lot": str(mk.lot), "max_price": str(mk.max_price),
             "max_qty": str(mk.max_qty), **({"kind": "perp"} if mk.perp is not None else {})}
            for s, mk in sorted(markets.items())]  # fmt: skip


class Gateway:
    """The aiohttp app and the background tasks around one ``Hub``."""

    def __init__(self, cfg: GatewayConfig, hub: Hub, ticker_reader: MarketData,
                 rest: Rest | None = None, ops: Ops | None = None) -> None:  # fmt: skip
        self.cfg, self.hub, self.md = cfg, hub, ticker_reader
        self._frame: tuple[int, str] = (-1, "")
        self.frames = FrameCache()  # every client's frames, built once
        self.flusher = Flusher(stamps=hub.stamps)  # every kicked connection written once
        self.app = web.Application()
        r = self.app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/v1/markets", self.rest_markets)
        r.add_get("/v1/ws", self.websocket)
        if rest is not None:
            rest.routes(self.app)
        binance.mount(self.app, hub, cfg.markets, rest, ticker_reader.ticker, cfg.queue)
        self.app.middlewares.append(self.errors)
        self.login = Login(rest) if rest is not None else None
        if self.login is not None:  # the web page's sessions stand for an API key (docs/web.md)
            self.login.install(self.app)
        Page(ticker_reader, cfg.markets).install(self.app)
        if ops is not None:  # the operator page's numbers (docs/ops.md)
            ops.install(self.app)

    @web.middleware
    async def errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A JSON error with a stable code for every route the gateway does not have."""
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except web.HTTPNotFound:
            resp = web.json_response(error(NOT_FOUND, "no such route"), status=404)
        except web.HTTPMethodNotAllowed:
            resp = web.json_response(error(NOT_FOUND, "method not allowed"), status=405)
        res = request.match_info.route.resource  # (its pattern: /ws/{streams} is one route)
        path = res.canonical if res is not None else request.path
        route = f"{request.method} {path}" if resp.status not in (404, 405) else "other"
        m.HTTP.labels(route, str(resp.status)).inc()
        if not isinstance(resp, web.WebSocketResponse):  # (a WebSocket's time is its connection's)
            m.HTTP_SECONDS.labels(route).observe(time.perf_counter() - t0)
        return resp

    async def healthz(self, request: web.Request) -> web.Response:  # noqa: ARG002
        ok = self.hub.redis_ok
        body = {"status": "ok" if ok else "unavailable", "redis": self.hub.redis_ok,
                "cluster": self.hub.cluster_ok, "connections": len(self.hub.conns)}  # fmt: skip
        if not ok:
            body.update(error(GATEWAY_UNAVAILABLE, "no Redis read yet"))
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:  # noqa: ARG002
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    @property
    def markets_frame(self) -> str:
        """The market list frame, made again once a pair listed at runtime joined the table."""
        if self._frame[0] != len(self.cfg.markets):
            listed = market_list(self.cfg.markets)
            self._frame = (len(listed), encode({"type": "markets", "markets": listed}))
        return self._frame[1]

    async def rest_markets(self, request: web.Request) -> web.Response:  # noqa: ARG002
        return web.Response(text=self.markets_frame, content_type="application/json")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=65536)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:  # a bounded kernel buffer per client: the Outbox is the queue
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        await ws.prepare(request)

        async def close() -> None:
            """A client that keeps falling behind: closed (1008 slow_client), at once if it
            does not even read the close frame."""
            try:
                await within(ws.close(code=1008, message=b"slow_client"), 1.0)
            except (TimeoutError, ConnectionError, RuntimeError):
                pass
            if request.transport is not None:
                request.transport.abort()

        conn = Conn(Outbox(self.cfg.queue), close)
        user = self.hub.user
        if user is not None and request.get("shardex_key") is not None:
            user.login_session(conn, request["shardex_key"],  # a browser session's key
                               request.get(SESSION_ALIVE))  # fmt: skip
        self.hub.conns.add(conn)
        m.CONNECTS.inc()
        m.CONNECTIONS.set(len(self.hub.conns))
        out = Writer(ws, conn, request, self.frames, self.flusher)
        conn.kick = out.kick  # type: ignore[method-assign] # (a step's flush writes at once)
        conn.spill = out.spill  # type: ignore[method-assign]
        writer = asyncio.get_running_loop().create_task(out.run())
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self.handle(conn, msg.data)
        finally:
            writer.cancel()
            if user is not None:
                user.drop(conn)
            self.hub.drop(conn)
            self.hub.conns.discard(conn)
            m.CONNECTIONS.set(len(self.hub.conns))
        return ws

    async def handle(self, conn: Conn, raw: str | bytes) -> None:
        """One client message: act on it or answer a JSON error; never raises."""
        if self.hub.user is not None and await self.hub.user.handle(conn, raw):
            return  # (a login or the user channel's)
        try:
            req = parse(raw, self.cfg.markets)
        except Refused as exc:
            m.ERRORS.labels(exc.error()["name"]).inc()
            conn.control(exc.error())
            return
        ack = {"type": "ack", "op": req.op, "channel": req.channel, "symbol": req.symbol}
        if req.id is not None:
            ack["id"] = req.id
        if req.op == "ping":
            conn.control({"type": "pong", **({"id": req.id} if req.id is not None else {})})
        elif req.op == "markets":
            conn.outbox.control(self.markets_frame)
            conn.wake.set()
        elif req.op == "unsubscribe":
            self.hub.remove(conn, req.channel or "", req.symbol or "")
            conn.control(ack)
        elif req.channel in PERP_CHANNELS and getattr(self.cfg.markets[req.symbol or ""], "perp",
                                                      None) is None:  # fmt: skip
            conn.control(error(NOT_PERP, "mark, funding, liquidations and adl are perp "
                               "pairs'", req.id))  # fmt: skip
        elif (req.channel, req.symbol) not in conn.subs and len(conn.subs) >= MAX_SUBS:
            conn.control(error(TOO_MANY_SUBSCRIPTIONS, f"at most {MAX_SUBS} subscriptions", req.id))
        else:
            try:
                await self.subscribe(conn, req.channel or "", req.symbol or "", req.from_seq, ack,
                                     req.batch)  # fmt: skip
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("subscribe %s %s: %s", req.channel, req.symbol, exc)
                self.hub.remove(conn, req.channel or "", req.symbol or "")  # (a half replay)
                conn.control(error(GATEWAY_UNAVAILABLE, "Redis does not answer: try again",
                                   req.id))  # fmt: skip

    async def subscribe(self, conn: Conn, channel: str, symbol: str, since: int | None,
                        ack: dict[str, Any], batch: bool = False) -> None:  # fmt: skip
        """Subscribe (again: a resync): a book gets the current snapshot, trades resume
        from ``since`` or start live, a ticker starts with the next second's."""
        conn.control(ack)
        if channel == "book" and (channel, symbol) in conn.subs:
            self.hub.resync(conn, symbol)
            return
        self.hub.remove(conn, channel, symbol)
        if channel == "book":
            await self.hub.subscribe_book(conn, symbol)
        elif channel == "trades":
            await self.hub.subscribe_trades(conn, symbol, since, batch)
        elif channel in PERP_CHANNELS:
            await self.hub.subscribe_perp(conn, channel, symbol, since)
        else:
            self.hub.add(conn, Sub("ticker", symbol))

    async def ticks(self) -> None:
        """Every second: a heartbeat to everyone, each subscribed ticker, the queue gauges."""
        while True:
            await asyncio.sleep(TICK)
            self.hub.heartbeat()
            if self.hub.user is not None:
                self.hub.user.tick()
            depths = [len(c.outbox) for c in self.hub.conns]
            m.QUEUE_DEPTH.set(sum(depths))
            m.QUEUE_MAX.set(max(depths, default=0))
            if self.login is not None:
                self.login.store.expire(self.login.clock())
                m.SESSIONS.set(len(self.login.store))
            for (channel, symbol), conns in list(self.hub.subs.items()):
                if channel == "ticker" and conns:
                    await self.ticker(symbol)

    async def ticker(self, symbol: str) -> None:
        try:
            t = await asyncio.to_thread(self.md.ticker, symbol)
            top = await self.hub.read_book(symbol, 1)
        except Exception as exc:  # noqa: BLE001 - Redis or the cluster away: next second
            log.warning("ticker %s: %s", symbol, exc)
            return
        best = {s: (str(top[s][0][0]) if top.get(s) else None) for s in ("bids", "asks")}
        msg = {"channel": "ticker", **t.to_json(), "bid": best["bids"], "ask": best["asks"],
               "seq": top.get("seq")}  # fmt: skip
        self.hub.publish("ticker", symbol, encode(msg))
        self.hub.flush()

    async def streams(self) -> None:
        """The hub's XREAD loop; Redis errors: a pause (growing to 5 s), then on."""
        pause, last = 0.2, time.monotonic()
        while True:
            try:
                if not self.hub.pos:
                    await self.hub.start_positions()
                elif time.monotonic() - last > 5.0:
                    last = time.monotonic()
                    await self.hub.discover()
                await self.hub.step()
                m.UP.set(1)
                pause = 0.2
            except (redis.exceptions.RedisError, OSError) as exc:
                self.hub.redis_ok = False
                m.UP.set(0)
                log.warning("redis: %s; retrying in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(5.0, pause * 2)


async def serve(cfg: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT: connect Redis and the cluster, serve, stop cleanly."""
    url = resolve_url(cfg.redis_url, cfg.keys_dir)
    r = aredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=3,
                              socket_timeout=15)  # fmt: skip
    sync_r = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=3)
    markets = dict(cfg.markets)  # one table: the pairs listed at runtime join it (``shards``)
    cfg = replace(cfg, markets=markets)
    client = AsyncClient(cfg.endpoint, key=cfg.key, markets=markets, timeout=5.0)

    async def read_book(symbol: str, depth: int) -> dict[str, Any]:
        return await client.book(symbol, depth)

    async def shards() -> int:
        info = await client.topology()
        learn_tables(markets, AssetTable(markets), shard_tables(info))
        return int(info.get("shards") or 0)

    async def accounts() -> int:
        await client.topology()
        return client.accounts

    hub = Hub(r, read_book, cfg.markets, cfg.depth, shards)
    rest = Rest(cfg.endpoint, cfg.keys_dir, cfg.markets, redis=r)
    hub.user = UserHub(r, rest, accounts, hub.pos)
    gw = Gateway(cfg, hub, MarketData(r=sync_r, markets=cfg.markets), rest,
                 _ops(cfg, client, rest))  # fmt: skip
    runner = web.AppRunner(gw.app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, cfg.host, cfg.port, backlog=1024, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [loop.create_task(gw.streams()), loop.create_task(gw.ticks())]
    log.info("gateway on http://%s:%d (ws /v1/ws), Redis %s, cluster %s", cfg.host, cfg.port,
             mask_url(cfg.redis_url), cfg.endpoint)  # fmt: skip
    await stop.wait()
    for t in tasks:
        t.cancel()
    hub.user.close()
    await runner.cleanup()
    await rest.close()
    await client.close()
    await r.aclose()
    sync_r.close()


def _ops(cfg: GatewayConfig, client: AsyncClient, rest: Rest) -> Ops | None:
    """The operator numbers from the layout's exporters (None without a layout); open to
    anyone only on a cluster without keys."""
    layout = cfg.layout
    if layout is None:
        return None

    async def find() -> list[Target]:
        info = await client.topology()
        return targets(layout, int(info.get("shards") or 0), client.accounts)

    fetcher = Fetcher()
    return Ops(OpsScraper(find, fetcher), rest.auth if cfg.keys_dir else None, fetcher)


def run_gateway(cfg: GatewayConfig) -> None:
    uvloop.run(serve(cfg))
