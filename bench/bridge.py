"""Bridge throughput into Redis Streams, with its lag, against a real Redis server.

A stand-in shard (PUB of trade events + the status/events request socket + the router's topology
answer) publishes trades at a fixed offered rate; the real ``shardex bridge`` process writes them
to Redis (one entry per trade in ``shardex:trades:<SYMBOL>`` *and* one in
``shardex:events:<shard>``). We sample how many entries reached Redis and the bridge's lag (events
published but not yet in Redis). The stand-in isolates the bridge: the engine is benched
elsewhere. When ``redis-benchmark`` is installed, its pipelined XADD rate on the same server is
printed for comparison.

``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import redis  # noqa: E402
from cluster import free_base  # noqa: E402

from shardex.layout import Layout  # noqa: E402
from shardex.node.supervisor import redis_binary  # noqa: E402
from shardex.wire.protocol import (  # noqa: E402
    OP_EVENTS,
    OP_STATUS,
    decode_request,
    encode_events,
    encode_reply,
)


def fake_shard(layout: Layout, rate: int, seconds: float, batch: int, q) -> None:
    """Router topology + shard 0 (PUB trades at ``rate``/s, answers status and re-sends)."""
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(layout.frontend)
    direct = ctx.socket(zmq.ROUTER)
    direct.bind(layout.direct(0))
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 1_000_000)
    pub.bind(layout.pub(0))
    topo = {
        "router": True,
        "shards": 1,
        "pid": os.getpid(),
        "forwarded": [0],
        "rejected": {},
        "topology": [
            {
                "shard": 0,
                "shards": 1,
                "pid": os.getpid(),
                "direct": layout.direct(0),
                "pub": layout.pub(0),
            }
        ],
    }
    events: list[tuple] = []
    seq = 0
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(direct, zmq.POLLIN)

    def serve(timeout_ms: int) -> None:
        for sock, _ in poller.poll(timeout_ms):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if sock is router:
                    sock.send_multipart([frames[0], frames[2], encode_reply([topo])])
                    continue
                cmds, _ = decode_request(frames[3])
                res = []
                for c in cmds or ():
                    if c[0] == OP_STATUS:
                        res.append({"seq": seq})
                    elif c[0] == OP_EVENTS:
                        res.append(
                            {"events": events[c[1] - 1 : min(c[2], c[1] + 9999)], "seq": seq}
                        )
                sock.send_multipart([frames[0], frames[2], encode_reply(res)])

    q.put("ready")
    serve(1000)  # let the bridge find us and subscribe
    time.sleep(1.0)
    serve(10)
    t0 = time.perf_counter()
    total = int(rate * seconds)
    while seq < total:
        due = min(total, int((time.perf_counter() - t0) * rate))
        while seq < due:
            n = min(batch, due - seq)
            evs = []
            for _ in range(n):
                seq += 1
                evs.append(
                    (
                        1,
                        seq,
                        "BTC-USD",
                        3_000_000 + seq % 100,
                        10 + seq % 7,
                        f"t{seq}",
                        f"m{seq}",
                        seq & 1,
                        seq,
                    )
                )
            events.extend(evs)
            pub.send_multipart([b"BTC-USD", encode_events(0, evs)])
        serve(1)
    q.put(("published", seq, time.perf_counter() - t0))
    end = time.monotonic() + 60
    while time.monotonic() < end:
        serve(50)


def run_rate(rate: int, seconds: float, server_port: int, batch: int) -> dict:
    layout = Layout("127.0.0.1", free_base(), 1)
    r = redis.Redis(port=server_port)
    r.flushall()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    shard = ctx.Process(target=fake_shard, args=(layout, rate, seconds, batch, q), daemon=True)
    shard.start()
    q.get(timeout=30)
    bridge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardex.cli",
            "--log-level",
            "WARNING",
            "bridge",
            "--endpoint",
            layout.frontend,
            "--redis-url",
            f"redis://127.0.0.1:{server_port}/0",
            "--metrics-port",
            "0",
        ],
        cwd=ROOT,
    )
    try:
        _, published, pub_s = q.get(timeout=seconds + 60)
        samples = []
        t_end = time.monotonic() + 60
        t0 = time.monotonic()
        while time.monotonic() < t_end:
            n = r.xlen("shardex:trades:BTC-USD")
            samples.append((time.monotonic() - t0, n))
            if n >= published:
                break
            time.sleep(0.1)
        drained_s = samples[-1][0]
        lag_at_end = published - samples[0][1]
        written = samples[-1][1]
        dup_check = r.xlen("shardex:events:0")
        return {
            "offered_per_s": rate,
            "published": published,
            "published_s": round(pub_s, 2),
            "written": written,
            "events_entries": dup_check,
            "trades_per_s": round(written / (pub_s + drained_s)),
            "lag_at_publish_end": lag_at_end,
            "drain_after_s": round(drained_s, 2),
        }
    finally:
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(10)
        except subprocess.TimeoutExpired:
            bridge.kill()
        shard.terminate()
        shard.join(5)


def redis_benchmark(port: int) -> int | None:
    exe = shutil.which("redis-benchmark")
    if not exe:
        return None
    out = subprocess.run(
        [
            exe,
            "-p",
            str(port),
            "-P",
            "100",
            "-n",
            "500000",
            "-q",
            "XADD",
            "bench:s",
            "*",
            "price",
            "30000.50",
            "qty",
            "0.1000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # "XADD ...: 123456.79 requests per second" (the last line of -q output)
    for line in reversed(out.replace("\r", "\n").splitlines()):
        if "requests per second" in line:
            return int(float(line.rsplit(":", 1)[1].split()[0]))
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rates", default="25000,50000,75000")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=500, help="events per PUB message")
    p.add_argument(
        "--server",
        choices=["redis-server", "embedded"],
        default=None,
        help="default: Debian's redis-server if installed, else the embedded one",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    exe = (shutil.which("redis-server") if args.server != "embedded" else None) or redis_binary()
    port = Layout("127.0.0.1", free_base(), 1).redis_port
    d = tempfile.mkdtemp()
    server = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            d,
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        rows = []
        for rate in [int(x) for x in args.rates.split(",")]:
            rows.append(run_rate(rate, args.seconds, port, args.batch))
            if not args.json:
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        bench = redis_benchmark(port)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(d, ignore_errors=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}",
        "server": os.path.basename(exe),
        "results": rows,
        "redis_benchmark_xadd_per_s": bench,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"\n{report['date']}  {report['machine']}  server {report['server']}")
    print(
        f"{'offered/s':>10} {'trades/s into Redis':>20} {'lag at end':>11} {'drain s':>8} "
        f"{'exact':>6}"
    )
    for r in rows:
        exact = r["written"] == r["published"] == r["events_entries"]
        print(
            f"{r['offered_per_s']:>10,} {r['trades_per_s']:>20,} "
            f"{r['lag_at_publish_end']:>11,} {r['drain_after_s']:>8} {str(exact):>6}"
        )
    if bench:
        print(
            f"redis-benchmark -P 100 XADD on the same server: {bench:,} XADD/s "
            "(each trade above costs 2 XADDs: trades + events streams)"
        )


if __name__ == "__main__":
    main()
