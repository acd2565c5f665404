"""How fast the load generator itself is: `shardex loadgen` against a no-op echo router.

The echo answers the topology request and replies to every frame at once with an empty result,
so the numbers are the generator's own ceiling (it must never be the bottleneck it measures).
Prints orders/s for 1 and 2 generator processes; ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import free_base  # noqa: E402

from shardex.layout import Layout  # noqa: E402
from shardex.wire.protocol import encode_reply  # noqa: E402


def echo(endpoint: str, shards: int) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.bind(endpoint)
    topo = encode_reply([{"shards": shards, "topology": [{"shard": i} for i in range(shards)]}])
    empty = encode_reply([])
    while True:
        frames = s.recv_multipart()
        s.send_multipart([frames[0], frames[2], topo if not frames[1] else empty])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--procs", default="1,2")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    endpoint = Layout("127.0.0.1", free_base()).frontend
    srv = mp.get_context("spawn").Process(target=echo, args=(endpoint, 2), daemon=True)
    srv.start()
    time.sleep(0.5)
    rows = []
    try:
        for procs in [int(x) for x in args.procs.split(",")]:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "shardex.cli",
                    "loadgen",
                    "--endpoint",
                    endpoint,
                    "--duration",
                    str(args.duration),
                    "--procs",
                    str(procs),
                    "--json",
                    "--quiet",
                ],
                capture_output=True,
                text=True,
                timeout=args.duration + 60,
                cwd=ROOT,
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            rep = json.loads(out.stdout)
            rows.append(
                {
                    "procs": procs,
                    "orders_per_s": rep["acked_per_s"],
                    "p99_us": rep["latency_us"].get("p99"),
                }
            )
    finally:
        srv.terminate()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}",
        "results": rows,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{report['date']}  {report['machine']}  loadgen vs no-op echo (closed loop, "
        "batch 100, window 8)"
    )
    for r in rows:
        print(f"  procs {r['procs']}: {r['orders_per_s']:>10,} orders/s   p99 {r['p99_us']:,} µs")


if __name__ == "__main__":
    main()
