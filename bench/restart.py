"""Restart time of a default cluster after a long journal: start → first accepted order.

Builds the data dir the honest way: a real ``shardex up`` with its defaults (engine shards =
usable cores, one account shard, keys, fsync batch; ``--no-bridge`` so Redis is not part of
the measurement), filled by ``shardex loadgen`` at full speed (risk on: every order goes
client → router → account shard → engine shard and is journaled by both tiers, as in
production) until ``--orders`` orders were acknowledged. Then, per round:

* ``clean``: SIGINT to ``shardex up`` (a Ctrl-C), wait until it exited, start it again;
* ``crash``: SIGKILL of the whole process group (no shutdown snapshot), start it again.

and measures start → the first order accepted (an ``ok`` place of a funded account, polled
every 50 ms with a fresh client), plus the phases from the cluster's own log: the data-dir
check and each shard's ``recovered ... in X s`` line.

    python bench/restart.py                       # 1,000,000 orders, clean + crash rounds
    python bench/restart.py --orders 50000        # quick
    python bench/restart.py --data-dir D --keep   # reuse/keep a filled data dir
    python bench/restart.py --json

Numbers are from a shared 2-core box unless you run it elsewhere: quote machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from cluster import free_base  # noqa: E402
from reaper import die_with_parent  # noqa: E402  (clusters die with the bench)

from shardex.client import Client, ShardexError  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.tools.loadgen import LoadConfig, run  # noqa: E402


class Up:
    """One ``shardex up`` child (its own process group), its log in a file."""

    def __init__(self, data_dir: Path, base: int, log: Path, extra: list[str]) -> None:
        self.data_dir, self.base, self.log = data_dir, base, log
        self.key = data_dir / "keys" / "admin.key"
        self.layout = Layout("127.0.0.1", base, 1)
        self.started = time.monotonic()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shardex.cli", "up", "--data-dir", str(data_dir),
                 "--base-port", str(base), "--no-bridge", "--no-pin", *extra],
                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent, cwd=ROOT,
            )  # fmt: skip

    def first_order(self, limit: float) -> float:
        """Seconds from start to the first accepted order (polling, fresh client each try)."""
        deadline = self.started + limit
        n = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"shardex up exited ({self.proc.returncode}); see {self.log}")
            n += 1
            try:
                if self.key.exists():
                    with Client(self.layout.frontend, timeout=0.5, key=str(self.key)) as c:
                        r = c.place("BTC-USD", "buy", "0.01", "1", account=PROBE,
                                    id=f"restart-probe-{os.getpid()}-{n}")  # fmt: skip
                        if r.ok:
                            return time.monotonic() - self.started
            except ShardexError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"no order accepted within {limit}s; see {self.log}")

    def all_serving(self, limit: float) -> float:
        """Seconds from start until the router has every shard of both tiers registered."""
        deadline = self.started + limit
        while time.monotonic() < deadline:
            try:
                with Client(self.layout.frontend, timeout=0.5, key=str(self.key)) as c:
                    info = c.topology()
                tiers = [*info["topology"], *info.get("account_topology", ())]
                if tiers and all(t.get("pid") for t in tiers) and not info.get("recovering"):
                    return time.monotonic() - self.started
            except ShardexError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"not every shard registered within {limit}s; see {self.log}")

    def pids(self) -> list[int]:
        """Every shard process (engine and account tier) the router knows."""
        with Client(self.layout.frontend, timeout=5.0, key=str(self.key)) as c:
            info = c.topology()
        return [t["pid"] for t in (*info["topology"], *info.get("account_topology", ()))
                if t.get("pid")]  # fmt: skip

    def stop(self, how: str) -> float:
        """SIGINT (clean) or SIGKILL of the group (crash); seconds until it exited."""
        pids = self.pids() if how == "crash" else []
        t = time.monotonic()
        try:
            if how == "crash":
                for pid in pids:  # the shards first: the supervisor must not stop them cleanly
                    os.kill(pid, signal.SIGKILL)
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(signal.SIGINT)
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        except ProcessLookupError:
            pass
        return time.monotonic() - t


PROBE = "restart-probe"  # the account whose orders measure "accepted" (funded by ``fund``)


def fund(up: Up, limit: float = 120.0) -> None:
    """Deposit for the probe account once the cluster takes deposits."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with Client(up.layout.frontend, timeout=1.0, key=str(up.key)) as c:
                if c.deposit(PROBE, "USD", "1000000", ref=f"probe-{time.time_ns()}").ok:
                    return
        except ShardexError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no deposit accepted within {limit}s; see {up.log}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` since it started (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / _TICK, 2)
    except (OSError, IndexError, ValueError):
        return None


def fill(up: Up, orders: int, seed: int = 1) -> dict[str, Any]:
    fund(up)
    cfg = LoadConfig(endpoint=up.layout.frontend, key=str(up.key), risk="on", accounts=100,
                     symbols=4, batch=100, window=8, concurrency=4, orders=orders,
                     duration=None, timeout=30.0, seed=seed)  # fmt: skip
    t = time.monotonic()
    rep = run(cfg).to_dict()
    return {"orders": orders, "acked": rep["acked"], "seconds": round(time.monotonic() - t, 1)}


def phases(log: Path, since: int) -> dict[str, Any]:
    """The restart's own timings from the cluster log (lines written after byte ``since``)."""
    text = log.read_bytes()[since:].decode(errors="replace")
    out: dict[str, Any] = {}
    m = re.search(r"data dir \S+ checked in ([\d.]+) s", text)
    if m:
        out["datadir_check_s"] = float(m.group(1))
    for m in re.finditer(r"recovered (shard \d+|account shard \d+) from \S+: snapshot seq "
                         r"(\S+) \+ (\d+) journaled commands in ([\d.]+)s \(([\d.]+)s CPU",
                         text):  # fmt: skip
        out[m.group(1)] = {"snapshot_seq": m.group(2), "replayed": int(m.group(3)),
                           "seconds": float(m.group(4)), "cpu_s": float(m.group(5))}  # fmt: skip
    return out


def journal_stats(data_dir: Path) -> dict[str, Any]:
    out = {}
    for d in sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name != "keys"):
        logs = list(d.glob("journal-*.log"))
        out[d.name] = {"segments": len(logs),
                       "journal_mb": round(sum(p.stat().st_size for p in logs) / 1e6, 1),
                       "snapshots": len(list(d.glob("snapshot-*.snap")))}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--rounds", default="clean,crash", help="comma-separated: clean, crash")
    ap.add_argument("--crash-orders", type=int, default=150_000,
                    help="orders sent right before a crash round's kill -9")  # fmt: skip
    ap.add_argument("--data-dir", default=None, help="use (and fill if empty) this data dir")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--base-port", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data = Path(args.data_dir or tempfile.mkdtemp(prefix="shardex-restart-"))
    data.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}.log"
    base = args.base_port or free_base()
    result: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "log": str(log),
    }
    up = None
    try:
        up = Up(data, base, log, [])
        if not any(data.glob("shard-*/journal-*.log")) or args.orders and not args.data_dir:
            result["fill"] = fill(up, args.orders)
        else:
            fund(up, 600)
        for how in [r for r in args.rounds.split(",") if r]:
            if how == "crash" and args.crash_orders:  # journal past the last snapshot first
                result["crash_fill"] = fill(up, args.crash_orders, seed=2)
            result.setdefault("stop_s", {})[how] = round(up.stop(how), 2)
            result["journals"] = journal_stats(data)
            since = log.stat().st_size
            up = Up(data, base, log, [])
            took = up.first_order(600)
            every = up.all_serving(600)
            # CPU each process used from its start until every shard served: what the restart
            # costs without the other tenants of a shared box (wall time there says little)
            cpu = {str(pid): cpu_seconds(pid) for pid in up.pids()}
            result[how] = {
                "start_to_first_order_s": round(took, 2),
                "start_to_every_shard_s": round(every, 2),
                "shard_cpu_s": cpu,
                **phases(log, since),
            }
            if not args.json:
                print(f"{how}: start → first accepted order {took:.2f} s, every shard serving "
                      f"{every:.2f} s", flush=True)  # fmt: skip
    finally:
        if up is not None:
            up.stop("clean")
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
