"""The trading web page (``/``, from the package's ``web/`` folder: no build step, no CDN) and
the public market-data reads it draws its chart and header from: ``GET /v1/candles`` and
``GET /v1/ticker``, read from the candles worker's Redis keys (docs/candles.md).

The page's files are read once at start; each answer carries a Content-Security-Policy that
allows only this origin's scripts, styles and connections (nothing inline, nothing framed).
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import redis
from aiohttp import web

from shardex.candles.core import INTERVALS
from shardex.client.market_data import MarketData, MarketDataError
from shardex.gateway.rest_common import refuse, reply
from shardex.wire.codes import BAD_MESSAGE, GATEWAY_UNAVAILABLE, UNKNOWN_SYMBOL

FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css",
         "ops.html": "text/html", "ops.js": "text/javascript", "ops.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MAX_CANDLES = 1000  # per request of the page's chart


def load_files() -> dict[str, bytes]:
    """The page's files from the installed package (``shardex/gateway/web/``)."""
    folder = resources.files("shardex.gateway").joinpath("web")
    return {name: folder.joinpath(name).read_bytes() for name in FILES}


class Page:
    """The page's routes: ``/``, ``/web/<file>``, ``/v1/candles``, ``/v1/ticker``."""

    def __init__(self, md: MarketData, markets: Any) -> None:
        self.md, self.markets = md, markets
        self.files = load_files()

    def install(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/ops", self.ops)  # the operator page (its numbers: ``ops``)
        app.router.add_get("/web/{name}", self.asset)
        app.router.add_get("/v1/candles", self.candles)
        app.router.add_get("/v1/ticker", self.ticker)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self.files[name], content_type=FILES[name], headers=HEADERS)

    async def index(self, request: web.Request) -> web.Response:  # noqa: ARG002
        return self._file("index.html")

    async def ops(self, request: web.Request) -> web.Response:  # noqa: ARG002
        return self._file("ops.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return self._file(name)

    async def candles(self, request: web.Request) -> web.Response:
        """``?symbol=S&interval=1m&limit=200``: the newest candles, oldest first."""
        q = request.query
        symbol, interval = q.get("symbol", ""), q.get("interval", "1m")
        if symbol not in self.markets:
            return refuse(UNKNOWN_SYMBOL, "unknown symbol", 400)
        if interval not in INTERVALS:
            return refuse(BAD_MESSAGE, f"interval must be one of {', '.join(INTERVALS)}", 400)
        raw = q.get("limit", "200")
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_CANDLES):
            return refuse(BAD_MESSAGE, f"limit must be 1..{MAX_CANDLES}", 400)
        got = await self._read(self.md.candles, symbol, interval, int(raw))
        if isinstance(got, web.Response):
            return got
        return reply({"symbol": symbol, "interval": interval,
                      "candles": [c.to_json() for c in got]})  # fmt: skip

    async def ticker(self, request: web.Request) -> web.Response:
        """``?symbol=S``: that pair's 24 h ticker; no symbol: every pair's."""
        symbol = request.query.get("symbol")
        if symbol is not None and symbol not in self.markets:
            return refuse(UNKNOWN_SYMBOL, "unknown symbol", 400)
        out = []
        for s in [symbol] if symbol else sorted(self.markets):
            got = await self._read(self.md.ticker, s)
            if isinstance(got, web.Response):
                return got
            out.append(got.to_json())
        return reply(out[0] if symbol else {"tickers": out})

    @staticmethod
    async def _read(fn: Any, *args: Any) -> Any:
        """A blocking read of Redis in a thread; Redis away: 503 with a code."""
        try:
            return await asyncio.to_thread(fn, *args)
        except MarketDataError as exc:
            return refuse(BAD_MESSAGE, str(exc), 400)
        except (redis.exceptions.RedisError, OSError, ValueError, json.JSONDecodeError) as exc:
            return refuse(GATEWAY_UNAVAILABLE, f"candles cannot be read now: {exc}"[:200], 503)
