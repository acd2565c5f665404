"""The candles worker against a real redis-server: the candles it keeps equal candles
recomputed from the trades; killed at any moment it resumes without counting a trade twice;
a commit that never reached Redis, or a second worker, change nothing; the CLI and the SDK
read what it wrote; as ACL user ``candles`` it can do its job and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal

import pytest
import redis
from click.testing import CliRunner
from prometheus_client import REGISTRY

from shardex.candles.core import INTERVALS
from shardex.candles.store import DEFAULT_KEEP, position_key, trades_key
from shardex.candles.worker import CandlesConfig, CandleWorker
from shardex.cli import main
from shardex.client.market_data import MarketData
from shardex.engine import DEFAULT_MARKETS
from shardex.redisauth import RedisUsers
from tests.support.candles import as_decimals, reference_candles, reference_ticker, trade_entries
from tests.support.cluster import Cluster
from tests.support.redis_acl import BINARIES as ACL_BINARIES
from tests.support.redis_acl import AclRedis, refused
from tests.support.wait import wait_until

BTC, ETH = DEFAULT_MARKETS["BTC-USD"], DEFAULT_MARKETS["ETH-USD"]
PAIRS = {"BTC-USD": BTC, "ETH-USD": ETH}


def _xadd(r: redis.Redis, symbol: str, entries: list) -> None:
    pipe = r.pipeline(transaction=False)
    for entry_id, fields in entries:
        pipe.xadd(trades_key(symbol), fields, id=entry_id)
    pipe.execute()


def _applied(r: redis.Redis, symbol: str) -> int:
    return int(r.hget(position_key(symbol), "trade_id") or 0)


def _check(md: MarketData, symbol: str, entries: list) -> None:
    """Every interval's stored candles equal the recompute from ``entries`` (the applied
    trades, in stream order), as far as retention keeps them (the newest bucket's start minus
    ``DEFAULT_KEEP`` intervals)."""
    for name, ms in INTERVALS.items():
        got = [as_decimals(c.to_json()) for c in md.candles(symbol, name, limit=10_000)]
        want = reference_candles(entries, ms)
        want = [c for c in want if c["start"] > want[-1]["start"] - DEFAULT_KEEP * ms]
        assert got == want, (symbol, name)


def _worker(url: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "shardex.cli", "candles-worker", "--redis-url", url,
            "--insecure", "--metrics-port", "0", *extra]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_at_any_moment_the_worker_resumes_and_counts_every_trade_once(redis_server):
    r = redis_server.client()
    btc = trade_entries(BTC, 2400, seed=1)
    eth = trade_entries(ETH, 600, seed=2)
    _xadd(r, "BTC-USD", btc[:2000])
    _xadd(r, "ETH-USD", eth)
    md = MarketData(r=r)
    proc = _worker(redis_server.url, "--batch", "40")
    try:
        wait_until(lambda: _applied(r, "BTC-USD") >= 200, 60, "the worker started applying")
        proc.send_signal(signal.SIGKILL)  # mid-stream: between batches or inside one
        proc.wait(10)
        done = _applied(r, "BTC-USD")
        assert 200 <= done < 2000, "killed after it finished: the test proves nothing"
        _check(md, "BTC-USD", btc[:done])  # the candles are exactly those of the position
        _xadd(r, "BTC-USD", btc[2000:])
        proc = _worker(redis_server.url, "--batch", "40")
        wait_until(lambda: _applied(r, "BTC-USD") == 2400 and _applied(r, "ETH-USD") == 600,
                   90, "the restarted worker caught up")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    _check(md, "BTC-USD", btc)
    _check(md, "ETH-USD", eth)
    at = int(btc[-1][1]["ts"])
    t = md.ticker("BTC-USD", at)
    want = reference_ticker(btc, at)
    assert {k: getattr(t, k) for k in want} == want


def test_a_commit_that_never_reached_redis_and_a_second_worker_change_nothing(redis_server):
    """In-process: a worker dies after computing a batch but before its commit; another
    worker on the same Redis takes over; two workers interleave. Every trade counts once."""
    r = redis_server.client()
    btc = trade_entries(BTC, 500, seed=3)
    _xadd(r, "BTC-USD", btc)
    cfg = CandlesConfig(redis_url=redis_server.url, markets={"BTC-USD": BTC}, batch=30,
                        block_ms=10)  # fmt: skip
    doomed = CandleWorker(cfg, r)
    doomed.step()

    def crash(*_a: object) -> bool:
        raise redis.exceptions.ConnectionError("killed before the commit")

    doomed.store.commit = crash  # type: ignore[method-assign]
    with pytest.raises(redis.exceptions.ConnectionError):
        doomed.step()
    assert _applied(r, "BTC-USD") == 30
    a, b = CandleWorker(cfg, r), CandleWorker(cfg, r)
    moved = REGISTRY.get_sample_value("shardex_candles_position_moved_total",
                                      {"symbol": "BTC-USD"}) or 0  # fmt: skip
    while _applied(r, "BTC-USD") < 500:
        a.step()
        b.step()  # b's state is stale after a's commit: refused, reloaded, goes on
    _check(MarketData(r=r), "BTC-USD", btc)
    after = REGISTRY.get_sample_value("shardex_candles_position_moved_total",
                                      {"symbol": "BTC-USD"})  # fmt: skip
    assert after is not None and after > moved


def test_bad_entries_are_counted_and_the_lag_is_measured(redis_server):
    r = redis_server.client()
    good = trade_entries(ETH, 100, seed=4)
    no_ts = [(e, {k: v for k, v in f.items() if k != "ts"}) for e, f in trade_entries(
        ETH, 3, seed=5, start_seq=10_000)]  # fmt: skip
    _xadd(r, "ETH-USD", good[:50] + no_ts + [(f"{20_000 + i}-0", f) for i, (_, f) in
                                               enumerate(good[50:])])  # fmt: skip
    cfg = CandlesConfig(redis_url=redis_server.url, markets={"ETH-USD": ETH}, batch=20,
                        block_ms=10)  # fmt: skip
    w = CandleWorker(cfg, r)
    w.step()
    w.measure_lag()
    lag = REGISTRY.get_sample_value("shardex_candles_lag_entries", {"symbol": "ETH-USD"})
    assert lag == 80
    lag_ms = REGISTRY.get_sample_value("shardex_candles_lag_ms", {"symbol": "ETH-USD"})
    assert lag_ms == int(good[-1][1]["ts"]) - int(good[19][1]["ts"])
    before = REGISTRY.get_sample_value("shardex_candles_anomalies_total",
                                       {"symbol": "ETH-USD", "kind": "no_ts"})  # fmt: skip
    while _applied(r, "ETH-USD") < 100:
        w.step()
    w.measure_lag()
    assert REGISTRY.get_sample_value("shardex_candles_lag_entries", {"symbol": "ETH-USD"}) == 0
    after = REGISTRY.get_sample_value("shardex_candles_anomalies_total",
                                      {"symbol": "ETH-USD", "kind": "no_ts"})  # fmt: skip
    assert after == (before or 0) + 3
    _check(MarketData(r=r), "ETH-USD", good)


def test_the_cli_prints_what_the_worker_wrote(redis_server):
    r = redis_server.client()
    btc = trade_entries(BTC, 300, seed=6)
    _xadd(r, "BTC-USD", btc)
    w = CandleWorker(CandlesConfig(redis_url=redis_server.url, markets=PAIRS, block_ms=10), r)
    while _applied(r, "BTC-USD") < 300:
        w.step()
    url = redis_server.url
    res = CliRunner().invoke(main, ["candles", "BTC-USD", "--interval", "5m", "--limit", "3",
                                    "--json", "--redis-url", url])  # fmt: skip
    assert res.exit_code == 0, res.output
    want = reference_candles(btc, INTERVALS["5m"])[-3:]
    got = json.loads(res.output)
    assert [as_decimals({k: v for k, v in c.items() if k not in ("symbol", "interval")})
            for c in got] == want  # fmt: skip
    assert all(isinstance(c["open"], str) for c in got)
    at = int(btc[-1][1]["ts"])
    res = CliRunner().invoke(main, ["ticker", "BTC-USD", "--at", str(at), "--json",
                                    "--redis-url", url])  # fmt: skip
    assert res.exit_code == 0, res.output
    t = json.loads(res.output)
    assert Decimal(t["last"]) == Decimal(btc[-1][1]["price"])
    assert Decimal(t["volume"]) == reference_ticker(btc, at)["volume"]
    res = CliRunner().invoke(main, ["candles", "BTC-USD", "--redis-url", url])
    assert res.exit_code == 0 and "start (UTC)" in res.output
    for argv, says in ((["candles", "NOPE-USD"], "unknown symbol"),
                       (["candles", "BTC-USD", "--interval", "2m"], "Invalid value"),
                       (["candles", "BTC-USD", "--limit", "0"], "Invalid value")):  # fmt: skip
        res = CliRunner().invoke(main, [*argv, "--redis-url", url])
        assert res.exit_code != 0 and says in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("binary", ["redis-server"])
def test_as_acl_user_candles_the_worker_works_and_can_do_nothing_else(tmp_path, binary):
    users = RedisUsers.ensure(tmp_path / "keys")
    server = AclRedis(ACL_BINARIES[binary], users, tmp_path)
    try:
        _xadd(server.client("bridge"), "BTC-USD", trade_entries(BTC, 120, seed=8))
        c = server.client("candles")
        cfg = CandlesConfig(redis_url=server.url, markets=PAIRS, block_ms=10)
        w = CandleWorker(cfg, c)
        while _applied(c, "BTC-USD") < 120:
            w.step()
        md = MarketData(redis_url=f"redis://reader@127.0.0.1:{server.port}/0",
                        keys_dir=str(tmp_path / "keys"))  # fmt: skip
        assert md.candles("BTC-USD", "1d")[-1].trades > 0
        assert md.ticker("BTC-USD").last is not None
        reader = server.client("reader")
        refused(lambda: reader.zadd("shardex:candles:BTC-USD:1m", {"x": 1}))
        refused(lambda: c.xadd(trades_key("BTC-USD"), {"a": "1"}))
        refused(lambda: c.set("shardex:events:0:epoch", 9))
        refused(lambda: c.delete("shardex:candles:BTC-USD:1m"))
        refused(lambda: c.zadd("shardex:other", {"x": 1}))
    finally:
        server.stop()
    assert os.path.exists(tmp_path / "keys" / "redis.json")


def test_shardex_up_keeps_candles_of_the_trades_its_engines_make():
    """End to end: engine trades → bridge (entries with ts) → candles-worker (started by
    ``shardex up``, as user candles) → the SDK as user reader, equal to the recompute."""
    cluster = Cluster(1, redis="embedded", without=())
    try:
        with cluster.client(account="alice") as c:
            for i in range(12):
                assert c.place("BTC-USD", "sell", "0.5", f"{30000 + i}.00").ok
                assert c.place("BTC-USD", "buy", "0.5", f"{30000 + i}.00").ok
        md = MarketData(data_dir=cluster.data_dir)
        r = md.r
        wait_until(lambda: _applied(r, "BTC-USD") == 12, 90, "the worker applied 12 trades")
        entries = r.xrange(trades_key("BTC-USD"))
        assert len(entries) == 12 and all(int(f["ts"]) > 1_700_000_000_000 for _, f in entries)
        _check(md, "BTC-USD", entries)
        assert md.ticker("BTC-USD").last == Decimal("30011.00")
        port = cluster.layout.candles_metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'shardex_candles_trades_total{symbol="BTC-USD"} 12.0' in text
    finally:
        cluster.stop()


def test_unreadable_stored_candles_stall_that_pair_only_until_repaired(redis_server, monkeypatch):
    """A foreign member in a pair's candles (or a key of another type) is an ALERT and that
    pair waits, writing nothing over it; the other pairs go on; once repaired it resumes."""
    import shardex.candles.worker as worker_mod

    r = redis_server.client()
    btc, eth = trade_entries(BTC, 200, seed=12), trade_entries(ETH, 200, seed=13)
    _xadd(r, "BTC-USD", btc[:100])
    _xadd(r, "ETH-USD", eth[:100])
    w = CandleWorker(CandlesConfig(redis_url=redis_server.url, markets=PAIRS, block_ms=10), r)
    while _applied(r, "BTC-USD") < 100 or _applied(r, "ETH-USD") < 100:
        w.step()
    newest, start = r.zrevrange("shardex:candles:BTC-USD:1h", 0, 0, withscores=True)[0]
    r.zrem("shardex:candles:BTC-USD:1h", newest)  # the newest 1h candle, unreadable
    r.zadd("shardex:candles:BTC-USD:1h", {'{"t": "not a candle"}': start})
    r.set("shardex:candles:ETH-USD:pos", "x")  # WRONGTYPE for the worker's HGETALL
    _xadd(r, "BTC-USD", btc[100:])
    _xadd(r, "ETH-USD", eth[100:])
    w2 = CandleWorker(CandlesConfig(redis_url=redis_server.url, markets=PAIRS, block_ms=10), r)
    for _ in range(5):
        w2.step()
    assert set(w2.stalled) == {"BTC-USD", "ETH-USD"} and _applied(r, "BTC-USD") == 100
    assert REGISTRY.get_sample_value("shardex_candles_stalled", {"symbol": "BTC-USD"}) == 1
    r.zrem("shardex:candles:BTC-USD:1h", '{"t": "not a candle"}')  # repaired by hand
    r.zadd("shardex:candles:BTC-USD:1h", {newest: start})
    monkeypatch.setattr(worker_mod, "STALL_RETRY", 0.0)
    wait_until(lambda: w2.step() >= 0 and _applied(r, "BTC-USD") == 200, 30, "BTC resumed")
    assert "ETH-USD" in w2.stalled
    _check(MarketData(r=r), "BTC-USD", btc)
    r.delete("shardex:candles:ETH-USD:pos")  # candles without a position: still refused
    w2.step()
    assert "ETH-USD" in w2.stalled and _applied(r, "ETH-USD") == 0
    r.delete(*[f"shardex:candles:ETH-USD:{name}" for name in INTERVALS])  # all its keys
    wait_until(lambda: w2.step() >= 0 and _applied(r, "ETH-USD") == 200, 30, "ETH rebuilt")
    _check(MarketData(r=r), "ETH-USD", eth)
    assert REGISTRY.get_sample_value("shardex_candles_stalled", {"symbol": "BTC-USD"}) == 0
