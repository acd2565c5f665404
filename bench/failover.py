"""Failover time and safety under load (issue 15): kill -9 the primary N times.

Starts ``shardex up --shards 1 --replicas 2 --insecure`` on free loopback ports (temp data dir,
embedded Redis + bridge), then per round: open-loop orders at ``--rate``/s through the router
(each order a new id, sent on schedule whatever the replies do), kill -9 of the current leader
after ``--before`` s, ``--after`` s more load, then wait until the killed replica (restarted by
the supervisor) is back in the in-sync set.

Per round: failover time = kill → the first successful reply to an order sent after the kill
(it can only come from the new leader). Over all rounds: p50/p99 of that, and
lost = orders acknowledged (a reply without error) that are not in the leader's journal at the
end; duplicated = order ids journaled more than once (each id is sent once). Numbers are noisy
on a shared box: say so when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import free_base  # noqa: E402

from shardex.client import Client  # noqa: E402
from shardex.engine.codes import OP_NEW  # noqa: E402
from shardex.journal import read_commands  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.node.replica import replica_dir  # noqa: E402
from shardex.wire.protocol import decode_reply, encode_request  # noqa: E402

SYMBOL = "BTC-USD"


class OpenLoop:
    """One DEALER to the router: a sender thread on a fixed schedule, a receiver thread."""

    def __init__(self, endpoint: str, rate: float, prefix: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.rate = rate
        self.prefix = prefix
        self.sent: dict[bytes, tuple[str, float]] = {}  # request id → (order id, sent at)
        self.acked: dict[str, float] = {}  # order id → reply time (successful replies)
        self.errors = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]  # fmt: skip
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        k = 0
        t0 = time.monotonic()
        while not self.stopping.is_set():
            due = t0 + k / self.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            k += 1
            oid = f"{self.prefix}-{k}"
            side = k % 2
            cmd = (OP_NEW, SYMBOL, oid, "bench", side, 0, 10_000 + k % 5, 1, 0, False, 0)
            req = k.to_bytes(8, "big")
            with self.lock:
                self.sent[req] = (oid, time.monotonic())
                self.sock.send_multipart([SYMBOL.encode(), req, encode_request([cmd])])

    def _recv(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stopping.is_set():
            if not poller.poll(100):
                continue
            with self.lock:
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    now = time.monotonic()
                    req, payload = frames[-2], frames[-1]
                    error, _ = decode_reply(payload)
                    entry = self.sent.get(req)
                    if entry is None:
                        continue
                    if error is None:
                        self.acked[entry[0]] = now
                    else:
                        self.errors += 1

    def stop(self) -> None:
        time.sleep(0.5)  # replies in flight
        self.stopping.set()
        for t in self.threads:
            t.join(5)
        self.sock.close(0)
        self.ctx.term()


def status(endpoint: str) -> dict[str, Any]:
    with Client(endpoint, key=False, timeout=2.0) as c:
        return c.status()[0]


def wait_full_isr(endpoint: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = status(endpoint)
            if len(st.get("isr", [])) == 2:
                return st
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError("the pair never got back to two in-sync replicas")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rate", type=float, default=500.0, help="orders/s, open loop")
    ap.add_argument("--before", type=float, default=1.5, help="seconds of load before the kill")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of load after the kill")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from shardex.node.supervisor import port_free

    while True:  # the replicas' ports must be free too
        base = free_base()
        layout = Layout("127.0.0.1", base, 1)
        if all(port_free("127.0.0.1", p) for p in layout.replica_ports()):
            break
    data = tempfile.mkdtemp(prefix="shardex-failover-")
    log = open(os.path.join(data, "cluster.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "up", "--shards", "1", "--replicas", "2",
         "--insecure", "--no-pin", "--base-port", str(base), "--data-dir", data],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    times: list[float] = []
    acked_all: set[str] = set()
    try:
        endpoint = layout.frontend
        wait_full_isr(endpoint)
        for rnd in range(args.rounds):
            load = OpenLoop(endpoint, args.rate, f"r{rnd}")
            time.sleep(args.before)
            leader = status(endpoint)
            t_kill = time.monotonic()
            os.kill(leader["pid"], signal.SIGKILL)
            time.sleep(args.after)
            load.stop()
            after = [(load.acked[oid], oid) for oid, sent in load.sent.values()
                     if sent > t_kill and oid in load.acked]  # fmt: skip
            if after:
                times.append(min(after)[0] - t_kill)
            acked_all |= set(load.acked)
            st = wait_full_isr(endpoint)
            if not args.json:
                print(f"round {rnd + 1}: killed {leader['node']} (epoch {leader['epoch']}), "
                      f"{st['node']} leads epoch {st['epoch']}, failover "
                      f"{times[-1] * 1000 if after else float('nan'):.0f} ms, "
                      f"{len(load.acked)} acked, {load.errors} errors", flush=True)  # fmt: skip
        leader = status(endpoint)
        path = replica_dir(data, 0, int(leader["node"].rsplit(".r", 1)[1]))
        ids = Counter(cmd[2] for _, cmd in read_commands(path) if cmd[0] == OP_NEW)
        lost = len(acked_all - set(ids))
        dup = sum(1 for n in ids.values() if n > 1)
        result = {
            "rounds": args.rounds, "rate": args.rate, "measured": len(times),
            "failover_p50_ms": round(pct(times, 50) * 1000, 1) if times else None,
            "failover_p99_ms": round(pct(times, 99) * 1000, 1) if times else None,
            "failover_max_ms": round(max(times) * 1000, 1) if times else None,
            "acked": len(acked_all), "lost": lost, "duplicated": dup,
        }  # fmt: skip
        if args.json:
            print(json.dumps(result))
        else:
            print(f"failover (kill -9 → first ack from the new leader) over {len(times)} rounds "
                  f"at {args.rate:.0f} orders/s: p50 {result['failover_p50_ms']} ms, p99 "
                  f"{result['failover_p99_ms']} ms, max {result['failover_max_ms']} ms")
            print(f"acked {len(acked_all)}, lost {lost}, duplicated {dup} "
                  "(noisy: shared 2-core box)")  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        import shutil

        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
