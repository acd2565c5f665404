"""Hot-pair isolation: one pair alone on its own shard process, measured in the same run.

Starts ``shardex up --shards 2 --accounts 0 --insecure --no-bridge`` on ``--base-port``.
Then ``--rounds`` times, with the same load: every pair on shard 0 (``reshard --shards 1``),
the hot pair sharing it with the seven others; then the hot pair alone on shard 1 (``move``):

* the hot pair (BTC-USD) is driven closed loop as fast as the cluster answers
  (``shardex loadgen --symbols 1``, its own process, its default mix): its acked orders/s;
* the seven other built-in pairs get an open-loop load (``--rate`` orders/s, each sent on its
  schedule whatever the answers): their latency p50/p99.

    python bench/hotpair.py --seconds 15 --rate 300 --base-port 62500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reshard import pct, stop_up, wait_up  # noqa: E402
from shardex.client import AsyncClient, ShardexError  # noqa: E402
from shardex.engine import DEFAULT_MARKETS  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.tools.mover import move_pair  # noqa: E402
from shardex.tools.reshard import reshard  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOT = "BTC-USD"  # (loadgen --symbols 1 trades the first built-in market)
OTHERS = [s for s in DEFAULT_MARKETS if s != HOT]


async def others(endpoint: str, rate: float, seconds: float) -> list[float]:
    """Open-loop crossing orders over the other pairs for ``seconds``: latencies (ms) of the
    answered ones, from each order's scheduled send time."""
    out: list[float] = []

    async def one(c: AsyncClient, due: float, k: int) -> None:
        sym = OTHERS[k % len(OTHERS)]
        side = "buy" if (k // len(OTHERS)) % 2 else "sell"
        try:
            r = await c.place(sym, side, "1", "50", id=f"o{time.time_ns()}-{k}",
                              account=f"a{k % 5}")  # fmt: skip
            if r.ok:
                out.append((time.perf_counter() - due) * 1000)
        except ShardexError:
            pass

    async with AsyncClient(endpoint, timeout=30.0, retry=False) as c:
        t0, k, tasks = time.perf_counter(), 0, []
        while time.perf_counter() - t0 < seconds:
            due = t0 + k / rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            tasks.append(asyncio.ensure_future(one(c, due, k)))
            k += 1
        await asyncio.gather(*tasks)
    return out


def hot_load(endpoint: str, seconds: float) -> subprocess.Popen:
    """``shardex loadgen`` closed loop on the hot pair only, in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "loadgen", "--endpoint", endpoint, "--symbols",
         "1", "--concurrency", "2", "--window", "4", "--batch", "50", "--duration",
         str(seconds), "--json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True,
    )  # fmt: skip


def phase(endpoint: str, a: argparse.Namespace) -> tuple[float, list[float], dict]:
    """The hot pair's orders/s and the other pairs' latencies (ms) under the same load."""
    hot = hot_load(endpoint, a.seconds)
    lat = asyncio.run(others(endpoint, a.rate, a.seconds))
    text, _ = hot.communicate(timeout=a.seconds + 120)
    rep = json.loads(text.strip().splitlines()[-1])
    return float(rep["acked_per_s"]), lat, rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="seconds of load per phase")
    ap.add_argument("--rate", type=float, default=300.0, help="others' open-loop orders/s")
    ap.add_argument("--rounds", type=int, default=2, help="shared/alone phase pairs")
    ap.add_argument("--base-port", type=int, default=62500)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shardex-hot-"))
    layout = Layout("127.0.0.1", a.base_port, 2)
    with open(tmp / "up.log", "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shardex.cli", "up", "--shards", "2", "--accounts", "0",
             "--insecure", "--no-bridge", "--no-pin", "--base-port", str(a.base_port),
             "--data-dir", str(tmp / "data")],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
    try:
        wait_up(layout.frontend)

        async def place(n: int | None) -> None:
            async with AsyncClient(layout.frontend, timeout=30.0, retry=False) as c:
                if n is None:
                    await move_pair(c, HOT, 1, say=lambda _l: None, shards=2)
                else:
                    await reshard(c, n, say=lambda _l: None)

        runs: dict[str, list[tuple[float, list[float], dict]]] = {"shared": [], "alone": []}
        for _ in range(a.rounds):  # (alternating: the box's drift hits both alike)
            asyncio.run(place(1))
            runs["shared"].append(phase(layout.frontend, a))
            asyncio.run(place(None))
            runs["alone"].append(phase(layout.frontend, a))
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        print(f"hot pair {HOT} closed loop + {len(OTHERS)} other pairs at {a.rate:.0f} orders/s "
              f"open loop, {a.seconds:.0f} s per phase ({when} UTC, load average "
              f"{os.getloadavg()[0]:.1f})")  # fmt: skip
        for k in range(a.rounds):
            for name, label in (("shared", "shared shard 0"), ("alone", "alone on shard 1")):
                tput, lat, rep = runs[name][k]
                print(f"round {k + 1} {label:17s}: hot pair {tput:7.0f} orders/s; others' "
                      f"latency ms p50 {pct(lat, 0.5):6.1f} p99 {pct(lat, 0.99):6.1f} "
                      f"({len(lat)} answered)")  # fmt: skip
                if os.environ.get("VERBOSE"):
                    print(json.dumps(rep)[:2000])
    finally:
        stop_up(proc, 30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
