"""Run every bench and print README's performance table (markdown, machine and date on top).

Runs ``bench/engine.py``, ``cluster.py`` (1 and 2 shards, router and direct), ``journal.py``,
``bridge.py`` and ``loadgen.py``, each with ``--json``, in that order. ``--quick`` uses smaller
sizes (a smoke run, not numbers to publish).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def bench(name: str, *args: str) -> dict:
    print(f"running {name} {' '.join(args)} ...", file=sys.stderr, flush=True)
    t = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(BENCH / name), "--json", *args],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr}")
    print(f"  done in {time.monotonic() - t:.0f}s", file=sys.stderr, flush=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    q = args.quick
    engine = bench("engine.py", "--commands", "200000" if q else "1000000")
    cluster = bench(
        "cluster.py", "--orders", "50000" if q else "200000", "--duration", "1" if q else "3"
    )
    journal = bench(
        "journal.py",
        "--orders",
        "50000" if q else "200000",
        "--recover",
        "100000" if q else "1000000",
    )
    bridge = bench("bridge.py", "--rates", "50000,100000", "--seconds", "2" if q else "10")
    loadgen = bench("loadgen.py", "--duration", "2" if q else "5")

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
        + (" — QUICK RUN, do not publish" if q else ""),
        "",
        "| what | result |",
        "| --- | --- |",
        f"| engine, mixed stream | {engine['commands_per_s']:,} commands/s, p50 "
        f"{engine['p50_us']} µs, p99 {engine['p99_us']} µs "
        f"(with shard metrics: {engine['commands_per_s_with_metrics']:,}/s, "
        f"{engine['metrics_overhead_pct']:+}%) |",
    ]
    for r in cluster["results"]:
        lat = (
            ""
            if r["p99_us"] is None
            else (f", p50 {r['p50_us']:,} µs, p99 {r['p99_us']:,} µs, p99.9 {r['p999_us']:,} µs")
        )
        lines.append(
            f"| cluster {r['shards']} shard(s), {r['mode']}, {r['load']} | "
            f"{r['acked_per_s']:,} acked orders/s{lat} |"
        )
    for policy, r in journal["throughput"].items():
        lines.append(
            f"| journal fsync={policy}, 1 shard, batched | {r['acked_per_s']:,} acked orders/s |"
        )
    rec = journal["recovery"]
    lines.append(
        f"| recovery of {rec['commands']:,} journaled commands | "
        f"{rec['seconds']} s = {rec['commands_per_s']:,} commands/s |"
    )
    for r in bridge["results"]:
        lines.append(
            f"| bridge, {r['offered_per_s']:,} trades/s offered | "
            f"{r['trades_per_s']:,} trades/s into Redis, lag at end "
            f"{r['lag_at_publish_end']:,}, exact: "
            f"{r['written'] == r['published'] == r['events_entries']} |"
        )
    if bridge.get("redis_benchmark_xadd_per_s"):
        lines.append(
            f"| redis-benchmark -P 100 XADD | {bridge['redis_benchmark_xadd_per_s']:,} XADD/s |"
        )
    for r in loadgen["results"]:
        lines.append(
            f"| loadgen vs no-op echo, {r['procs']} proc(s) | {r['orders_per_s']:,} orders/s |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
