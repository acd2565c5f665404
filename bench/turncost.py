"""CPU per order of each node's loop at low rate, measured in one thread on real sockets.

``python bench/turncost.py`` builds the default cluster (router, 1 engine shard, 1 account shard,
CURVE, journal on) as objects on real ZeroMQ sockets in this process, and drives their
``turn()``s from one thread: a node turns when its poller reports a socket ready or when its
poll timeout would have expired (as a process's loop would wake), never otherwise. A client
process sends orders one at a time (each waits for its reply: the low-rate regime, where every
order pays the per-wake-up costs alone). Printed per node: CPU µs of its turns per order
(``time.thread_time``: only this thread's CPU, so other load on the box inflates it far less
than a process's), turns per order, and the ZeroMQ I/O threads' CPU per order.

Because nodes run in one thread, what one node sends is read by the next only when the driver
gets to it, as in a process that was scheduled a bit later; the count of wake-ups per order is
the same as the processes'. ``--profile`` adds a cProfile of the measured turns.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from shardex.auth import KeyStore
from shardex.cli.accounts import accounts_config
from shardex.cli.engine import engine_config
from shardex.cli.router import router_config
from shardex.inproc import parse
from shardex.kinds import Plan, spawns
from shardex.layout import Layout
from shardex.net import Transport
from shardex.node.accounts import AccountNode
from shardex.node.router import RouterNode
from shardex.node.shard import ShardNode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import free_base  # noqa: E402

# the real sockets, but nodes that share a process (no metrics port, GC, signals, pinning)
NAMES = ("router", "engine", "accounts")
NET = Transport("zmq-shared", zmq.Context, zmq.Poller, zmq.asyncio.Context, in_process=True)

CLIENT = r"""
import sys, time
from shardex.client import Client
ep, key = sys.argv[1], sys.argv[2]
n, window, batch = (int(a) for a in sys.argv[3:6])
with Client(ep, key=key, timeout=10) as c:
    for a in ("a1", "a2"):
        for asset, amt in (("USD", "100000000"), ("BTC", "100000")):
            assert c.deposit(a, asset, amt).ok
    for k in range(20):  # warm-up
        c.place("BTC-USD", "buy" if k % 2 else "sell", "0.01", "100", account="a1", id=f"w{k}")
    print("go", flush=True)
    # crossing limit orders: half trade (settlements), half rest
    cmds = [c.order("BTC-USD", "buy" if k % 2 else "sell", "0.01", str(100 + k % 3),
                    account=f"a{1 + (k // batch) % 2}", id=f"o{k}") for k in range(n)]
    if window == 1 and batch == 1:  # one at a time: each waits for its reply
        for cmd in cmds:
            assert c.submit_many([cmd], batch=1, window=1)[0].ok
    else:  # ``batch`` orders per frame, ``window`` frames in flight: the nodes batch
        assert all(r.ok for r in c.submit_many(cmds, batch=batch, window=window))
    print("done", flush=True)
"""


class Sampler:
    """Every 0.5 ms, the main thread's CPU since the last look, charged to its stack then."""

    def __init__(self) -> None:
        self.main = threading.main_thread().ident
        self.clock = time.pthread_getcpuclockid(self.main)  # type: ignore[arg-type]
        self.self_t: collections.Counter[str] = collections.Counter()
        self.cum_t: collections.Counter[str] = collections.Counter()
        self.on = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        last = time.clock_gettime(self.clock)
        while True:
            time.sleep(0.0005)
            now = time.clock_gettime(self.clock)
            d, last = now - last, now
            f = sys._current_frames().get(self.main)  # type: ignore[arg-type]
            if not self.on or f is None or d <= 0:
                continue
            c = f.f_code
            self.self_t[f"{c.co_filename.rsplit('/', 1)[-1]}:{c.co_name}:{f.f_lineno}"] += d
            seen = set()
            while f is not None:
                k = f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_code.co_name}"
                if k not in seen:
                    self.cum_t[k] += d
                    seen.add(k)
                f = f.f_back

    def report(self, n: int) -> None:
        print("-- self (µs/order)")
        for k, v in self.self_t.most_common(40):
            print(f"{v * 1e6 / n:8.1f} {k}")
        print("-- cumulative (µs/order)")
        for k, v in self.cum_t.most_common(60):
            print(f"{v * 1e6 / n:8.1f} {k}")


class ZeroPoller:
    """The node's poller, never waiting: the driver decided the node wakes now."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def poll(self, timeout: Any = None) -> Any:
        return self.inner.poll(0)

    def register(self, *a: Any) -> Any:
        return self.inner.register(*a)

    def unregister(self, *a: Any) -> Any:
        return self.inner.unregister(*a)


def build(base: int, tmp: Path) -> tuple[list[tuple[str, Any]], str]:
    keys = tmp / "keys"
    KeyStore(keys).init()
    plan = Plan(layout=Layout(base_port=base, shards=1, accounts=1), pin=False, redis=None,
                data_dir=str(tmp / "data"), keys_dir=str(keys))  # fmt: skip
    nodes: list[tuple[str, Any]] = []
    for kind, spawn in spawns(plan):
        o = parse(kind, spawn.values) if kind.name in ("router", "engine", "accounts") else None
        if o is None:
            continue
        if kind.name == "router":
            cfg = router_config(**o)
            cfg.metrics_port = None
            nodes.append(("router", RouterNode(cfg, NET)))
        elif kind.name == "engine":
            ecfg, _ = engine_config(**o)
            ecfg.metrics_port = None
            nodes.append(("engine", ShardNode(ecfg, net=NET)))
        else:
            acfg = accounts_config(**o)[0]
            acfg.metrics_port = None
            nodes.append(("accounts", AccountNode(acfg, net=NET)))
    return nodes, str(keys / "admin.key")


def io_threads_cpu() -> float:
    """CPU seconds of this process's threads other than the main one (ZeroMQ I/O threads)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for t in os.listdir("/proc/self/task"):
        if int(t) == os.getpid():
            continue
        raw = Path(f"/proc/self/task/{t}/stat").read_text()
        rest = raw[raw.rindex(")") + 2 :].split()
        total += (int(rest[11]) + int(rest[12])) / tick
    return total


def drive(
    nodes: list[tuple[str, Any]],
    client: subprocess.Popen,
    prof: Any,
    sampler: Sampler | None = None,
) -> dict[str, Any]:
    """Turn nodes as their processes would wake, until the client is done; measure after "go"."""
    cpu = {name: 0.0 for name, _ in nodes}
    turns = {name: 0 for name, _ in nodes}
    real = {name: node.poller for name, node in nodes}
    for _, node in nodes:
        node.poller = ZeroPoller(node.poller)
        node.start()
    last = {name: 0.0 for name, _ in nodes}
    measuring = False
    io0 = 0.0
    assert client.stdout is not None
    fd = client.stdout.fileno()
    while True:
        if select.select([fd], [], [], 0)[0]:
            line = client.stdout.readline().strip()
            if line == "go":
                measuring, io0 = True, io_threads_cpu()
                cpu = {k: 0.0 for k in cpu}
                turns = {k: 0 for k in turns}
            elif line == "done" or not line:
                break
        now = time.monotonic()
        for name, node in nodes:
            timeout = node.poll_ms() / 1000 if hasattr(node, "poll_ms") else 0.2
            if not real[name].poll(0) and now - last[name] < timeout:
                continue
            last[name] = now
            if measuring and prof is not None:
                prof[name].enable()
            if sampler is not None:
                sampler.on = measuring
            t = time.thread_time()
            node.turn()
            cpu[name] += time.thread_time() - t
            if sampler is not None:
                sampler.on = False
            if measuring and prof is not None:
                prof[name].disable()
            turns[name] += 1
    return {"cpu": cpu, "turns": turns, "io": io_threads_cpu() - io0}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--window", type=int, default=1, help="orders in flight (1: one at a time)")
    p.add_argument("--batch", type=int, default=1, help="orders per frame (100: closed-100)")
    p.add_argument("--base-port", type=int, default=None, help="[a free one, free_base]")
    p.add_argument("--profile", action="store_true", help="cProfile of each node's measured turns")
    p.add_argument("--top", type=int, default=30, help="functions printed per node (--profile)")
    p.add_argument("--dump", default=None, help="with --profile: write DUMP.<node> stats files")
    p.add_argument(
        "--sample", action="store_true", help="CPU-weighted samples of the driving thread"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="turncost-") as d:
        base = args.base_port or free_base(800)  # (SHARDEX_BENCH_PORTS=LO-HI: in that range)
        nodes, admin = build(base, Path(d))
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, f"tcp://127.0.0.1:{base}", admin,
             str(args.orders), str(args.window), str(args.batch)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        prof = None
        if args.profile:  # one per node: each node's calls apart
            prof = {name: cProfile.Profile(time.thread_time) for name in NAMES}
        sampler = Sampler() if args.sample else None
        try:
            res = drive(nodes, client, prof, sampler)
        finally:
            client.kill()
            client.wait()
            for _, node in nodes:
                node.close()
    n = args.orders
    how = "one at a time" if args.window == 1 else f"{args.window} in flight"
    how = f"{args.batch} per frame, {how}"
    print(f"{time.strftime('%Y-%m-%d %H:%M')} {n} orders {how}; load {os.getloadavg()}")
    for name in res["cpu"]:
        print(f"  {name:<9} {res['cpu'][name] * 1e6 / n:8.1f} µs/order  "
              f"{res['turns'][name] / n:5.2f} turns/order")  # fmt: skip
    print(f"  io threads {res['io'] * 1e6 / n:7.1f} µs/order (all nodes)")
    if prof is not None:
        for name, one in prof.items():
            st = pstats.Stats(one)
            print(f"== {name}: {st.total_calls / n:.1f} Python+C calls per order")  # type: ignore[attr-defined]
            st.sort_stats("tottime").print_stats(args.top)
            if args.dump:
                one.dump_stats(f"{args.dump}.{name}")
    if sampler is not None:
        sampler.report(n)


if __name__ == "__main__":
    main()
