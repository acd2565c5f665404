"""Engine throughput and per-command latency on a seeded realistic stream (or --input FILE).

Everything is generated/decoded first; only ``Engine.apply`` is timed. Two passes on fresh
engines: one untimed per command (throughput), one timing each command (latency percentiles,
recorded in an HDR histogram) so that the clock reads do not pollute the throughput figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from hdrh.histogram import HdrHistogram

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shardex.engine import Engine, load_markets  # noqa: E402
from shardex.engine.codes import EV_TRADE  # noqa: E402
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
    return warm, wl.take(args.commands)


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
    p.add_argument("--markets", help="markets TOML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="skip the run with the shard's per-batch metrics accounting",
    )
    args = p.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps(r))
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
