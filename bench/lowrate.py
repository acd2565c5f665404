"""CPU per order of each process of the default cluster at a low rate, and idle, A/B in one run.

``python bench/lowrate.py REF`` starts ``shardex up`` (secure, 1 engine shard, 1 account shard,
journal on, no bridge) of a worktree of REF and of this tree side by side, then, in interleaved
rounds (REF, current, REF, current…):

1. **idle**: CPU seconds per second of each process with no load (what the loops spend waking
   up for nothing: poll timeouts, HELLOs, SYNCs, heartbeats);
2. **open loop at ``--rate``** (default 1k orders/s, one order per frame, through the router and
   the account shard: ``shardex loadgen --rate R --batch 1``): CPU µs per acked order of each
   process (router, account shard, engine shard), from /proc (``proccpu``).

It prints min/median/max per side and the per-round ratio current/REF. CPU per order is the
measure on a shared box (latency is not); ``uptime`` is printed with it. Ports from
``SHARDEX_BENCH_PORTS`` when set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from compare import Worktree, check_imports, current_label  # noqa: E402
from proccpu import per_role, snapshot  # noqa: E402
from scaling import TreeCluster, loadgen, say  # noqa: E402

ROLES = ("router", "accounts", "engine")


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds of idle and open-loop CPU on both sides; metric → values per side."""
    res: dict[str, dict[str, list[float]]] = {"ref": {}, "current": {}}
    with Worktree(args.ref) as wt:
        sides = {"ref": wt.path, "current": ROOT}
        for tree in sides.values():
            check_imports(tree)
        say(f"A = {args.ref} ({wt.short}), B = {current_label()}; load {os.getloadavg()}")
        cs: dict[str, TreeCluster] = {}
        try:
            for side, tree in sides.items():
                cs[side] = TreeCluster(tree, 1, secure=True, extra=["--accounts", "1"]).start()
            for side, c in cs.items():  # warm-up: funding, first orders, bytecode
                loadgen(sides[side], c.endpoints, c.key, procs=1, batch=1, concurrency=1,
                        window=1, seconds=2, symbols=2, rate=args.rate)  # fmt: skip
            for k in range(args.rounds):
                for side, c in cs.items():
                    assert c.proc is not None
                    before = snapshot(c.proc.pid)
                    time.sleep(args.idle)
                    for role, sec in per_role(before, snapshot(c.proc.pid)).items():
                        res[side].setdefault(f"idle cpu ms/s {role}", []).append(
                            sec * 1e3 / args.idle
                        )
                    before = snapshot(c.proc.pid)
                    r = loadgen(sides[side], c.endpoints, c.key, procs=1, batch=1,
                                concurrency=1, window=1, seconds=args.seconds, symbols=2,
                                rate=args.rate)  # fmt: skip
                    acked = r["acked_per_s"] * args.seconds
                    for role, sec in per_role(before, snapshot(c.proc.pid)).items():
                        res[side].setdefault(f"cpu us/order {role}", []).append(
                            sec * 1e6 / max(acked, 1)
                        )
                    say(f"  round {k + 1} {side:<7} acked {acked:,.0f} errors {r['errors']} "
                        f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
        finally:
            for c in cs.values():
                c.stop()
    return res


def report(res: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} rate {args.rate:,.0f}/s, {args.rounds} rounds "
          f"x {args.seconds} s; load average now {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| metric (min / median / max) | A: ref | B: current | B/A per round (median) |")
    print("| --- | --- | --- | --- |")
    for m in sorted(res["current"]):
        if not any(r in m for r in ROLES):
            continue
        a, b = res["ref"].get(m, []), res["current"][m]

        def fmt(v: list[float]) -> str:
            return " / ".join(f"{x:,.1f}" for x in (min(v), statistics.median(v), max(v)))

        ratio = [y / x for x, y in zip(a, b, strict=False) if x]
        med = f"{statistics.median(ratio):.2f}" if ratio else "-"
        print(f"| {m} | {fmt(a) if a else '-'} | {fmt(b)} | {med} |")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("ref", help="the commit to compare with")
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop orders/s")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of load per round")
    p.add_argument("--idle", type=float, default=4.0, help="seconds of idle per round")
    args = p.parse_args()
    report(measure(args), args)


if __name__ == "__main__":
    main()
