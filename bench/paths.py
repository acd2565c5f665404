"""The paths bench: CPU per order of every process on each path an order can take, for this tree
and a reference commit (default 698b19a), in interleaved rounds.

``python bench/paths.py [REF]`` checks REF out into a temporary git worktree (``compare.py``'s
machinery: each side's processes import their own tree) and, for every **configuration** (a
``shardex up`` of 1 engine shard, journal on, pinned, no bridge unless replicated):

- ``default``: secure + the account tier (``--accounts 1``), what ``shardex up`` gives;
- ``secure``: secure, ``--accounts 0``;  ``insecure``: ``--insecure --accounts 0``;
- ``ephemeral``: the default without a journal (``--ephemeral``: the fsync row's reference);
- ``local`` / ``replicated`` / ``both``: secure, ``--accounts 0`` (``local`` refuses the
  account tier), ``--replicas 2`` (a Redis lease and a hot standby per shard, the bridge on, as
  ``--replicas 2`` needs) and that ``--durability`` (``docs/durability.md``); a tree without
  the option runs its only mode (``both``),

and every **load**:

- ``closed-1`` / ``closed-100``: closed loop (``shardex loadgen``, ``--procs`` × ``--connections``
  × ``--window`` frames in flight) with one order per frame, and batched 100 per frame:
  acked orders/s (saturation);
- ``open-1k`` / ``open-5k``: open loop at 1k and 5k orders/s, one order per frame, latency
  from the intended send time: p50 / p99 µs (``compare.py``'s client, as for the bare echo;
  with the account tier ``shardex loadgen --rate``, whose orders go through the tier). The CPU
  per order at a fixed rate is the low-rate cost (issue target: ≤ 60 µs per process at 1k/s),

it measures, side A (REF) then side B (this tree), round after round, the CPU (user + system,
``/proc``) each cluster process spent per acked order, summed by role (router / accounts /
engine: with ``--replicas 2`` the standby's CPU counts with its role). Both sides' clusters of a
configuration run at the same time (the idle one costs little), so rounds alternate without
restarts. Reported: min / median / max per side and the median of the per-round ratios B/A,
which cancels most of the drift of a shared machine; ``--json`` prints one object instead.
Progress lines go to stderr.

Run it at a high priority on a shared box (``sudo nice -n -15 python bench/paths.py``: the
clusters' sessions then get that priority too, ``bench/priority.py``). The defaults (every
configuration and load, 3 rounds of 6 s) take ~25 minutes on 2 cores; ``--configs`` and
``--loads`` pick a part.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# No `import shardex` in the driver: every side imports its own tree, in its own processes.
from compare import (  # noqa: E402
    Echo,
    Worktree,
    check_imports,
    current_label,
    openloop,
    ratios,
    stats,
)
from priority import share_priority  # noqa: E402
from proccpu import per_role, snapshot  # noqa: E402
from scaling import TreeCluster, cli_help, emit, funded, loadgen, say  # noqa: E402

REF = "698b19a"
ROLES = ("router", "accounts", "engine")
WARMUP_S = 0.5  # compare.role_openloop's unrecorded first half second of orders

# name → (TreeCluster keyword arguments, extra ``shardex up`` options)
CONFIGS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "default": ({"secure": True}, ["--accounts", "1"]),
    "secure": ({"secure": True}, []),
    "insecure": ({"secure": False}, []),
    "ephemeral": ({"secure": True, "ephemeral": True}, ["--accounts", "1"]),
    "local": ({"secure": True, "bridge": True}, ["--replicas", "2"]),
    "replicated": ({"secure": True, "bridge": True}, ["--replicas", "2"]),
    "both": ({"secure": True, "bridge": True}, ["--replicas", "2"]),
}
DURABILITY = ("local", "replicated", "both")
LOADS = ("closed-1", "closed-100", "open-1k", "open-5k")
RATE = {"open-1k": 1000.0, "open-5k": 5000.0}

# the order-path issue's old ratio targets, now rows: (name, numerator, denominator, metric)
EXTRA_RATIOS = (
    ("p50 default/ephemeral (fsync cost), B", "default", "ephemeral", "p50_us"),
    ("p50 insecure/echo (router vs a bare echo), B", "insecure", "echo", "p50_us"),
)


def cluster_args(tree: Path, config: str, pin: bool) -> dict[str, Any]:
    """TreeCluster's arguments for ``config`` on ``tree`` (``--durability`` only where the
    tree has it: an older one runs its only mode)."""
    kw, extra = CONFIGS[config]
    extra = list(extra)
    if config in DURABILITY and "--durability" in cli_help(tree, "up"):
        extra += ["--durability", config]
    return {**kw, "extra": extra, "pin": pin}


def cpu_per_order(before: dict, c: TreeCluster, orders: float) -> dict[str, float]:
    """CPU µs per order of each role since ``before`` (and ``total`` of the three roles)."""
    if orders <= 0 or c.proc is None:
        return {}
    spent = per_role(before, snapshot(c.proc.pid))
    out = {role: spent.get(role, 0.0) * 1e6 / orders for role in ROLES if role in spent}
    if {"router", "engine"} <= out.keys():  # (not when a leader was replaced meanwhile)
        out["total"] = sum(out.values())
    return out


def measure(side_tree: Path, c: TreeCluster, load: str, args: argparse.Namespace) -> dict:
    """One measurement of ``load`` on cluster ``c``: its throughput or latency and the CPU
    per order of each role. Open loop with the account tier: ``shardex loadgen --rate`` (its
    orders go through the account shard, funded; ``compare.py``'s client sends them to the
    engine shard by symbol, past the tier). With the tier the loadgen's accounts are funded
    before the CPU is read (``funded``): the measured run has orders only."""
    tier = "--accounts" in c.extra
    before = snapshot(c.proc.pid) if c.proc else {}
    if tier:
        funded(side_tree, c.endpoints, c.key, 2)
        after = snapshot(c.proc.pid) if c.proc else {}
        spent, before = per_role(before, after) if c.proc else {}, after
        say("    funding run (not counted): CPU ms r/a/e "
            + " / ".join(f"{spent.get(k, 0) * 1e3:.0f}" for k in ROLES))  # fmt: skip
    if load in RATE and tier:
        r = loadgen(side_tree, c.endpoints, c.key, procs=1, batch=1, concurrency=1, window=1,
                    seconds=args.seconds, symbols=2, rate=RATE[load], fund=False)  # fmt: skip
        orders = r["acked_per_s"] * args.seconds
        res = {"p50_us": r["p50_us"], "p99_us": r["p99_us"], "errors": r["errors"]}
    elif load.startswith("closed-"):
        batch = int(load.split("-")[1])
        r = loadgen(
            side_tree, c.endpoints, c.key, procs=args.procs, batch=batch,
            concurrency=args.connections, window=args.window if batch == 1 else 2,
            seconds=args.seconds, symbols=2, fund=not tier,
        )  # fmt: skip
        orders = r["acked_per_s"] * args.seconds
        res = {"acked_per_s": r["acked_per_s"], "errors": r["errors"]}
    else:
        rate = RATE[load]
        r = openloop(side_tree, c.endpoints[0], c.key, rate, args.seconds, True)
        sent = int(rate * WARMUP_S) + int(rate * args.seconds)
        orders = sent - r["lost"] - r["errors"]
        res = {"p50_us": r["p50_us"], "p99_us": r["p99_us"], "errors": r["errors"] + r["lost"]}
    res["cpu_us"] = cpu_per_order(before, c, orders)
    return res


def start_clusters(sides: dict[str, Path], config: str, pin: bool) -> dict[str, TreeCluster]:
    """Both sides' clusters of ``config`` (stopped again if one fails to start)."""
    made: dict[str, TreeCluster] = {}
    try:
        for side, tree in sides.items():
            made[side] = TreeCluster(tree, 1, **cluster_args(tree, config, pin)).start()
    except BaseException:
        for c in made.values():
            c.stop()
        raise
    return made


def describe(load: str, r: dict) -> str:
    """One progress line's numbers."""
    cpu = " / ".join(f"{r['cpu_us'].get(k, 0):.0f}" for k in ROLES)
    head = (f"{r['acked_per_s']:>9,.0f} acked/s" if "acked_per_s" in r
            else f"p50 {r['p50_us']:>7,} µs p99 {r['p99_us']:>8,} µs")  # fmt: skip
    return f"{head}  CPU µs/order r/a/e {cpu}  (errors {r['errors']:,})"


def fresh_ports(k: int) -> None:
    """Configuration ``k``'s clusters start 20 ports above the previous one's in a bounded
    range (``SHARDEX_BENCH_PORTS``): the ports a stopped cluster used may still be held for a
    while (connections in TIME_WAIT), and a layout with replicas reaches base+2200, past the
    first ports of each hundred that ``free_base`` looks at."""
    bounds = os.environ.get("SHARDEX_BENCH_PORTS")
    if bounds:
        os.environ.setdefault("_PATHS_PORTS", bounds)
        lo, _, hi = os.environ["_PATHS_PORTS"].partition("-")
        os.environ["SHARDEX_BENCH_PORTS"] = f"{int(lo) + 20 * k}-{hi}"


def run_config(
    config: str, sides: dict[str, Path], args: argparse.Namespace, raw: dict
) -> None:
    """Every round and load of one configuration, A/B interleaved, into ``raw``."""
    say(f"{config}: {args.rounds} rounds × {', '.join(args.loads)} × (A, B), {args.seconds} s")
    fresh_ports(args.configs.index(config))
    cs = start_clusters(sides, config, not args.no_pin)
    try:
        if args.warmup > 0:  # first-start costs (bytecode, empty books) out of round 1
            for side, c in cs.items():
                loadgen(sides[side], c.endpoints, c.key, procs=args.procs, batch=1,
                        concurrency=args.connections, window=args.window,
                        seconds=args.warmup, symbols=2)  # fmt: skip
        for k in range(args.rounds):
            for load in args.loads:
                for side, c in cs.items():
                    r = measure(sides[side], c, load, args)
                    raw.setdefault(f"{config} {load}", {}).setdefault(side, []).append(r)
                    say(f"  round {k + 1} {load:<10} {side} {describe(load, r)}")
                    time.sleep(0.5)
    finally:
        for c in cs.values():
            c.stop()


def run_echo(args: argparse.Namespace, raw: dict) -> None:
    """The bare two-hop pyzmq echo (``compare.Echo``) at the open-loop rates: the router row's
    reference (``p50 default/echo``)."""
    loads = [ld for ld in args.loads if ld in RATE]
    if not loads:
        return
    echo = Echo()
    try:
        for k in range(args.rounds):
            for load in loads:
                r = openloop(ROOT, echo.endpoint, "none", RATE[load], args.seconds, False)
                res = {"p50_us": r["p50_us"], "p99_us": r["p99_us"], "cpu_us": {},
                       "errors": r["errors"] + r["lost"]}  # fmt: skip
                raw.setdefault(f"echo {load}", {}).setdefault("B", []).append(res)
                say(f"  round {k + 1} echo {load:<10} {describe(load, res)}")
    finally:
        echo.stop()


def metric_lists(runs: list[dict]) -> dict[str, list[float | None]]:
    """A side's measurements of one row as lists per metric (``cpu_us router`` …), one entry
    per round, None where a round has none (a role whose process was not alive for the whole
    measurement: a replica that took over meanwhile)."""
    names = {m for r in runs for m in ("acked_per_s", "p50_us", "p99_us") if m in r}
    names |= {f"cpu_us {role}" for r in runs for role in r["cpu_us"]}
    out: dict[str, list[float | None]] = {}
    for m in sorted(names):
        key = m.split(" ", 1)
        out[m] = [(r["cpu_us"].get(key[1]) if len(key) == 2 else r.get(m)) for r in runs]
    return out


def summarize(raw: dict) -> dict[str, Any]:
    """Per row: each side's min/median/max per metric and the per-round ratios B/A (over the
    rounds where both sides have the metric)."""
    rows: dict[str, Any] = {}
    for row, by_side in raw.items():
        lists = {side: metric_lists(runs) for side, runs in by_side.items()}
        entry: dict[str, Any] = {
            side: {m: stats([x for x in v if x is not None]) for m, v in ms.items()}
            for side, ms in lists.items()
        }
        if "A" in lists and "B" in lists:
            a, b = lists["A"], lists["B"]
            entry["B/A"] = {m: ratios(*_paired(b[m], a[m])) for m in b if m in a}
        rows[row] = entry
    return rows


def _paired(b: list[float | None], a: list[float | None]) -> tuple[list[float], list[float]]:
    """The rounds where both sides have a value (as two lists of the same length)."""
    pairs = [(x, y) for x, y in zip(b, a, strict=False) if x is not None and y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def extra_ratios(raw: dict) -> dict[str, Any]:
    """The old targets as same-run ratios of this tree's rows, per open-loop rate."""
    out: dict[str, Any] = {}
    for name, num, den, metric in EXTRA_RATIOS:
        for load in RATE:
            a = raw.get(f"{num} {load}", {}).get("B", [])
            b = raw.get(f"{den} {load}", {}).get("B", [])
            n = min(len(a), len(b))
            if n:
                out[f"{name} {load}"] = ratios([x[metric] for x in a[:n]],
                                               [x[metric] for x in b[:n]])  # fmt: skip
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores {platform.machine()} {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
    }
    share_priority()
    raw: dict[str, dict[str, list[dict]]] = {}
    with Worktree(args.ref) as wt:
        sides = {"A": wt.path, "B": ROOT}
        for tree in sides.values():
            check_imports(tree)
        out["labels"] = {"A": f"{args.ref} ({wt.short})", "B": current_label()}
        for config in args.configs:
            if config == "echo":
                run_echo(args, raw)
            else:
                run_config(config, sides, args, raw)
    out["load_at_end"] = round(os.getloadavg()[0], 2)
    out["rows"] = summarize(raw)
    out["ratios"] = extra_ratios(raw)
    out["raw"] = raw
    return out


def _mmm(s: dict[str, float] | None, fmt: str = ",.0f") -> str:
    if s is None:
        return "-"
    return " / ".join(format(s[k], fmt) for k in ("min", "median", "max"))


def _med(s: dict[str, float] | None, fmt: str = ".0f") -> str:
    return "-" if s is None else format(s["median"], fmt)


def _headline(side: dict[str, Any]) -> str:
    """A side's throughput (closed loop) or p50 / p99 medians (open loop)."""
    if side is None:
        return "-"
    if "acked_per_s" in side:
        return _mmm(side["acked_per_s"])
    return f"{_med(side.get('p50_us'), ',.0f')} / {_med(side.get('p99_us'), ',.0f')}"


def print_report(rep: dict[str, Any]) -> None:
    c, lab = rep["config"], rep["labels"]
    print(
        f"\n{rep['date']}  {rep['machine']}, at the end {rep.get('load_at_end', '?')}\n"
        f"A = {lab['A']}, B = {lab['B']}; 1 engine shard, journal on (fsync batch), "
        f"{c['rounds']} interleaved rounds of {c['seconds']} s; closed loop {c['procs']} × "
        f"{c['connections']} connections × {c['window']} frames (batched: × 2)\n"
    )
    print("| configuration, load | A: acked/s (min/med/max) or p50 / p99 µs | B: same | "
          "B/A (min / med / max) | CPU µs/order A: router / accounts / engine (median) | "
          "B: same | CPU total B/A |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row, e in rep["rows"].items():
        a, b, ba = e.get("A"), e.get("B"), e.get("B/A", {})
        head = "acked_per_s" if (b or {}).get("acked_per_s") else "p50_us"

        def cpu(side: dict[str, Any] | None) -> str:
            if not side:
                return "-"
            return " / ".join(_med(side.get(f"cpu_us {r}")) for r in ROLES)

        print(f"| {row} | {_headline(a)} | {_headline(b)} | {_mmm(ba.get(head), '.2f')} | "
              f"{cpu(a)} | {cpu(b)} | {_mmm(ba.get('cpu_us total'), '.2f')} |")  # fmt: skip
    if rep["ratios"]:
        print("\n| same-run ratio, this tree (min / median / max) | value |")
        print("| --- | --- |")
        for name, s in rep["ratios"].items():
            print(f"| {name} | {_mmm(s, '.2f')} |")


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    got = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in got if x not in known]
    if not got or bad:
        raise SystemExit(f"--{what}: give some of {', '.join(known)} (not {', '.join(bad)})")
    return got


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("ref", nargs="?", default=REF, help=f"the reference commit [{REF}]")
    p.add_argument("--configs", default="default,secure,insecure,ephemeral,echo,local,"
                   "replicated,both", help="which configurations, comma-separated "
                   "(echo: the bare two-hop echo, open-loop loads only)")  # fmt: skip
    p.add_argument("--loads", default=",".join(LOADS), help="which loads, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A/B/A/B…)")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds per cluster")
    p.add_argument("--procs", type=int, default=2, help="closed loop: loadgen processes")
    p.add_argument("--connections", type=int, default=4, help="connections per loadgen")
    p.add_argument("--window", type=int, default=8, help="closed loop: frames in flight")
    p.add_argument("--no-pin", action="store_true", help="do not pin shards to cores")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    for name in ("rounds", "procs", "connections", "window"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name}: give an integer >= 1")
    if not args.seconds > 0 or args.warmup < 0:
        raise SystemExit("--seconds: give a number > 0 (--warmup >= 0)")
    args.configs = _names(args.configs, (*CONFIGS, "echo"), "configs")
    args.loads = _names(args.loads, LOADS, "loads")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    emit(bench(args), args.json, print_report)


if __name__ == "__main__":
    main()
