"""A Binance-compatible subset of the gateway (docs/binance.md): Binance's spot REST v3
routes under ``/api/v3`` and its WebSocket market streams under ``/ws`` and ``/stream``, so a
client library written for Binance connects with only its base URL changed. Symbols are
``BASEQUOTE`` (``symbols``), errors Binance's ``{"code", "msg"}`` (``errors``), signatures
Binance's (``auth``) over the gateway's own API keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web

from shardex.engine import Market
from shardex.gateway.binance.account import AccountRoutes
from shardex.gateway.binance.market import MarketRoutes
from shardex.gateway.binance.streams import Streams
from shardex.gateway.binance.symbols import SymbolMap
from shardex.gateway.binance.ws import BinanceSockets
from shardex.gateway.hub import Hub
from shardex.gateway.outbox import QUEUE_FRAMES
from shardex.gateway.rest import Rest

SWEEP_EVERY = 1.0  # seconds between looks for books nobody follows any more


def mount(app: web.Application, hub: Hub, markets: Mapping[str, Market], rest: Rest | None,
          ticker: Callable[[str], Any], queue: int = QUEUE_FRAMES) -> Streams:  # fmt: skip
    """Add the Binance routes to ``app`` (the signed ones only with ``rest``)."""
    names = SymbolMap.of(markets)
    streams = Streams(hub, names)
    MarketRoutes(names, streams, ticker).routes(app)
    BinanceSockets(streams, queue).routes(app)
    if rest is not None:
        AccountRoutes(names, rest).routes(app)

    async def sweeper(app: web.Application) -> AsyncIterator[None]:  # noqa: ARG001
        async def loop() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY)
                streams.sweep(time.monotonic())

        task = asyncio.get_running_loop().create_task(loop())
        yield
        task.cancel()

    app.cleanup_ctx.append(sweeper)
    return streams
