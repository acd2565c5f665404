"""Overload: does the cluster shed load it cannot carry, keep latency and memory bounded?

Starts its own 2-shard cluster (``shardex up`` on free loopback ports, journal in a temp
``--data-dir``, embedded Redis + bridge unless ``--no-bridge``), then:

1. measures the saturation rate S: closed loop (``shardex.tools.loadgen`` API, ``--procs`` generator
   processes × ``--connections`` connections × ``--window`` frames of ``--batch`` orders) for
   ``--sat-seconds``;
2. runs open loop at 0.5×, 1× and 3× S (``--levels``) for ``--seconds`` each, from ``--procs``
   generator processes with ``--connections`` DEALERs each, frames of at most ``--batch``
   orders (default 1: each order its own frame, as trading clients send; the closed loop uses
   the same frames so S and the open-loop levels are comparable). Open loop stamps every order
   with its *intended* send time, so a stall delays every order behind it and shows in the tail.

Per level it reports offered/s (really sent), acked/s (replies without a batch error), the share
of orders answered ``overloaded``, the share that got no reply within ``--timeout`` (timeouts),
p50/p99 of the acked orders only (an ``overloaded`` answer is fast and must not flatter the
tail), and the RSS growth of every process (router, each shard, bridge, redis) sampled from
/proc every 0.5 s during the level (end − start, and peak − start), and each process's CPU
(user + system) per acked order. The generators share the cores with the cluster: a starved
generator sends late, and its lag counts in the latency from the intended time, so each level
also reports the acked orders' latency from the frame's real send (``wire_p50_ms``,
``wire_p99_ms``: the cluster's part) and the generators' own lag (``lag_p99_ms``).

Where the wait happens: per level the router's own view is scraped from its metrics
(``shardex_router_ack_seconds``: forward to reply, i.e. the router → shard queue plus the
shard's turn) as ``router_p99_ms``, and its rejects by reason (``overloaded``, ``of which by
wait``: shed by time queued rather than by an in-flight cap). A client p99 far above the router's is
time spent before the router read the request (its socket, the client's send queue).

Targets (2-core box): at 3×, timeouts ≤ 0.1 % of sent, p99 of acked ≤ 50 ms and ≤ 10× the
p99 at 0.5×, RSS growth ≤ 50 MB per process over 60 s. The verdict lines say PASS/FAIL for
each. Numbers are only meaningful on an otherwise idle machine. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from cluster import free_base  # noqa: E402
from overload_probes import RssSampler, router_delta, router_view  # noqa: E402
from priority import share_priority  # noqa: E402
from reaper import die_with_parent  # noqa: E402  (clusters die with the bench)

from shardex.auth import KeyFile, client_socket  # noqa: E402
from shardex.client import Client  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.tools.loadgen import LoadConfig  # noqa: E402
from shardex.tools.loadgen import run as loadgen_run  # noqa: E402

try:  # the order flow of ``shardex loadgen`` (its API before the Workload refactor: Generator)
    from shardex.tools.loadgen import generator as _workload  # noqa: E402
except ImportError:  # pragma: no cover - older checkouts, to measure main before the overload work
    from shardex.tools.loadgen import Generator as _workload  # noqa: E402
from shardex.wire.protocol import ERR_OVERLOADED, decode_reply, encode_request  # noqa: E402

HIST_MAX_US = 120_000_000
_REQ = struct.Struct("<Q")
SEND_BURST = 64  # open loop: frames sent between two reads of the replies


# ---------------------------------------------------------------------------------------------
# cluster
# ---------------------------------------------------------------------------------------------


class BenchCluster:
    """``shardex up`` in its own process group, INFO log to a file (the supervisor's
    ``started NAME (pid N)`` lines give the pids of bridge and redis)."""

    def __init__(self, shards: int, bridge: bool, extra: list[str], accounts: int = 0) -> None:
        self.layout = Layout("127.0.0.1", free_base(), shards)
        self.data_dir = tempfile.mkdtemp(prefix="shardex-overload-")
        self.log_path = os.path.join(self.data_dir, "up.log")
        self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable,
            "-m",
            "shardex.cli",
            "--log-level",
            "INFO",
            "up",
            "--shards",
            str(shards),
            "--base-port",
            str(self.layout.base_port),
            "--data-dir",
            os.path.join(self.data_dir, "data"),
            *([] if bridge else ["--no-bridge"]),
            "--accounts",  # 0: the order path itself; 1: the default's account tier in front
            str(accounts),
            *extra,
        ]
        if "--insecure" in extra:
            os.environ["SHARDEX_KEY"] = "none"  # clients (and loadgen children) use no key
        else:  # secure: every client of this bench uses the cluster's admin key
            os.environ["SHARDEX_KEY"] = os.path.join(self.data_dir, "data", "keys", "admin.key")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent, cwd=ROOT
        )
        share_priority(self.proc.pid)  # (the cluster's session: at the bench's priority)
        try:
            self.info = self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"shardex up exited:\n{self.output()[-3000:]}")
            try:  # a new client each try: the admin key file appears once `up` has made it
                with Client(self.layout.frontend, timeout=0.5) as c:
                    info = c.topology()
                if all(t.get("pid") for t in info["topology"]):
                    return info
            except Exception:
                pass
            time.sleep(0.1)
        raise SystemExit(f"cluster did not come up:\n{self.output()[-3000:]}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """Every process of the cluster by name (the newest pid of each)."""
        out: dict[str, int] = {}
        for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", self.output()):
            out[name] = int(pid)
        with Client(self.layout.frontend, timeout=2.0) as c:
            info = c.topology()
        out["router"] = info["pid"]
        for t in info["topology"]:
            out[f"engine.{t['shard']}"] = t["pid"]
        return dict(sorted(out.items()))

    def restarts(self) -> list[str]:
        return [line for line in self.output().splitlines() if "DIED" in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self.final = self.output()  # (with the leases' renewal summaries, logged at stop)
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# open-loop generator (one process): outcome-aware, latency of acked orders only
# ---------------------------------------------------------------------------------------------


def _open_worker(args: dict[str, Any], index: int, results: Any) -> None:
    try:
        results.put(("ok", _open_loop(args, index)))
    except Exception as exc:  # reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _open_loop(a: dict[str, Any], index: int) -> dict[str, Any]:
    rate, seconds, timeout, batch = a["rate"], a["seconds"], a["timeout"], a["batch"]
    cfg = LoadConfig(endpoint=a["endpoint"], symbols=a["symbols"], seed=a["seed"] * 100 + index)
    gen = _workload(cfg, f"ov{index}-{os.getpid()}-{a['seed']}-")
    ctx = zmq.Context()
    socks = []
    key_path = os.environ.get("SHARDEX_KEY", "none")
    key = KeyFile.read(key_path) if key_path != "none" else None
    for _ in range(a["connections"]):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        if key is not None:
            client_socket(s, key)  # the cluster is secure: these raw sockets need a key too
        s.connect(a["endpoint"])
        socks.append(s)
    fds = [s.getsockopt(zmq.FD) for s in socks]
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    # from the frame's real send instead of each order's intended time: the cluster's part of
    # the latency, without this generator's own lag (``lag``: real send − intended, per order)
    wire = HdrHistogram(1, HIST_MAX_US, 3)
    lag = HdrHistogram(1, HIST_MAX_US, 3)
    # req → (n, first stamp, stamps, real send time)
    inflight: dict[bytes, tuple[int, float, list[float], float]] = {}
    c = {"sent": 0, "acked": 0, "overloaded": 0, "timeouts": 0, "errors": 0, "late": 0}
    errors: dict[str, int] = {}
    reqn = 0
    conn = 0
    time.sleep(0.3)  # connections up
    clock = time.perf_counter
    cpu0 = time.process_time()  # (this generator's own CPU: is it what limits the level?)
    t0 = clock()
    end = t0 + seconds
    next_i = 0
    last_expire = t0

    def handle(frames: list[bytes]) -> None:
        entry = inflight.pop(frames[0], None)
        if entry is None:
            c["late"] += 1  # a reply after we counted its timeout
            return
        n, _, stamps, sent_at = entry
        error, _results = decode_reply(frames[-1])
        if error is None:
            now = clock()
            c["acked"] += n
            for t in stamps:
                hist.record_value(max(1, int((now - t) * 1e6)))
            wire.record_value(max(1, int((now - sent_at) * 1e6)), n)
        elif error.startswith(ERR_OVERLOADED):
            c["overloaded"] += n
        else:
            c["errors"] += n
            key = error[:60]
            errors[key] = errors.get(key, 0) + n

    while True:
        now = clock()
        sending = now < end
        if sending:
            # at most SEND_BURST frames before the replies are read again: a generator that
            # fell behind must not leave replies waiting in its sockets for a whole catch-up
            due = min(int((now - t0) * rate) + 1, next_i + SEND_BURST * batch)
            while next_i < due:
                groups: dict[str, tuple[list[tuple], list[float]]] = {}
                count = 0
                while next_i < due and count < batch:
                    cmd = gen.next()
                    g = groups.setdefault(cmd[1], ([], []))
                    g[0].append(cmd)
                    g[1].append(t0 + next_i / rate)
                    next_i += 1
                    count += 1
                for symbol, (cmds, stamps) in groups.items():
                    reqn += 1
                    req = _REQ.pack(reqn)
                    socks[conn].send_multipart([symbol.encode(), req, encode_request(cmds)])
                    conn = (conn + 1) % len(socks)
                    sent_at = clock()
                    for t in stamps:
                        lag.record_value(max(1, int((sent_at - t) * 1e6)))
                    inflight[req] = (len(cmds), stamps[0], stamps, sent_at)
                    c["sent"] += len(cmds)
        elif not inflight:
            break
        got = False
        for s in socks:
            while True:
                try:
                    frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                handle(frames)
                got = True
        now = clock()
        if not got:
            wait = min(0.02, t0 + next_i / rate - now) if sending else 0.02
            if wait > 0:
                select.select(fds, [], [], wait)
        # expire (10×/s): no reply within ``timeout`` of the intended send time
        if now - last_expire >= 0.1:
            last_expire = now
            for req, (n, first, _, _) in list(inflight.items()):
                if now - first > timeout:
                    del inflight[req]
                    c["timeouts"] += n
    seconds_run = clock() - t0
    c["send_seconds"] = min(seconds, seconds_run)
    c["gen_cpu_s"] = time.process_time() - cpu0
    for s in socks:
        s.close(0)
    ctx.term()
    return {**c, "errors_by_reason": errors, "seconds": seconds_run, "hist": hist.encode(),
            "wire": wire.encode(), "lag": lag.encode()}  # fmt: skip


def _ms(hist: HdrHistogram, pct: float) -> float | None:
    return round(hist.get_value_at_percentile(pct) / 1000, 2) if hist.get_total_count() else None


def open_level(endpoint: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    results: Any = ctx.Queue()
    procs = []
    for i in range(args.procs):
        a = {
            "endpoint": endpoint,
            "rate": rate / args.procs,
            "seconds": args.seconds,
            "timeout": args.timeout,
            "batch": args.batch,
            "connections": args.connections,
            "symbols": args.symbols,
            "seed": args.seed,
        }
        p = ctx.Process(target=_open_worker, args=(a, i, results), daemon=True)
        p.start()
        procs.append(p)
    got = [results.get(timeout=args.seconds + args.timeout + 120) for _ in procs]
    for p in procs:
        p.join(10)
    bad = [v for k, v in got if k != "ok"]
    if bad:
        raise SystemExit(f"generator failed: {bad[0]}")
    hist, wire, lag = (HdrHistogram(1, HIST_MAX_US, 3) for _ in range(3))
    total: dict[str, Any] = {"errors_by_reason": {}}
    for _, d in got:
        hist.add(HdrHistogram.decode(d.pop("hist")))
        wire.add(HdrHistogram.decode(d.pop("wire")))
        lag.add(HdrHistogram.decode(d.pop("lag")))
        for k, v in d.pop("errors_by_reason").items():
            total["errors_by_reason"][k] = total["errors_by_reason"].get(k, 0) + v
        for k, v in d.items():
            agg = k in ("seconds", "send_seconds")  # (gen_cpu_s: summed over generators)
            total[k] = max(total.get(k, 0), v) if agg else total.get(k, 0) + v
    sent = total["sent"] or 1
    secs = total["seconds"] or 1
    return {
        "rate": round(rate),
        "offered_per_s": round(total["sent"] / (total["send_seconds"] or 1)),
        "acked_per_s": round(total["acked"] / secs),  # over the whole run, drain included
        "sent": total["sent"],
        "acked": total["acked"],
        "overloaded": total["overloaded"],
        "timeouts": total["timeouts"],
        "errors": total["errors"],
        "late_replies": total["late"],
        "overloaded_pct": round(100 * total["overloaded"] / sent, 3),
        "timeouts_pct": round(100 * total["timeouts"] / sent, 3),
        "errors_by_reason": total["errors_by_reason"],
        "p50_ms": _ms(hist, 50),
        "p99_ms": _ms(hist, 99),
        "wire_p50_ms": _ms(wire, 50),  # acked, from the real send (no generator lag)
        "wire_p99_ms": _ms(wire, 99),
        "lag_p99_ms": _ms(lag, 99),  # the generators' own: real send − intended
        # the generators' CPU per sent order (µs) and their share of a core each
        "gen_cpu_us_per_order": round(total["gen_cpu_s"] * 1e6 / sent),
        "gen_core_share": round(total["gen_cpu_s"] / (args.procs * secs), 2),
        "seconds": round(secs, 1),
    }


def saturation(endpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    """Closed loop: the acked rate when every connection keeps a full window in flight."""
    cfg = LoadConfig(
        endpoint=endpoint,
        rate=None,
        concurrency=args.connections,
        window=args.window,
        batch=args.batch,
        duration=args.sat_seconds,
        symbols=args.symbols,
        procs=args.procs,
        timeout=args.timeout,
        seed=args.seed,
    )
    rep = loadgen_run(cfg).to_dict()
    return {
        "acked_per_s": rep["acked_per_s"],
        "sent": rep["sent"],
        "errors": rep["errors"],
        "p99_ms": round(rep["latency_us"].get("p99", 0) / 1000, 2),
    }


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="per open-loop level [30]")
    p.add_argument("--sat-seconds", type=float, default=10.0, help="closed-loop run [10]")
    p.add_argument("--levels", default="0.5,1,3", help="open-loop rates as multiples of S")
    p.add_argument("--saturation", type=float, default=None, help="skip measuring: S orders/s")
    p.add_argument("--procs", type=int, default=2, help="generator processes [2]")
    p.add_argument("--connections", type=int, default=16, help="DEALERs per generator [16]")
    p.add_argument(
        "--batch", type=int, default=1, help="orders per frame, both loops [1: one per order]"
    )
    p.add_argument("--window", type=int, default=8, help="closed loop: frames per connection")
    p.add_argument("--symbols", type=int, default=2, help="markets (2: one per shard) [2]")
    p.add_argument("--timeout", type=float, default=5.0, help="no reply after this = timeout")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--no-bridge", action="store_true", help="no Redis, no bridge")
    p.add_argument(
        "--accounts", type=int, default=0, help="account shards in front (1: the default) [0]"
    )
    p.add_argument(
        "--insecure", action="store_true", help="no CURVE keys (default: the secure default)"
    )
    p.add_argument(
        "--max-queue-ms",
        type=float,
        default=None,
        help="the router's --max-queue-ms (shedding by time queued; 0: off) [its default]",
    )
    p.add_argument(
        "--queue-cap-ms",
        type=float,
        default=None,
        help="the router's --queue-cap-ms (in-flight cap from the measured rate; 0: off; the "
        "2026-12-08 rounds used 50) [its default: off]",
    )
    p.add_argument("--replicas", type=int, default=1, help="processes per shard (2: a standby)")
    p.add_argument("--lease-ms", type=int, default=None, help="with --replicas 2: the lease ttl")
    p.add_argument("--no-pin", action="store_true", help="shardex up --no-pin")
    p.add_argument("--coord", default=None, help="shardex up --coord URL: the leases' store")
    p.add_argument("--pause", type=float, default=3.0, help="idle seconds between levels")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    if args.max_queue_ms is not None:  # (the router reads it from its environment)
        os.environ["SHARDEX_MAX_QUEUE_MS"] = str(args.max_queue_ms)
    if args.queue_cap_ms is not None:
        os.environ["SHARDEX_QUEUE_CAP_MS"] = str(args.queue_cap_ms)
    share_priority()  # (this driver's session: its open-loop generators)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    extra = ["--insecure"] if args.insecure else []
    extra += ["--replicas", str(args.replicas)] + (["--no-pin"] if args.no_pin else [])
    extra += ["--coord", args.coord] if args.coord else []
    if args.lease_ms is not None:
        extra += ["--lease-ms", str(args.lease_ms)]
    cluster = BenchCluster(args.shards, not args.no_bridge, extra, args.accounts)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load": f"load average at start {os.getloadavg()[0]:.2f}",
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}",
        "config": {k: v for k, v in vars(args).items() if k != "json"},
    }
    try:
        pids = cluster.pids()
        say(f"cluster up: {pids}")
        if args.saturation:
            sat = {"acked_per_s": args.saturation, "given": True}
        else:
            say(f"closed loop for {args.sat_seconds:.0f}s (saturation) ...")
            sat = saturation(cluster.layout.frontend, args)
        report["saturation"] = sat
        s_rate = sat["acked_per_s"]
        say(f"saturation S = {s_rate:,} orders/s")
        rows = []
        for mult in levels:
            time.sleep(args.pause)
            pids = cluster.pids()
            sampler = RssSampler(pids)
            say(f"open loop {mult}× S = {mult * s_rate:,.0f}/s for {args.seconds:.0f}s ...")
            before = router_view(cluster.layout.router_metrics_port)
            row = open_level(cluster.layout.frontend, mult * s_rate, args)
            row.update(router_delta(before, router_view(cluster.layout.router_metrics_port)))
            row["level"] = mult
            row["rss"] = sampler.stop()
            row["cpu_us_per_order"] = cpu_per_order(row["rss"], row["acked"])
            row["restarts"] = len(cluster.restarts())
            rows.append(row)
        report["levels"] = rows
        report["restarts"] = cluster.restarts()
        report["verdict"] = verdict(rows)
    finally:
        cluster.stop()
    if args.replicas > 1:
        report["lease"] = lease_report(getattr(cluster, "final", ""), args.shards, args.accounts)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)


def cpu_per_order(procs: dict[str, dict[str, Any]], acked: int) -> dict[str, float | None]:
    """Each process's CPU over the level (user + system) per acked order, in µs."""
    return {n: None if v.get("cpu_s") is None or not acked else round(v["cpu_s"] * 1e6 / acked)
            for n, v in procs.items()}  # fmt: skip


def lease_report(log: str, shards: int, accounts: int) -> dict[str, Any]:
    """With replicas: false failovers (a leader that lost its lease: nobody was killed) and
    each lease's renewal summary (lateness, round trip, longest gap: logged at stop)."""
    failovers = len(re.findall(r"FAILOVER ", log))
    return {
        "lost_lease": len(re.findall(r"lost the lease", log)),
        "false_failovers": max(0, failovers - shards - accounts),  # (the first elections)
        "renewals": re.findall(r"lease (\S+(?: \d+)?) renewals: ([^\n]*)", log),
    }


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, judged on the highest level against the lowest."""
    lo, hi = min(rows, key=lambda r: r["level"]), max(rows, key=lambda r: r["level"])
    growth = max(
        (v["growth_mb"] for r in rows for v in r["rss"].values() if v["growth_mb"] is not None),
        default=0.0,
    )
    out = {
        f"timeouts at {hi['level']}x <= 0.1% of sent": hi["timeouts_pct"] <= 0.1,
        f"p99 of accepted at {hi['level']}x <= 50 ms": (
            hi["p99_ms"] is not None and hi["p99_ms"] <= 50
        ),
        f"p99 at {hi['level']}x <= 10x p99 at {lo['level']}x": (
            hi["p99_ms"] is not None
            and lo["p99_ms"] is not None
            and hi["p99_ms"] <= 10 * lo["p99_ms"]
        ),
        "RSS growth <= 50 MB per process per level": growth <= 50,
        "no process died": not any(v["gone"] for r in rows for v in r["rss"].values())
        and rows[-1]["restarts"] == 0,
    }
    return out


def print_table(rep: dict[str, Any]) -> None:
    print(f"{rep['date']}  {rep['machine']}  {rep['config']['shards']} shards, "
          f"{rep['config']['procs']} generator procs × {rep['config']['connections']} "
          f"connections, batch ≤ {rep['config']['batch']}, {rep['config']['seconds']:.0f}s/level")
    sat = rep["saturation"]
    print(f"saturation (closed loop): {sat['acked_per_s']:,} orders/s  ({rep['load']})")
    head = (
        f"{'level':>6} {'offered/s':>10} {'acked/s':>9} {'overld%':>8} {'tmout%':>8} "
        f"{'err%':>6} {'p50 ms':>8} {'p99 ms':>9} {'rtr p99':>8}  RSS growth MB end/peak"
    )
    print(head)
    for r in rep["levels"]:
        err = 100 * r["errors"] / (r["sent"] or 1)
        mem = "  ".join(
            f"{n}:{v['growth_mb']}/{v['peak_growth_mb']}" + ("(DIED)" if v["gone"] else "")
            for n, v in r["rss"].items()
        )
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}"
        rp99 = "-" if r.get("router_p99_ms") is None else f"{r['router_p99_ms']:g}"
        print(
            f"{r['level']:>5}x {r['offered_per_s']:>10,} {r['acked_per_s']:>9,} "
            f"{r['overloaded_pct']:>8.2f} {r['timeouts_pct']:>8.3f} {err:>6.2f} "
            f"{p50:>8} {p99:>9} {rp99:>8}  {mem}"
        )
        if r.get("wire_p99_ms") is not None:
            print(f"{'':>7} from the real send: p50 {r['wire_p50_ms']} ms, p99 {r['wire_p99_ms']} "
                  f"ms; generators' lag p99 {r['lag_p99_ms']} ms, CPU "
                  f"{r['gen_cpu_us_per_order']} µs/order sent, {r['gen_core_share']} of a core "
                  "each")  # fmt: skip
        if r.get("cpu_us_per_order"):
            print(f"{'':>7} CPU µs per acked order: {r['cpu_us_per_order']}")
        if r.get("router_rejected"):
            print(f"{'':>7} router rejects: {r['router_rejected']}")
        if r.get("router_at_end"):
            print(f"{'':>7} router at the end: {r['router_at_end']}")
        if r["errors_by_reason"]:
            print(f"{'':>7} errors: {r['errors_by_reason']}")
    lease = rep.get("lease")
    if lease:
        print(f"leases: {lease['false_failovers']} false failover(s), {lease['lost_lease']} "
              "lost lease(s)")
        for name, line in lease["renewals"]:
            print(f"  lease {name}: {line}")
    for line in rep["restarts"]:
        print(f"  ! {line}")
    for what, ok in rep["verdict"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")


if __name__ == "__main__":
    main()
