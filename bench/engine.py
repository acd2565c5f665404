"""Engine throughput and per-command latency on a seeded realistic stream (or --input FILE).

Everything is generated/decoded first; only ``Engine.apply`` is timed. Two passes on fresh
engines: one untimed per command (throughput), one timing each command (latency percentiles,
recorded in an HDR histogram) so that the clock reads do not pollute the throughput figure.

``--against DIR`` compares this engine with the one of another checkout (e.g. a
``git worktree add /tmp/base <commit>``) in one process, in lock step: both apply the same
stream in alternating slices of 10k commands (who goes first alternates too), each keeping its
own state; the figure is the median over slices of (this time / that time). On a shared,
noisy machine that is far steadier than comparing separate runs, since both sides see the same
load at nearly the same moment.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hdrh.histogram import HdrHistogram

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shardex.config import load_markets  # noqa: E402
from shardex.engine import Engine, implementation  # noqa: E402
from shardex.engine.codes import (  # noqa: E402
    BUY,
    EV_TRADE,  # noqa: E402
    EV_TRIGGERED,
    GTC,
    IOC,
    LIMIT,
    OP_NEW,
    OP_TIME,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
)
from shardex.metrics import ShardStats  # noqa: E402
from shardex.tools.workload import Workload  # noqa: E402
from shardex.wire.protocol import command_from_json_line  # noqa: E402


def build(args, markets):
    if args.input:
        with open(args.input, "rb") as fh:
            cmds = [command_from_json_line(line, markets) for line in fh if line.strip()]
        return [], cmds
    wl = Workload(symbols=args.symbols.split(","), seed=args.seed, markets=markets)
    warm = wl.warmup(args.depth)
    cmds = wl.take(args.commands)
    cmds = with_stops(cmds, args.stops, args.seed) if args.stops else cmds
    return warm, with_time(cmds, args.time_every) if args.time_every else cmds


def with_time(cmds: list, every: int) -> list:
    """The stream with exchange time as a shard journals it: an ``(OP_TIME, ts)`` at the head
    of every ``every`` commands (one per journaled batch: ~1 at a low rate, up to the batch
    size under load), the time 1 ms later each time."""
    out: list = []
    ts = 1_796_000_000_000
    for i, cmd in enumerate(cmds):
        if i % every == 0:
            ts += 1
            out.append((OP_TIME, ts))
        out.append(cmd)
    return out


def with_stops(cmds: list, share: float, seed: int) -> list:
    """The stream with ``share`` of its GTC limit news turned into stop / take-profit orders of
    the same id, side and qty, triggers 1..5 ticks from the order's price on the side where
    they wait (a quarter of each type; the market kinds ioc). The workload's later cancels and
    amends of those ids then meet pending (or triggered) orders, as a real stream's would."""
    rng = random.Random(seed)
    out = []
    for cmd in cmds:
        if cmd[0] != OP_NEW or cmd[5] != LIMIT or cmd[8] != GTC or rng.random() >= share:
            out.append(cmd)
            continue
        otype = rng.choice((STOP_MARKET, STOP_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT))
        side, price = cmd[4], cmd[6]
        up = (otype in (STOP_MARKET, STOP_LIMIT)) == (side == BUY)
        trigger = price + rng.randrange(1, 6) * (1 if up else -1)
        market = otype in (STOP_MARKET, TAKE_PROFIT)
        head = (*cmd[:5], otype, None if market else price, cmd[7], IOC if market else GTC)
        out.append((*head, False, cmd[10], None, {"trigger": max(1, trigger)}))
    return out


def timed(markets, warm, cmds, with_metrics: bool):
    """Apply ``cmds`` in messages of 100 as a shard does; with metrics, also do the shard's
    per-message accounting (engine time histogram, commands per message; the event counters
    live in the engine's books and are read at scrape time, so they are in both runs)."""
    engine = Engine(markets)
    engine.apply_many(warm)
    out: list = []
    apply = engine.apply
    stats = ShardStats(0)
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    t = clock()
    for i in range(0, len(cmds), 100):
        chunk = cmds[i : i + 100]
        t0 = clock() if with_metrics else 0.0
        for c in chunk:
            apply(c, out)
        if with_metrics:
            n = len(chunk)
            stats.received += n
            stats.engine_time.add((clock() - t0) / n, n)
            stats.cmds_per_msg.add(n)
    dt = clock() - t
    gc.enable()
    trades = sum(1 for e in out if e[0] == EV_TRADE)
    return dt, trades, engine.resting(), stats


def other_engine(checkout: str):
    """The ``shardex.engine`` package of another checkout, imported under a private name (a
    copy whose absolute imports are rewritten), so that both engines live in one process."""
    src = Path(checkout) / "shardex" / "engine"
    if not (src / "engine.py").exists():
        raise SystemExit(f"--against: no shardex/engine/engine.py under {checkout}")
    root = Path(tempfile.mkdtemp(prefix="shardex-ab-"))
    atexit.register(shutil.rmtree, root, True)  # (the copy outlived every run before)
    dst = root / "shardex_against_engine"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for f in dst.glob("*.py"):
        f.write_text(f.read_text().replace("shardex.engine", dst.name))
    sys.path.insert(0, str(root))
    # the copy is always the interpreted engine: a compiled build's modules are named
    # shardex.engine.*, and could not be imported under the copy's name anyway
    mode = os.environ.get("SHARDEX_ENGINE")
    os.environ["SHARDEX_ENGINE"] = "interpreted"
    try:
        return importlib.import_module(dst.name)
    finally:
        if mode is None:
            del os.environ["SHARDEX_ENGINE"]
        else:
            os.environ["SHARDEX_ENGINE"] = mode


def against(args, markets, warm, cmds) -> dict:
    """Lock-step A/B against ``args.against`` (see the module docstring)."""
    other = other_engine(args.against)
    # the same markets, as the other checkout's own Market objects
    other_markets = {
        s: other.Market(s, m.tick, m.lot, m.max_price, m.max_qty) for s, m in markets.items()
    }
    slice_ = 10_000
    ratios: list[float] = []
    totals = [0.0, 0.0]
    clock = time.perf_counter
    for rep in range(args.repeat):
        this, that = Engine(markets), other.Engine(other_markets)
        this.apply_many(warm)
        that.apply_many(warm)
        engines = (this, that)
        out: list = []
        gc.collect()
        gc.disable()
        for i in range(0, len(cmds), slice_):
            chunk = cmds[i : i + slice_]
            dt = [0.0, 0.0]
            for k in (0, 1) if (i // slice_ + rep) % 2 == 0 else (1, 0):
                apply = engines[k].apply
                t = clock()
                for c in chunk:
                    apply(c, out)
                dt[k] = clock() - t
                out.clear()
            ratios.append(dt[0] / dt[1])
            totals[0] += dt[0]
            totals[1] += dt[1]
        gc.enable()
    deciles = statistics.quantiles(ratios, n=10)
    return {
        "against": args.against,
        "commands": len(cmds),
        "slices": len(ratios),
        "time_ratio_median": round(statistics.median(ratios), 3),
        "time_ratio_p10": round(deciles[0], 3),
        "time_ratio_p90": round(deciles[-1], 3),
        "time_ratio_total": round(totals[0] / totals[1], 3),
    }


def run(args) -> dict:
    markets = load_markets(args.markets)
    t0 = time.perf_counter()
    warm, cmds = build(args, markets)
    if not args.json:
        print(
            f"generated {len(warm)} warm-up + {len(cmds)} commands "
            f"in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
    if args.against:
        return against(args, markets, warm, cmds)

    best = None
    for _ in range(args.repeat):
        dt, trades, resting, _ = timed(markets, warm, cmds, with_metrics=False)
        best = dt if best is None else min(best, dt)
    best_m = None
    if args.metrics:
        for _ in range(args.repeat):
            dt, _, _, _ = timed(markets, warm, cmds, with_metrics=True)
            best_m = dt if best_m is None else min(best_m, dt)

    engine = Engine(markets)
    engine.apply_many(warm)
    hist = HdrHistogram(1, 60_000_000_000, 3)
    out = []
    apply = engine.apply
    clock = time.perf_counter_ns
    gc.disable()
    for c in cmds:
        t = clock()
        apply(c, out)
        hist.record_value(max(1, clock() - t))
    gc.enable()
    return {
        "commands": len(cmds),
        "seconds": round(best, 4),
        "commands_per_s": round(len(cmds) / best),
        "trades": trades,
        "triggered": sum(1 for e in out if e[0] == EV_TRIGGERED),
        "events": len(out),
        "resting_after": resting,
        "p50_us": round(hist.get_value_at_percentile(50) / 1000, 2),
        "p99_us": round(hist.get_value_at_percentile(99) / 1000, 2),
        "commands_per_s_with_metrics": round(len(cmds) / best_m) if best_m else None,
        "metrics_overhead_pct": round(100 * (best_m / best - 1), 1) if best_m else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--commands", type=int, default=1_000_000, help="timed commands (default 1M)")
    p.add_argument("--depth", type=int, default=5000, help="warm-up resting orders per symbol")
    p.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD,XRP-USD")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="throughput runs; the best is kept")
    p.add_argument("--input", help="JSON-lines command file instead of the generated stream")
    p.add_argument(
        "--stops",
        type=float,
        default=0.0,
        help="share of the generated GTC limit orders sent as stop / take-profit orders "
        "(e.g. 0.1)",
    )
    p.add_argument(
        "--time-every",
        type=int,
        default=0,
        help="an exchange-time command (OP_TIME) at the head of every N commands, as a shard "
        "journals one per batch (0: none)",
    )
    p.add_argument("--markets", help="markets TOML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="skip the run with the shard's per-batch metrics accounting",
    )
    p.add_argument(
        "--against",
        metavar="DIR",
        help="lock-step A/B with the engine of another checkout (time ratio this/that)",
    )
    p.add_argument(
        "--vs-interpreted",
        action="store_true",
        help="lock-step A/B of the engine that runs (compiled if built) against this "
        "checkout's interpreted engine (--against this checkout)",
    )
    args = p.parse_args()
    if args.vs_interpreted:
        args.against = str(Path(__file__).resolve().parent.parent)
    print(f"engine implementation: {implementation()}", file=sys.stderr)
    r = run(args)
    r["implementation"] = implementation()
    if args.json:
        print(json.dumps(r))
    elif args.against:
        print(
            f"this/that time per slice: median {r['time_ratio_median']:.3f}  "
            f"p10 {r['time_ratio_p10']:.3f}  p90 {r['time_ratio_p90']:.3f}  "
            f"total {r['time_ratio_total']:.3f}  ({r['slices']} slices of 10k, {args.against})"
        )
    else:
        print(f"commands      {r['commands']:>12,}")
        print(f"seconds       {r['seconds']:>12.3f}")
        print(f"commands/s    {r['commands_per_s']:>12,}")
        print(f"trades        {r['trades']:>12,}")
        print(f"events        {r['events']:>12,}")
        print(f"resting after {r['resting_after']:>12,}")
        print(f"p50 latency   {r['p50_us']:>10.2f}us")
        print(f"p99 latency   {r['p99_us']:>10.2f}us")
        if r["commands_per_s_with_metrics"]:
            print(
                f"with metrics  {r['commands_per_s_with_metrics']:>12,} commands/s "
                f"({r['metrics_overhead_pct']:+.1f}%)"
            )


if __name__ == "__main__":
    main()
