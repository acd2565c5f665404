"""Scaling: acked orders/s for 1, 2, 4 … shards (and R routers), one-order frames and batched.

For every shard count N (1, 2, 4 … up to ``--max-shards``, default the machine's cores; or an
explicit ``--shards`` list) and every router count R (``--routers``, default "1") it starts a real
``shardex up`` cluster (journal on in a temp ``--data-dir`` unless ``--ephemeral``, no bridge) on
free loopback ports with a markets file of ``--pairs`` markets (the 8 built-in ones plus
synthetic ``Pnnn-USD`` pairs), so crc32 spreads the symbols over every shard. For every frame size
in ``--batches`` (default "1,100": one order per frame as trading clients send, and batched) it
runs ``--loadgens`` ``shardex loadgen`` processes at once in closed loop for ``--seconds``, the k-th
one connected to router k mod R, and adds up their acked orders/s.

Prints a table: acked orders/s per (R, batch, N), the speed-up over N = 1 and the efficiency
(speed-up / N) with the same R and batch; ``--json`` prints one JSON object instead. Progress
(one line per point, with an estimate of the time left) goes to stderr.

Everything — clients included — shares this machine's cores, so on a small box the numbers say
where the knee is here, not what N shards give on N free cores. On a bigger box run e.g.
``python bench/scaling.py --max-shards 16 --routers 1,2,4 --loadgens 8``.

``shardex up --routers R`` (router scale-out) is needed for R > 1: without it the bench stops at
once with a message saying so.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pairs import (  # noqa: E402  (scaling.X for its users)
    BUILTIN_PAIRS,
    all_symbols,
    symbol_shard,
    write_markets,
)
from priority import share_priority  # noqa: E402
from reaper import die_with_parent  # noqa: E402  (clusters die with the bench)

READY_S = 60.0
REFUSED: set[int] = set()  # base ports ``shardex up`` found a port of taken (not chosen again)


# ---------------------------------------------------------------------------------------------
# running code of a given tree (this checkout, or a worktree of an older commit)
# ---------------------------------------------------------------------------------------------


def tree_env(tree: Path, **extra: str) -> dict[str, str]:
    """The environment that makes ``python -m shardex…`` import ``tree``'s package: PYTHONPATH
    wins over the editable install's finder (the cwd, first on ``sys.path`` for ``-m``, is set to
    ``tree`` too)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env.pop("SHARDEX_KEY", None)
    env.pop("SHARDEX_ENDPOINT", None)
    env.update(extra)
    return env


def shardex_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "shardex.cli", "--log-level", "WARNING", *args]


def cli_help(tree: Path, command: str) -> str:
    """``shardex COMMAND --help`` of ``tree`` (how options are detected without importing it)."""
    out = subprocess.run(
        shardex_argv(command, "--help"),
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout + out.stderr


def supports_routers(tree: Path) -> bool:
    """True when ``tree``'s ``shardex up`` takes ``--routers`` (router scale-out)."""
    return "--routers" in cli_help(tree, "up")


@functools.cache
def supports_accounts(tree: Path) -> bool:
    """True when ``tree``'s ``shardex up`` has the account tier (on by default since it landed)."""
    return "--accounts" in cli_help(tree, "up")


def free_base(span: int = 420) -> int:
    """A base port whose whole layout range (base .. base+span, every per-shard offset included)
    is free right now; ``shardex up`` still refuses busy ports itself, and we retry then."""
    rng = random.Random()
    bounds = os.environ.get("SHARDEX_BENCH_PORTS")  # "LO-HI": the lowest free one
    if bounds:
        lo, _, hi = bounds.partition("-")
        bases = list(range(int(lo), int(hi) - span + 1, 10))
    else:
        bases = [rng.randrange(20000, 60000 - span) for _ in range(200)]
    for base in bases:
        if base in REFUSED:
            continue
        ok = True
        # in a bounded range only the ports a layout uses (its first ten of every hundred), so
        # two clusters interleave (base, base+10) instead of needing 2 × span free ports
        for p in range(base, base + span) if not bounds else layout_ports(base, span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free port range on 127.0.0.1")


def layout_ports(base: int, span: int) -> list[int]:
    """The first ten ports of every hundred from ``base`` (router, shard and account ports of a
    layout with up to ten of each)."""
    return [p for p in range(base, base + span) if (p - base) % 100 < 10]


@dataclass
class TreeCluster:
    """``shardex up`` of ``tree`` in its own process group (journal in a temp dir unless
    ephemeral, no bridge). Endpoints are parsed from what ``up`` prints (so R routers need no
    knowledge of their port layout here); readiness is asked with ``tree``'s own client."""

    tree: Path
    shards: int
    routers: int = 1
    secure: bool = False
    ephemeral: bool = False
    fsync: str | None = None
    pin: bool = True
    pairs: int = 0  # > 8: a markets file with synthetic pairs
    bridge: bool = False  # the bridge and its Redis on (``--replicas 2`` needs the Redis)
    extra: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    key: str = "none"  # what loadgen's --key gets
    proc: subprocess.Popen | None = None

    def start(self) -> TreeCluster:
        self.dir = Path(tempfile.mkdtemp(prefix="shardex-bench-"))
        self.log_path = self.dir / "up.log"
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except _PortsBusy:
                self.stop(keep_dir=True)
                if attempt == 2:
                    raise SystemExit("shardex up: ports busy three times in a row") from None
        return self

    def _start_once(self) -> None:
        base = free_base()
        argv = ["up", "--shards", str(self.shards), "--base-port", str(base)]
        if not self.bridge:
            argv.append("--no-bridge")
        if supports_accounts(self.tree):  # unfunded order path, as before the account tier
            argv += ["--accounts", "0"]
        if self.routers != 1:
            argv += ["--routers", str(self.routers)]
        if self.ephemeral:
            argv.append("--ephemeral")
        else:
            argv += ["--data-dir", str(self.dir / "data")]
        if self.fsync:
            argv += ["--fsync", self.fsync]
        if not self.pin:
            argv.append("--no-pin")
        if self.pairs > BUILTIN_PAIRS:
            argv += ["--markets", str(write_markets(self.dir / "markets.toml", self.pairs))]
        if self.secure:
            argv += ["--keys-dir", str(self.dir / "keys")]
            self.key = str(self.dir / "keys" / "admin.key")
        else:
            argv.append("--insecure")
            self.key = "none"
        argv += self.extra
        self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            shardex_argv(*argv),
            cwd=self.tree,
            env=tree_env(self.tree),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        share_priority(self.proc.pid)  # (its own session: see share_priority)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            text = self.output()
            if self.proc.poll() is not None:
                if "ports already in use" in text:
                    REFUSED.add(base)  # (a port past those free_base looks at: try another)
                    raise _PortsBusy()
                self.stop()
                raise SystemExit(f"shardex up ({self.tree}) exited:\n{text[-3000:]}")
            if "Ctrl-C stops everything." in text:
                self.endpoints = router_endpoints(text) or [f"tcp://127.0.0.1:{base}"]
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise SystemExit(f"shardex up ({self.tree}) printed no endpoints:\n{text[-3000:]}")
        for ep in self.endpoints:
            self._wait_registered(ep, deadline)

    def _wait_registered(self, endpoint: str, deadline: float) -> None:
        """Every shard registered with the router at ``endpoint`` (``tree``'s Client asks)."""
        code = (
            "import sys, time\n"
            "from shardex.client import Client\n"
            "ep, key, n, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])\n"
            "while time.time() < end:\n"
            "    try:\n"
            "        with Client(ep, timeout=0.5, key=False if key == 'none' else key) as c:\n"
            "            t = c.topology()['topology']\n"
            "        if len(t) == n and all(x.get('pid') for x in t):\n"
            "            sys.exit(0)\n"
            "    except Exception:\n"
            "        pass\n"
            "    time.sleep(0.2)\n"
            "sys.exit(1)\n"
        )
        end = time.time() + max(1.0, deadline - time.monotonic())
        rc = subprocess.run(
            [sys.executable, "-c", code, endpoint, self.key, str(self.shards), str(end)],
            cwd=self.tree,
            env=tree_env(self.tree),
            timeout=READY_S + 10,
        ).returncode
        if rc != 0:
            text = self.output()
            self.stop()
            raise SystemExit(f"not every shard registered at {endpoint}:\n{text[-3000:]}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, keep_dir: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()
            self.log = None
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TreeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortsBusy(Exception):
    """``shardex up`` found a port of its layout taken (another process won the race)."""


def router_endpoints(text: str) -> list[str]:
    """The client endpoints of every router in ``shardex up``'s banner (lines naming a router
    and clients: "router (clients)   tcp://…", or one such line per router)."""
    out: list[str] = []
    for line in text.splitlines():
        low = line.lower()
        if "router" in low and "client" in low:
            out += [ep for ep in re.findall(r"tcp://[^\s,]+", line) if ep not in out]
    return out


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------


def loadgen(
    tree: Path,
    endpoints: list[str],
    key: str,
    *,
    procs: int,
    batch: int,
    concurrency: int,
    window: int,
    seconds: float,
    symbols: int,
    rate: float | None = None,
    timeout: float = 5.0,
    seed: int = 1,
    fund: bool = True,
    orders: int | None = None,
) -> dict[str, Any]:
    """``procs`` ``shardex loadgen`` processes of ``tree`` at once (process k → endpoint k mod R,
    one generator each, rate split evenly), merged: acked/s and sent/s are the processes' sums
    over the sending time; errors and timeouts are summed; p50/p99 are the worst process's.
    ``fund=False``: no deposits first (``funded`` did them); ``orders``: exactly that many
    orders per process instead of ``seconds`` of them."""
    ps = []
    for k in range(procs):
        argv = [
            "loadgen",
            "--endpoint",
            endpoints[k % len(endpoints)],
            "--batch",
            str(batch),
            "--concurrency",
            str(concurrency),
            "--window",
            str(window),
            "--duration",
            str(seconds),
            "--symbols",
            str(symbols),
            "--seed",
            str(seed * 100 + k),
            "--timeout",
            str(timeout),
            "--max-error-rate",
            "1",
            "--key",
            key,
            "--json",
            "--quiet",
        ]
        if rate is not None:
            argv += ["--rate", f"{rate / procs:.3f}"]
        if not fund:
            argv.append("--no-fund")
        if orders is not None:
            argv += ["--orders", str(orders)]
        ps.append(
            subprocess.Popen(
                shardex_argv(*argv),
                cwd=tree,
                env=tree_env(tree),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    reports = []
    for p in ps:
        try:
            out, err = p.communicate(timeout=seconds + timeout + 120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        if p.returncode != 0 or not out.strip():
            for q in ps:
                if q.poll() is None:
                    q.kill()
                    q.wait()
            raise SystemExit(f"shardex loadgen ({tree}) failed (rc {p.returncode}):\n{err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    lat = [r.get("latency_us") or {} for r in reports]
    # Per second of *sending* (the nominal duration): loadgen's own ``seconds`` also runs while
    # it waits out unanswered frames, which would divide an overload run's goodput by up to
    # (seconds + timeout) / seconds.
    return {
        "acked_per_s": sum(r["acked"] for r in reports) / seconds,
        "sent_per_s": sum(r["sent"] for r in reports) / seconds,
        "loadgen_seconds": max(r["seconds"] for r in reports),
        "errors": sum(sum(r["errors"].values()) for r in reports),
        "timeouts": sum(r["timeouts"] for r in reports),
        "sent": sum(r["sent"] for r in reports),
        "p50_us": max((x.get("p50", 0) for x in lat), default=None),
        "p99_us": max((x.get("p99", 0) for x in lat), default=None),
    }


def funded(tree: Path, endpoints: list[str], key: str, symbols: int) -> None:
    """Fund the accounts ``loadgen`` trades (acct-0..99, every asset of ``symbols`` markets)
    now, with one ``shardex loadgen --orders 1`` (it funds, then sends one order): a measured
    run after it with ``fund=False`` charges the cluster's CPU to orders only, not to the ~100
    balance reads and deposits of the funding (with the account tier, ``--risk on``)."""
    loadgen(tree, endpoints[:1], key, procs=1, batch=1, concurrency=1, window=1, seconds=1,
            symbols=symbols, orders=1)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------------------------


def shard_counts(max_shards: int) -> list[int]:
    """1, 2, 4 … up to ``max_shards`` (``max_shards`` itself included when not a power of 2)."""
    out, n = [], 1
    while n < max_shards:
        out.append(n)
        n *= 2
    return [*out, max_shards]


def int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{name}: a comma-separated list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise SystemExit(f"{name}: give integers >= 1, got {text!r}")
    return vals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--max-shards", type=int, default=os.cpu_count() or 1)
    p.add_argument("--shards", default=None, help="explicit shard counts, e.g. 1,2,3 (overrides)")
    p.add_argument("--routers", default="1", help="router counts, e.g. 1,2 (R > 1: --routers)")
    p.add_argument("--batches", default="1,100", help="orders per frame, e.g. 1,100")
    p.add_argument("--seconds", type=float, default=5.0, help="closed-loop seconds per point")
    p.add_argument("--loadgens", type=int, default=2, help="shardex loadgen processes per point")
    p.add_argument("--concurrency", type=int, default=4, help="connections per loadgen")
    p.add_argument("--window", type=int, default=16, help="frames in flight per connection")
    p.add_argument("--pairs", type=int, default=64, help="markets traded (8 built-in + synthetic)")
    p.add_argument("--ephemeral", action="store_true", help="no journal (default: journal on)")
    p.add_argument("--fsync", default=None, help="shardex up --fsync (default: its default)")
    p.add_argument("--secure", action="store_true", help="CURVE keys (default: --insecure)")
    p.add_argument("--no-pin", action="store_true", help="do not pin shards to cores")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    if args.max_shards < 1:
        raise SystemExit("--max-shards: give an integer >= 1")
    args.shard_list = (
        int_list(args.shards, "--shards") if args.shards else shard_counts(args.max_shards)
    )
    args.router_list = int_list(args.routers, "--routers")
    args.batch_list = int_list(args.batches, "--batches")
    for name in ("loadgens", "concurrency", "window", "pairs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name}: give an integer >= 1")
    if not args.seconds > 0:
        raise SystemExit("--seconds: give a duration > 0")
    return args


def run(args: argparse.Namespace, tree: Path = ROOT) -> dict[str, Any]:
    if max(args.router_list) > 1 and not supports_routers(tree):
        raise SystemExit(
            f"--routers {args.routers}: this shardex ({tree}) has no `shardex up --routers` yet "
            "(router scale-out); run with --routers 1"
        )
    for n in args.shard_list:
        idle = set(range(n)) - {symbol_shard(s, n) for s in all_symbols(args.pairs)}
        if idle:
            say(f"warning: with {args.pairs} pairs, shard(s) {sorted(idle)} of {n} get no orders")
    points = len(args.shard_list) * len(args.router_list)
    per_cluster = len(args.batch_list) * (args.seconds + 2) + 4
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    done = 0
    for routers in args.router_list:
        for shards in args.shard_list:
            left = (points - done) * per_cluster
            say(
                f"[{done + 1}/{points}] {shards} shard(s), {routers} router(s): starting "
                f"(about {left:.0f} s left)"
            )
            cluster = TreeCluster(
                tree,
                shards,
                routers=routers,
                secure=args.secure,
                ephemeral=args.ephemeral,
                fsync=args.fsync,
                pin=not args.no_pin,
                pairs=args.pairs,
            )
            with cluster:
                for batch in args.batch_list:
                    r = loadgen(
                        tree,
                        cluster.endpoints,
                        cluster.key,
                        procs=max(args.loadgens, routers),
                        batch=batch,
                        concurrency=args.concurrency,
                        window=args.window,
                        seconds=args.seconds,
                        symbols=args.pairs,
                    )
                    rows.append({"shards": shards, "routers": routers, "batch": batch, **r})
                    say(
                        f"    batch {batch:>4}: {r['acked_per_s']:>10,.0f} acked orders/s "
                        f"(errors {r['errors']:,}, timeouts {r['timeouts']:,}; "
                        f"{time.monotonic() - t0:.0f} s elapsed)"
                    )
            done += 1
    for r in rows:
        base = next(
            x
            for x in rows
            if x["routers"] == r["routers"]
            and x["batch"] == r["batch"]
            and x["shards"] == min(args.shard_list)
        )
        ratio = r["acked_per_s"] / base["acked_per_s"] if base["acked_per_s"] else 0.0
        r["speedup"] = round(ratio, 3)
        r["efficiency"] = round(ratio * base["shards"] / r["shards"], 3)
        r["acked_per_s"] = round(r["acked_per_s"])
        r["sent_per_s"] = round(r["sent_per_s"])
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "config": {
            "journal": "off" if args.ephemeral else f"on (fsync {args.fsync or 'default'})",
            "secure": args.secure,
            "pairs": args.pairs,
            "loadgens": args.loadgens,
            "connections_per_loadgen": args.concurrency,
            "window": args.window,
            "seconds": args.seconds,
            "pinned": not args.no_pin,
        },
        "results": rows,
    }


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} cores {platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, load average at start {load:.2f}"
    )


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def print_table(rep: dict[str, Any]) -> None:
    c = rep["config"]
    print(
        f"\n{rep['date']}  {rep['machine']}\njournal {c['journal']}, "
        f"{'secure' if c['secure'] else 'insecure'}, {c['pairs']} pairs, closed loop: "
        f"{c['loadgens']} loadgen × {c['connections_per_loadgen']} connections × "
        f"{c['window']} frames in flight, {c['seconds']} s per point\n"
    )
    print("| routers | orders/frame | shards | acked orders/s | speed-up | efficiency | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rep["results"], key=lambda r: (r["routers"], r["batch"], r["shards"])):
        print(
            f"| {r['routers']} | {r['batch']} | {r['shards']} | {r['acked_per_s']:,} | "
            f"{r['speedup']:.2f}× | {r['efficiency']:.0%} | {r['errors']:,} |"
        )


def emit(rep: dict[str, Any], as_json: bool, table: Any) -> None:
    """A bench's report: one JSON object (``--json``), else its table (``table(rep)``)."""
    if as_json:
        print(json.dumps(rep))
    else:
        table(rep)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    emit(run(args), args.json, print_table)


if __name__ == "__main__":
    main()
