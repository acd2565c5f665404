"""Before/after, same run: the cluster bench on a worktree of REF and on this tree, interleaved.

``python bench/compare.py REF`` (or ``python bench/cluster.py --compare REF``) checks REF out into
a temporary git worktree, then measures, in rounds that alternate REF / current (A/B/A/B…), with
each side's processes importing its own tree (``PYTHONPATH=<tree>``, cwd the tree: PYTHONPATH wins
over the editable install) — ``shardex up`` and ``shardex loadgen`` of that tree:

1. **saturation**: acked orders/s, closed loop, one order per frame (``--batch 1``), 1 shard,
   journal on (``--fsync`` of ``shardex up``, default its default), through the router;
   ``--procs`` loadgen processes × ``--connections`` × ``--window`` frames in flight;
2. **goodput under 3× overload**: open loop at 3 × REF's median saturation (the same offered rate
   for both sides, or ``--overload-rate``), one order per frame: acked orders/s (replies that are
   not ``overloaded``/errors), with the share refused and timed out;
3. **router p50 at 5k/s** (``--rate``), open loop, one order per frame, latency from the intended
   send time, against a **bare two-hop pyzmq echo** measured in the same rounds: client DEALER →
   forwarder (one Python ROUTER/DEALER hop, the shape of the router) → echo server (ROUTER, sends
   the request's payload back). The same client code (this file's) measures both.

Both sides' clusters of a phase run at the same time (the idle one costs nothing), so rounds
alternate without restarts. It prints min/median/max per side and the ratios (current / REF: the
median of the per-round ratios, which cancels most of the drift of a shared machine), and removes
the worktree. ``--json`` prints one object instead.

The defaults take ~3 minutes on 2 cores; ``--rounds 5 --seconds 15`` for steadier numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# No `import shardex` in the driver: every side imports its own tree, in its own processes.
from priority import share_priority  # noqa: E402
from proccpu import per_role, snapshot  # noqa: E402
from scaling import TreeCluster, free_base, funded, loadgen, say, tree_env  # noqa: E402
from worktrees import (  # noqa: E402, F401  (paths, lowrate and cancelrace import them from here)
    Worktree,
    check_imports,
    current_label,
    git,
    ref_and_current,
)

_REQ = struct.Struct("<Q")
SYMBOLS = ("BTC-USD", "ETH-USD")


# ---------------------------------------------------------------------------------------------
# the open-loop client and the bare echo (run as subprocesses of this file: --_role …)
# ---------------------------------------------------------------------------------------------


def role_openloop(spec: dict[str, Any]) -> dict[str, Any]:
    """One order per frame at ``rate``/s for ``seconds``; latency from the intended send time
    (a stall delays every order behind it: no coordinated omission). ``decode``: check replies
    with this tree's ``decode_reply`` (a cluster); the echo's replies are its request bytes."""
    import zmq
    from hdrh.histogram import HdrHistogram
    from orders import side_of  # (imports this side's tree, as the lines below)

    from shardex.engine.codes import GTC, LIMIT, OP_NEW
    from shardex.wire.protocol import decode_reply, encode_request

    rate, seconds = float(spec["rate"]), float(spec["seconds"])
    warm = int(rate * float(spec.get("warmup", 0.5)))
    total = warm + int(rate * seconds)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    key = spec.get("key")
    if key and key != "none":
        from shardex.auth import KeyFile, client_socket

        client_socket(sock, KeyFile.read(Path(key)))
    sock.connect(spec["endpoint"])
    frames = []
    for i in range(total):  # crossing limit orders near one price: the books stay small
        sym = SYMBOLS[i % len(SYMBOLS)]
        cmd = (
            OP_NEW,
            sym,
            f"c{os.getpid()}-{i}",
            f"a{i % 50}",
            side_of(i, len(SYMBOLS)),
            LIMIT,
            1_000_000 + (i * 7919) % 11 - 5,
            1 + i % 5,
            GTC,
            False,
            0,
        )
        frames.append((sym.encode(), _REQ.pack(i), encode_request([cmd])))
    time.sleep(0.3)
    hist = HdrHistogram(1, 120_000_000, 3)
    intended = [0.0] * total
    interval = 1.0 / rate
    sent = got = errors = 0
    clock = time.perf_counter
    t0 = clock() + 0.05
    deadline = t0 + total * interval + 10
    fd = sock.getsockopt(zmq.FD)
    check = bool(spec.get("decode"))
    while got < total and clock() < deadline:
        now = clock()
        while sent < total and t0 + sent * interval <= now:
            intended[sent] = t0 + sent * interval
            sock.send_multipart(frames[sent], copy=False)
            sent += 1
        while True:
            try:
                req, payload = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            i = _REQ.unpack(req)[0]
            got += 1
            if check and decode_reply(payload)[0] is not None:
                errors += 1
            elif i >= warm:
                hist.record_value(max(1, int((clock() - intended[i]) * 1e6)))
        wait = (t0 + sent * interval - clock()) if sent < total else 0.05
        if wait > 0:
            select.select([fd], [], [], wait)
    sock.close(0)
    ctx.term()
    return {
        "p50_us": hist.get_value_at_percentile(50),
        "p99_us": hist.get_value_at_percentile(99),
        "errors": errors,
        "lost": total - got,
        "measured": hist.get_total_count(),
    }


def role_forwarder(frontend: str, backend: str) -> None:
    """The bare hop: ROUTER (clients) ⇄ DEALER (echo server), a poller that drains with NOBLOCK,
    as the router's loop does — no decoding, no routing decision."""
    import zmq

    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    front.bind(frontend)
    back = ctx.socket(zmq.DEALER)
    back.connect(backend)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    while True:
        poller.poll()
        while True:
            try:
                msg = front.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            back.send_multipart(msg, copy=False)  # [client, key, req, payload]
        while True:
            try:
                msg = back.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            front.send_multipart(msg, copy=False)  # [client, req, payload]


def role_echo(endpoint: str) -> None:
    """The second hop: [forwarder, client, key, req, payload] → [forwarder, client, req,
    payload]."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        fwd, client, _key, req, payload = sock.recv_multipart(copy=False)
        sock.send_multipart([fwd, client, req, payload], copy=False)


class Echo:
    """The forwarder and echo server processes (this tree's python, no shardex imported)."""

    def __init__(self) -> None:
        base = free_base(4)
        self.endpoint = f"tcp://127.0.0.1:{base}"
        back = f"tcp://127.0.0.1:{base + 1}"
        me = [sys.executable, __file__, "--_role"]
        self.procs = [
            subprocess.Popen([*me, "echo", back]),
            subprocess.Popen([*me, "forwarder", self.endpoint, back]),
        ]
        time.sleep(0.5)
        for p in self.procs:
            if p.poll() is not None:
                self.stop()
                raise SystemExit("the bare echo did not start (ports taken?)")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def openloop(tree: Path, endpoint: str, key: str, rate: float, seconds: float, decode: bool):
    """``role_openloop`` in a fresh process importing ``tree``."""
    spec = {"endpoint": endpoint, "key": key, "rate": rate, "seconds": seconds, "decode": decode}
    out = subprocess.run(
        [sys.executable, __file__, "--_role", "openloop", json.dumps(spec)],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    if out.returncode != 0:
        raise SystemExit(f"open-loop client ({tree}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------------


def stats(vals: list[float]) -> dict[str, float] | None:
    """min / median / max; None for no value (printed as "-")."""
    if not vals:
        return None
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}


def ratios(num: list[float], den: list[float]) -> dict[str, float] | None:
    """Per-round ratios (round k of one side over round k of the other: measured back to back);
    a round whose denominator is 0 (e.g. a process that used no measurable CPU in a very short
    run) has none, and a metric with none at all is None."""
    return stats([a / b for a, b in zip(num, den, strict=True) if b])


def compare(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()} {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
    }
    share_priority()  # (the driver's session: its load generators and open-loop clients)
    with Worktree(args.ref) as wt:
        sides = {"ref": wt.path, "current": ROOT}
        for tree in sides.values():
            check_imports(tree)
        out["labels"] = {"ref": f"{args.ref} ({wt.short})", "current": current_label()}
        cl = dict(routers=1, secure=args.secure, fsync=args.fsync, pin=not args.no_pin)
        if args.accounts:  # the default path: orders held and settled by account shards
            cl["extra"] = ["--accounts", str(args.accounts)]
        load = dict(procs=args.procs, batch=1, concurrency=args.connections, symbols=2)
        res: dict[str, dict[str, list[float]]] = {s: {} for s in ("ref", "current", "echo")}

        def clusters() -> dict[str, TreeCluster]:
            made: dict[str, TreeCluster] = {}
            try:
                for side, tree in sides.items():
                    made[side] = TreeCluster(tree, 1, **cl).start()  # type: ignore[arg-type]
            except BaseException:
                for c in made.values():
                    c.stop()
                raise
            return made

        def add(side: str, metric: str, value: float) -> None:
            res[side].setdefault(metric, []).append(value)

        def cpu(
            side: str, phase: str, before: dict, c: TreeCluster, acked: float, handled: float = 0
        ) -> None:
            """CPU µs per acked order of each cluster process (role) over one measurement; with
            ``handled`` (acked + refused) also per message answered, which does not grow with
            the share refused (under overload the refusals cost CPU too, and the two sides'
            load generators may offer different rates)."""
            if acked > 0 and c.proc is not None:
                for role, sec in per_role(before, snapshot(c.proc.pid)).items():
                    add(side, f"cpu_us/order {phase} {role}", sec * 1e6 / acked)
                    if handled > 0:
                        add(side, f"cpu_us/msg {phase} {role}", sec * 1e6 / handled)

        def warm(cs: dict[str, TreeCluster]) -> None:
            """One short unrecorded run per side: first-start costs (bytecode compiled in a
            fresh worktree, empty books, cold caches) stay out of round 1."""
            if args.warmup > 0:
                for side, c in cs.items():
                    loadgen(
                        sides[side],
                        c.endpoints,
                        c.key,
                        window=args.window,
                        seconds=args.warmup,
                        **load,
                    )  # type: ignore[arg-type]

        def run(side: str, c: TreeCluster, **kw: Any) -> tuple[dict, dict[str, Any]]:
            """One measured loadgen run: the CPU snapshot before it and its result. With the
            account tier its accounts are funded first, before the snapshot (orders only)."""
            if args.accounts:
                funded(sides[side], c.endpoints, c.key, 2)
            before = snapshot(c.proc.pid) if c.proc else {}
            r = loadgen(sides[side], c.endpoints, c.key, seconds=args.seconds,
                        fund=not args.accounts, **load, **kw)  # type: ignore[arg-type]  # fmt: skip
            return before, r

        if "saturation" in args.phases:
            say(f"saturation: {args.rounds} rounds × (ref, current), {args.seconds} s each")
            cs = clusters()
            try:
                warm(cs)
                for k in range(args.rounds):
                    for side, c in cs.items():
                        before, r = run(side, c, window=args.window)
                        cpu(side, "saturation", before, c, r["acked_per_s"] * args.seconds)
                        add(side, "saturation", r["acked_per_s"])
                        say(
                            f"  round {k + 1} {side:<7} {r['acked_per_s']:>9,.0f} acked orders/s "
                            f"(errors {r['errors']:,})"
                        )
                        time.sleep(1)
            finally:
                for c in cs.values():
                    c.stop()

        if "overload" in args.phases:
            offered = args.overload_rate or 3 * statistics.median(res["ref"]["saturation"])
            out["overload_offered_per_s"] = round(offered)
            # 2. goodput under overload
            say(f"overload: open loop at {offered:,.0f}/s offered, {args.rounds} rounds")
            cs = clusters()
            try:
                warm(cs)
                for k in range(args.rounds):
                    for side, c in cs.items():
                        before, r = run(side, c, window=1, rate=offered, timeout=args.timeout)
                        acked = r["acked_per_s"] * args.seconds
                        refused = r["errors"] - r["timeouts"]
                        cpu(side, "overload", before, c, acked, acked + refused)
                        add(side, "goodput", r["acked_per_s"])
                        add(side, "overload_sent_per_s", r["sent_per_s"])
                        add(side, "overload_refused", r["errors"] - r["timeouts"])
                        add(side, "overload_timeouts", r["timeouts"])
                        say(
                            f"  round {k + 1} {side:<7} goodput {r['acked_per_s']:>9,.0f}/s of "
                            f"{r['sent_per_s']:,.0f}/s sent (errors {r['errors']:,}, "
                            f"timeouts {r['timeouts']:,})"
                        )
                        time.sleep(1)
            finally:
                for c in cs.values():
                    c.stop()

        if "latency" in args.phases:
            say(
                f"latency: open loop {args.rate:,.0f}/s, {args.rounds} rounds × "
                "(ref, current, echo)"
            )
            cs = clusters()
            echo = Echo()
            try:
                warm(cs)
                for k in range(args.rounds):
                    targets = [(s, sides[s], c.endpoints[0], c.key, True) for s, c in cs.items()]
                    targets.append(("echo", ROOT, echo.endpoint, "none", False))
                    for side, tree, ep, key, decode in targets:
                        before = snapshot(cs[side].proc.pid) if side in cs and cs[side].proc else {}
                        r = openloop(tree, ep, key, args.rate, args.seconds, decode)
                        if side in cs:
                            cpu(side, "5k", before, cs[side], args.rate * args.seconds)
                        add(side, "p50_us", r["p50_us"])
                        add(side, "p99_us", r["p99_us"])
                        say(
                            f"  round {k + 1} {side:<7} p50 {r['p50_us']:>8,} µs  p99 "
                            f"{r['p99_us']:>9,} µs  (errors {r['errors']}, lost {r['lost']})"
                        )
                        time.sleep(0.5)
            finally:
                echo.stop()
                for c in cs.values():
                    c.stop()

    out["results"] = {side: {m: stats(v) for m, v in ms.items()} for side, ms in res.items()}
    out["raw"] = res
    cur, ref, ech = res["current"], res["ref"], res["echo"]
    pairs = {
        "saturation current/ref": (cur, ref, "saturation"),
        "goodput current/ref": (cur, ref, "goodput"),
        "p50 current/ref": (cur, ref, "p50_us"),
        "p50 ref/echo": (ref, ech, "p50_us"),
        "p50 current/echo": (cur, ech, "p50_us"),
    }
    out["ratios"] = {  # (only for the phases measured: ``--phases``)
        name: ratios(a[m], b[m]) for name, (a, b, m) in pairs.items() if m in a and m in b
    }
    for m in sorted(k for k in cur if k.startswith("cpu_us/") and k in ref):
        out["ratios"][f"{m} current/ref"] = ratios(cur[m], ref[m])
    return out


PHASES = {"saturation", "overload", "latency"}

TARGETS = {  # the before/after targets (docs/decisions/order-path-speed.md)
    "saturation current/ref": "≥ 1.5",
    "goodput current/ref": "≥ 2",
    "p50 current/echo": "≤ 1.2",
}


def print_report(rep: dict[str, Any]) -> None:
    c, lab = rep["config"], rep["labels"]
    print(
        f"\n{rep['date']}  {rep['machine']}\nA = {lab['ref']}, B = {lab['current']}; 1 shard, "
        f"{c.get('accounts', 0)} account shards, journal on (fsync {c['fsync'] or 'default'}), "
        f"{'secure' if c['secure'] else 'insecure'},"
        f" one order per frame, via the router; {c['rounds']} interleaved rounds of "
        f"{c['seconds']} s; overload offered {rep.get('overload_offered_per_s', 0):,}/s\n"
    )

    def mmm(s: dict[str, float] | None, fmt: str = ",.0f") -> str:
        if s is None:
            return "-"
        return " / ".join(format(s[k], fmt) for k in ("min", "median", "max"))

    rows = [
        ("saturation, acked orders/s", "saturation"),
        ("goodput at 3× overload, orders/s", "goodput"),
        ("  sent at overload, orders/s", "overload_sent_per_s"),
        ("  refused (overloaded/errors)", "overload_refused"),
        ("  timed out", "overload_timeouts"),
        (f"p50 µs at {c['rate']:,.0f}/s open loop", "p50_us"),
        (f"p99 µs at {c['rate']:,.0f}/s open loop", "p99_us"),
    ]
    cpu_rows = sorted({m for side in ("ref", "current") for m in rep["results"][side]})
    rows += [(m, m) for m in cpu_rows if m.startswith("cpu_us/")]
    print("| metric (min / median / max) | A: ref | B: current | bare echo |")
    print("| --- | --- | --- | --- |")
    res = rep["results"]
    for name, m in rows:
        print(
            f"| {name} | {mmm(res['ref'].get(m))} | {mmm(res['current'].get(m))} | "
            f"{mmm(res['echo'].get(m))} |"
        )
    print("\n| ratio (per-round, min / median / max) | value | target |")
    print("| --- | --- | --- |")
    for name, s in rep["ratios"].items():
        print(f"| {name} | {mmm(s, '.2f')} | {TARGETS.get(name, '')} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("ref", help="the commit to compare with (anything git rev-parse takes)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A/B/A/B…)")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds per side/phase")
    p.add_argument("--procs", type=int, default=2, help="loadgen processes per measurement")
    p.add_argument("--connections", type=int, default=4, help="connections per loadgen process")
    p.add_argument("--window", type=int, default=8, help="closed loop: frames in flight per conn")
    p.add_argument("--overload-rate", type=float, default=None, help="[3 × REF's saturation]")
    p.add_argument("--rate", type=float, default=5000.0, help="open-loop rate for the p50")
    p.add_argument("--timeout", type=float, default=5.0, help="loadgen --timeout at overload")
    p.add_argument("--fsync", default=None, help="shardex up --fsync [its default]")
    p.add_argument("--secure", action="store_true", help="CURVE clusters (the echo has none)")
    p.add_argument(
        "--accounts",
        type=int,
        default=0,
        help="account shards (0: unfunded order path, as before the tier)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin shards to cores")
    p.add_argument(
        "--phases",
        default="saturation,overload,latency",
        help="which measurements, comma-separated (overload needs saturation or --overload-rate)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    for name in ("rounds", "procs", "connections", "window"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name}: give an integer >= 1")
    for name in ("seconds", "rate", "timeout"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"--{name}: give a number > 0")
    if args.overload_rate is not None and not args.overload_rate > 0:
        raise SystemExit("--overload-rate: give a rate > 0")
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not phases or phases - PHASES:
        raise SystemExit(f"--phases: give some of {', '.join(sorted(PHASES))}")
    if "overload" in phases and "saturation" not in phases and args.overload_rate is None:
        raise SystemExit("--phases overload without saturation needs --overload-rate")
    args.phases = sorted(phases)  # (a list: the report's config is JSON)
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_role"]:  # a subprocess of this bench (see Echo and openloop)
        role, rest = argv[1], argv[2:]
        if role == "openloop":
            print(json.dumps(role_openloop(json.loads(rest[0]))))
        elif role == "forwarder":
            role_forwarder(*rest)
        elif role == "echo":
            role_echo(*rest)
        return
    args = parse_args(argv)
    rep = compare(args)
    if args.json:
        print(json.dumps(rep))
    else:
        print_report(rep)


if __name__ == "__main__":
    main()
