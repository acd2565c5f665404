"""The gateway measured: market data to N WebSocket clients under load, REST against the SDK.

A real ``shardex up`` cluster with one gateway (``--gateways G``: G of them, the client
processes spread over them; engine path, ``--accounts 0``, secure: the gateway reads with its
own keys; its CPU and RSS are the gateways' together). For each client count N (``--clients``,
default 100, 1,000, 5,000): ``--procs`` client processes (``bench/gwclients.py``) open N
connections in all, each subscribed to ``trades`` and ``book`` of the loaded pairs; then
``shardex loadgen`` offers ``--rate`` orders/s (open loop, default 5,000) for ``--seconds``.
Reported per N:

* frames/s delivered (every text frame the clients read, from the load's start to the last
  trade reaching every client);
* commit → frame latency p50/p99/max: a trade's ``ts`` (the engine's exchange time) against
  the client's clock when it reads the frame (same box);
* gateway CPU per 1,000 frames and per 1,000 trades delivered (``--batch`` puts several
  trades in a frame) (``/proc``, over the same span) and RSS per client (the
  gateway's RSS with the N clients subscribed minus before they connected, over N);
* the clients' own CPU (% of one core per client process: near 100 % means the client side,
  not the gateway, set the pace);
* silent gaps (a seq chain broken without the gateway's ``resync_required``: must be 0),
  resyncs the gateway announced, and the CRC32 checks made (one full book per client process).

Then REST against the SDK in the same run, on the idle cluster: ``--rest-seconds`` of signed
``POST /v1/order`` from ``--rest-concurrency`` concurrent requests, and the same orders, the
same concurrency through ``AsyncClient`` over ZeroMQ, alternated ``--rest-rounds`` times;
orders/s and p50/p99.

    python bench/gateway.py                         # the full run (minutes)
    python bench/gateway.py --clients 10 --seconds 1 --rate 200 --json   # a smoke run

Progress on stderr, a table (or ``--json``) on stdout. Ports: ``--base-port``, else a free
range (within ``SHARDEX_BENCH_PORTS=LO-HI`` when set).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import redis
import uvloop
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from gwclients import worker  # noqa: E402
from gwmeasure import (  # noqa: E402
    box_busy,
    gateway_metrics,
    hops,
    print_hops,
    proc_cpu,
    proc_rss,
    run_delay,
    written,
)
from proccpu import per_role, snapshot  # noqa: E402
from reaper import die_with_parent  # noqa: E402
from scaling import free_base, machine, say  # noqa: E402

from shardex.client import AsyncClient  # noqa: E402

GATEWAY_OFFSET = 86  # gateway 0 serves on base+86 (docs/gateway.md)
REDIS_OFFSET = 4
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]


def int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"give positive integers: {text!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int_list, default=[100, 1000, 5000],
                    help="WebSocket client counts, comma-separated [100,1000,5000]")
    ap.add_argument("--procs", type=int, default=2, help="client processes [2]")
    ap.add_argument("--rate", type=float, default=5000, help="orders/s offered [5000]")
    ap.add_argument("--seconds", type=float, default=10, help="seconds of load per N [10]")
    ap.add_argument("--gateways", type=int, default=1, choices=range(1, 9),
                    help="gateway processes; client processes spread over them [1]")
    ap.add_argument("--batch", action="store_true",
                    help="clients take each step's trades in one message (docs/gateway.md)")
    ap.add_argument("--reader", choices=("raw", "aiohttp"), default="raw",
                    help="the clients' WebSocket reader: raw frames (bench/gwraw.py) or aiohttp's "
                         "client [raw]")
    ap.add_argument("--pairs", type=int, default=2, choices=range(1, len(SYMBOLS) + 1),
                    help="pairs loaded and subscribed [2]")
    ap.add_argument("--rest-seconds", type=float, default=5, help="per REST/SDK round [5]")
    ap.add_argument("--rest-rounds", type=int, default=2, help="REST/SDK rounds, alternated [2]")
    ap.add_argument("--rest-concurrency", type=int, default=8, help="requests in flight [8]")
    ap.add_argument("--base-port", type=int, help="the cluster's base port [a free one]")
    ap.add_argument("--tree", type=Path, default=ROOT,
                    help="run the cluster from this checkout (a before/after) [this one]")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap.parse_args(argv)


# -- the cluster ---------------------------------------------------------------------------------


class Cluster:
    """``shardex up`` with ``gateways`` gateways, in a session of its own (dies with the
    bench)."""

    def __init__(self, base: int, tree: Path = ROOT, gateways: int = 1) -> None:
        self.base, self.tree = base, tree
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.dir = Path(tempfile.mkdtemp(prefix="gwbench-"))
        self.log = open(self.dir / "up.log", "w+b")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "shardex.cli", "up",
                "--shards", "1", "--accounts", "0", "--gateways", str(gateways), "--no-pin",
                "--base-port", str(base), "--data-dir", str(self.dir / "data"),
                "--without", "history-writer", "--without", "candles-worker"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=tree,
                                     env=env, start_new_session=True,
                                     preexec_fn=die_with_parent)  # fmt: skip
        self.urls = [f"http://127.0.0.1:{base + GATEWAY_OFFSET + g}" for g in range(gateways)]
        self.url = self.urls[0]
        self.keys = self.dir / "data" / "keys"
        deadline = time.monotonic() + 120
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.output()
                self.stop()
                raise SystemExit(f"the cluster did not come up:\n{out[-3000:]}")
            time.sleep(0.2)
        pids = re.findall(r"started gateway(?:\.\d+)? \(pid (\d+)\)", self.output())
        if len(pids) < gateways:
            out = self.output()
            self.stop()
            raise SystemExit(f"no gateway pid in shardex up's output:\n{out[-3000:]}")
        self.gateway_pids = [int(p) for p in pids[-gateways:]]

    def output(self) -> str:
        self.log.flush()
        return (self.dir / "up.log").read_text(errors="replace")

    def health(self, url: str | None = None) -> dict[str, Any]:
        with urllib.request.urlopen((url or self.url) + "/healthz", timeout=5) as resp:
            return json.loads(resp.read())

    def healthy(self) -> bool:
        try:
            return all(self.health(u).get("status") == "ok" for u in self.urls)
        except OSError:
            return False

    def wait_idle(self, timeout: float) -> None:
        """Until the gateway counts no connection (a busy one may answer slowly meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not any(self.health(u).get("connections") for u in self.urls):
                    return
            except OSError:
                pass
            time.sleep(0.2)

    def api_key(self) -> dict[str, Any]:
        """A trader key for account ``bench`` with its REST API key (``shardex keys add``)."""
        out = subprocess.run([sys.executable, "-m", "shardex.cli", "keys", "add", "--account",
                              "bench", "--api", "--data-dir", str(self.dir / "data")],
                             capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
        path = re.search(r"API key:\s+(\S+\.json)", out.stdout)
        assert path, out.stdout
        return json.loads(Path(path.group(1)).read_text())

    def redis(self) -> redis.Redis:
        """The cluster's Redis as its read-only user ``reader``."""
        users = json.loads((self.keys / "redis.json").read_text())["users"]["reader"]
        return redis.Redis(port=self.base + REDIS_OFFSET, username="reader",
                           password=users["password"], decode_responses=True)  # fmt: skip

    def trade_tops(self, symbols: list[str]) -> dict[str, int]:
        """Each pair's last trade seq in its stream (what every client must get)."""
        r = self.redis()
        try:
            tops = {}
            for s in symbols:
                top = r.xrevrange(f"shardex:trades:{s}", "+", "-", count=1)
                tops[s] = int(top[0][0].split("-")[0]) if top else 0
            return tops
        finally:
            r.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- market data to N clients --------------------------------------------------------------------


def loadgen(c: Cluster, rate: float, seconds: float, pairs: int) -> dict[str, Any]:
    """``shardex loadgen`` for ``seconds``: its JSON report, and its own CPU seconds."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, "-m", "shardex.cli", "loadgen", "--endpoint",
            f"tcp://127.0.0.1:{c.base}", "--key", str(c.keys / "admin.key"), "--rate",
            str(rate), "--duration", str(seconds), "--symbols", str(pairs), "--json",
            "--quiet", "--max-error-rate", "1"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                         timeout=seconds + 120)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr[-2000:]}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # (the one child reaped meanwhile)
    return {**json.loads(out.stdout), "cpu_s": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime
            - cpu0.ru_stime}  # fmt: skip


class StreamWatch(threading.Thread):
    """The baseline in the same run: commit → Redis, each trade read from its stream as it
    comes (XREAD, as the gateway does), against this process's clock. What the gateway adds
    is commit → frame minus this (the bridge's part is in both)."""

    def __init__(self, c: Cluster, symbols: list[str]) -> None:
        super().__init__(daemon=True)
        self.r, self.hist, self.done = c.redis(), HdrHistogram(1, 600_000_000, 2), False
        self.pos = {f"shardex:trades:{s}": "$" for s in symbols}

    def run(self) -> None:
        while not self.done:
            for key, entries in self.r.xread(self.pos, count=1000, block=200) or ():
                now = int(time.time() * 1e6)
                self.pos[key] = entries[-1][0]
                for _, f in entries:
                    if f.get("ts", "").isdigit():
                        self.hist.record_value(max(1, now - int(f["ts"]) * 1000))

    def stop(self) -> dict[str, float]:
        self.done = True
        self.join(10)
        self.r.close()
        return {"p50": self.hist.get_value_at_percentile(50) / 1000,
                "p99": self.hist.get_value_at_percentile(99) / 1000,
                "max": self.hist.get_max_value() / 1000}  # fmt: skip


def fleet_run(c: Cluster, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One client count: connect, load, drain, collect."""
    symbols = SYMBOLS[: args.pairs]
    procs = max(1, min(args.procs, n))
    rss0 = proc_rss(c.gateway_pids)
    pipes, workers = [], []
    for k in range(procs):
        mine, theirs = mp.Pipe()
        share = n // procs + (1 if k < n % procs else 0)
        url = c.urls[k % len(c.urls)]  # (client processes spread over the gateways)
        p = mp.Process(target=worker, args=(url.replace("http", "ws") + "/v1/ws", share,
                                            symbols, theirs, args.batch, args.reader),
                       daemon=True)  # fmt: skip
        p.start()
        pipes.append(mine)
        workers.append(p)
    try:
        for pipe in pipes:
            if not pipe.poll(300) or not pipe.recv()["ready"]:
                raise SystemExit(f"{n} clients did not all connect and sync")
        rss1 = proc_rss(c.gateway_pids)
        say(f"  {n} clients connected and synced; load {args.rate:g}/s for {args.seconds:g} s")
        cpu0, roles0 = proc_cpu(c.gateway_pids), snapshot(c.proc.pid)
        sys0 = proc_cpu(c.gateway_pids, kernel=True)
        wait0, gm0, box0 = run_delay(c.gateway_pids), gateway_metrics(c.urls), box_busy()
        t0, avg0 = time.perf_counter(), float(Path("/proc/loadavg").read_text().split()[0])
        watch = StreamWatch(c, symbols)
        watch.start()
        for pipe in pipes:
            pipe.send("start")
        load = loadgen(c, args.rate, args.seconds, args.pairs)
        tops = c.trade_tops(symbols)
        for pipe in pipes:
            pipe.send(tops)
        reps = [pipe.recv() for pipe in pipes if pipe.poll(300)]  # (a backlog drains first)
        load["redis_ms"] = watch.stop()
        cpu1, wall = proc_cpu(c.gateway_pids), time.perf_counter() - t0
        roles = {k.split()[0]: round(100 * v / wall) for k, v in
                 sorted(per_role(roles0, snapshot(c.proc.pid)).items()) if v > 0.01 * wall}
        load["cluster_cpu_pct"] = roles  # (% of one core, per process kind, over the run)
        load["gateway_wait_pct"] = round(100 * (run_delay(c.gateway_pids) - wait0) / wall)
        load["gateway_sys_share"] = round((proc_cpu(c.gateway_pids, kernel=True) - sys0)
                                          / max(cpu1 - cpu0, 1e-9), 2)  # fmt: skip
        load["gateway_writes"] = written(gm0, gateway_metrics(c.urls), wall)
        load["loadavg"] = [avg0] + [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
        box1 = box_busy()
        load["box_busy_pct"] = round(100 * (box1[0] - box0[0]) / (box1[1] - box0[1]))
        roles["loadgen"] = round(100 * load.pop("cpu_s") / wall)
        if len(reps) != procs:
            raise SystemExit("a client process did not report")
        for pipe in pipes:
            pipe.send("close")
        for p in workers:
            p.join(30)
    finally:
        for p in workers:
            if p.is_alive():
                p.terminate()
    return summarize(n, reps, load, cpu1 - cpu0, wall, (rss1 - rss0) / n)


def summarize(n: int, reps: list[dict[str, Any]], load: dict[str, Any], cpu: float,
              wall: float, rss_per_client: float) -> dict[str, Any]:  # fmt: skip
    hist = HdrHistogram(1, 600_000_000, 2)
    for r in reps:
        hist.decode_and_add(r["hist"])
    frames = sum(r["frames"] for r in reps)
    span = max(r["wall"] for r in reps)
    tot = {k: sum(r[k] for r in reps) for k in ("trades", "books", "heartbeats", "silent_gaps",
                                                   "resyncs", "bad_checksums", "checked",
                                                   "reached")}  # fmt: skip
    return {"clients": n, "frames": frames, "frames_per_s": round(frames / span),
            "latency_ms": {"p50": hist.get_value_at_percentile(50) / 1000,
                           "p99": hist.get_value_at_percentile(99) / 1000,
                           "max": hist.get_max_value() / 1000},
            "gateway_cpu_ms_per_1k_frames": round(1000 * cpu / max(frames / 1000, 1e-9), 2),
            "gateway_cpu_ms_per_1k_trades": round(1000 * cpu / max(tot["trades"] / 1000, 1e-9),
                                                  2),  # (a batch carries several)
            "gateway_cpu_s": round(cpu, 2), "span_s": round(span, 2), "wall_s": round(wall, 2),
            "gateway_rss_kib_per_client": round(rss_per_client / 1024, 1),
            "client_cpu_pct": [round(100 * r["cpu"] / max(r["wall"], 1e-9)) for r in reps],
            "commit_to_redis_ms": load["redis_ms"],
            "cluster_cpu_pct": load.get("cluster_cpu_pct", {}), "loadavg": load.get("loadavg"),
            "gateway_wait_pct": load.get("gateway_wait_pct"),  # (runnable, no core: % of wall)
            "gateway_sys_share": load.get("gateway_sys_share"),  # (of its CPU, in the kernel)
            "client_sys_share": [round(r.get("sys", 0) / max(r["cpu"], 1e-9), 2) for r in reps],
            "gateway_writes": load.get("gateway_writes"), "box_busy_pct": load.get("box_busy_pct"),
            "hops_ms": hops(hist, load),
            "client_wait_pct": [round(100 * r["wait"] / max(r["wall"], 1e-9)) for r in reps],
            "load": {k: load.get(k) for k in ("sent", "acked", "acked_per_s", "p50_us",
                                              "p99_us") if k in load},
            **tot}  # fmt: skip


# -- REST against the SDK ------------------------------------------------------------------------


def signed_headers(rec: dict[str, Any], method: str, path: str, body: bytes) -> dict[str, str]:
    """docs/gateway.md: HMAC-SHA256 over timestamp + METHOD + path + body."""
    ts = str(int(time.time() * 1000))
    mac = hmac.new(rec["secret"].encode(), (ts + method + path).encode() + body, hashlib.sha256)
    return {"X-SHARDEX-KEY": rec["key_id"], "X-SHARDEX-TIMESTAMP": ts,
            "X-SHARDEX-SIGNATURE": mac.hexdigest(), "Content-Type": "application/json"}


def order(tag: str, k: int) -> dict[str, str]:
    """A resting buy far below the market: nothing trades, every order is one engine op."""
    return {"symbol": "BTC-USD", "side": "buy", "qty": "0.001", "price": "1000.00",
            "id": f"{tag}{k}"}  # fmt: skip


async def closed_loop(send: Any, conc: int, seconds: float) -> tuple[int, list[float]]:
    """``conc`` senders, one request each in flight, for ``seconds``: (errors, latencies µs)."""
    lats: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    count = iter(range(10**9))

    async def one() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t = time.perf_counter()
            errors += not await send(next(count))
            lats.append((time.perf_counter() - t) * 1e6)

    await asyncio.gather(*(one() for _ in range(conc)))
    return errors, lats


async def rest_vs_sdk(c: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    rec = c.api_key()
    out: dict[str, Any] = {"rest": [], "sdk": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http, \
            AsyncClient(f"tcp://127.0.0.1:{c.base}", key=rec["key_file"]) as sdk:  # fmt: skip

        async def via_rest(k: int) -> bool:
            body = json.dumps(order(f"r{rnd}-", k)).encode()
            head = signed_headers(rec, "POST", "/v1/order", body)
            async with http.post(c.url + "/v1/order", data=body, headers=head) as resp:
                return resp.status == 200 and (await resp.json())["ok"]

        async def via_sdk(k: int) -> bool:
            o = order(f"s{rnd}-", k)
            res = await sdk.place(o["symbol"], o["side"], o["qty"], o["price"], id=o["id"])
            return not res.rejected

        for rnd in range(args.rest_rounds):
            for name, send in (("rest", via_rest), ("sdk", via_sdk)):
                errors, lats = await closed_loop(send, args.rest_concurrency, args.rest_seconds)
                lats.sort()
                out[name].append({"orders_per_s": round(len(lats) / args.rest_seconds),
                                  "p50_us": round(lats[len(lats) // 2]),
                                  "p99_us": round(lats[int(len(lats) * 0.99)]),
                                  "errors": errors})  # fmt: skip
                say(f"  {name} round {rnd + 1}: {out[name][-1]}")
    return out


# -- the report ----------------------------------------------------------------------------------


def start(base_port: int | None, where: str, tree: Path, gateways: int = 1) -> Cluster:
    """The cluster, on ``base_port`` or a free range (another one if a port was taken)."""
    for attempt in range(3):
        base = base_port or free_base(420)
        say(f"cluster on base port {base} ({where})")
        try:
            return Cluster(base, tree, gateways)
        except SystemExit as exc:
            if base_port or attempt == 2 or "in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rep: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "machine": machine(), "config": {k: str(v) if k == "tree" else v
                                                            for k, v in vars(args).items()
                                                            if k != "json"}}  # fmt: skip
    c = start(args.base_port, rep["machine"], args.tree, args.gateways)
    try:
        rep["fleets"] = []
        for i, n in enumerate(args.clients, 1):
            procs = min(args.procs, n)
            say(f"[{i}/{len(args.clients)}] {n} WebSocket clients in {procs} process(es)")
            rep["fleets"].append(fleet_run(c, n, args))
            say(f"  {json.dumps(rep['fleets'][-1])}")
            c.wait_idle(120)  # the gateway sees them go before the next N
        say("REST orders against the SDK's over ZeroMQ")
        rep["rest_vs_sdk"] = uvloop.run(rest_vs_sdk(c, args))
    finally:
        c.stop()
    return rep


def print_table(rep: dict[str, Any]) -> None:
    print(f"{rep['date']}, {rep['machine']}; load {rep['config']['rate']:g} orders/s on "
          f"{rep['config']['pairs']} pair(s)\n")
    print("| clients | frames/s | commit → frame p50 / p99 / max ms | commit → Redis p50 / p99 ms "
          "| gateway CPU ms / 1k frames | gateway CPU ms / 1k trades | gateway RSS KiB / client "
          "| client CPU % (per process) | silent gaps | resyncs | CRC checks |")
    print("| ---: | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for f in rep["fleets"]:
        lat, rd = f["latency_ms"], f["commit_to_redis_ms"]
        print(f"| {f['clients']:,} | {f['frames_per_s']:,} | {lat['p50']:g} / {lat['p99']:g} / "
              f"{lat['max']:g} | {rd['p50']:g} / {rd['p99']:g} | "
              f"{f['gateway_cpu_ms_per_1k_frames']:g} | "
              f"{f.get('gateway_cpu_ms_per_1k_trades', 0):g} | "
              f"{f['gateway_rss_kib_per_client']:g} | "
              f"{' / '.join(map(str, f['client_cpu_pct']))} | {f['silent_gaps']} | "
              f"{f['resyncs']} | {f['checked']:,} |")
    print_hops(rep)
    print("\n| path | round | orders/s | p50 µs | p99 µs | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rounds in rep["rest_vs_sdk"].items():
        for i, r in enumerate(rounds, 1):
            print(f"| {name} | {i} | {r['orders_per_s']:,} | {r['p50_us']:,} | {r['p99_us']:,} "
                  f"| {r['errors']} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rep = run(args)
    if args.json:
        print(json.dumps(rep))
    else:
        print_table(rep)


if __name__ == "__main__":
    main()
