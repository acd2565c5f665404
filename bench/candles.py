"""The candles worker against a real Redis: catch-up throughput, CPU per entry, and live lag.

1. **Catch-up**: ``--trades`` trades per pair (``--pairs`` pairs) are written to the trades
   streams first, then one in-process ``CandleWorker`` folds them all: entries/s (wall), the
   worker's CPU per entry (this process), and the Redis server's CPU per entry (from /proc).
2. **Live lag**: a writer process adds trades at ``--rate`` per second (``ts`` = its wall clock
   in ms, as the bridge's entries carry exchange time) while the worker follows; for every
   trade, the time from its ``ts`` to the commit that put it in the candles (p50/p99/max, ms).
   This is the worker's share of the candle lag (the bridge's own lag is ``bench/bridge.py``).

``--json`` prints one JSON object. Ports: ``--port`` (default: a free one).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from shardex.candles.store import trades_key  # noqa: E402
from shardex.candles.worker import CandlesConfig, CandleWorker  # noqa: E402
from shardex.engine import DEFAULT_MARKETS  # noqa: E402
from shardex.node.supervisor import redis_binary  # noqa: E402


def trade_entries(market, n: int, seed: int, t0: int = 1_796_601_600_000) -> list[tuple]:
    """``n`` trades-stream entries as the bridge writes them (with ``ts``): trade ids 1..n,
    prices wandering around 1000 ticks, 0-2 s apart."""
    rnd = random.Random(seed)
    out, ts, price = [], t0, 100_000
    for i in range(n):
        ts += rnd.randrange(2000)
        price = max(1, price + rnd.randrange(-50, 51))
        out.append((f"{i + 1}-0", {
            "price": market.price_str(price), "qty": market.qty_str(rnd.randrange(1, 5000)),
            "taker": f"o{2 * i}", "maker": f"o{2 * i + 1}", "taker_side": "buy",
            "trade_id": str(i + 1), "seq": str(i + 1), "shard": "0", "ts": str(ts),
        }))  # fmt: skip
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def catch_up(r: redis.Redis, url: str, pairs: list[str], trades: int, pid: int) -> dict:
    for k, symbol in enumerate(pairs):
        entries = trade_entries(DEFAULT_MARKETS[symbol], trades, seed=k)
        for i in range(0, len(entries), 5000):
            pipe = r.pipeline(transaction=False)
            for entry_id, fields in entries[i : i + 5000]:
                pipe.xadd(trades_key(symbol), fields, id=entry_id)
            pipe.execute()
    markets = {s: DEFAULT_MARKETS[s] for s in pairs}
    w = CandleWorker(CandlesConfig(redis_url=url, markets=markets, block_ms=10), r)
    total = trades * len(pairs)
    t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_of(pid)
    done = 0
    while done < total:
        done += w.step()
    wall, cpu, srv = time.perf_counter() - t0, time.process_time() - c0, cpu_of(pid) - s0
    return {"entries": total, "seconds": round(wall, 3), "entries_per_s": round(total / wall),
            "worker_cpu_us_per_entry": round(cpu / total * 1e6, 1),
            "redis_cpu_us_per_entry": round(srv / total * 1e6, 1)}  # fmt: skip


def writer(port: int, symbol: str, rate: int, seconds: float, start_id: int) -> None:
    """Add ``rate`` trades/s for ``seconds`` (one pipeline every 10 ms), ts = wall ms."""
    r = redis.Redis(port=port)
    tmpl = trade_entries(DEFAULT_MARKETS[symbol], int(rate * seconds) + 1, seed=9)
    t0 = time.monotonic()
    sent = 0
    while sent < len(tmpl):
        due = min(len(tmpl), int((time.monotonic() - t0) * rate) + 1)
        pipe = r.pipeline(transaction=False)
        for i in range(sent, due):
            fields = dict(tmpl[i][1], ts=str(int(time.time() * 1000)), trade_id=str(i + 1))
            pipe.xadd(trades_key(symbol), fields, id=f"{start_id + i}-0")
        pipe.execute()
        sent = due
        time.sleep(0.01)


def live(r: redis.Redis, url: str, port: int, rate: int, seconds: float) -> dict:
    symbol = "SOL-USD"
    markets = {symbol: DEFAULT_MARKETS[symbol]}
    w = CandleWorker(CandlesConfig(redis_url=url, markets=markets, block_ms=50), r)
    lags: list[float] = []
    commit = w.store.commit

    def timed(market, before, done):  # every trade of a committed batch: now - its ts
        ok = commit(market, before, done)
        now = time.time() * 1000
        if ok:
            lags.extend(now - ts for ts in _batch_ts(r, symbol, before.entry, done.position.entry))
        return ok

    w.store.commit = timed  # type: ignore[method-assign]
    total = int(rate * seconds) + 1
    proc = mp.get_context("spawn").Process(target=writer, args=(port, symbol, rate, seconds, 1))
    proc.start()
    while w.pair(symbol).position.trade_id < total:
        w.step()
    proc.join(30)
    lags.sort()
    pct = lambda q: round(lags[min(len(lags) - 1, int(q * len(lags)))], 1)  # noqa: E731
    return {"rate": rate, "trades": len(lags), "lag_ms_p50": pct(0.5), "lag_ms_p99": pct(0.99),
            "lag_ms_max": round(lags[-1], 1)}  # fmt: skip


def _batch_ts(r: redis.Redis, symbol: str, after: str, upto: str) -> list[int]:
    """The ts of the entries in (after, upto]: read after the commit (outside the timing)."""
    got = r.xrange(trades_key(symbol), f"({after}" if after != "0-0" else "-", upto)
    return [int(f["ts"]) for _, f in got]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=4, help="pairs of the catch-up (1..8)")
    ap.add_argument("--trades", type=int, default=50_000, help="trades per pair (catch-up)")
    ap.add_argument("--rate", type=int, default=2000, help="trades/s of the live run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the live run")
    ap.add_argument("--port", type=int, default=0, help="Redis port [a free one]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    port = args.port or free_port()
    exe = shutil.which("redis-server") or redis_binary()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", tmp]  # fmt: skip
        srv = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port, decode_responses=True)  # (as the worker's own client)
            deadline = time.monotonic() + 15
            while True:
                try:
                    r.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            url = f"redis://127.0.0.1:{port}/0"
            pairs = sorted(DEFAULT_MARKETS)[: max(1, min(8, args.pairs))]
            out = {"catch_up": catch_up(r, url, pairs, args.trades, srv.pid),
                   "live": live(r, url, port, args.rate, args.seconds),
                   "load": os.getloadavg()[0], "redis": Path(exe).name}  # fmt: skip
        finally:
            srv.terminate()
            srv.wait(10)
    if args.json:
        print(json.dumps(out))
        return
    c, lv = out["catch_up"], out["live"]
    print(f"catch-up: {c['entries']:,} entries in {c['seconds']} s = {c['entries_per_s']:,}/s; "
          f"CPU per entry: worker {c['worker_cpu_us_per_entry']} us, "
          f"{out['redis']} {c['redis_cpu_us_per_entry']} us")  # fmt: skip
    print(f"live {lv['rate']}/s: lag from ts to candle p50 {lv['lag_ms_p50']} ms, "
          f"p99 {lv['lag_ms_p99']} ms, max {lv['lag_ms_max']} ms over {lv['trades']:,} trades "
          f"(load {out['load']:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
