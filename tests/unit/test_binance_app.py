"""The Binance routes and streams in an in-process aiohttp app around a real ``Hub`` (its
engine book read and trades stream faked): depth diffs chain ``U = previous u + 1``, the depth
endpoint's ``lastUpdateId`` is what the next diff continues, each event is encoded once per
stream name, combined streams wrap it, trades and the book ticker translate, and bad requests
get Binance's error shapes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, test_utils, web  # (its TestClient/TestServer: an in-process app)

from shardex.engine import DEFAULT_MARKETS
from shardex.gateway import binance
from shardex.gateway.hub import Hub


class _Books:
    """The engine's book of BTC-USD as the hub reads it (seq, levels)."""

    def __init__(self) -> None:
        self.seq, self.bids, self.asks = 3, [("100.00", "1.0000", 1)], [("101.00", "2.0000", 1)]
        self.shard = 0

    async def read(self, symbol: str, depth: int) -> dict[str, Any]:
        return {"symbol": symbol, "shard": self.shard, "seq": self.seq, "bids": self.bids[:depth],
                "asks": self.asks[:depth]}  # fmt: skip


class _Redis:
    async def xrevrange(self, key: str, *a: Any, count: int = 0) -> list[Any]:
        return [("9-0", {"trade_id": "2", "price": "100.50", "qty": "0.1000",
                         "taker_side": "buy", "ts": "1700000000001"}),
                ("7-0", {"trade_id": "1", "price": "100.00", "qty": "0.2000",
                         "taker_side": "sell", "ts": "1700000000000"})][:count]  # fmt: skip


async def _next(ws: Any) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    return json.loads(msg.data)


def _app(books: _Books) -> tuple[web.Application, Hub]:
    hub = Hub(_Redis(), books.read, DEFAULT_MARKETS)
    app = web.Application()
    binance.mount(app, hub, DEFAULT_MARKETS, None, lambda s: None)
    return app, hub


def test_depth_diffs_continue_the_depth_endpoint_and_chain_their_update_ids():
    async def run() -> None:
        books = _Books()
        app, hub = _app(books)
        async with test_utils.TestClient(test_utils.TestServer(app)) as http:
            raw = await http.ws_connect("/ws/btcusd@depth")
            both = await http.ws_connect("/stream?streams=btcusd@depth/btcusd@bookTicker")
            snap = await (await http.get("/api/v3/depth?symbol=BTCUSD&limit=5")).json()
            assert snap == {"lastUpdateId": 3, "bids": [["100.00000000", "1.00000000"]],
                            "asks": [["101.00000000", "2.00000000"]]}  # fmt: skip
            books.seq, books.bids = 8, [("100.00", "1.5000", 2), ("99.00", "1.0000", 1)]
            await hub.refresh("BTC-USD")
            books.seq, books.asks = 12, []
            await hub.refresh("BTC-USD")
            d1, d2 = await _next(raw), await _next(raw)
            assert (d1["e"], d1["s"], d1["U"], d1["u"]) == ("depthUpdate", "BTCUSD", 4, 8)
            assert d1["b"] == [["100.00000000", "1.50000000"], ["99.00000000", "1.00000000"]]
            assert (d2["U"], d2["u"], d2["a"]) == (9, 12, [["101.00000000", "0.00000000"]])
            wrapped = [await _next(both) for _ in range(4)]
            streams = [w["stream"] for w in wrapped]
            assert streams.count("btcusd@depth") == 2 and "btcusd@bookTicker" in streams
            ticker = next(w["data"] for w in wrapped if w["stream"] == "btcusd@bookTicker")
            assert (ticker["s"], ticker["b"], ticker["B"]) == ("BTCUSD", "100.00000000",
                                                               "1.50000000")  # fmt: skip
            await raw.close()
            await both.close()

    asyncio.run(run())


def test_trades_translate_and_the_public_routes_answer_binances_shapes():
    async def run() -> None:
        app, hub = _app(_Books())
        async with test_utils.TestClient(test_utils.TestServer(app)) as http:
            ws = await http.ws_connect("/ws")
            await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusd@trade"],
                                          "id": 1}))  # fmt: skip
            assert await _next(ws) == {"result": None, "id": 1}
            hub.trades("BTC-USD", [("20-0", {"trade_id": "3", "price": "100.00",
                                             "qty": "0.5000", "taker_side": "sell",
                                             "ts": "1700000000002"})])  # fmt: skip
            hub.flush()  # (the end of the hub's step: its fan-out)
            t = await _next(ws)
            assert (t["e"], t["s"], t["t"], t["p"], t["q"], t["m"]) == (
                "trade", "BTCUSD", 3, "100.00000000", "0.50000000", True)
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "x"}))
            assert await _next(ws) == {"result": ["btcusd@trade"], "id": "x"}
            for bad, code in (("nope", 3), ("[]", 2), (json.dumps({"method": "FLY"}), 2),
                              (json.dumps({"method": "SUBSCRIBE", "params": ["x@trade"]}), 2),
                              (json.dumps({"method": "SUBSCRIBE", "params": [1]}), 1)):
                await ws.send_str(bad)
                assert (await _next(ws))["error"]["code"] == code
            await ws.close()
            trades = await (await http.get("/api/v3/trades?symbol=BTCUSD&limit=2")).json()
            assert [x["id"] for x in trades] == [1, 2] and trades[0]["isBuyerMaker"] is True
            assert trades[1]["quoteQty"] == "10.05000000"
            info = await (await http.get("/api/v3/exchangeInfo?symbol=ETHBTC")).json()
            assert [s["symbol"] for s in info["symbols"]] == ["ETHBTC"]
            many = await http.get('/api/v3/exchangeInfo?symbols=["BTCUSD","ETHUSD"]')
            assert len((await many.json())["symbols"]) == 2
            for path in ("/api/v3/depth?symbol=NOPE", "/api/v3/depth",
                         "/api/v3/exchangeInfo?symbol=BTC-USD"):
                resp = await http.get(path)
                assert resp.status == 400 and (await resp.json())["code"] == -1121
            resp = await http.get("/api/v3/depth?symbol=BTCUSD&limit=x")
            assert (await resp.json())["code"] == -1104
            assert await (await http.get("/api/v3/ping")).json() == {}

    asyncio.run(run())


def test_a_pair_that_moves_to_another_seq_space_disconnects_its_depth_clients():
    """A move restarts the seqs (another engine shard): a diff there could have a ``u`` below
    the client's book and be ignored silently; the client is disconnected instead, reconnects
    and fetches a fresh depth."""

    async def run() -> None:
        books = _Books()
        app, hub = _app(books)
        async with test_utils.TestClient(test_utils.TestServer(app)) as http:
            depth = await http.ws_connect("/ws/btcusd@depth")
            trades = await http.ws_connect("/ws/btcusd@trade")
            await http.get("/api/v3/depth?symbol=BTCUSD")
            books.shard, books.seq = 1, 2
            await hub.refresh("BTC-USD")
            msg = await depth.receive(timeout=5)
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
            snap = await (await http.get("/api/v3/depth?symbol=BTCUSD")).json()
            assert snap["lastUpdateId"] == 2  # the new seq space's
            assert not trades.closed  # (trades have their own ids: unaffected)
            await trades.close()

    asyncio.run(run())
