"""Journal cost and recovery speed.

1. One shard under a batched closed-loop client with ``--fsync none``, ``batch`` and ``always``:
   acked orders/s (real `shardex up` cluster, journal on the local disk).
2. Recovery: journal N commands of the realistic engine stream (default 1M), then time
   ``Journal.recover()`` (no snapshot, so every command is replayed), commands/s.

Prints a table; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import SYMBOLS_2, closed_loop, start_cluster, stop_cluster  # noqa: E402

from shardex.engine import DEFAULT_MARKETS, Engine  # noqa: E402
from shardex.journal import Journal  # noqa: E402
from shardex.tools.workload import Workload  # noqa: E402


def throughput(policy: str, orders: int, clients: int, batch: int, window: int) -> dict:
    data = tempfile.mkdtemp(prefix="shardex-bench-")
    try:
        proc, layout = start_cluster(1, True, "--data-dir", data, "--fsync", policy)
        try:
            r = closed_loop(layout, False, SYMBOLS_2, orders, clients, batch, window)
        finally:
            stop_cluster(proc)
        r["journal_bytes"] = sum(f.stat().st_size for f in Path(data).rglob("journal-*.log"))
        return r
    finally:
        shutil.rmtree(data, ignore_errors=True)


def recovery(n: int) -> dict:
    d = tempfile.mkdtemp(prefix="shardex-recover-")
    try:
        wl = Workload(seed=11)
        cmds = wl.warmup(5000) + wl.take(n)
        j = Journal(d, DEFAULT_MARKETS, fsync="none")
        engine = Engine(DEFAULT_MARKETS)
        out: list = []
        for i, cmd in enumerate(cmds):
            seq = engine.seq
            engine.apply(cmd, out)
            j.add(seq, cmd)
            if i % 100 == 99:
                j.commit()
                out.clear()
        j.commit()
        j.close()
        size = sum(f.stat().st_size for f in Path(d).iterdir())
        t = time.perf_counter()
        rec = Journal(d, DEFAULT_MARKETS).recover()
        dt = time.perf_counter() - t
        assert rec.engine.seq == engine.seq and rec.engine.resting() == engine.resting()
        return {
            "commands": len(cmds),
            "seconds": round(dt, 3),
            "commands_per_s": round(len(cmds) / dt),
            "journal_bytes": size,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=200_000)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--recover", type=int, default=1_000_000, help="commands to recover")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = {}
    for policy in ("none", "batch", "always"):
        rows[policy] = throughput(policy, args.orders, args.clients, args.batch, args.window)
        if not args.json:
            print(
                f"fsync {policy:<6} {rows[policy]['acked_per_s']:>10,} acked orders/s",
                file=sys.stderr,
                flush=True,
            )
    rec = recovery(args.recover)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}",
        "throughput": rows,
        "recovery": rec,
        "batch_cost_pct": round(
            100 * (1 - rows["batch"]["acked_per_s"] / rows["none"]["acked_per_s"]), 1
        ),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"\n{report['date']}  {report['machine']}")
    print(f"{'fsync':<8} {'acked orders/s':>15} {'vs none':>8}")
    for policy, r in rows.items():
        rel = r["acked_per_s"] / rows["none"]["acked_per_s"]
        print(f"{policy:<8} {r['acked_per_s']:>15,} {rel:>7.0%}")
    print(
        f"recovery: {rec['commands']:,} commands ({rec['journal_bytes'] / 1e6:.0f} MB) in "
        f"{rec['seconds']:.2f}s = {rec['commands_per_s']:,} commands/s"
    )


if __name__ == "__main__":
    main()
