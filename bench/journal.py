"""Journal cost and recovery speed.

1. One shard under a batched closed-loop client with ``--fsync none``, ``batch`` and ``always``:
   acked orders/s (real `shardex up` cluster, journal on the local disk).
2. Recovery: journal N commands of the realistic engine stream (default 1M), then time
   ``Journal.recover()`` (no snapshot, so every command is replayed), commands/s.

``--latency``: the latency tax of durability instead. Open loop (one order per frame at a fixed
rate, latency from the intended send time) through the router of a 1-shard cluster, ``--fsync
batch`` and ``--ephemeral`` back to back, ``--rounds`` times interleaved (A/B/A/B), p50/p99 and
their ratios per round; ``--writer`` adds ``--fsync batch`` with the journal writer thread
(SHARDEX_JOURNAL_WRITER=1), ``--ref TREE`` adds ``--fsync batch`` run from another checkout (e.g.
a worktree of the commit before this work) in the same rounds.

``--commit-path``: the shard's commit path alone, in one process (no sockets): commands arrive
open loop at ``--rate``; ``loop`` commits on the arriving thread (arrivals queue meanwhile, as in
the shard's loop), ``writer`` submits to the writer thread and releases on its completion
signal; each with and without preallocation. Latency = release - arrival; modes interleaved.

``--sync-micro``: what one group commit's sync costs on this disk: fsync vs fdatasync, on an
appended file vs a preallocated one (posix_fallocate, or written zeros), for records of about
1, 10 and 64 commands, variants interleaved.

Prints a table; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cluster  # noqa: E402
from cluster import SYMBOLS_2, closed_loop, open_loop, start_cluster, stop_cluster  # noqa: E402

from shardex.engine import DEFAULT_MARKETS, Engine  # noqa: E402
from shardex.journal import Journal  # noqa: E402
from shardex.tools.workload import Workload  # noqa: E402


def throughput(policy: str, orders: int, clients: int, batch: int, window: int) -> dict:
    data = tempfile.mkdtemp(prefix="shardex-bench-")
    try:
        proc, layout = start_cluster(1, True, "--data-dir", data, "--fsync", policy)
        try:
            r = closed_loop(layout, False, SYMBOLS_2, orders, clients, batch, window)
        finally:
            stop_cluster(proc)
        r["journal_bytes"] = sum(f.stat().st_size for f in Path(data).rglob("journal-*.log"))
        return r
    finally:
        shutil.rmtree(data, ignore_errors=True)


def recovery(n: int) -> dict:
    d = tempfile.mkdtemp(prefix="shardex-recover-")
    try:
        wl = Workload(seed=11)
        cmds = wl.warmup(5000) + wl.take(n)
        j = Journal(d, DEFAULT_MARKETS, fsync="none")
        engine = Engine(DEFAULT_MARKETS)
        out: list = []
        for i, cmd in enumerate(cmds):
            seq = engine.seq
            engine.apply(cmd, out)
            j.add(seq, cmd)
            if i % 100 == 99:
                j.commit()
                out.clear()
        j.commit()
        j.close()
        size = sum(f.stat().st_size for f in Path(d).iterdir())
        t = time.perf_counter()
        rec = Journal(d, DEFAULT_MARKETS).recover()
        dt = time.perf_counter() - t
        assert rec.engine.seq == engine.seq and rec.engine.resting() == engine.resting()
        return {
            "commands": len(cmds),
            "seconds": round(dt, 3),
            "commands_per_s": round(len(cmds) / dt),
            "journal_bytes": size,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def latency_round(
    config: str, rate: int, seconds: float, ref: str | None, bridge: bool = False
) -> dict:
    """One open-loop run on a fresh 1-shard cluster: ``ephemeral``, ``batch``, ``writer`` (batch
    with the writer thread) or ``ref`` (the ``batch`` policy run from the ``ref`` checkout).
    Without the bridge (and its Redis) unless asked: fewer processes on the cores, and the tax
    measured is the journal's."""
    data = tempfile.mkdtemp(prefix="shardex-bench-")
    root = cluster.ROOT
    try:
        extra: tuple[str, ...] = () if bridge else ("--no-bridge",)
        if config != "ephemeral":
            extra += ("--data-dir", data, "--fsync", "batch")
        if config == "ref":
            cluster.ROOT = Path(ref)  # type: ignore[arg-type]  # `-m shardex.cli` from there
        os.environ["SHARDEX_JOURNAL_WRITER"] = "1" if config == "writer" else "0"
        try:
            proc, layout = start_cluster(1, True, *extra)
        finally:
            cluster.ROOT = root
            os.environ.pop("SHARDEX_JOURNAL_WRITER", None)
        try:
            open_loop(layout, False, SYMBOLS_2, 1, rate + 1, 1.0)  # warm-up (other ids)
            return open_loop(layout, False, SYMBOLS_2, 1, rate, seconds)
        finally:
            stop_cluster(proc)
    finally:
        cluster.ROOT = root
        shutil.rmtree(data, ignore_errors=True)


def _spread(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{xs[0]:.2f}/{xs[len(xs) // 2]:.2f}/{xs[-1]:.2f}"


def latency(args: argparse.Namespace) -> dict:
    configs = ["ephemeral", "batch"] + (["writer"] if args.writer else [])
    configs += ["ref"] if args.ref else []
    rounds: list[dict[str, dict]] = []
    for k in range(args.rounds):
        order = configs if k % 2 == 0 else configs[::-1]  # A/B/B/A: drift hits both alike
        row = {c: latency_round(c, args.rate, args.seconds, args.ref, args.bridge) for c in order}
        rounds.append(row)
        if not args.json:
            print(
                f"round {k + 1}: "
                + "  ".join(
                    f"{c} p50 {row[c]['p50_us']} p99 {row[c]['p99_us']} µs"
                    f" ({row[c]['errors']} err, {row[c]['lost']} lost)"
                    for c in configs
                ),
                file=sys.stderr,
                flush=True,
            )
    ratios = {}
    for c in configs[1:]:
        for pct in ("p50_us", "p99_us"):
            ratios[f"{c}/ephemeral {pct[:3]}"] = [r[c][pct] / r["ephemeral"][pct] for r in rounds]
    return {"rate": args.rate, "seconds": args.seconds, "rounds": rounds, "ratios": ratios}


def sync_micro(directory: str, n: int) -> list[dict]:
    """(size, sync, file) → p50/p90/p99 µs of one write + sync, every variant in turn."""
    os.makedirs(directory, exist_ok=True)
    variants = [(sync, pre) for pre in ("append", "fallocate", "zeros") for sync in
                ("fsync", "fdatasync")]  # fmt: skip
    rows = []
    for size in (100, 1000, 6000):  # ~1, ~10, ~64 commands of ~90 bytes
        fds = {}
        for sync, pre in variants:
            path = os.path.join(directory, f"{sync}-{pre}-{size}")
            if os.path.exists(path):
                os.unlink(path)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if pre == "append" else 0)
            fd = os.open(path, flags, 0o644)
            if pre == "fallocate":
                os.posix_fallocate(fd, 0, 64 << 20)
            elif pre == "zeros":
                for _ in range(64):
                    os.write(fd, bytes(1 << 20))
            os.fsync(fd)
            fds[sync, pre] = fd
        times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
        data = b"x" * size
        for i in range(n):
            for (sync, pre), fd in fds.items():
                t = time.perf_counter()
                if pre == "append":
                    os.write(fd, data)
                else:
                    os.pwrite(fd, data, i * size)
                (os.fsync if sync == "fsync" else os.fdatasync)(fd)
                times[sync, pre].append(time.perf_counter() - t)
        for (sync, pre), xs in times.items():
            xs.sort()
            rows.append({"bytes": size, "sync": sync, "file": pre,
                         **{f"p{q}_us": round(xs[int(len(xs) * q / 100)] * 1e6)
                            for q in (50, 90, 99)}})  # fmt: skip
            os.close(fds[sync, pre])
            os.unlink(os.path.join(directory, f"{sync}-{pre}-{size}"))
    return rows


def commit_path(mode: str, rate: int, n: int) -> tuple[float, float]:
    """(p50, p99) µs from arrival to durable for ``n`` one-command commits arriving at ``rate``."""
    import select

    wl = Workload(symbols=("BTC-USD",), seed=3)
    cmds = wl.warmup(50) + wl.take(n)
    d = tempfile.mkdtemp(prefix="shardex-commit-")
    try:
        engine, out = Engine(DEFAULT_MARKETS), []
        prealloc = None if mode.endswith("+prealloc") else 0
        j = Journal(d, DEFAULT_MARKETS, fsync="batch", preallocate=prealloc)
        fd = j.start_writer() if mode.startswith("writer") else None
        for cmd in cmds[:50]:
            engine.apply(cmd, out)
        clock, interval = time.perf_counter, 1.0 / rate
        t0 = clock() + 0.01
        lat: list[float] = []
        inflight: list[tuple[int, list[float]]] = []
        nxt = 0
        while len(lat) < n:
            now = clock()
            arrived = []
            while nxt < n and t0 + nxt * interval <= now:
                arrived.append(t0 + nxt * interval)
                cmd = cmds[50 + nxt]
                seq = engine.seq
                engine.apply(cmd, out)
                j.add(seq, cmd)
                nxt += 1
            out.clear()
            if arrived and fd is None:
                j.commit()
                t = clock()
                lat.extend(t - a for a in arrived)
            elif arrived:
                inflight.append((j.submit(), arrived))
            if inflight:
                durable = j.completions()[0]
                while inflight and inflight[0][0] <= durable:
                    t = clock()
                    lat.extend(t - a for a in inflight.pop(0)[1])
            wait = t0 + nxt * interval - clock() if nxt < n else 0.01
            if wait > 0:
                if inflight:
                    select.select([fd], [], [], wait)
                else:
                    time.sleep(wait)
        j.close()
        lat.sort()
        return lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=200_000)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--recover", type=int, default=1_000_000, help="commands to recover")
    p.add_argument("--json", action="store_true")
    p.add_argument("--latency", action="store_true", help="open-loop latency tax (see above)")
    p.add_argument("--rate", type=int, default=5000, help="--latency: offered orders/s")
    p.add_argument("--seconds", type=float, default=5.0, help="--latency: seconds per run")
    p.add_argument("--rounds", type=int, default=4, help="--latency: interleaved rounds")
    p.add_argument("--ref", default=None, help="--latency: also run batch from this checkout")
    p.add_argument("--bridge", action="store_true", help="--latency: run the bridge and Redis too")
    p.add_argument("--writer", action="store_true", help="--latency: also batch + writer thread")
    p.add_argument("--sync-micro", default=None, metavar="DIR",
                   help="time write + sync variants in DIR (its disk) and exit")  # fmt: skip
    p.add_argument("--syncs", type=int, default=300, help="--sync-micro: syncs per variant")
    p.add_argument("--commit-path", action="store_true", help="the commit path alone (above)")
    args = p.parse_args()
    if args.commit_path:
        modes = ["loop", "loop+prealloc", "writer", "writer+prealloc"]
        res: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        n = max(500, int(args.rate * 0.6))
        for k in range(args.rounds):
            for m in modes if k % 2 == 0 else modes[::-1]:
                res[m].append(commit_path(m, args.rate, n))
        if args.json:
            print(json.dumps({"rate": args.rate, "commits": n, "rounds": res}))
            return
        print(f"commit path, {args.rate}/s open loop, {n} commits × {args.rounds} rounds (µs)")
        for m in modes:
            p50 = " ".join(f"{a:5.0f}" for a, _ in res[m])
            p99 = " ".join(f"{b:5.0f}" for _, b in res[m])
            print(f"  {m:<16} p50 {p50}   p99 {p99}")
        return
    if args.sync_micro:
        rows = sync_micro(args.sync_micro, args.syncs)
        if args.json:
            print(json.dumps(rows))
            return
        for r in rows:
            print(f"{r['bytes']:>5} B {r['sync']:>9} {r['file']:>9}: p50 {r['p50_us']:>5} "
                  f"p90 {r['p90_us']:>5} p99 {r['p99_us']:>5} µs")  # fmt: skip
        return
    if args.latency:
        rep = latency(args)
        if args.json:
            print(json.dumps(rep))
            return
        print(
            f"\nopen loop {args.rate}/s, {args.seconds:.0f}s × {args.rounds} rounds, 1 shard "
            f"via the router{'' if args.bridge else ', no bridge'}; ratio min/median/max:"
        )
        for name, xs in rep["ratios"].items():
            print(f"  {name:<24} {_spread(xs)}")
        return
    rows = {}
    for policy in ("none", "batch", "always"):
        rows[policy] = throughput(policy, args.orders, args.clients, args.batch, args.window)
        if not args.json:
            print(
                f"fsync {policy:<6} {rows[policy]['acked_per_s']:>10,} acked orders/s",
                file=sys.stderr,
                flush=True,
            )
    rec = recovery(args.recover)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()} "
        f"{platform.python_implementation()} {platform.python_version()}",
        "throughput": rows,
        "recovery": rec,
        "batch_cost_pct": round(
            100 * (1 - rows["batch"]["acked_per_s"] / rows["none"]["acked_per_s"]), 1
        ),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"\n{report['date']}  {report['machine']}")
    print(f"{'fsync':<8} {'acked orders/s':>15} {'vs none':>8}")
    for policy, r in rows.items():
        rel = r["acked_per_s"] / rows["none"]["acked_per_s"]
        print(f"{policy:<8} {r['acked_per_s']:>15,} {rel:>7.0%}")
    print(
        f"recovery: {rec['commands']:,} commands ({rec['journal_bytes'] / 1e6:.0f} MB) in "
        f"{rec['seconds']:.2f}s = {rec['commands_per_s']:,} commands/s"
    )


if __name__ == "__main__":
    main()
