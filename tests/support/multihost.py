"""The multi-host rehearsal: a full cluster over four "hosts" (network namespaces), every
process started only with explicit endpoints and names, load from a client host, one host cut
off (a partition) and healed. ``bench/multihost.py`` prints its numbers; the chaos test
``tests/chaos/test_multihost.py`` runs a small one and asserts on them.

Placement (``PLACES``): h1 runs Redis (the lease store and the event streams), the router and
the bridge (with ``coord="etcd"`` the leases are in a 3-member etcd, a member on each of h1,
h2 and h3, and Redis keeps the streams); h2 runs engine shard 0's replica 0 and account
shard 0's replica 1; h3 runs engine replica 1 and account replica 0; h4 is the client host
(the order probe, ``shardex loadgen``, ``shardex audit``). Engine replica 0 and account
replica 0 are started first, so the engine shard leads on h2 and the account shard on h3:
cutting h2 off fails the engine shard over to h3 and takes the account shard's standby away
from its leader at the same time.

Every namespace has its own network stack, so the ports (``PORTS``) are the same on every
host and cannot collide with anything else on the box.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from shardex.client import Client
from shardex.coord.etcd import EtcdClient
from shardex.engine.codes import OP_NEW
from shardex.journal import read_commands
from shardex.lease import Lease, connect
from shardex.node.replica import replica_dir
from shardex.wire.protocol import OP_FORWARD
from tests.support.netns import Fleet, Hosts

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["h1", "h2", "h3", "h4"]
PORTS = {"front": 34000, "back": 34001, "router_metrics": 34002, "bridge_metrics": 34003,
         "redis": 34004, "etcd_client": 34010, "etcd_peer": 34011, "e_direct": 34100,
         "e_pub": 34101, "e_repl": 34102, "e_link": 34103,
         "e_metrics": 34104, "a_direct": 34200, "a_pub": 34201, "a_repl": 34202,
         "a_metrics": 34204}  # fmt: skip
# process name → host
PLACES = {"redis": "h1", "router": "h1", "bridge": "h1", "engine.r0": "h2", "engine.r1": "h3",
          "accounts.r0": "h3", "accounts.r1": "h2"}  # fmt: skip
SYMBOL = "BTC-USD"


@dataclass
class Plan:
    """How long each phase lasts (seconds) and how hard the load is."""

    before: float = 3.0  # load before the cut
    cut: float = 4.0  # the host stays cut off this long
    after: float = 3.0  # load after the heal
    rate: float = 100.0  # probe orders/s (each one tracked by id)
    loadgen_rate: float = 0.0  # extra ``shardex loadgen`` orders/s from h4 (0: none)
    victim: str = "h2"  # the host cut off
    # with the leases in etcd: etcd's own leader is moved to this host before the cut (None:
    # left where the election put it, so the cut may take etcd's leader away too, and every
    # lease then waits out etcd's election: a fenced leader on an uncut host is expected)
    etcd_leader: str | None = "h1"


TOOK_LINE = re.compile(r"FAILOVER shard-0\.r1 leads shard 0 at epoch \d+ .*monotonic took=([\d.]+)")


@dataclass
class Outcome:
    """What a rehearsal measured (``report`` prints it)."""

    numbers: dict[str, Any] = field(default_factory=dict)
    status_text: str = ""


def wait(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as exc:  # (a process still starting)
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:.0f} s (last error: {last})")


class Rehearsal:
    """Hosts, the cluster on them and the measurements; ``close`` always cleans up."""

    def __init__(self, work: Path, coord: str = "redis", pre_vote: bool = True) -> None:
        """``coord``: where the leases live: ``redis`` (the one Redis on h1) or ``etcd`` (a
        3-member etcd cluster, one member on each of h1, h2 and h3). ``pre_vote``: etcd's
        ``--pre-vote`` (3.4's default is off: a member cut off campaigns at ever higher
        terms and, healed, deposes the healthy etcd leader: a second in which no lease
        renews, every shard leader on every host fenced)."""
        self.work = work
        self.coord = coord
        self.pre_vote = pre_vote
        self.hosts = Hosts(HOSTS)
        self.a = self.hosts.addr
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SHARDEX_METRICS_HOST": "0.0.0.0"}
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.fleet = Fleet(self.hosts, work / "logs", ROOT, env)
        self.front = f"tcp://{self.a['h1']}:{PORTS['front']}"
        self.back = f"tcp://{self.a['h1']}:{PORTS['back']}"
        self.redis_url = f"redis://{self.a['h1']}:{PORTS['redis']}/0"
        self.etcd_hosts = ["h1", "h2", "h3"]
        self.lease_url = self.redis_url if coord == "redis" else "etcd://" + ",".join(
            f"{self.a[h]}:{PORTS['etcd_client']}" for h in self.etcd_hosts)  # fmt: skip

    # -- starting --------------------------------------------------------------------------

    def data(self, host: str) -> str:
        """A host's own disk."""
        path = self.work / host
        path.mkdir(exist_ok=True)
        return str(path)

    def at(self, name: str, key: str) -> str:
        """The endpoint ``key`` of process ``name``, on its host's address."""
        return f"tcp://{self.a[PLACES[name]]}:{PORTS[key]}"

    def start_engine(self, r: int) -> None:
        name = f"engine.r{r}"
        self.fleet.shardex(name, PLACES[name], [
            "engine", "--shard", "0", "--shards", "1", "--accounts", "1", "--role", "auto",
            "--replica", str(r), "--redis-url", self.lease_url, "--router", self.back,
            "--direct", self.at(name, "e_direct"), "--pub", self.at(name, "e_pub"),
            "--repl", self.at(name, "e_repl"), "--account-link", self.at(name, "e_link"),
            "--data-dir", self.data(PLACES[name]), "--metrics-port", str(PORTS["e_metrics"]),
            "--no-pin", "--insecure"])  # fmt: skip

    def start_accounts(self, r: int) -> None:
        name = f"accounts.r{r}"
        links = "+".join(self.at(f"engine.r{k}", "e_link") for k in (0, 1))
        self.fleet.shardex(name, PLACES[name], [
            "accounts", "--shard", "0", "--shards", "1", "--engines", "1", "--role", "auto",
            "--replica", str(r), "--redis-url", self.lease_url, "--router", self.back,
            "--engine-links", links, "--direct", self.at(name, "a_direct"),
            "--pub", self.at(name, "a_pub"), "--repl", self.at(name, "a_repl"),
            "--data-dir", self.data(PLACES[name]), "--metrics-port", str(PORTS["a_metrics"]),
            "--insecure"])  # fmt: skip

    def start(self) -> None:
        """Redis, router, both shards' replicas (leaders first), bridge; wait until both
        shards have two in-sync replicas; fund the probe's account; write the topology."""
        h1 = self.a["h1"]
        self.fleet.start("redis", "h1", ["redis-server", "--bind", h1, "--port",
                                         str(PORTS["redis"]), "--save", "", "--appendonly",
                                         "no", "--protected-mode", "no"])  # fmt: skip
        wait("Redis up", lambda: redis.Redis.from_url(self.redis_url).ping())
        if self.coord == "etcd":
            self.start_etcd()
        self.fleet.shardex("router", "h1", [
            "router", "--shards", "1", "--accounts", "1", "--frontend", self.front,
            "--backend", self.back, "--metrics-port", str(PORTS["router_metrics"]),
            "--insecure"])  # fmt: skip
        self.start_engine(0)
        wait("engine replica 0 leads", lambda: self.engine().get("role") == "primary", 60)
        self.start_accounts(0)
        wait("account replica 0 leads", lambda: self.accounts().get("role") == "primary", 60)
        self.start_engine(1)
        self.start_accounts(1)
        self.fleet.shardex("bridge", "h1", [
            "bridge", "--endpoint", self.front, "--redis-url", self.redis_url,
            "--metrics-port", str(PORTS["bridge_metrics"]), "--insecure"])  # fmt: skip
        self.wait_in_sync(60)
        with self.client() as c:
            for asset, amount in (("USD", "1000000000"), ("BTC", "1000000")):
                assert c.deposit("bench", asset, amount, ref=f"fund-{asset}").ok
        self.write_topology()

    def start_etcd(self) -> None:
        """One etcd member per host of ``etcd_hosts`` (heartbeat 50 ms, election 500 ms: a
        1 s minimum lease, as the tests' etcd), and wait until it answers."""
        peers = ",".join(f"{h}=http://{self.a[h]}:{PORTS['etcd_peer']}" for h in self.etcd_hosts)
        for h in self.etcd_hosts:
            client = f"http://{self.a[h]}:{PORTS['etcd_client']}"
            peer = f"http://{self.a[h]}:{PORTS['etcd_peer']}"
            self.fleet.start(f"etcd.{h}", h, [
                "etcd", "--name", h, "--data-dir", str(Path(self.data(h)) / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"multihost-{os.getpid()}",
                "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error",
                f"--pre-vote={str(self.pre_vote).lower()}",
            ])  # fmt: skip
        wait("etcd answers", lambda: self.holder() or True, 60, 0.5)

    def write_topology(self) -> Path:
        """The file ``shardex status --hosts`` reads: the router and every process's
        health endpoint, by name."""
        health = {"router": ("h1", "router_metrics"), "bridge": ("h1", "bridge_metrics")}
        for r in (0, 1):
            health[f"engine.r{r}"] = (PLACES[f"engine.r{r}"], "e_metrics")
            health[f"accounts.r{r}"] = (PLACES[f"accounts.r{r}"], "a_metrics")
        topo = {"router": self.front,
                "processes": {n: f"http://{self.a[h]}:{PORTS[k]}/healthz"
                              for n, (h, k) in health.items()}}  # fmt: skip
        path = self.work / "topology.json"
        path.write_text(json.dumps(topo, indent=1))
        return path

    # -- reading ---------------------------------------------------------------------------

    def client(self, timeout: float = 2.0) -> Client:
        return Client(self.front, timeout=timeout, key=False)

    def engine(self) -> dict[str, Any]:
        with self.client() as c:
            return c.status()[0]

    def accounts(self) -> dict[str, Any]:
        with self.client() as c:
            return c.account_status()[0]

    def wait_in_sync(self, timeout: float = 60.0) -> None:
        wait("both engine replicas in sync", lambda: len(self.engine().get("isr", [])) == 2,
             timeout)  # fmt: skip
        wait("both account replicas in sync",
             lambda: len(self.accounts().get("isr", [])) == 2, timeout)  # fmt: skip

    def etcd_leader(self) -> str | None:
        """The host whose etcd member leads etcd now (None: no leader, or not etcd)."""
        if self.coord != "etcd":
            return None
        ids = {}
        for h in self.etcd_hosts:
            st = EtcdClient([(self.a[h], PORTS["etcd_client"])]).call("maintenance/status", {})
            ids[st["header"]["member_id"]] = h
        return ids.get(st.get("leader"))

    def move_etcd_leader(self, to: str) -> None:
        """Hand etcd's leadership to ``to``'s member (asked of the current leader) and wait
        until it holds: the cut then tests our leases, not etcd's own election."""
        now = wait("etcd has a leader", self.etcd_leader, 30)
        if now == to:
            return
        target = EtcdClient([(self.a[to], PORTS["etcd_client"])]).call("maintenance/status", {})
        EtcdClient([(self.a[now], PORTS["etcd_client"])]).call(
            "maintenance/transfer-leadership", {"targetID": target["header"]["member_id"]})
        wait(f"etcd's leader moves to {to}", lambda: self.etcd_leader() == to, 30)

    def holder(self) -> str | None:
        """The node holding engine shard 0's lease, read from the lease store."""
        h = Lease(connect(self.lease_url), 0, "rehearsal", "none").holder()
        return None if h is None else h.node

    def status_text(self) -> str:
        """``shardex status --hosts topology.json`` run from the client host."""
        out = subprocess.run(
            [*self.hosts.prefix("h4"), sys.executable, "-m", "shardex.cli", "status",
             "--hosts", str(self.work / "topology.json"), "--key", "none"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=self.fleet.env,
        )  # fmt: skip
        return out.stdout + out.stderr

    # -- the run ---------------------------------------------------------------------------

    def probe(self, name: str, host: str, args: list[str]) -> Path:
        out = self.work / f"{name}.json"
        self.fleet.start(name, host, [sys.executable, "-m", "tests.support.netns_probe",
                                      *args, str(out)])  # fmt: skip
        return out

    def run(self, plan: Plan) -> Outcome:
        """Load, cut ``plan.victim`` off, heal, wait for both tiers to be whole again, then
        measure (see ``measure``)."""
        first = self.engine()
        orders = self.probe("orders", "h4", ["orders", self.front, "@bench", str(plan.rate),
                                             "o"])  # fmt: skip
        fence = self.probe("fence", plan.victim, ["status", self.at("engine.r0", "e_direct")])
        served = self.probe("served", "h4", ["status", self.front])
        if plan.loadgen_rate:
            total = plan.before + plan.cut + plan.after
            self.fleet.shardex("loadgen", "h4", [
                "loadgen", "--endpoint", self.front, "--rate", str(plan.loadgen_rate),
                "--duration", str(total), "--risk", "on", "--fund", "--key", "none",
                "--fate-wait", "20", "--quiet", "--out", str(self.work / "loadgen.json"),
            ])  # fmt: skip
        if plan.etcd_leader and self.coord == "etcd":
            self.move_etcd_leader(plan.etcd_leader)
        time.sleep(plan.before)  # (the load runs meanwhile: a phase, not a synchronisation)
        etcd_leader = self.etcd_leader()
        old = self.holder()
        t_cut = time.monotonic()
        self.hosts.partition(plan.victim)
        moved = wait("the lease moves", lambda: self.holder() not in (None, old) and
                     time.monotonic(), 30, 0.01)  # fmt: skip
        time.sleep(max(0.0, t_cut + plan.cut - time.monotonic()))
        t_heal = time.monotonic()
        self.hosts.heal(plan.victim)
        deposed = self.fleet.procs["engine.r0"]
        wait("the deposed leader steps down", lambda: deposed.poll() is not None
             or self._following(), 30)  # fmt: skip
        stepped_s = time.monotonic() - t_heal
        exit_code = deposed.poll()
        if exit_code is not None:  # it exits once the store says the lease is gone:
            self.start_engine(0)  # restarted, as an orchestrator would
        self.wait_in_sync(90)
        rejoin_s = time.monotonic() - t_heal
        time.sleep(max(0.0, t_heal + plan.after - time.monotonic()))
        self.fleet.stop(["orders", "fence", "served"])
        if plan.loadgen_rate:
            wait("loadgen ends", lambda: self.fleet.procs["loadgen"].poll() is not None, 120)
        # the moment the store granted the standby the lease: its own FAILOVER line (the
        # monotonic clock is one per machine, across namespaces); polling the store from here
        # saw it up to ~60 ms later on a loaded box, after the new leader had already answered
        took = self.lease_taken_at(t_cut)
        numbers = self.measure(json.loads(orders.read_text()), json.loads(fence.read_text()),
                               json.loads(served.read_text()), t_cut,
                               moved if took is None else min(moved, took))  # fmt: skip
        numbers["lease_seen_s"] = round(moved - t_cut, 3)
        numbers.update({"coord": self.coord, "first_leader": first["node"],
                        "etcd_leader_at_cut": etcd_leader,
                        "deposed_exit": exit_code,
                        "heal_to_deposed_down_s": round(stepped_s, 2),
                        "heal_to_both_tiers_in_sync_s": round(rejoin_s, 2)})  # fmt: skip
        # leaders on hosts never cut off that still hit their lease deadline (the store
        # could not renew: e.g. etcd without pre-vote deposing its own leader at the heal)
        numbers["uncut_leaders_fenced"] = sum(
            self.fleet.log_text(n).count("is past its lease deadline")
            for n, h in PLACES.items() if h != plan.victim and n.startswith(("engine", "accounts")))
        if plan.loadgen_rate:
            numbers["loadgen"] = self.loadgen_report()
        numbers["audit"] = self.audit()
        return Outcome(numbers, self.status_text())

    def loadgen_report(self) -> dict[str, Any]:
        """loadgen's report's counts, or its last log line when it wrote none (it failed)."""
        path = self.work / "loadgen.json"
        if not path.exists():
            lines = self.fleet.log_text("loadgen").strip().splitlines()
            return {"failed": lines[-1] if lines else "no output"}
        lg = json.loads(path.read_text())
        return {k: lg.get(k) for k in ("sent", "acked", "held", "timeouts", "fates",
                                       "error_codes")}  # fmt: skip

    def _following(self) -> bool:
        """Whether the deposed replica answers as a standby now (it stayed up)."""
        st = self.engine()
        return st.get("node") == "shard-0.r1" and "shard-0.r0" in st.get("isr", [])

    def lease_taken_at(self, t_cut: float) -> float | None:
        """When (monotonic) engine replica 1 took shard 0's lease after ``t_cut``, from its
        FAILOVER log line (``took=``); None if it logged none."""
        text = self.fleet.log_text("engine.r1")
        times = [float(m[1]) for m in TOOK_LINE.finditer(text) if float(m[1]) > t_cut]
        return min(times) if times else None

    def measure(self, orders: dict[str, Any], fence: dict[str, Any], served: dict[str, Any],
                t_cut: float, moved: float) -> dict[str, Any]:  # fmt: skip
        """Failover time, lost and duplicated orders, fencing and the bridge's stream.

        The engine's failover: the cut → the first answer through the router, to a question
        asked after the cut, from the new leader. The account tier's stall: the cut → the
        first "held and forwarded" of an order sent after it (its leader is not cut off, but
        must drop its cut-off standby from the in-sync set before it acks again)."""
        leader = self.engine()
        r = int(leader["node"].rsplit(".r", 1)[1])
        journal = replica_dir(self.data(PLACES[f"engine.r{r}"]), 0, r)
        ids = Counter(_order_id(cmd) for _, cmd in read_commands(journal))
        ids.pop(None, None)
        acked = orders["acked"]
        after = [at for oid, at in acked.items() if orders["sent"][oid] > t_cut]
        ok_late = [a for s, a, err, _ in fence["answers"] if err is None and s > t_cut]
        led = sum(err is None and s < t_cut for s, _, err, _ in fence["answers"])
        new = [a for s, a, err, node in served["answers"]
               if err is None and s > t_cut and node == leader["node"]]  # fmt: skip
        return {
            "sent": len(orders["sent"]), "acked": len(acked),
            "lost": len(set(acked) - set(ids)), "duplicated": sum(n > 1 for n in ids.values()),
            "engine_failover_s": round(min(new) - t_cut, 3) if new else None,
            "account_ack_stall_s": round(min(after) - t_cut, 3) if after else None,
            "lease_moved_s": round(moved - t_cut, 3),
            "probe_errors": orders["errors"],
            # fencing: the cut-off leader's last answer as leader, from its own host
            "deposed_last_leader_answer_s": round(max(ok_late) - t_cut, 3) if ok_late else None,
            "deposed_answered_after_takeover": sum(a >= moved for a in ok_late),
            "fence_answers": len(fence["answers"]), "fence_led_before_cut": led,
            **self.stream(leader["seq"]),
        }  # fmt: skip

    def stream(self, last_seq: int) -> dict[str, int]:
        """The bridge's stream of engine shard 0 against the contiguous history 1..last."""
        r = redis.Redis.from_url(self.redis_url, socket_timeout=2)

        def caught_up() -> list[int]:
            seqs = [int(i.split(b"-")[0]) for i, _ in r.xrange("shardex:events:0")]
            return seqs if seqs and seqs[-1] >= last_seq else []

        seqs = wait("the bridge catches up", caught_up, 30, 0.2)
        counts = Counter(seqs)
        return {"stream_entries": len(seqs), "last_seq": last_seq,
                "stream_gaps": sum(1 for s in range(1, last_seq + 1) if s not in counts),
                "stream_duplicates": sum(n - 1 for n in counts.values())}  # fmt: skip

    def audit(self) -> dict[str, Any]:
        """``shardex audit`` from the client host: its exit code and last line."""
        out = subprocess.run(
            [*self.hosts.prefix("h4"), sys.executable, "-m", "shardex.cli", "audit",
             "--endpoint", self.front, "--key", "none"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=self.fleet.env,
        )  # fmt: skip
        lines = (out.stdout + out.stderr).strip().splitlines()
        return {"exit": out.returncode, "last": lines[-1] if lines else ""}

    def close(self) -> None:
        try:
            self.fleet.stop()
        finally:
            self.hosts.delete()


def _order_id(cmd: Any) -> str | None:
    """A new order's id in an engine journal: a client's ``OP_NEW`` or one an account shard
    forwarded (``OP_FORWARD`` wrapping it)."""
    if cmd[0] == OP_NEW:
        return cmd[2]
    if cmd[0] == OP_FORWARD and type(cmd[4]) is tuple and cmd[4][0] == OP_NEW:
        return cmd[4][2]
    return None
