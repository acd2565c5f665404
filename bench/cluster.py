"""Cluster throughput and latency: real `shardex up` clusters, real ZeroMQ, real processes.

For 1 and 2 shards, through the router and direct to the shards:

* closed loop: client processes push pre-built orders with ``submit_raw`` (batch B, window W
  frames in flight) as fast as replies come back → acked orders/s (and frame round-trip
  percentiles);
* open loop: one order per frame sent on a fixed schedule (R orders/s); latency is measured from
  the *intended* send time, so a stall delays every order behind it and shows up in the tail
  (no coordinated omission).

``--secure`` runs the cluster with its CURVE keys (``shardex up``'s default; keys in a temp dir,
clients use its admin key); without it the cluster runs ``--insecure``, as the numbers before
identity existed did. Run both back to back to see what authentication and encryption cost.

``--compare REF [options]`` runs ``bench/compare.py REF [options]`` instead: REF (a temp git
worktree) and this tree, interleaved, one-order frames, with ratios.

Prints a table; ``--json`` prints one JSON object with ``acked_per_s``, ``p50_us``, ``p99_us``,
``p999_us`` per configuration.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import platform
import random
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import zmq
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from orders import side_of  # noqa: E402
from reaper import die_with_parent  # noqa: E402  (clusters die with the bench)
from scaling import free_base as scaling_free_base  # noqa: E402

from shardex.auth import KeyFile, client_socket  # noqa: E402
from shardex.client import Client  # noqa: E402
from shardex.engine.codes import GTC, LIMIT, OP_NEW  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.wire.protocol import decode_reply, encode_request, shard_for  # noqa: E402

KEY: Path | None = None  # the admin key of a --secure cluster (set before any worker forks)
SYMBOLS_2 = ("BTC-USD", "ETH-USD")  # crc32 puts these on different shards when N = 2
assert shard_for(SYMBOLS_2[0], 2) != shard_for(SYMBOLS_2[1], 2)



@functools.cache
def accounts_off(root: Path) -> tuple[str, ...]:
    """``--accounts 0`` when ``root``'s ``shardex up`` has an account tier (on by default
    now): these benches measure the order path itself, unfunded, as before the tier existed
    (``bench/accounts.py`` measures the tier). Empty for an older tree without the option."""
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "up", "--help"],
        cwd=root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return ("--accounts", "0") if "--accounts" in out.stdout else ()

def free_base() -> int:
    """A base port whose 4-shard layout is free (``scaling.free_base``: within
    ``SHARDEX_BENCH_PORTS=LO-HI`` when set, e.g. a test worker's own range)."""
    probe = Layout("127.0.0.1", 20000, 4)
    return scaling_free_base(max(probe.ports()) - probe.base_port + 1)


def start_cluster(
    shards: int, pin: bool, *extra: str, secure: bool = False
) -> tuple[subprocess.Popen, Layout]:
    global KEY
    layout = Layout("127.0.0.1", free_base(), shards)
    if "--data-dir" not in extra:
        extra = (*extra, "--ephemeral")
    if secure:
        import tempfile

        keys = Path(tempfile.mkdtemp(prefix="shardex-bench-keys-"))
        extra = (*extra, "--keys-dir", str(keys))
        KEY = keys / "admin.key"
    else:
        extra = (*extra, "--insecure")
        KEY = None
    argv = [
        sys.executable,
        "-m",
        "shardex.cli",
        "--log-level",
        "WARNING",
        "up",
        "--shards",
        str(shards),
        "--base-port",
        str(layout.base_port),
    ]
    if not pin:
        argv.append("--no-pin")
    argv.extend(accounts_off(ROOT))
    argv.extend(extra)
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=die_with_parent, cwd=ROOT,
    )
    for _ in range(100):
        if KEY is None or KEY.exists():
            break
        time.sleep(0.1)
    with Client(layout.frontend, timeout=0.5, key=KEY or False) as c:
        for _ in range(100):
            try:
                if all(t.get("pid") for t in c.topology()["topology"]):
                    return proc, layout
            except Exception:
                pass
            time.sleep(0.1)
    stop_cluster(proc)
    raise SystemExit("cluster did not come up")


def stop_cluster(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def orders(n: int, symbols: tuple[str, ...], seed: int, prefix: str) -> list[tuple]:
    """Limit orders around one price on each symbol: about half cross, so books stay small."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        side = side_of(i, len(symbols))
        price = 1_000_000 + rng.randint(-5, 5)
        out.append(
            (
                OP_NEW,
                symbols[i % len(symbols)],
                f"{prefix}{i}",
                f"a{i % 50}",
                side,
                LIMIT,
                price,
                rng.randint(1, 5),
                GTC,
                False,
                0,
            )
        )
    return out


def _closed_worker(endpoint, direct, symbols, n, batch, window, seed, barrier, q):
    with Client(endpoint, direct=direct, timeout=30, key=KEY or False) as c:
        c.topology()
        cmds = orders(n, symbols, seed, f"w{seed}-")
        warm = orders(2000, symbols, seed + 1000, f"warm{seed}-")
        c.submit_raw(warm, batch=batch, window=window)
        barrier.wait()
        t0 = time.perf_counter()
        res = c.submit_raw(cmds, batch=batch, window=window)
        dt = time.perf_counter() - t0
    q.put((sum(1 for e, _ in res if e is None), dt))


def closed_loop(layout, direct, symbols, n, clients, batch, window) -> dict:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    q = ctx.Queue()
    procs = [
        ctx.Process(
            target=_closed_worker,
            args=(layout.frontend, direct, symbols, n // clients, batch, window, 7 + k, barrier, q),
        )
        for k in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait(60)
    t0 = time.perf_counter()
    results = [q.get(timeout=300) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    acked = sum(a for a, _ in results)
    return {
        "acked": acked,
        "seconds": round(wall, 3),
        "acked_per_s": round(acked / wall),
        "p50_us": None,
        "p99_us": None,
        "p999_us": None,
    }


def open_loop(layout, direct, symbols, shards, rate, duration) -> dict:
    """One order per frame at a fixed schedule; latency from the intended send time."""
    ctx = zmq.Context.instance()
    socks = []
    key = KeyFile.read(KEY) if KEY is not None else None

    def connect(ep: str) -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        if key is not None:
            client_socket(s, key)
        s.connect(ep)
        return s

    if direct:
        with Client(layout.frontend, timeout=2, key=key or False) as c:
            info = c.topology()
        socks = [connect(t["direct"]) for t in info["topology"]]
    else:
        socks = [connect(layout.frontend)] * shards
    for s in set(socks):
        s.setsockopt(zmq.LINGER, 0)
    total = int(rate * duration)
    cmds = orders(total, symbols, 99, f"ol{rate}-")
    frames = []
    for i, c in enumerate(cmds):
        frames.append(
            (
                socks[shard_for(c[1], shards)],
                c[1].encode(),
                struct.pack("<Q", i),
                encode_request([c]),
            )
        )
    time.sleep(0.3)  # let direct sockets connect
    hist = HdrHistogram(1, 60_000_000, 3)
    intended = [0.0] * total
    interval = 1.0 / rate
    sent = got = errors = 0
    t0 = time.perf_counter() + 0.05
    deadline = t0 + duration + 5
    clock = time.perf_counter
    fds = [s.getsockopt(zmq.FD) for s in set(socks)]
    uniq = list(set(socks))
    while got < total and clock() < deadline:
        now = clock()
        while sent < total and t0 + sent * interval <= now:
            sock, key, req, payload = frames[sent]
            intended[sent] = t0 + sent * interval
            sock.send_multipart([key, req, payload])
            sent += 1
        for sock in uniq:
            while True:
                try:
                    req, payload = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                i = struct.unpack("<Q", req)[0]
                hist.record_value(max(1, int((clock() - intended[i]) * 1e6)))
                got += 1
                if decode_reply(payload)[0] is not None:
                    errors += 1
        # Sleep until the next send is due or a reply arrives, with µs resolution (select on
        # the sockets' FDs) rather than zmq_poll's 1 ms: neither late sends nor a spinning
        # client that steals the cluster's cores.
        wait = (t0 + sent * interval - clock()) if sent < total else 0.05
        if wait > 0:
            select.select(fds, [], [], wait)
    for s in set(socks):
        s.close(0)
    return {
        "acked": got - errors,
        "seconds": duration,
        "acked_per_s": round((got - errors) / duration),
        "p50_us": hist.get_value_at_percentile(50),
        "p99_us": hist.get_value_at_percentile(99),
        "p999_us": hist.get_value_at_percentile(99.9),
        "errors": errors,
        "lost": total - got,
    }


def compare_argv(argv: list[str]) -> list[str] | None:
    """``--compare REF [options]`` → ``bench/compare.py REF [options]``'s argv (None without it):
    the before/after bench lives in its own script, reachable from here."""
    for i, a in enumerate(argv):
        if a == "--compare" and i + 1 < len(argv):
            return [argv[i + 1], *argv[:i], *argv[i + 2 :]]
        if a.startswith("--compare="):
            return [a.split("=", 1)[1], *argv[:i], *argv[i + 1 :]]
    return None


def main() -> None:
    rest = compare_argv(sys.argv[1:])
    if rest is not None:
        script = str(ROOT / "bench" / "compare.py")
        os.execv(sys.executable, [sys.executable, script, *rest])
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=200_000, help="closed-loop orders per config")
    p.add_argument("--clients", type=int, default=2, help="closed-loop client processes")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--rates", default="1000,5000,20000", help="open-loop offered rates")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per open-loop rate")
    p.add_argument("--shards", default="1,2")
    p.add_argument("--modes", default="router,direct")
    p.add_argument("--no-pin", action="store_true", help="do not pin shards to cores")
    p.add_argument("--json", action="store_true")
    p.add_argument("--secure", action="store_true", help="CURVE keys (the default of shardex up)")
    p.add_argument(
        "--compare",
        metavar="REF",
        help="instead: the before/after bench, REF vs this tree interleaved "
        "(bench/compare.py REF; its options follow, see python bench/compare.py --help)",
    )
    args = p.parse_args()
    rows = []
    for shards in [int(x) for x in args.shards.split(",")]:
        proc, layout = start_cluster(shards, not args.no_pin, secure=args.secure)
        try:
            for mode in args.modes.split(","):
                direct = mode == "direct"
                label = {"shards": shards, "mode": mode, "symbols": len(SYMBOLS_2)}
                r = closed_loop(
                    layout, direct, SYMBOLS_2, args.orders, args.clients, args.batch, args.window
                )
                rows.append(
                    {
                        **label,
                        "load": f"closed b={args.batch} w={args.window} c={args.clients}",
                        **r,
                    }
                )
                if not args.json:
                    print(_fmt(rows[-1]), file=sys.stderr, flush=True)
                for rate in [int(x) for x in args.rates.split(",")]:
                    r = open_loop(layout, direct, SYMBOLS_2, shards, rate, args.duration)
                    rows.append({**label, "load": f"open {rate}/s", **r})
                    if not args.json:
                        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
        finally:
            stop_cluster(proc)
            if KEY is not None:
                import shutil

                shutil.rmtree(KEY.parent, ignore_errors=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "secure": args.secure,
        "machine": f"{os.cpu_count()} cores "
        f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}",
        "results": rows,
    }
    if args.json:
        print(json.dumps(report))
    else:
        what = "secure (CURVE)" if args.secure else "insecure"
        print(f"\n{report['date']}  {report['machine']}  {what}")
        print(
            f"{'shards':>6} {'mode':<7} {'load':<22} {'acked/s':>10} {'p50 µs':>8} "
            f"{'p99 µs':>8} {'p99.9 µs':>9}"
        )
        for r in rows:
            print(_fmt(r))


def _fmt(r: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:,}"

    return (
        f"{r['shards']:>6} {r['mode']:<7} {r['load']:<22} {r['acked_per_s']:>10,} "
        f"{f(r['p50_us']):>8} {f(r['p99_us']):>8} {f(r['p999_us']):>9}"
    )


if __name__ == "__main__":
    main()
