"""The account tier's cost: acked orders/s and p99 with M account shards vs without.

Two real ``shardex up`` clusters (N engine shards each; one with ``--accounts M``), both up for
the whole run, measured **interleaved** (round 1: off, on; round 2: off, on; ...) so that the
noise of a shared machine hits both alike; compare the ratios, not the absolute numbers. The
load is ``shardex loadgen``'s (the project's one workload, same seed and mix on both): on the
accounts cluster with ``--risk on`` (orders go client → router → account shard → engine shard,
accounts funded first), on the other with ``--risk off``.

Modes per round:

* ``closed b=1``: one-order frames, C connections × W frames in flight → acked orders/s, p99 of
  the frame round trip;
* ``closed b=B``: batched frames (B orders each) → acked orders/s;
* ``open R/s``: one-order frames on a fixed schedule (latency from the *intended* send time, no
  coordinated omission) → p50/p99 at R orders/s (the issue's target: the account tier adds
  ≤ 0.5 ms to p99 at 1k orders/s on a quiet box).

With risk on the reply comes from the account shard (held and forwarded); the match happens
after. So for the closed modes the table also shows ``settled/s``: orders over the time until
the engine shards' seq stopped moving after the run (what the whole pipeline sustained, not
only the front tier). Target: with M = 1, ≥ 0.6× the throughput per engine shard.

    python bench/accounts.py                    # defaults: N=1, M=1, 3 rounds
    python bench/accounts.py --smoke            # tiny, to check that it runs (no numbers)
    python bench/accounts.py --json             # one JSON object

``--bridge`` keeps the Redis bridge in both clusters (it then also writes the balance stream);
by default both run ``--no-bridge`` to measure the tiers themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from reaper import die_with_parent  # noqa: E402  (clusters die with the bench)

from shardex.client import Client  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.tools.loadgen import LoadConfig, run  # noqa: E402


def free_layout(shards: int, accounts: int) -> Layout:
    """A layout (with the account tier's ports) whose every port is free right now."""
    rng = random.Random()
    for _ in range(200):
        layout = Layout("127.0.0.1", rng.randrange(20000, 60000 - 800), shards, accounts=accounts)
        ok = True
        for p in layout.ports():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return layout
    raise SystemExit("no free ports")


class Up:
    """One ``shardex up`` cluster (own process group, temp keys, ephemeral data)."""

    def __init__(self, shards: int, accounts: int, bridge: bool, pin: bool) -> None:
        self.layout = free_layout(shards, accounts)
        self.keys = Path(tempfile.mkdtemp(prefix="shardex-bench-acct-"))
        self.key = self.keys / "admin.key"
        argv = [
            sys.executable, "-m", "shardex.cli", "--log-level", "WARNING", "up",
            "--shards", str(shards), "--base-port", str(self.layout.base_port),
            "--ephemeral", "--keys-dir", str(self.keys),
            "--accounts", str(accounts),  # explicit: shardex up's default is 1
        ]  # fmt: skip
        if not bridge:
            argv.append("--no-bridge")
        if not pin:
            argv.append("--no-pin")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent, cwd=ROOT
        )
        deadline = time.monotonic() + 30
        while not self.key.exists():
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("cluster did not create its keys")
            time.sleep(0.1)
        with Client(self.layout.frontend, timeout=0.5, key=self.key) as c:
            while time.monotonic() < deadline:
                try:
                    info = c.topology()
                    tiers = [*info["topology"], *info.get("account_topology", ())]
                    if all(t.get("pid") for t in tiers):
                        return
                except Exception:
                    pass
                time.sleep(0.1)
        self.stop()
        raise SystemExit("cluster did not come up")

    def pids(self) -> dict[str, list[int]]:
        """The engine shards' and account shards' pids (from the router's topology)."""
        with Client(self.layout.frontend, timeout=2, key=self.key) as c:
            info = c.topology()
        return {
            "engine": [t["pid"] for t in info["topology"]],
            "accounts": [t["pid"] for t in info.get("account_topology", ())],
        }

    def engine_seq(self) -> int:
        with Client(self.layout.frontend, timeout=2, key=self.key) as c:
            return sum(s.get("seq", 0) for s in c.status())

    def drained_at(self, quiet: float = 0.3, limit: float = 60.0) -> float:
        """When the engine shards' seq stopped moving (time.monotonic), waiting ≤ ``limit``."""
        last, since = self.engine_seq(), time.monotonic()
        deadline = since + limit
        while time.monotonic() < deadline:
            time.sleep(0.05)
            seq = self.engine_seq()
            if seq != last:
                last, since = seq, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return since

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (``/proc/PID/stat``)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICK


def measure(up: Up, risk: str, mode: str, args: argparse.Namespace, seed: int) -> dict:
    kw: dict = dict(
        endpoint=up.layout.frontend, key=str(up.key), risk=risk, accounts=args.traders,
        symbols=args.symbols, seed=seed, timeout=10.0,
    )  # fmt: skip
    if mode == "open":
        cfg = LoadConfig(**kw, rate=args.rate, batch=1, duration=args.duration)
    else:
        batch = 1 if mode == "b1" else args.batch
        cfg = LoadConfig(
            **kw, batch=batch, window=args.window, concurrency=args.clients,
            orders=args.orders if batch == 1 else args.orders * 4, duration=None,
        )  # fmt: skip
    pids = up.pids()
    cpu0 = {tier: cpu_seconds(p) for tier, p in pids.items()}
    rep = run(cfg).to_dict()
    end = time.monotonic()
    out = {
        "acked_per_s": rep["acked_per_s"],
        "p50_us": rep["latency_us"].get("p50"),
        "p99_us": rep["latency_us"].get("p99"),
        "errors": rep["timeouts"] + sum(rep["errors"].values()),
        "rejected": sum(rep["rejected"].values()),
    }
    if mode != "open":
        drained = up.drained_at()
        extra = max(0.0, drained - end)
        out["settled_per_s"] = round(rep["acked"] / (rep["seconds"] + extra))
    # CPU per acked order in each tier: what one engine shard can carry does not depend on
    # where the account shard runs (on this 2-core box it shares the cores with everything)
    for tier, p in pids.items():
        if p and rep["acked"]:
            used = cpu_seconds(p) - cpu0[tier]
            out[f"{tier}_cpu_us"] = round(used / rep["acked"] * 1e6, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=1, help="engine shards N in both clusters")
    ap.add_argument("--accounts", type=int, default=1, help="account shards M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--orders", type=int, default=20_000, help="per closed b=1 run (×4 batched)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1000.0, help="open loop orders/s")
    ap.add_argument("--duration", type=float, default=5.0, help="open loop seconds")
    ap.add_argument("--traders", type=int, default=100, help="loadgen accounts acct-0..")
    ap.add_argument("--symbols", type=int, default=2)
    ap.add_argument("--bridge", action="store_true", help="keep the Redis bridge running")
    ap.add_argument("--pin", action="store_true", help="pin processes to CPUs")
    ap.add_argument("--smoke", action="store_true", help="tiny parameters (checks it runs)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.orders, args.duration, args.rate = 1, 300, 0.5, 200.0
        args.traders, args.clients, args.window = 5, 1, 4
    modes = [("b1", "closed b=1"), ("bB", f"closed b={args.batch}"), ("open", None)]
    off = Up(args.shards, 0, args.bridge, args.pin)
    try:
        on = Up(args.shards, args.accounts, args.bridge, args.pin)
    except BaseException:
        off.stop()
        raise
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        for r in range(args.rounds):
            for mode, _ in modes:
                for name, up, risk in (("off", off, "off"), ("on", on, "on")):
                    res = measure(up, risk, mode, args, seed=1 + r)
                    results.setdefault(mode, {}).setdefault(name, []).append(res)
                    if not args.json:
                        print(f"round {r + 1} {mode:<4} accounts {name:<3} {res}", file=sys.stderr)
    finally:
        on.stop()
        off.stop()
    table = summarize(results, args)
    if args.json:
        print(json.dumps({"config": vars(args), "results": results, "summary": table}))
        return
    print(
        f"\naccount tier cost: N={args.shards} engine shard(s), M={args.accounts} account "
        f"shard(s), {args.rounds} interleaved round(s), bridge {'on' if args.bridge else 'off'}"
        f"{' (SMOKE: not numbers)' if args.smoke else ''}"
    )
    print(f"{'mode':<16}{'metric':<16}{'without':>12}{'with':>12}{'ratio':>8}")
    for row in table:
        print(
            f"{row['mode']:<16}{row['metric']:<16}{row['without']:>12,}{row['with']:>12,}"
            f"{row['ratio']:>8.2f}"
        )
    print("median over rounds; shared machine: compare ratios, not absolute numbers")
    print(
        "engine_cpu_us / accounts_cpu_us: CPU µs per acked order in each tier; one engine "
        "shard's capacity with the tier = 1 / the engine_cpu_us ratio (independent of where the "
        "account shard runs)"
    )


def summarize(results: dict, args: argparse.Namespace) -> list[dict]:
    """Median per (mode, metric) of each side and their ratio (with / without)."""

    def med(xs: list) -> float:
        xs = sorted(x for x in xs if x is not None)
        return xs[len(xs) // 2] if xs else 0

    names = {"b1": "closed b=1", "bB": f"closed b={args.batch}", "open": f"open {args.rate:g}/s"}
    rows = []
    for mode, sides in results.items():
        metrics = ["acked_per_s", "settled_per_s", "p99_us"] if mode != "open" else [
            "p50_us", "p99_us"
        ]  # fmt: skip
        if mode != "open":
            metrics += ["engine_cpu_us", "accounts_cpu_us"]
        for metric in metrics:
            a = med([x.get(metric) for x in sides["off"]])
            b = med([x.get(metric) for x in sides["on"]])
            rows.append({"mode": names[mode], "metric": metric.removesuffix("_per_s") + "/s"
                         if metric.endswith("_per_s") else metric, "without": a, "with": b,
                         "ratio": b / a if a else 0.0})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
