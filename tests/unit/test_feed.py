"""The price feed's pure parts (sources, combining) and its Binance source against a local
WebSocket server (aiohttp's test server, in process: no internet here)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from aiohttp import web
from aiohttp.test_utils import TestServer

from shardex.aio import within
from shardex.feed.combine import OUTLIER, STALE, combine, median, to_ticks
from shardex.feed.node import Feed, FeedConfig, source_task
from shardex.feed.sources import Quote, Walk, parse_binance, parse_record

PERP = "BTCPERP-USD"
SYMBOLS = {"BTCUSDT": PERP}
# recorded from Binance's public stream documentation's shapes (spot trade, bookTicker, and a
# combined-stream envelope)
TRADE = ('{"e":"trade","E":1700000000123,"s":"BTCUSDT","t":12345,"p":"37012.34000000",'
         '"q":"0.01000000","T":1700000000120,"m":true,"M":true}')  # fmt: skip
TICKER = ('{"u":400900217,"s":"BTCUSDT","b":"37010.00000000","B":"1.5","a":"37011.00000000",'
          '"A":"2.0"}')  # fmt: skip
COMBINED = '{"stream":"btcusdt@trade","data":' + TRADE + "}"


def q(source: str, price: str, ts: int = 1000) -> Quote:
    return Quote(source, PERP, Decimal(price), ts)


def test_binance_trade_and_book_ticker_messages_become_quotes() -> None:
    assert parse_binance(TRADE, SYMBOLS, 5) == Quote("binance", PERP, Decimal("37012.34"),
                                                     1700000000120)  # fmt: skip
    assert parse_binance(COMBINED, SYMBOLS, 5) == parse_binance(TRADE, SYMBOLS, 5)
    mid = parse_binance(TICKER, SYMBOLS, 77)
    assert mid == Quote("binance", PERP, Decimal("37010.5"), 77)


def test_other_symbols_events_and_garbage_are_not_quotes() -> None:
    for bad in ("", "{", "[]", '{"e":"kline","s":"BTCUSDT"}', TRADE.replace("BTCUSDT", "ETHUSDT"),
                TRADE.replace('"37012.34000000"', '37012.34'), TRADE.replace('"T":', '"X":'),
                TICKER.replace('"37010.00000000"', '"40000"'),  # crossed: bid above ask
                TICKER.replace('"37011.00000000"', '"NaN"'), "x" * 5000):  # fmt: skip
        assert parse_binance(bad, SYMBOLS, 1) is None, bad


def test_recorded_lines() -> None:
    line = '{"ts": 1000, "symbol": "BTCPERP-USD", "price": "30000.5"}'
    assert parse_record(line, "f") == Quote("f", PERP, Decimal("30000.5"), 1000)
    for bad in ("", "# comment", '{"ts": 1, "symbol": "X", "price": 3.5}', "[1]",
                '{"ts": -1, "symbol": "X", "price": "1"}'):  # fmt: skip
        assert parse_record(bad) is None


def test_the_walk_is_seeded_and_on_the_grid() -> None:
    start, grid = {PERP: Decimal("30000")}, {PERP: Decimal("0.1")}
    w1, w2 = Walk(start, grid, 7), Walk(start, grid, 7)
    path1 = [w1.step(i)[0].price for i in range(50)]
    assert path1 == [w2.step(i)[0].price for i in range(50)]
    assert all(p % Decimal("0.1") == 0 and abs(p / Decimal(30000) - 1) < 1 for p in path1)
    assert len(set(path1)) > 1


def test_median_drops_stale_and_outlying_sources() -> None:
    assert median([Decimal(1), Decimal(3)]) == 2 and median([Decimal(5)]) == 5
    got = combine([q("a", "100"), q("b", "101"), q("c", "130")], 1000, 500, 200)
    assert (got.price, got.used, got.dropped) == (Decimal("100.5"), ("a", "b"), {"c": OUTLIER})
    got = combine([q("a", "100", 0), q("b", "101", 900)], 1000, 500, 200)
    assert (got.price, got.dropped) == (Decimal("101"), {"a": STALE})
    assert combine([q("a", "100", 0)], 1000, 500, 200).price is None
    # two sources cannot tell which one is wrong: both are kept
    assert combine([q("a", "100"), q("b", "130")], 1000, 500, 200).price == Decimal("115")
    assert to_ticks(Decimal("30000.05"), Decimal("0.1")) == 300000  # half to even
    assert to_ticks(Decimal("30000.15"), Decimal("0.1")) == 300002


def test_a_flash_crash_of_one_source_among_three_is_flagged() -> None:
    feed = Feed(FeedConfig("tcp://x", stale_ms=500, outlier_bps=200), {PERP: Decimal("0.1")})
    for source, price in (("a", "30000"), ("b", "30010"), ("c", "15000")):
        feed.put(q(source, price, 1000))
    assert feed.round_prices(1000) == {PERP: Decimal("30005")}
    assert feed.flagged[(PERP, "c")] == OUTLIER


async def _serve_and_read(messages: list[str]) -> Feed:
    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for m in messages:
            await ws.send_str(m)
        await ws.receive()  # until the client goes
        return ws

    app = web.Application()
    app.router.add_get("/ws", stream)
    server = TestServer(app)
    await server.start_server()
    cfg = FeedConfig("tcp://x", binance_symbols=SYMBOLS)
    feed = Feed(cfg, {PERP: Decimal("0.1")})
    spec = f"binance:ws://127.0.0.1:{server.port}/ws"
    task = asyncio.ensure_future(source_task(feed, spec)())
    try:
        while spec not in feed.latest[PERP] or feed.latest[PERP][spec].price != Decimal(
                "37010.5"):  # fmt: skip
            await asyncio.sleep(0.01)
        return feed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()


def test_the_binance_source_reads_a_local_websocket_stream() -> None:
    feed = asyncio.run(within(_serve_and_read([TRADE, "garbage", TICKER]), 20))
    (got,) = feed.latest[PERP].values()
    assert got.price == Decimal("37010.5")


def test_a_recorded_file_is_replayed(tmp_path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps({"ts": t, "symbol": PERP, "price": p})
                              for t, p in ((0, "100"), (10, "101"), (20, "102"))))  # fmt: skip
    feed = Feed(FeedConfig("tcp://x", speed=10.0), {PERP: Decimal("0.1")})
    spec = f"file:{path}"

    async def run() -> None:
        task = asyncio.ensure_future(source_task(feed, spec)())
        try:
            while spec not in feed.latest[PERP] or feed.latest[PERP][spec].price != 102:
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(within(run(), 20))
    assert feed.latest[PERP][spec].price == Decimal("102")
