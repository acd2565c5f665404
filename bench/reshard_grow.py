"""Growing a loaded cluster 1 -> 2 -> 4 shards live (``shardex reshard``), measured.

Starts ``shardex up --shards 4 --accounts 0 --insecure`` on ``--base-port`` with the bridge
(embedded Redis) over 64 pairs (the built-in 8 and 56 synthetic ones, ``bench/pairs.py``), puts
every pair on shard 0 (``reshard --shards 1``), rests ``--orders`` orders on one heavy pair (one
that moves at both steps), then runs an open-loop load (``--rate`` crossing orders/s over the 64
pairs, each sent on its schedule whether or not the earlier ones were answered) and a prober on
the heavy pair, and in the same run: ``--quiet`` seconds without moves, ``reshard --shards 2``,
``--quiet`` seconds, ``reshard --shards 4``, ``--quiet`` seconds. Prints:

* the heavy pair's pause per move (first ``moving`` to the first answer of its new shard),
  and every moved pair's pause as the load saw it (coarser: its orders come every 64/rate s);
* the other pairs' latency p50/p99 during the reshards vs the quiet windows;
* lost / duplicated: holes and copies in every shard's events stream and every pair's trades
  stream in Redis (the bridge), trades the load was told of that are not in the streams, and
  the heavy pair's resting orders after the moves.

    python bench/reshard_grow.py --orders 10000 --rate 400 --base-port 62500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pairs import all_symbols, write_markets  # noqa: E402
from bench.reshard import pct, stop_up, wait_up  # noqa: E402
from shardex.client import AsyncClient, Client, ShardexError  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.placement import default_owner  # noqa: E402
from shardex.tools.reshard import reshard  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 64


class Load:
    """Open-loop orders over the pairs, and a prober on the heavy pair."""

    def __init__(self, symbols: list[str], heavy: str, rate: float) -> None:
        self.symbols, self.heavy, self.rate = symbols, heavy, rate
        self.done: list[tuple[float, float, str, str]] = []  # (sent, seconds, symbol, code)
        self.trades: dict[str, set[int]] = {s: set() for s in symbols}
        self.probes: list[tuple[float, str]] = []  # (time, code) when the heavy pair's changed
        self.stop = False

    async def one(self, c: AsyncClient, sent: float, k: int) -> None:
        sym = self.symbols[k % len(self.symbols)]
        side = "buy" if (k // len(self.symbols)) % 2 else "sell"
        try:
            r = await c.place(sym, side, "1", "50", id=f"L{k}", account=f"a{k % 5}")
            code = "ok" if r.ok else str(r.code)
            for e in r.events:
                if e.get("ev") == "trade":
                    self.trades[sym].add(int(e["trade_id"]))
        except ShardexError as exc:
            code = f"error:{exc}"
        self.done.append((sent, time.perf_counter() - sent, sym, code))

    async def orders(self, c: AsyncClient) -> None:
        t0, k, tasks = time.perf_counter(), 0, set()
        while not self.stop:
            due = t0 + k / self.rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.ensure_future(self.one(c, due, k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        await asyncio.gather(*tasks)

    async def prober(self, c: AsyncClient) -> None:
        last = None
        while not self.stop:
            try:
                code = str((await c.cancel(self.heavy, "no-such-order", account="probe")).code)
            except ShardexError as exc:
                code = f"error:{exc}"
            if code != last:
                self.probes.append((time.perf_counter(), code))
                last = code

    def pauses(self, answers: list[tuple[float, str]]) -> list[float]:
        """Seconds from each first ``moving`` to the next answer that is not ``moving``."""
        out, start = [], None
        for t, code in answers:
            if code == "moving" and start is None:
                start = t
            elif code != "moving" and start is not None:
                out.append(t - start)
                start = None
        return out


def start(base: int, data: Path, markets: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "shardex.cli", "up", "--shards", "4", "--accounts", "0",
             "--insecure", "--no-pin", "--base-port", str(base), "--data-dir", str(data),
             "--markets", str(markets)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )  # fmt: skip


def heavy_pair(symbols: list[str]) -> str:
    """A pair that moves at both steps: to shard 1 at 1 -> 2, then to 2 or 3 at 2 -> 4."""
    return next(s for s in symbols if default_owner(s, 2) == 1 and default_owner(s, 4) >= 2)


async def rest(c: AsyncClient, symbol: str, n: int) -> None:
    cmds = [c.order(symbol, "buy", "1", str(1 + k % 40), id=f"r{k}", account=f"a{k % 7}")
            for k in range(n)]  # fmt: skip
    for r in await c.submit_many(cmds, batch=200, window=4):
        if not r.ok:
            raise SystemExit(f"resting order refused: {r}")


async def scenario(endpoint: str, symbols: list[str], heavy: str, a: argparse.Namespace,
                   log: list[str]) -> tuple[Load, dict[str, tuple[float, float]]]:  # fmt: skip
    """The run: the windows' (start, end) by name and the load's record."""
    windows: dict[str, tuple[float, float]] = {}
    async with AsyncClient(endpoint, timeout=30.0, retry=False) as admin:
        await reshard(admin, 1, say=log.append)
        await rest(admin, heavy, a.orders)
        load = Load(symbols, heavy, a.rate)
        log.append("-- load on")
        async with AsyncClient(endpoint, timeout=30.0, retry=False) as c, \
                AsyncClient(endpoint, timeout=30.0, retry=False) as p:  # fmt: skip
            tasks = [asyncio.ensure_future(load.orders(c)), asyncio.ensure_future(load.prober(p))]
            await asyncio.sleep(2)  # (warm-up)
            for name, n in (("quiet-1", None), ("grow 1->2", 2), ("quiet-2", None),
                            ("grow 2->4", 4), ("quiet-4", None)):  # fmt: skip
                t0 = time.perf_counter()
                if n is None:
                    await asyncio.sleep(a.quiet)
                else:
                    await reshard(admin, n, say=log.append)
                windows[name] = (t0, time.perf_counter())
            load.stop = True
            await asyncio.gather(*tasks)
    return load, windows


def streams_check(r, endpoint: str, load: Load) -> dict[str, int]:
    """Holes and copies in the Redis streams, and trades the load saw that are missing."""
    deadline = time.monotonic() + 120
    while True:
        with Client(endpoint, timeout=10.0) as c:
            status = {s["shard"]: s.get("seq") for s in c.status()}
        if all(r.xlen(f"shardex:events:{i}") == seq for i, seq in status.items()):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the bridge never caught up with {status}")
        time.sleep(0.5)
    out = {"event_holes": 0, "event_copies": 0, "trade_gaps": 0, "trade_copies": 0,
           "trades_missing": 0}  # fmt: skip
    for i, seq in status.items():
        ids = [int(e[0].split("-")[0]) for e in r.xrange(f"shardex:events:{i}")]
        out["event_copies"] += len(ids) - len(set(ids))
        out["event_holes"] += seq - len(set(ids))
    for sym, seen in load.trades.items():
        tids = [int(f["trade_id"]) for _, f in r.xrange(f"shardex:trades:{sym}")]
        out["trade_copies"] += len(tids) - len(set(tids))
        out["trade_gaps"] += (max(tids) - len(set(tids))) if tids else 0
        out["trades_missing"] += len(seen - set(tids))
    return out


def report(load: Load, windows: dict[str, tuple[float, float]], log: list[str], a) -> None:
    heavy = [p * 1000 for p in load.pauses(load.probes)]
    print(f"heavy pair {load.heavy}: {a.orders} resting orders, pause ms per move: "
          + ", ".join(f"{p:.0f}" for p in heavy))  # fmt: skip
    by_pair: dict[str, list[tuple[float, str]]] = {}
    for sent, sec, sym, code in sorted(load.done):
        by_pair.setdefault(sym, []).append((sent + sec, code))
    moved = [p * 1000 for sym, ans in by_pair.items() for p in load.pauses(ans)]
    print(f"moved pairs' pause as the load saw it (ms, {len(moved)} moves): p50 "
          f"{pct(moved, 0.5):.0f}  p99 {pct(moved, 0.99):.0f}  max {max(moved, default=0):.0f}")
    grow = "\n".join(log[log.index("-- load on") + 1:])
    adopt = sorted(int(m) for m in re.findall(r"adopted by shard .*?; (\d+) ms\)", grow))
    print(f"mover's adoption step ms under load ({len(adopt)}): p50 {pct(adopt, 0.5)}  "
          f"p99 {pct(adopt, 0.99)}  max {max(adopt, default=0)}")
    for name, (t0, t1) in windows.items():
        lat = [sec * 1000 for sent, sec, sym, code in load.done
               if t0 <= sent < t1 and sym != load.heavy and code == "ok"]  # fmt: skip
        refused = sum(1 for sent, _, _, code in load.done if t0 <= sent < t1 and code != "ok")
        print(f"{name:10s} {t1 - t0:5.1f} s: other pairs' latency ms p50 {pct(lat, 0.5):.1f} "
              f"p99 {pct(lat, 0.99):.1f} ({len(lat)} orders; {refused} answered moving/other)")
    codes: dict[str, int] = {}
    for *_, code in load.done:
        codes[code] = codes.get(code, 0) + 1
    print(f"answers: {codes}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=10_000, help="resting orders on the heavy pair")
    ap.add_argument("--rate", type=float, default=400.0, help="open-loop orders/s over 64 pairs")
    ap.add_argument("--quiet", type=float, default=8.0, help="seconds of each no-move window")
    ap.add_argument("--base-port", type=int, default=62500)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shardex-grow-"))
    markets = write_markets(tmp / "markets.toml", PAIRS)
    symbols = all_symbols(PAIRS)
    heavy = heavy_pair(symbols)
    layout = Layout("127.0.0.1", a.base_port, 4)
    proc = start(a.base_port, tmp / "data", markets, tmp / "up.log")
    log: list[str] = []
    try:
        wait_up(layout.frontend)
        load, windows = asyncio.run(scenario(layout.frontend, symbols, heavy, a, log))
        print(f"{PAIRS} pairs, {a.rate:.0f} orders/s open loop, 4 shard processes "
              f"({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average "
              f"{os.getloadavg()[0]:.1f})")  # fmt: skip
        report(load, windows, log, a)
        r = redis.Redis.from_url(layout.redis_url, decode_responses=True)
        with Client(layout.frontend, timeout=10.0) as c:  # (the resting ones: prices 1..40)
            bids = c.book(heavy, depth=100)["bids"]
        kept = sum(n for price, _, n in bids if price <= 40)
        counts = streams_check(r, layout.frontend, load)
        counts["heavy_resting_lost"] = a.orders - kept
        print(f"lost / duplicated: {counts}")
        if os.environ.get("VERBOSE"):
            print("\n".join(log))
    finally:
        stop_up(proc, 30)
        if os.environ.get("KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
