"""The pause of a live pair move (``shardex move``) with a deep book: p50/p99/max.

Starts a real ``shardex up --shards 2 --insecure --no-bridge --accounts 0`` on ``--base-port``,
rests ``--orders`` orders on ``--symbol``, then moves the pair back and forth ``--moves`` times
while a prober sends the pair a cancel of an order that does not exist, as fast as it is
answered. The pause of one move: from the first probe answered ``moving`` to the first probe
answered by the pair's new shard (``not_live``) after it. With ``--changing`` the prober
instead places and cancels an order on the pair, turn about, so the book changes during every
move. Also prints the mover's own time
(first look to the map published) and checks every resting order is still there after the last
move.

    python bench/reshard.py --orders 10000 --moves 5 --base-port 61500

``bench/reshard_grow.py`` grows a loaded cluster 1 -> 2 -> 4 shards with ``shardex reshard``;
``bench/hotpair.py`` pins a hot pair alone on its own shard (docs/moves.md has the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shardex.client import AsyncClient, Client, ShardexError  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.placement import default_owner  # noqa: E402
from shardex.placement.store import DirStore  # noqa: E402
from shardex.tools.mover import move_pair  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAY = print if os.environ.get("VERBOSE") else (lambda line: None)


class Prober:
    """Cancels of a missing order on the pair, one after another: when each answer changed.
    ``changing``: instead, an order placed far from the market and cancelled again, turn about,
    so the book changes all the time (a pre-copy never equals the hand-off's state)."""

    def __init__(self, endpoint: str, symbol: str, changing: bool = False) -> None:
        self.endpoint, self.symbol, self.changing = endpoint, symbol, changing
        self.answers: list[tuple[float, str]] = []  # (time, code) when the code changed
        self.stop = threading.Event()
        self.resting: set[str] = set()  # (``changing``) its orders placed and not yet cancelled

    def run(self) -> None:
        with Client(self.endpoint, timeout=5.0, retry=False) as c:
            last = None
            k = 0
            while not self.stop.is_set():
                k += 1
                try:
                    if self.changing and k % 2:
                        r = c.place(self.symbol, "sell", "1", "99999", id=f"probe{k // 2}",
                                    account="probe")  # fmt: skip
                        if r.ok:
                            self.resting.add(f"probe{k // 2}")
                    else:
                        oid = f"probe{k // 2 - 1}" if self.changing else "no-such-order"
                        r = c.cancel(self.symbol, oid, account="probe")
                        if r.ok:
                            self.resting.discard(oid)
                    code = r.code
                except ShardexError as exc:
                    code = f"error:{exc.error.code if exc.error else '?'}"
                if code != last:
                    self.answers.append((time.perf_counter(), str(code)))
                    last = code

    def pauses(self) -> list[float]:
        """Seconds from each first ``moving`` to the next answer that is not ``moving``."""
        out, start = [], None
        for t, code in self.answers:
            if code == "moving" and start is None:
                start = t
            elif code != "moving" and start is not None:
                out.append(t - start)
                start = None
        return out


def start(base: int, data: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "shardex.cli", "up", "--shards", "2", "--accounts", "0",
             "--insecure", "--no-bridge", "--no-pin", "--base-port", str(base),
             "--data-dir", str(data)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )  # fmt: skip


def stop_up(proc: subprocess.Popen, wait: float = 20.0) -> None:
    """Stop a bench's ``shardex up``: SIGTERM to it (it stops its children as on Ctrl-C, their
    snapshots and journals closed), up to ``wait`` seconds, then SIGKILL to anything left in its
    process group (it was started in a session of its own)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_up(endpoint: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with Client(endpoint, timeout=0.5, retry=False) as c:
                if all(t.get("pid") for t in c.topology()["topology"]):
                    return
        except ShardexError:
            pass
        time.sleep(0.1)
    raise SystemExit("the cluster did not come up")


def rest(endpoint: str, symbol: str, n: int) -> None:
    with Client(endpoint, timeout=30.0) as c:
        cmds = [c.order(symbol, "buy", "1", str(1000 + k % 500), id=f"r{k}", account=f"a{k % 7}")
                for k in range(n)]  # fmt: skip
        for r in c.submit_many(cmds, batch=200, window=4):
            if not r.ok:
                raise SystemExit(f"resting order refused: {r}")


async def moves(endpoint: str, symbol: str, count: int, data: Path) -> list[float]:
    times = []
    async with AsyncClient(endpoint, timeout=30.0, retry=False) as c:
        for k in range(count):
            target = (default_owner(symbol, 2) + 1 + k) % 2
            done = await move_pair(c, symbol, target, say=SAY,
                                   store=DirStore(data), shards=2)  # fmt: skip
            times.append(done["seconds"])
            await asyncio.sleep(0.5)  # the prober sees the new owner before the next move
    return times


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=10_000, help="resting orders on the pair")
    ap.add_argument("--moves", type=int, default=5, help="moves, alternating between shards")
    ap.add_argument("--symbol", default="BTC-USD")
    ap.add_argument("--base-port", type=int, default=61500)
    ap.add_argument("--changing", action="store_true", help="the prober places and cancels "
                    "an order on the pair (the book changes during every move)")  # fmt: skip
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shardex-reshard-"))
    proc = start(a.base_port, tmp / "data", tmp / "up.log")
    endpoint = Layout("127.0.0.1", a.base_port, 2).frontend
    try:
        wait_up(endpoint)
        rest(endpoint, a.symbol, a.orders)
        prober = Prober(endpoint, a.symbol, a.changing)
        thread = threading.Thread(target=prober.run)
        thread.start()
        time.sleep(0.5)
        mover_s = asyncio.run(moves(endpoint, a.symbol, a.moves, tmp / "data"))
        time.sleep(0.5)
        prober.stop.set()
        thread.join(10)
        with Client(endpoint, timeout=10.0) as c:
            for oid in prober.resting:  # (a probe whose cancel was answered ``moving``)
                assert c.cancel(a.symbol, oid, account="probe").ok, oid
            st = {s["shard"]: s["symbols"].get(a.symbol, 0) for s in c.status()}
        pauses = [p * 1000 for p in prober.pauses()]
        print(f"{a.symbol}: {a.orders} resting orders, {a.moves} moves"
              f"{' (the book changing)' if a.changing else ''} "
              f"({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC)")  # fmt: skip
        print(f"pause ms (first moving -> first answer from the new shard), {len(pauses)} "
              f"seen: p50 {pct(pauses, 0.5):.1f}  p99 {pct(pauses, 0.99):.1f}  "
              f"max {max(pauses, default=float('nan')):.1f}")  # fmt: skip
        print(f"mover s (first look -> map published): median "
              f"{statistics.median(mover_s):.3f}  max {max(mover_s):.3f}")  # fmt: skip
        print(f"resting orders after the moves, per shard: {st}")
        if sum(st.values()) != a.orders:
            raise SystemExit("resting orders lost or doubled")
    finally:
        stop_up(proc, 20)
        if os.environ.get("KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
