"""Failover time and safety under load: kill -9 the primary N times.

Starts ``shardex up --shards 1 --replicas 2 --insecure`` on free loopback ports (temp data dir,
embedded Redis + bridge), then per round: open-loop orders at ``--rate``/s through the router
(each order a new id, sent on schedule whatever the replies do), kill -9 of the current leader
after ``--before`` s, ``--after`` s more load, then wait until the killed replica (restarted by
the supervisor) is back in the in-sync set.

Per round: failover time = kill → the first successful reply to an order sent after the kill
(it can only come from the new leader), split in phases: the lease ttl left at the kill (PTTL),
its expiry → the standby took it, → the new leader's first HELLO, → the first ack (times from
the new leader's FAILOVER log line, on the system-wide monotonic clock). Over all rounds:
p50/p99 of that, and lost = orders acknowledged (a reply without error) that are not in the
leader's journal at the end; duplicated = order ids journaled more than once (each id is sent
once); the bridge's Redis stream of the shard is checked for gaps and duplicates against seq
1..last. Numbers are noisy on a shared box: say so when you quote them.

``--tier accounts`` kills the *account shard's* leader instead (``--accounts 1``: both tiers
run as two replicas; the load is funded orders of one account, routed through its account
shard): failover = kill → the first "held and forwarded" from the new account leader; lost =
acknowledged orders that never reached the engine shard's journal; duplicated = orders
forwarded twice; the balances stream is checked for duplicates.

``--cost`` instead measures what replication costs, interleaved A/B/A/B (``--replicas 1`` then
``2``, each a fresh cluster with Redis and bridge): open-loop p50/p99 at ``--rate`` orders/s
(latency from the intended send time) and closed-loop acked orders/s (one order per frame,
16 frames in flight).
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
from failover_logs import (  # noqa: E402
    MOVED_LINE,
    TRUNCATED_LINE,
    failover_lines,
    first_renew_late,
    rejoin_times,
)
from reaper import die_with_parent  # noqa: E402  (clusters die with the bench)

from shardex.client import Client  # noqa: E402
from shardex.engine.codes import OP_NEW  # noqa: E402
from shardex.journal import read_commands  # noqa: E402
from shardex.layout import Layout  # noqa: E402
from shardex.node.replica import replica_dir  # noqa: E402
from shardex.wire.protocol import OP_FORWARD, account_route, decode_reply, encode_request  # noqa: E402

SYMBOL = "BTC-USD"


class OpenLoop:
    """One DEALER to the router, driven by one thread (a ZeroMQ socket is not thread-safe):
    orders leave on a fixed schedule whatever the replies do; replies are read in between."""

    def __init__(self, endpoint: str, rate: float, prefix: str, route: bytes = SYMBOL.encode()
                 ) -> None:  # fmt: skip
        self.route = route  # the symbol (engine shard), or the account (its account shard)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.rate = rate
        self.prefix = prefix
        self.sent: dict[bytes, tuple[str, float]] = {}  # request id → (order id, sent at)
        self.intended: dict[bytes, float] = {}  # request id → its scheduled send time
        self.acked: dict[str, float] = {}  # order id → reply time (successful replies)
        self.latencies: list[float] = []  # reply time - intended send time (successful)
        self.errors = 0
        self.failed: list[tuple[float, str]] = []  # (reply time, error) of failed replies
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock = self.sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        k = 0
        t0 = time.monotonic()
        drain_until = None
        while True:
            now = time.monotonic()
            if self.stopping.is_set() and drain_until is None:
                drain_until = now + 0.5  # replies in flight
            if drain_until is not None and now >= drain_until:
                return
            due = t0 + k / self.rate
            while drain_until is None and due <= now:
                k += 1
                oid = f"{self.prefix}-{k}"
                cmd = (OP_NEW, SYMBOL, oid, "bench", k % 2, 0, 10_000 + k % 5, 1, 0, False, 0)
                req = k.to_bytes(8, "big")
                self.sent[req] = (oid, time.monotonic())
                self.intended[req] = due
                sock.send_multipart([self.route, req, encode_request([cmd])])
                due = t0 + k / self.rate
            if poller.poll(max(0, int((due - time.monotonic()) * 1000))):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    now = time.monotonic()
                    req = frames[-2]
                    error, _ = decode_reply(frames[-1])
                    entry = self.sent.get(req)
                    if entry is None:
                        continue
                    if error is None:
                        self.acked[entry[0]] = now
                        self.latencies.append(now - self.intended[req])
                    else:
                        self.errors += 1
                        self.failed.append((now, str(error)[:60]))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


def status(endpoint: str, tier: str = "engine") -> dict[str, Any]:
    """The status of engine shard 0 or (``tier`` "accounts") of account shard 0."""
    with Client(endpoint, key=False, timeout=2.0) as c:
        return (c.account_status() if tier == "accounts" else c.status())[0]


def wait_full_isr(endpoint: str, timeout: float = 30.0, tier: str = "engine") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = status(endpoint, tier)
            if len(st.get("isr", [])) == 2:
                return st
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError("the pair never got back to two in-sync replicas")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def start_cluster(replicas: int) -> tuple[subprocess.Popen, str, Any, str]:
    """``shardex up --shards 1 --replicas R --insecure`` on free ports (temp data dir)."""
    from shardex.node.supervisor import port_free

    while True:  # the replicas' ports must be free too
        base = free_base()
        layout = Layout("127.0.0.1", base, 1)
        if all(port_free("127.0.0.1", p) for p in layout.replica_ports()):
            break
    data = tempfile.mkdtemp(prefix="shardex-failover-")
    log = open(os.path.join(data, "cluster.log"), "wb")  # noqa: SIM115 - closed in stop_cluster
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "up", "--shards", "1", "--replicas", str(replicas),
         "--accounts", "0", "--insecure", "--no-pin", "--base-port", str(base), "--data-dir", data],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent, cwd=ROOT,
    )  # fmt: skip
    return proc, layout.frontend, log, data


def stop_cluster(proc: subprocess.Popen, log: Any, data: str) -> None:
    import shutil

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    log.close()
    shutil.rmtree(data, ignore_errors=True)


def cost(args: argparse.Namespace) -> None:
    """Replication on vs off, interleaved, fresh clusters."""
    rows = []
    for rnd, replicas in enumerate([1, 2, 1, 2]):
        proc, endpoint, log, data = start_cluster(replicas)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    st = status(endpoint)
                    if replicas == 1 or len(st.get("isr", [])) == 2:
                        break
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("cluster not ready")
                time.sleep(0.2)
            load = OpenLoop(endpoint, args.rate, f"c{rnd}")
            time.sleep(args.seconds)
            load.stop()
            lat = load.latencies
            with Client(endpoint, key=False, timeout=5.0) as c:
                cmds = [(OP_NEW, SYMBOL, f"k{rnd}-{k}", "bench", k % 2, 0, 10_000 + k % 5, 1,
                         0, False, 0) for k in range(200_000)]  # fmt: skip
                t0 = time.monotonic()
                done = 0
                while time.monotonic() - t0 < args.seconds:
                    res = c.submit_raw(cmds[done : done + 2000], batch=1, window=16)
                    done += sum(1 for err, _ in res if err is None)
                rate = done / (time.monotonic() - t0)
            row = {"replicas": replicas, "open_p50_ms": round(pct(lat, 50) * 1000, 2),
                   "open_p99_ms": round(pct(lat, 99) * 1000, 2), "open_errors": load.errors,
                   "closed_acked_per_s": round(rate)}  # fmt: skip
            rows.append(row)
            if not args.json:
                print(row, flush=True)
        finally:
            stop_cluster(proc, log, data)
    if args.json:
        print(json.dumps(rows))
        return

    def mean(replicas: int, key: str) -> float:
        vals = [r[key] for r in rows if r["replicas"] == replicas]
        return sum(vals) / len(vals)

    print(
        "replication on/off (mean of 2 interleaved runs each): acked orders/s "
        f"{mean(2, 'closed_acked_per_s'):.0f} vs {mean(1, 'closed_acked_per_s'):.0f} "
        f"({mean(2, 'closed_acked_per_s') / mean(1, 'closed_acked_per_s'):.2f}x), open-loop "
        f"p50 {mean(2, 'open_p50_ms'):.2f} vs {mean(1, 'open_p50_ms'):.2f} ms, p99 "
        f"{mean(2, 'open_p99_ms'):.2f} vs {mean(1, 'open_p99_ms'):.2f} ms at {args.rate:.0f}/s "
        "(noisy: shared 2-core box)"
    )


def _order_id(cmd: Any) -> str | None:
    """The id of a new order in an engine shard's journal: a client's ``OP_NEW``, or one
    forwarded by an account shard (``OP_FORWARD`` wrapping it)."""
    if cmd[0] == OP_NEW:
        return cmd[2]
    if cmd[0] == OP_FORWARD and type(cmd[4]) is tuple and cmd[4][0] == OP_NEW:
        return cmd[4][2]
    return None


def balances_duplicates(redis_port: int) -> int:
    """Entries of account shard 0's balances stream that repeat a seq (must be 0)."""
    import redis

    time.sleep(2.0)  # (the bridge catching up)
    seqs = [i.split(b"-")[0] for i, _ in redis.Redis(port=redis_port).xrange("shardex:balances:0")]
    return len(seqs) - len(set(seqs))


def accepted_ids(redis_port: int) -> set[str]:
    """The order ids of every ``accepted`` event in shard 0's events stream: where an acked
    order is found once the journal's older segments are gone (``Journal._retain`` removes
    the segments before the oldest kept snapshot, and a replica snapshots as it runs)."""
    import redis

    out: set[str] = set()
    for _, fields in redis.Redis(port=redis_port).xrange("shardex:events:0"):
        if fields.get(b"ev") == b"accepted" and b"id" in fields:
            out.add(fields[b"id"].decode())
    return out


def stream_check(redis_port: int, last_seq: int) -> tuple[int, int, int]:
    """The bridge's Redis stream of shard 0, once it has caught up to ``last_seq``:
    (entries, gaps, duplicates) against the contiguous seq history 1..last_seq."""
    import redis

    r = redis.Redis(port=redis_port)
    deadline = time.monotonic() + 20
    seqs: list[int] = []
    while time.monotonic() < deadline:
        seqs = [int(i.split(b"-")[0]) for i, _ in r.xrange("shardex:events:0")]
        if seqs and seqs[-1] >= last_seq:
            break
        time.sleep(0.2)
    counts = Counter(seqs)
    dups = sum(n - 1 for n in counts.values())
    gaps = sum(1 for s in range(1, last_seq + 1) if s not in counts)
    return len(seqs), gaps, dups


def _kill_leader(endpoint: str) -> tuple[dict[str, Any], float, float] | None:
    """Kill -9 the engine shard's current leader: (its status, monotonic and Unix time of the
    kill), or None when no leader answers within 5 s (a shard between leaders answers
    without a pid)."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            leader = status(endpoint)
            if "pid" in leader and leader.get("role") == "primary":
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    t_kill, wall = time.monotonic(), time.time()
    try:
        os.kill(leader["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return None
    return leader, t_kill, wall


def repeated(args: argparse.Namespace) -> None:
    """``--interval S``: one open-loop load for the whole run; every S seconds kill -9 of the
    engine shard's leader, whoever it is and whether or not its standby is back in sync (what
    a run of bad luck looks like). Per kill: the failover (kill → first ack of an order sent
    after it), and for the killed replica the supervisor's restart delay, its recovery
    (restart → standing by) and its time to the in-sync set; how many restarts moved a
    journal aside and how many truncated a divergent tail."""
    proc, endpoint, log, data = start_cluster(2)
    log_path = os.path.join(data, "cluster.log")
    kills: list[tuple[dict[str, Any], float, float]] = []
    try:
        wait_full_isr(endpoint, timeout=60)
        load = OpenLoop(endpoint, args.rate, "rk")
        for _ in range(args.rounds):
            time.sleep(args.interval)
            k = _kill_leader(endpoint)
            if k is not None:
                kills.append(k)
        time.sleep(args.interval)  # (the last restart's rejoin)
        load.stop()
        log.flush()
        text = Path(log_path).read_bytes()
        rows = []
        for leader, t_kill, wall in kills:
            after = [load.acked[oid] for oid, sent in load.sent.values()
                     if sent > t_kill and oid in load.acked]  # fmt: skip
            row = {"killed": leader["node"], "epoch": leader["epoch"], "seq": leader["seq"],
                   "failover_s": round(min(after) - t_kill, 3) if after else None,
                   **rejoin_times(text, leader["pid"], leader["node"], wall)}  # fmt: skip
            rows.append(row)
        out = {"kills": rows, "rate": args.rate, "interval": args.interval,
               "acked": len(load.acked), "errors": load.errors,
               "moved_aside": len(MOVED_LINE.findall(text)),
               "truncated": len(TRUNCATED_LINE.findall(text))}  # fmt: skip
        if args.json:
            print(json.dumps(out))
        else:
            for n, row in enumerate(rows, 1):
                print(f"kill {n}: {row}", flush=True)
            print({k: v for k, v in out.items() if k != "kills"})
    finally:
        if args.keep:
            log.flush()
            print(f"kept {data}", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        else:
            stop_cluster(proc, log, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", "--rounds", dest="rounds", type=int, default=20,
                    help="kill -9 of the leader this many times")  # fmt: skip
    ap.add_argument("--rate", type=float, default=500.0, help="orders/s, open loop")
    ap.add_argument("--before", type=float, default=1.5, help="seconds of load before the kill")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of load after the kill")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and cluster.log")
    ap.add_argument("--cost", action="store_true", help="replication on vs off instead")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement (--cost)")
    ap.add_argument("--tier", choices=["engine", "accounts"], default="engine",
                    help="whose leader to kill: engine shard 0's, or account shard 0's (then "
                    "both tiers are replicated and the load is funded)")  # fmt: skip
    ap.add_argument("--interval", type=float, default=0.0,
                    help="kill the leader every this many seconds under one continuous load, "
                    "without waiting for the in-sync set (repeated kills); reports each "
                    "failover and each restarted node's recovery and time to in-sync")  # fmt: skip
    ap.add_argument("--lease-ms", type=int, default=None,
                    help="the replicas' lease ttl (shardex up --lease-ms) [its default]")
    args = ap.parse_args()
    if args.lease_ms is not None:  # (``shardex up`` and its replicas read it from there)
        os.environ["SHARDEX_LEASE_MS"] = str(args.lease_ms)
    tier = args.tier
    if args.cost:
        cost(args)
        return
    if args.interval:
        repeated(args)
        return
    import redis

    from shardex.node.supervisor import port_free

    while True:  # the replicas' ports must be free too
        base = free_base()
        layout = Layout("127.0.0.1", base, 1, accounts=1 if tier == "accounts" else 0)
        if all(port_free("127.0.0.1", p) for p in layout.replica_ports()):
            break
    data = tempfile.mkdtemp(prefix="shardex-failover-")
    log_path = os.path.join(data, "cluster.log")
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "up", "--shards", "1", "--replicas", "2",
         "--accounts", str(layout.accounts), "--insecure", "--no-pin", "--base-port", str(base),
         "--data-dir", data],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent, cwd=ROOT,
    )  # fmt: skip
    times: list[float] = []
    # per round: (ttl left at the kill, expiry → lease taken, taken → HELLO, HELLO → first ack)
    phases: list[tuple[float, float, float, float]] = []
    extra_epochs = 0
    firsts: list[float] = []  # each new leader's first renew: how late it ran (ms)
    acked_all: set[str] = set()
    try:
        endpoint = layout.frontend
        wait_full_isr(endpoint)
        route = SYMBOL.encode()
        if tier == "accounts":
            wait_full_isr(endpoint, tier=tier)
            with Client(endpoint, key=False, timeout=5.0) as c:
                for asset, amount in (("USD", "1000000000"), ("BTC", "1000000")):
                    assert c.deposit("bench", asset, amount, ref=f"fund-{asset}").ok
            route = account_route("bench")
        lease_key = "shardex:lease:accounts-0" if tier == "accounts" else "shardex:lease:0"
        rds = redis.Redis(port=layout.redis_port)
        for rnd in range(args.rounds):
            load = OpenLoop(endpoint, args.rate, f"r{rnd}", route)
            time.sleep(args.before)
            # (the leader, both in sync: after a false failover in the load, once it healed)
            leader = wait_full_isr(endpoint, tier=tier)
            pttl = rds.pttl(lease_key) / 1000  # (one loopback round trip before)
            t_kill = time.monotonic()
            os.kill(leader["pid"], signal.SIGKILL)
            time.sleep(args.after)
            load.stop()
            after = [(load.acked[oid], oid) for oid, sent in load.sent.values()
                     if sent > t_kill and oid in load.acked]  # fmt: skip
            if after:
                times.append(min(after)[0] - t_kill)
            acked_all |= set(load.acked)
            st = wait_full_isr(endpoint, tier=tier)
            if st["epoch"] != leader["epoch"] + 1:
                extra_epochs += 1
            log.flush()
            fo = failover_lines(log_path, tier).get(leader["epoch"] + 1)
            first = first_renew_late(log_path, tier).get(leader["epoch"] + 1)
            if first is not None:
                firsts.append(first)
            phase = "" if first is None else f" [first renew {first:.0f} ms late]"
            if fo is not None and after:
                _, took, hello = fo
                expiry = t_kill + pttl
                p = (pttl, took - expiry, hello - took, min(after)[0] - hello)
                phases.append(p)
                phase += " [ttl left {:.0f}, expiry→taken {:.0f}, taken→hello {:.0f}, " \
                        "hello→ack {:.0f} ms]".format(*(x * 1000 for x in p))  # fmt: skip
                late = Counter(e for t, e in load.failed if hello <= t <= min(after)[0])
                if late:  # (why the first requests the new leader could take still failed)
                    phase += f" errors after the HELLO: {dict(late)}"
            if not args.json:
                print(f"round {rnd + 1}: killed {leader['node']} (epoch {leader['epoch']}), "
                      f"{st['node']} leads epoch {st['epoch']}, failover "
                      f"{times[-1] * 1000 if after else float('nan'):.0f} ms{phase}, "
                      f"{len(load.acked)} acked, {load.errors} errors", flush=True)  # fmt: skip
        leader = status(endpoint)  # (engine shard 0: where every acked order must be)
        path = replica_dir(data, 0, int(leader["node"].rsplit(".r", 1)[1]))
        records = list(read_commands(path))
        ids = Counter(_order_id(cmd) for _, cmd in records)
        ids.pop(None, None)
        balance_dups = balances_duplicates(layout.redis_port) if tier == "accounts" else 0
        missing = acked_all - set(ids)
        pruned = records[0][0] if records else 0  # (the seq before the oldest record on disk)
        if pruned and missing:  # older segments removed after snapshots: ask the stream
            missing -= accepted_ids(layout.redis_port)
        lost = len(missing)
        dup = sum(1 for n in ids.values() if n > 1)
        entries, gaps, sdups = stream_check(layout.redis_port, leader["seq"])

        def ms(values: list[float], q: float) -> float | None:
            return round(pct(values, q) * 1000, 1) if values else None

        result = {
            "rounds": args.rounds, "rate": args.rate, "measured": len(times),
            "failover_p50_ms": ms(times, 50), "failover_p99_ms": ms(times, 99),
            "failover_max_ms": round(max(times) * 1000, 1) if times else None,
            "phases_p50_ms": {name: ms([p[k] for p in phases], 50) for k, name in
                              enumerate(["ttl_left", "expiry_to_taken", "taken_to_hello",
                                         "hello_to_ack"])},
            "acked": len(acked_all), "lost": lost, "duplicated": dup,
            "extra_epochs": extra_epochs, "stream_entries": entries, "stream_gaps": gaps,
            "stream_duplicates": sdups, "last_seq": leader["seq"], "tier": tier,
            "balances_stream_duplicates": balance_dups, "journal_from_seq": pruned,
            "first_renew_late_ms": {"p50": round(pct(firsts, 50), 1) if firsts else None,
                                    "max": max(firsts) if firsts else None, "n": len(firsts)},
        }  # fmt: skip
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{tier} tier: failover (kill -9 → first ack from the new leader) over "
                f"{len(times)} kills "
                f"at {args.rate:.0f} orders/s: p50 {result['failover_p50_ms']} ms, p99 "
                f"{result['failover_p99_ms']} ms, max {result['failover_max_ms']} ms"
            )
            print(f"phases, p50 ms: {result['phases_p50_ms']}; new leaders' first lease "
                  f"renew late, ms: {result['first_renew_late_ms']}")
            print(f"acked {len(acked_all)}, lost {lost}, duplicated {dup}; stream of "
                  f"{entries} entries to seq {leader['seq']}: {gaps} gaps, {sdups} duplicates; "
                  f"failovers that took more than one epoch: {extra_epochs}"
                  + (f"; the journal on disk starts after seq {pruned} (older segments "
                     f"removed after snapshots): orders before it were found in the events "
                     f"stream, duplicates counted from it on" if pruned else "")
                  + (f"; balances stream duplicates: {balance_dups}" if tier == "accounts"
                     else ""))  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        import shutil

        if args.keep:
            print(f"kept {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
