"""Per-order work of each node of the default path, in one process, deterministic enough to A/B.

``python bench/hotpath.py [--orders K] [--batch B] [--window W] [--profile]`` runs the plan of
``shardex up`` (router, 1 engine shard, 1 account shard, journal on; ``--insecure``: there is no
CURVE in memory) as an in-process cluster over the in-memory transport (``shardex.inproc``),
and sends K crossing limit orders from one raw client in frames of B orders (one account per
frame, as the SDK frames them), W frames in flight. Every node's turn is timed with
``time.thread_time`` and, with ``--profile``, counted by a cProfile of its own: printed per node,
CPU µs per order and Python + C calls per order (the call counts do not depend on the box).

For instruction counts, run it under ``valgrind --tool=cachegrind`` with ``PYTHONHASHSEED=0``
at two ``--orders`` and take the difference over the orders between them (setup, import and
warm-up cancel out); ``--no-time`` leaves out the per-turn clock reads. Run it in two trees
(``PYTHONPATH=TREE python bench/hotpath.py``) for a same-box A/B. One node's instructions alone:
``--only NODE`` calls that node's measured turns through ``operator.call`` (a C function nothing
else on the path calls), so ``valgrind --tool=callgrind --collect-atstart=no
--toggle-collect=_operator_call`` counts that node's turns and nothing else.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import operator
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from shardex.clock import VirtualClock
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import EV_REJECTED
from shardex.inproc import InProcCluster
from shardex.kinds import Plan
from shardex.layout import Layout
from shardex.net import mem_transport
from shardex.wire.protocol import OP_DEPOSIT, command_from_json, decode_reply, encode_request

ACCOUNTS = ("a1", "a2")
WARM = 200  # orders before the measured ones (tables, caches, the first batch's stamp)


def frames(n: int, batch: int, first: int) -> list[tuple[bytes, bytes]]:
    """``n`` crossing limit orders in frames of ``batch``, one account per frame: (key, payload).
    Buys and sells alternate inside a frame at three prices, so about half trade."""
    out = []
    for f in range(0, n, batch):
        account = ACCOUNTS[(f // batch) % 2]
        cmds = []
        for k in range(f, min(n, f + batch)):
            side = "buy" if (k // batch + k) % 2 else "sell"
            obj = {"op": "new", "symbol": "BTC-USD", "id": f"o{first + k}",
                   "account": account, "side": side, "type": "limit",
                   "price": str(100 + k % 3), "qty": "0.01"}  # fmt: skip
            cmds.append(command_from_json(obj, DEFAULT_MARKETS))
        out.append((f"@{account}".encode(), encode_request(cmds)))
    return out


class Timed:
    """A node whose ``turn`` is timed (and profiled) while ``on``."""

    def __init__(self, name: str, node: Any, profile: bool, clock: bool, only: bool) -> None:
        self.name, self.node, self.clock, self.only = name, node, clock, only
        self.prof = cProfile.Profile(time.thread_time) if profile else None
        self.cpu = 0.0
        self.turns = 0
        self.on = False
        self.inner = node.turn
        node.turn = self.turn

    def turn(self) -> Any:
        if not self.on:
            return self.inner()
        self.turns += 1
        prof = self.prof
        t = time.thread_time() if self.clock else 0.0
        if prof is not None:
            prof.enable()
        try:
            return operator.call(self.inner) if self.only else self.inner()
        finally:
            if prof is not None:
                prof.disable()
            if self.clock:
                self.cpu += time.thread_time() - t


class Driver:
    """The cluster's nodes turned in order, round after round, on a virtual clock that moves
    ``STEP`` per round (so no run depends on the box's speed: the same rounds, the same
    batches), and one raw client socket."""

    STEP = 0.0002  # virtual seconds per round

    def __init__(self, cluster: InProcCluster, clock: VirtualClock) -> None:
        self.cluster, self.clock = cluster, clock
        self.sock = cluster.net.Context().socket(cluster.net.DEALER)
        self.sock.connect(cluster.endpoint)
        self.req = 0

    def round(self) -> None:
        for node in self.cluster.nodes:
            node.turn()
        self.clock.advance(self.STEP)

    def reply(self, rounds: int = 100_000) -> tuple[Any, Any]:
        for _ in range(rounds):
            if self.sock.poll(0):
                return decode_reply(self.sock.recv_multipart()[-1])
            self.round()
        raise SystemExit("no reply")

    def send_all(self, todo: list[tuple[bytes, bytes]], window: int) -> int:
        """Send every frame, ``window`` in flight; the number of refused orders."""
        refused = sent = got = 0
        while got < len(todo):
            while sent < len(todo) and sent - got < window:
                key, payload = todo[sent]
                self.req += 1
                self.sock.send_multipart([key, str(self.req).encode(), payload])
                sent += 1
            error, results = self.reply()
            if error is not None:
                raise SystemExit(f"batch refused: {error}")
            refused += sum(1 for r in results if r and r[0][0] == EV_REJECTED)
            got += 1
        return refused

    def fund(self) -> None:
        for a in ACCOUNTS:
            for asset, amount in (("USD", "100000000"), ("BTC", "100000")):
                cmd = (OP_DEPOSIT, a, asset, amount, f"fund-{a}-{asset}")
                self.sock.send_multipart([f"@{a}".encode(), b"fund", encode_request([cmd])])
                error, results = self.reply()
                assert error is None and results[0].get("ok"), (error, results)


def run(args: argparse.Namespace, data: Path) -> tuple[list[Timed], int]:
    plan = Plan(layout=Layout(base_port=20000, shards=1, accounts=1), pin=False, redis=None,
                data_dir=str(data))  # fmt: skip
    clock = VirtualClock()
    cluster = InProcCluster(plan, net=mem_transport(clock=clock))
    named = [("router", n) for n in cluster.routers]
    named += [("engine", n) for n in cluster.engines]
    named += [("accounts", n) for n in cluster.accounts]
    for _, n in named:
        n.start()
    timed = [Timed(name, n, args.profile, not args.no_time, name == args.only) for name, n in named]
    drive = Driver(cluster, clock)
    try:
        drive.fund()
        drive.send_all(frames(WARM, args.batch, 0), args.window)
        todo = frames(args.orders, args.batch, WARM)
        gc.collect()
        gc.disable()  # (as the nodes run: ``runtime.tune_gc``)
        for t in timed:
            t.on = True
        refused = drive.send_all(todo, args.window)
        for t in timed:
            t.on = False
        gc.enable()
    finally:
        drive.sock.close(0)
        for _, n in named:
            n.close()
    return timed, refused


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--orders", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100, help="orders per frame (1: one-order frames)")
    p.add_argument("--window", type=int, default=4, help="frames in flight")
    p.add_argument("--profile", action="store_true", help="a cProfile of each node's turns")
    p.add_argument("--top", type=int, default=25, help="functions printed per node (--profile)")
    p.add_argument("--dump", default=None, help="with --profile: write DUMP.<node> stats")
    p.add_argument("--no-time", action="store_true", help="no clock reads (for cachegrind)")
    p.add_argument(
        "--only",
        choices=("router", "engine", "accounts"),
        default=None,
        help="that node's turns through operator.call (callgrind --toggle-collect)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotpath-") as d:
        timed, refused = run(args, Path(d))
    n = args.orders
    print(f"{time.strftime('%Y-%m-%d %H:%M')} {n} orders, {args.batch} per frame, "
          f"{args.window} frames in flight; {refused} refused")  # fmt: skip
    for t in timed:
        calls = f"{pstats.Stats(t.prof).total_calls / n:7.1f} calls/order" if t.prof else ""  # type: ignore[attr-defined]
        print(f"  {t.name:<9} {t.cpu * 1e6 / n:8.1f} µs/order {t.turns / n:6.3f} turns/order "
              f"{calls}")  # fmt: skip
    for t in timed:
        if t.prof is not None:
            print(f"== {t.name}")
            pstats.Stats(t.prof).sort_stats("tottime").print_stats(args.top)
            if args.dump:
                t.prof.dump_stats(f"{args.dump}.{t.name}")


if __name__ == "__main__":
    main()
