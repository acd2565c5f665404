"""Binance's public REST routes (no key): ``ping``, ``time``, ``exchangeInfo``, ``depth``,
``trades``, ``ticker/24hr``, ``ticker/price``, ``ticker/bookTicker``, all under ``/api/v3``,
answered from the gateway's hub (book), the trades streams and the candles' ticker."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from shardex.client import ShardexError
from shardex.gateway import metrics as m
from shardex.gateway.binance.errors import (
    BAD_PARAM,
    DISCONNECTED,
    NEW_ORDER_REJECTED,
    ORDER_MAP,
    UNKNOWN,
    BinanceError,
    bad_symbol,
)
from shardex.gateway.binance.streams import Streams
from shardex.gateway.binance.symbols import Pair, SymbolMap, fmt, places
from shardex.gateway.hub import TRADES_PREFIX

log = logging.getLogger("shardex.gateway")
Handler = Callable[[web.Request], Awaitable[Any]]
DEPTH_LIMITS = (1, 5000)
TRADES_LIMITS = (1, 1000)
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET"]
STP_MODES = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]


def answer(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(obj), status=status, content_type="application/json")


def route(fn: Handler) -> Handler:
    """A handler whose value is the JSON answer and whose refusals are Binance errors."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return answer(await fn(request))
        except BinanceError as exc:
            m.ERRORS.labels(f"binance{exc.code}").inc()
            return answer(exc.body(), exc.status)
        except ShardexError as exc:  # the cluster away, a timeout: Binance's own codes
            err = BinanceError(ORDER_MAP.get(exc.code or "", UNKNOWN), str(exc)[:200])
        except (ValueError, TypeError) as exc:  # the SDK's own checks of the fields
            err = BinanceError(NEW_ORDER_REJECTED, str(exc)[:200])
        except Exception:  # a bug: said in Binance's shape and logged, never a crash
            log.exception("binance %s %s", request.method, request.path)
            err = BinanceError(UNKNOWN, "An unknown error occurred while processing the "
                               "request.")  # fmt: skip
        m.ERRORS.labels(f"binance{err.code}").inc()
        return answer(err.body(), err.status)

    return wrapped


def limit(request: web.Request, default: int, bounds: tuple[int, int]) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
        raise BinanceError(BAD_PARAM, "Illegal characters found in parameter 'limit'.")
    return max(bounds[0], min(bounds[1], int(raw)))


def pair_of(names: SymbolMap, raw: object) -> Pair:
    got = names.get(raw)
    if isinstance(got, str):
        raise bad_symbol(got)
    return got


def symbol_info(p: Pair) -> dict[str, Any]:
    """One ``exchangeInfo`` symbol: its assets, order types and its grid as filters."""
    mk, n = p.market, places(p.market)
    return {
        "symbol": p.name, "status": "TRADING", "baseAsset": p.base, "baseAssetPrecision": n,
        "quoteAsset": p.quote, "quotePrecision": n, "quoteAssetPrecision": n,
        "baseCommissionPrecision": n, "quoteCommissionPrecision": n,
        "orderTypes": ORDER_TYPES, "icebergAllowed": False, "ocoAllowed": False,
        "otoAllowed": False, "quoteOrderQtyMarketAllowed": False, "allowTrailingStop": False,
        "cancelReplaceAllowed": False, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": fmt(mk.tick, n),
             "maxPrice": fmt(mk.max_price, n), "tickSize": fmt(mk.tick, n)},
            {"filterType": "LOT_SIZE", "minQty": fmt(mk.lot, n), "maxQty": fmt(mk.max_qty, n),
             "stepSize": fmt(mk.lot, n)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": fmt(mk.lot, n),
             "maxQty": fmt(mk.max_qty, n), "stepSize": fmt(mk.lot, n)},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": STP_MODES,
    }  # fmt: skip


class MarketRoutes:
    """The public routes; ``ticker`` reads the candles worker's 24 h ticker (sync Redis)."""

    def __init__(self, names: SymbolMap, streams: Streams, ticker: Callable[[str], Any]) -> None:
        self.names, self.streams, self.ticker_of = names, streams, ticker
        self.hub = streams.hub

    def routes(self, app: web.Application) -> None:
        for path, fn in (("ping", self.ping), ("time", self.time), ("exchangeInfo", self.info),
                         ("depth", self.depth), ("trades", self.trades),
                         ("ticker/24hr", self.ticker), ("ticker/price", self.price),
                         ("ticker/bookTicker", self.book_ticker)):  # fmt: skip
            app.router.add_get(f"/api/v3/{path}", route(fn))

    async def ping(self, request: web.Request) -> Any:  # noqa: ARG002
        return {}

    async def time(self, request: web.Request) -> Any:  # noqa: ARG002
        return {"serverTime": int(time.time() * 1000)}

    def _pairs(self, request: web.Request) -> list[Pair]:
        """``symbol=X``, ``symbols=["X","Y"]`` or every pair."""
        q = request.query
        if "symbol" in q:
            return [pair_of(self.names, q["symbol"])]
        if "symbols" in q:
            try:
                asked = json.loads(q["symbols"])
            except ValueError:
                raise BinanceError(BAD_PARAM, "Illegal characters found in parameter "
                                   "'symbols'.") from None  # fmt: skip
            if not isinstance(asked, list) or not asked:
                raise BinanceError(BAD_PARAM, "Parameter 'symbols' must be a JSON array.")
            return [pair_of(self.names, s) for s in asked[:100]]
        return [self.names.pairs[k] for k in sorted(self.names.pairs)]

    async def info(self, request: web.Request) -> Any:
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000),
                "rateLimits": [], "exchangeFilters": [],
                "symbols": [symbol_info(p) for p in self._pairs(request)]}  # fmt: skip

    async def depth(self, request: web.Request) -> Any:
        p = pair_of(self.names, request.query.get("symbol"))
        book = await self.streams.depth(p.symbol, limit(request, 100, DEPTH_LIMITS))
        if book is None:
            raise BinanceError(DISCONNECTED, "The book cannot be read now: try again.")
        return book

    async def trades(self, request: web.Request) -> Any:
        p = pair_of(self.names, request.query.get("symbol"))
        n, count = places(p.market), limit(request, 500, TRADES_LIMITS)
        entries = await self.hub.r.xrevrange(TRADES_PREFIX + p.symbol, "+", "-", count=count)
        out = []
        for _, f in reversed(entries):
            price, qty = Decimal(f.get("price", "0")), Decimal(f.get("qty", "0"))
            out.append({"id": int(f.get("trade_id", 0)), "price": fmt(price, n),
                        "qty": fmt(qty, n), "quoteQty": fmt(price * qty, n),
                        "time": int(f.get("ts", 0)),
                        "isBuyerMaker": f.get("taker_side") == "sell",
                        "isBestMatch": True})  # fmt: skip
        return out

    async def _top(self, p: Pair) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        """The best bid and ask (price, qty) strings: the followed feed's, or one read."""
        feed = self.hub.feeds.get(p.symbol)
        if feed is not None and feed.seq is not None:
            return (feed.bids[0] if feed.bids else None), (feed.asks[0] if feed.asks else None)
        book = await self.hub.read_book(p.symbol, 1)
        if "error" in book:
            raise BinanceError(DISCONNECTED, "The book cannot be read now: try again.")
        top = [(str(b[0][0]), str(b[0][1])) if b else None
               for b in (book.get("bids"), book.get("asks"))]  # fmt: skip
        return top[0], top[1]

    async def book_ticker(self, request: web.Request) -> Any:
        pairs = self._pairs(request)
        out = []
        for p in pairs:
            bid, ask = await self._top(p)
            n = places(p.market)
            out.append({"symbol": p.name, "bidPrice": fmt(bid[0] if bid else 0, n),
                        "bidQty": fmt(bid[1] if bid else 0, n),
                        "askPrice": fmt(ask[0] if ask else 0, n),
                        "askQty": fmt(ask[1] if ask else 0, n)})  # fmt: skip
        return out[0] if "symbol" in request.query else out

    async def _ticker(self, p: Pair) -> dict[str, Any]:
        try:
            t = (await asyncio.to_thread(self.ticker_of, p.symbol)).to_json()
        except Exception as exc:  # noqa: BLE001 - Redis away: said as Binance says it
            log.warning("binance ticker %s: %s", p.symbol, exc)
            raise BinanceError(DISCONNECTED, "The ticker cannot be read now.") from None
        bid, ask = await self._top(p)
        n = places(p.market)
        now = int(time.time() * 1000)
        return {"symbol": p.name, "priceChange": fmt(t["change"], n),
                "priceChangePercent": fmt(t["change_percent"], 3),
                "weightedAvgPrice": fmt(_vwap(t), n), "prevClosePrice": fmt(t["open"], n),
                "lastPrice": fmt(t["last"], n), "lastQty": fmt(0, n),
                "bidPrice": fmt(bid[0] if bid else 0, n), "bidQty": fmt(bid[1] if bid else 0, n),
                "askPrice": fmt(ask[0] if ask else 0, n), "askQty": fmt(ask[1] if ask else 0, n),
                "openPrice": fmt(t["open"], n), "highPrice": fmt(t["high"], n),
                "lowPrice": fmt(t["low"], n), "volume": fmt(t["volume"], n),
                "quoteVolume": fmt(t["quote_volume"], n),
                "openTime": t.get("window_start") or now - 86_400_000, "closeTime": now,
                "firstId": -1, "lastId": -1, "count": t["trades"]}  # fmt: skip

    async def ticker(self, request: web.Request) -> Any:
        got = [await self._ticker(p) for p in self._pairs(request)]
        return got[0] if "symbol" in request.query else got

    async def price(self, request: web.Request) -> Any:
        got = [await self._ticker(p) for p in self._pairs(request)]
        out = [{"symbol": t["symbol"], "price": t["lastPrice"]} for t in got]
        return out[0] if "symbol" in request.query else out


def _vwap(t: dict[str, Any]) -> Decimal:
    vol = Decimal(t["volume"] or 0)
    return Decimal(t["quote_volume"] or 0) / vol if vol else Decimal(0)
