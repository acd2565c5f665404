"""How often a cancel sent after its order's "ok" is refused as unknown, under CPU starvation.

``python bench/cancelrace.py [REF]`` starts ``shardex up`` (insecure unless ``--secure``, 1
engine shard, 1 account shard, journal on, no bridge) of a worktree of REF (default ``main``)
and of this tree, pins every thread of both clusters to one core (``--cpu``, default 0) with
``--hogs`` busy processes on that core too, and then, in interleaved rounds (REF, current,
REF, current…), places ``--orders`` resting orders through the account tier (``submit_many``,
``--batch`` per frame, window 8, as docs/using.md's example) and cancels every one of them
(newest first) right after the replies. A cancel refused ``not_live`` is the race: the engine
shard read the cancel (router connection) before the order's forward (account link
connection), though the forward was sent before the "ok". It prints placed, cancels and
refusals per side, and ``uptime``. The client runs on the other cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from compare import ref_and_current  # noqa: E402
from proccpu import _role, descendants  # noqa: E402
from scaling import TreeCluster, say  # noqa: E402

from shardex.client import Client  # noqa: E402


def _hog(cpu: int, until: float) -> None:
    """A busy process on ``cpu`` until ``until`` (wall time)."""
    os.sched_setaffinity(0, {cpu})
    while time.time() < until:
        sum(range(10_000))


def pin_tree(root: int, cpu: int, rest: set[int], only: str | None) -> int:
    """Every thread of every process under ``root`` onto ``cpu`` (``only``: of the processes of
    that role, the others onto ``rest``); how many threads on ``cpu``."""
    n = 0
    for pid in descendants(root):
        if only is not None and _role(pid) != only:
            _pin_threads(pid, rest)
            continue
        n += _pin_threads(pid, {cpu})
    return n


def _pin_threads(pid: int, cpus: set[int]) -> int:
    """Every thread of ``pid`` onto ``cpus``; how many."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return 0
    n = 0
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
            n += 1
        except OSError:
            pass
    return n


def one_round(c: Client, orders: int, batch: int, k: int) -> tuple[int, int, int]:
    """``orders`` resting buys, then a cancel of each placed one: (placed, cancels, refused
    ``not_live``)."""
    cmds = [c.order("BTC-USD", "buy", "0.001", f"{1000 + i}.00", id=f"cr-{k}-{i}")
            for i in range(orders)]  # fmt: skip
    results = c.submit_many(cmds, batch=batch, window=8)
    placed = [cmd for cmd, r in zip(cmds, results, strict=True) if r.ok]
    newest_first = reversed(placed)  # (the cancels of the newest forwards go first)
    cancels = [{"op": "cancel", "symbol": "BTC-USD", "id": cmd["id"], "account": "alice"}
               for cmd in newest_first]  # fmt: skip
    results = c.submit_many(cancels, batch=batch, window=8)
    refused = sum(1 for r in results if not r.ok and r.code == "not_live")
    return len(placed), len(cancels), refused


def measure(args: argparse.Namespace) -> dict[str, list[int]]:
    """Interleaved rounds on both sides; side → [placed, cancels, refused] summed."""
    res = {"ref": [0, 0, 0], "current": [0, 0, 0]}
    others = sorted(os.sched_getaffinity(0) - {args.cpu}) or [args.cpu]
    os.sched_setaffinity(0, set(others))  # (the client off the starved core)
    with ref_and_current(args.ref) as sides:
        cs: dict[str, TreeCluster] = {}
        hogs: list[mp.Process] = []
        try:
            for side, tree in sides.items():
                cs[side] = TreeCluster(tree, 1, secure=args.secure,
                                       extra=["--accounts", "1"]).start()  # fmt: skip
            clients = {}
            for side, cl in cs.items():
                key = cl.key if args.secure else False
                clients[side] = Client(cl.endpoints[0], key=key, account="alice", timeout=30)
                assert clients[side].deposit("alice", "USD", "100000000", ref="cancelrace").ok
                assert cl.proc is not None
                n = pin_tree(cl.proc.pid, args.cpu, set(others), args.only)
                say(f"{side}: {n} threads on cpu {args.cpu}")
            until = time.time() + 3600
            for _ in range(args.hogs):
                hogs.append(mp.Process(target=_hog, args=(args.cpu, until), daemon=True))
                hogs[-1].start()
            for k in range(args.rounds):
                for side, c in clients.items():
                    for i, v in enumerate(one_round(c, args.orders, args.batch, k)):
                        res[side][i] += v
            for c in clients.values():
                c.close()
        finally:
            for h in hogs:
                h.terminate()
            for cl in cs.values():
                cl.stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ref", nargs="?", default="main", help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--orders", type=int, default=300, help="orders (and cancels) per round")
    ap.add_argument("--batch", type=int, default=100, help="commands per frame (window 8)")
    ap.add_argument("--hogs", type=int, default=2, help="busy processes on the cluster's core")
    ap.add_argument("--secure", action="store_true", help="CURVE on every link (as up)")
    ap.add_argument("--only", help="pin only this role's processes (e.g. engine) to --cpu")
    ap.add_argument("--cpu", type=int, default=0, help="the core the clusters are pinned to")
    args = ap.parse_args()
    res = measure(args)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    for side, (placed, cancels, refused) in res.items():
        rate = refused / cancels if cancels else 0.0
        print(f"{side:8} placed {placed:6d} cancels {cancels:6d} refused not_live {refused:5d} "
              f"({rate:.4%})")  # fmt: skip
    print(f"rounds {args.rounds} × {args.orders}, hogs {args.hogs} on cpu {args.cpu}; {uptime}")


if __name__ == "__main__":
    main()
