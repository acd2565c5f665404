"""The candles core: trades-stream entries → candles, compared with candles recomputed from
the entries independently; refused entries; the ticker; exact decimal strings."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from shardex.candles.core import (
    ANOMALIES,
    INTERVALS,
    Anomaly,
    Candle,
    PairCandles,
    Position,
    Trade,
    parse_trade,
)
from shardex.candles.fmt import CandleView, candle_of, member, position_fields, position_of
from shardex.candles.ticker import fill, ticker
from shardex.engine import DEFAULT_MARKETS
from tests.support.candles import (
    T0,
    as_decimals,
    reference_candles,
    reference_ticker,
    trade_entries,
)

BTC = DEFAULT_MARKETS["BTC-USD"]
ETHBTC = DEFAULT_MARKETS["ETH-BTC"]


def _run(pc: PairCandles, entries: list, stored: dict, rnd: random.Random) -> list[Anomaly]:
    """Feed ``entries`` in random batches as the worker does, ``stored`` standing in for
    Redis (members by bucket); the in-memory state is pruned hard, so late trades and every
    new batch reload buckets from ``stored``."""
    anomalies: list[Anomaly] = []
    i = 0
    while i < len(entries):
        batch = entries[i : i + rnd.randrange(1, 40)]
        i += len(batch)
        parsed = pc.parse(batch)
        for key in pc.missing(parsed):
            pc.seed(key, candle_of(stored[key], pc.market) if key in stored else None)
        done = pc.apply([e for e, _ in batch], parsed)
        for key, candle in done.changed.items():
            stored[key] = member(candle, pc.market)
        anomalies += done.anomalies
        pc.prune(keep=1)
    return anomalies


def _stored(stored: dict, interval: str) -> list[dict]:
    views = [CandleView.parse(m) for (n, _), m in sorted(stored.items()) if n == interval]
    return [as_decimals(v.to_json()) for v in views]


@pytest.mark.parametrize("backwards", [False, True], ids=["in-order", "late-trades"])
@pytest.mark.parametrize("symbol", ["BTC-USD", "ETH-BTC", "DOGE-USD"])
def test_candles_equal_an_independent_recompute(symbol: str, backwards: bool) -> None:
    market = DEFAULT_MARKETS[symbol]
    entries = trade_entries(market, 800, seed=len(symbol) + backwards, backwards=backwards)
    stored: dict = {}
    pc = PairCandles(market)
    assert _run(pc, entries, stored, random.Random(7)) == []
    for name, ms in INTERVALS.items():
        want = reference_candles(entries, ms)
        assert _stored(stored, name) == want, name
    assert len(_stored(stored, "1m")) < 800  # buckets shared by several trades
    entry, last = entries[-1]
    assert (pc.position.entry, pc.position.trade_id) == (entry, 800)
    assert (pc.position.ts, market.price_str(pc.position.price)) == (int(last["ts"]), last["price"])


def _bad(fields: dict, **change: str | None) -> dict:
    out = {**fields, **change}
    return {k: v for k, v in out.items() if v is not None}


def test_bad_entries_are_refused_with_a_stable_code_and_never_counted() -> None:
    good = trade_entries(BTC, 40, seed=3)
    f = good[10][1]
    bad = [
        ("no_ts", _bad(f, ts=None)), ("bad_ts", _bad(f, ts="")), ("bad_ts", _bad(f, ts="-5")),
        ("bad_ts", _bad(f, ts="1.5")), ("bad_ts", _bad(f, ts="9" * 30)),
        ("bad_ts", _bad(f, ts="١٢٣")), ("bad_ts", _bad(f, ts="0")),
        ("bad_ts", _bad(f, ts="253402300800000")),
        ("bad_trade_id", _bad(f, trade_id="x")), ("bad_trade_id", _bad(f, trade_id=None)),
        ("bad_price", _bad(f, price="30000.005")), ("bad_price", _bad(f, price="-1")),
        ("bad_price", _bad(f, price="NaN")), ("bad_price", _bad(f, price="Infinity")),
        ("bad_price", _bad(f, price="1e400")), ("bad_price", _bad(f, price="0")),
        ("bad_price", _bad(f, price=None)), ("bad_price", _bad(f, price="1" * 100)),
        ("bad_qty", _bad(f, qty="0.00001")), ("bad_qty", _bad(f, qty="0")),
        ("bad_qty", _bad(f, qty="abc")), ("bad_qty", _bad(f, qty="100000")),
    ]  # fmt: skip
    entries = good[:10]
    for k, (_, fields) in enumerate(bad):
        entries.append((f"{1000 + k}-0", fields))
    entries += [good[5], good[9]]  # repeats: already applied
    entries += good[10:20] + good[25:]  # a gap: trade_ids 21..25 never arrive
    pc = PairCandles(BTC)
    stored: dict = {}
    got = _run(pc, entries, stored, random.Random(1))
    codes = [a.code for a in got]
    assert codes == [code for code, _ in bad] + ["repeat", "repeat", "gap"]
    assert "trade_ids 21..25 missing" in got[-1].detail
    applied = good[:20] + good[25:]
    for name, ms in INTERVALS.items():
        assert _stored(stored, name) == reference_candles(applied, ms), name
    assert pc.position.entry == entries[-1][0] and pc.position.trade_id == 40


def test_parse_trade_is_total_on_hostile_fields() -> None:
    """Any value in any field: a Trade or an Anomaly, never an exception."""
    rnd = random.Random(5)
    junk = ["", "-", "+1", " 1", "1 ", "0x10", "1_000", "1e3", "1E-2", "\x00", "∞", "nan", "-0",
            "00001", "9" * 25, "0.00000001", "10000000.01", "30000.00"]  # fmt: skip
    fields = dict(trade_entries(BTC, 1, seed=1)[0][1])
    for _ in range(3000):
        f = dict(fields)
        for key in rnd.sample(["price", "qty", "ts", "trade_id"], rnd.randrange(1, 4)):
            f[key] = rnd.choice(junk)
        got = parse_trade("1-0", f, BTC)
        if isinstance(got, Trade):  # only what is exactly a valid trade
            assert BTC.price_str(got.price) == str(Decimal(f["price"]).quantize(BTC.tick))
            assert got.ts == int(f["ts"]) and got.trade_id == int(f["trade_id"]) > 0
        else:
            assert isinstance(got, Anomaly) and got.code in ANOMALIES


def test_the_ticker_equals_an_independent_recompute() -> None:
    entries = trade_entries(BTC, 1500, seed=11)
    stored: dict = {}
    pc = PairCandles(BTC)
    _run(pc, entries, stored, random.Random(2))
    minutes = [CandleView.parse(m) for (n, _), m in sorted(stored.items()) if n == "1m"]
    last_ts = int(entries[-1][1]["ts"])
    for at in [T0 + 3_600_000, T0 + 86_400_000 + 1234, last_ts, last_ts - 50_000_000,
               last_ts + 86_400_000 - 60_000, last_ts + 2 * 86_400_000]:  # fmt: skip
        before = [e for e in entries if int(e[1]["ts"]) <= at]
        price = Decimal(before[-1][1]["price"]) if before else None
        t = ticker("BTC-USD", minutes, price, at)
        want = reference_ticker(entries, at)
        got = {k: getattr(t, k) for k in want}
        assert got == want, at
        if t.open is not None:
            assert t.change_percent == (t.change * 100 / t.open).quantize(Decimal("0.01"))
    tiny = CandleView(T0, Decimal("5000.05"), Decimal("5000.05"), Decimal("4999.99"),
                      Decimal("4999.99"), Decimal(1), Decimal(5000), 2, 1, 2)  # fmt: skip
    assert ticker("ETH-USD", [tiny], None, T0).to_json()["change_percent"] == "0.00"
    tiny = CandleView(T0, Decimal("5000.05"), Decimal("5000.05"), Decimal("4999.99"),
                      Decimal("4999.99"), Decimal(1), Decimal(5000), 2, 1, 2)  # fmt: skip
    assert ticker("ETH-USD", [tiny], None, T0).to_json()["change_percent"] == "0.00"
    quiet = ticker("BTC-USD", minutes, Decimal("5.00"), last_ts + 3 * 86_400_000)
    assert (quiet.last, quiet.volume, quiet.trades, quiet.open) == (Decimal("5.00"), 0, 0, None)
    assert ticker("BTC-USD", [], None, T0).to_json()["last"] is None


def test_fill_makes_flat_candles_of_empty_intervals() -> None:
    a = CandleView(T0, Decimal("10.00"), Decimal("12.00"), Decimal("9.00"), Decimal("11.00"),
                   Decimal("1.0000"), Decimal("10.500000"), 3, 1, 3)  # fmt: skip
    b = CandleView(T0 + 180_000, Decimal("11.50"), Decimal("11.50"), Decimal("11.50"),
                   Decimal("11.50"), Decimal("2.0000"), Decimal("23.000000"), 1, 4, 4)  # fmt: skip
    got = fill([a, b], 60_000, until=T0 + 300_000 + 5)
    assert [c.start for c in got] == [T0 + k * 60_000 for k in range(6)]
    flat = got[1]
    assert (flat.open, flat.high, flat.low, flat.close) == (a.close,) * 4
    assert (flat.volume, flat.trades, got[4].close, got[5].open) == (0, 0, b.close, b.close)
    assert fill([], 60_000, until=T0) == [] and fill([a, b], 60_000) == [a, *got[1:3], b]


def test_decimal_strings_are_exact_and_plain() -> None:
    """No float, no exponent, no rounding: an ETH-BTC quote volume of 5E-8 is '0.00000005',
    and a volume beyond 28 significant digits keeps every digit."""
    c = Candle(T0, 1, 1, 1, 1, 5, 5, 1, 1, 1)
    d = CandleView.parse(member(c, ETHBTC)).to_json()
    assert (d["open"], d["volume"], d["quote_volume"]) == ("0.00001", "0.005", "0.00000005")
    huge = Candle(T0, 3, 3, 3, 3, 10**40 + 1, 3 * (10**40 + 1), 1, 1, 1)
    d = CandleView.parse(member(huge, BTC)).to_json()
    assert d["volume"] == str(10**40 + 1)[:-4] + "." + str(10**40 + 1)[-4:]
    assert candle_of(member(huge, BTC), BTC) == huge
    p = Position("7-0", 3, T0, 123456)
    assert position_of(position_fields(p, BTC), BTC) == p
    assert position_of({}, BTC) == Position()
    with pytest.raises(ValueError, match="not a stored candle"):
        candle_of('{"t": 1, "open": "0.001"}', BTC)


def test_a_pair_move_and_a_failover_give_the_same_candles() -> None:
    """The stream is the truth: after a move the pair's trades come from another shard with
    other seqs (entry IDs), and a failover may write a trade again under another ID; the
    candles are those of the trades, each counted once, as if one shard had made them all."""
    trades = trade_entries(BTC, 600, seed=21)
    moved = []
    for k, (_, f) in enumerate(trades):
        shard, seq = (0, 10 + k) if k < 300 else (3, 90_000 + k)  # moved to shard 3 at 300
        moved.append((f"{seq}-0", {**f, "shard": str(shard), "seq": str(seq)}))
    again = [(f"{95_000 + k}-0", f) for k, (_, f) in enumerate(moved[450:460])]  # re-sent
    stream = moved[:460] + again + moved[460:]
    for entries in (trades, stream):
        stored: dict = {}
        got = _run(PairCandles(BTC), entries, stored, random.Random(3))
        assert [a.code for a in got] == (["repeat"] * 10 if entries is stream else [])
        for name, ms in INTERVALS.items():
            assert _stored(stored, name) == reference_candles(trades, ms), name
