"""``shardex up --replicas 2 --accounts 1`` (``AccountsPair``), a funded load, and the checks
that both tiers converge on one history after a failover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import redis

from shardex.accounts.codes import S_AMENDED, S_CANCELLED, S_REJECTED, S_TRADE
from shardex.accounts.machines import SettledEngineFactory
from shardex.client import Client, audit_report
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.journal import read_commands
from shardex.node.replica import replica_dir
from shardex.redisauth import RedisUsers
from shardex.wire.protocol import OP_FORWARD, OP_STATUS, packb
from tests.support.accounts import _expected, _stream
from tests.support.cluster import ROOT, Cluster
from tests.support.wait import wait_until

SYMBOL = "BTC-USD"


TRADERS = [f"t{k}" for k in range(4)]


SETTLEMENTS = (S_TRADE, S_CANCELLED, S_REJECTED, S_AMENDED)


class AccountsPair(Cluster):
    """``shardex up --shards 1 --replicas 2 --accounts 1`` (secure, embedded Redis + bridge);
    ``coord``: ``--coord URL``, every lease in that store (an etcd cluster) instead of Redis."""

    def __init__(self, coord: str | None = None) -> None:
        # (tests.support.ports.free_layout keeps the replicas' ports free and below the
        # kernel's ephemeral range: a promoted standby binds its ports only then)
        extra = ("--coord", coord) if coord else ()
        super().__init__(1, "--replicas", "2", *extra, accounts=1, redis="embedded")
        try:
            self.wait_isr(2)
        except BaseException:
            self.stop()
            raise

    def admin(self, **kw: Any) -> Client:
        return self.client(timeout=3.0, **kw)

    def leader(self) -> dict[str, Any]:
        with self.admin() as c:
            return c.status()[0]

    def wait_isr(self, members: int | None, not_pid: int | None = None,
                 timeout: float = 20.0) -> dict:  # fmt: skip
        """The leader's status once its in-sync set has ``members`` nodes (None: any), and,
        with ``not_pid``, once a process other than that one leads."""
        deadline = time.monotonic() + timeout
        last: Any = None
        with self.admin() as c:
            while time.monotonic() < deadline:
                last = c.status()[0]
                isr = last.get("isr")
                if (
                    isr is not None
                    and (members is None or len(isr) == members)
                    and last.get("pid") != not_pid
                ):  # fmt: skip
                    return last
                time.sleep(0.1)
        raise TimeoutError(f"in-sync set never reached {members}: {last}")

    def account_status(self, c: Client) -> dict[str, Any]:
        return c.read_result(*c._request(c._router, b"%0", (OP_STATUS,), ""), "account shard 0")

    def redis(self) -> redis.Redis:
        assert self.keys_dir is not None
        url = RedisUsers.ensure(self.keys_dir).url(self.layout.redis_url, "reader")
        return redis.Redis.from_url(url, decode_responses=True)


def _fund(c: Client) -> None:
    """Deposits (each with its ref: a retry is a no-op), retried while the account shard has
    not registered with the router yet ("shard unavailable" right after start)."""
    for t in TRADERS:
        for asset, amount in (("USD", "1000000"), ("BTC", "1000")):
            deadline = time.monotonic() + 15
            while True:
                r = c.deposit(t, asset, amount, ref=f"{t}-{asset}")
                if r.error is None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert r.ok, r


class FundedLoad:
    """Crossing orders one after another (trades, so settlements flow), and cancels of what
    rests; records the ids the account shard acknowledged (held and forwarded)."""

    def __init__(self, cluster: AccountsPair, tag: str) -> None:
        self.cluster = cluster
        self.tag = tag
        self.acked: list[str] = []
        self.sent = 0
        self.errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with self.cluster.admin() as c:
            k = 0
            while not self.stopping.is_set():
                k += 1
                t = TRADERS[k % len(TRADERS)]
                side = "buy" if k % 2 else "sell"
                oid = f"{self.tag}{k}"
                r = c.place(SYMBOL, side, "0.01", str(100 + k % 5), account=t, id=oid)
                self.sent += 1
                if r.error is None and r.ok:
                    self.acked.append(oid)
                else:
                    self.errors += 1
                if k % 7 == 0:  # a cancel straight to the engine shard (may be gone: filled)
                    c.cancel(SYMBOL, oid, account=t)

    def wait_more(self, n: int, timeout: float = 30.0) -> None:
        """Until ``n`` more orders than now are acknowledged (the load is flowing)."""
        want = len(self.acked) + n
        wait_until(lambda: len(self.acked) >= want, timeout, f"{n} more acknowledged orders")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(15)


def _check_consistent(cluster: AccountsPair, acked: list[str], timeout: float = 30.0) -> dict:
    """Wait until the tiers agree, then check everything the module docstring promises."""
    data = cluster.data_dir
    deadline = time.monotonic() + timeout
    why = ""
    while True:
        leader = cluster.leader()
        node = leader.get("node", "")
        path = replica_dir(data, 0, int(node[-1])) if node else ""
        seq, ids, want = _engine_history(path) if path else (0, [], [])
        with cluster.admin() as c:
            anode = cluster.account_status(c).get("node", "")
        got = _account_settlements(replica_dir(data, 0, int(anode[-1]) if anode else 0,
                                               "accounts"))  # fmt: skip
        with cluster.admin() as c:
            lines, ok = audit_report(c.audit())
        missing = set(acked) - set(ids)
        if not missing and got == want and ok and seq == leader.get("seq"):
            break
        why = (f"missing {len(missing)} acked orders, settlements applied {len(got)} vs "
               f"produced {len(want)} (equal: {got == want}), audit ok: {ok}, replayed seq "
               f"{seq} vs leader {leader.get('seq')}; " + "; ".join(lines))  # fmt: skip
        if time.monotonic() > deadline:
            # a prefix is the only allowed difference while converging; anything else is
            # a settlement the new leader never made
            assert got == want[: len(got)], "the account shard applied a settlement the " \
                "leader's history does not hold"  # fmt: skip
            raise AssertionError(f"the tiers did not converge: {why}")
        # the two journals are read one after the other while the last settlements flow: either
        # may be ahead, so only their common part can be compared before they converge
        n = min(len(got), len(want))
        assert got[:n] == want[:n], "the account shard applied a settlement the leader's " \
            "history does not hold (or one twice)"  # fmt: skip
        time.sleep(0.3)
    assert len(ids) == len(set(ids)), "an order was forwarded to the engine twice"
    assert want, "no settlement flowed: the test proves nothing"
    proc = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "audit", "--endpoint", cluster.endpoint,
         *cluster.key_args()],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _stream_converged(cluster)
    return leader


def _wait_account_leader(cluster: AccountsPair, not_pid: int, isr: int | None = None,
                         timeout: float = 20.0) -> dict[str, Any]:  # fmt: skip
    """The account shard's status once a process other than ``not_pid`` leads it (and, with
    ``isr``, once its in-sync set has that many nodes)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = _account_leader(cluster)
        except Exception as exc:  # (between leaders: shard unavailable / a timeout)
            last = exc
        else:
            if last.get("pid") != not_pid and (isr is None or len(last.get("isr", ())) == isr):
                return last
        time.sleep(0.1)
    raise TimeoutError(f"no new account shard leader: {last}")


def _engine_history(path: str) -> tuple[int, list[str], list[bytes]]:
    """Replay an engine replica's journal (read-only) through the account tier's machine:
    its seq (checking one contiguous history), the ids of the forwarded orders, and the
    settlements it produced for account shard 0 (packed, to compare exactly)."""
    machine = SettledEngineFactory(0, 1, 1).new(DEFAULT_MARKETS)
    ids: list[str] = []
    last_record = None
    for seq, cmd in read_commands(path):
        if seq != last_record:
            assert seq == machine.seq, f"record at seq {seq} after seq {machine.seq}: a gap"
            last_record = seq
        machine.apply(cmd, [])
        if cmd[0] == OP_FORWARD and type(cmd[4]) is tuple and cmd[4][0] == OP_NEW:
            ids.append(cmd[4][2])
    return machine.seq, ids, [packb(m) for j, m in machine.outgoing if j == 0]


def _account_settlements(path: str) -> list[bytes]:
    """The settlements account shard 0 journaled (it journals only what it applies)."""
    return [packb(cmd) for _, cmd in read_commands(path)
            if cmd[0] in SETTLEMENTS and cmd[1] == 0]  # fmt: skip


def _stream_converged(cluster: AccountsPair, timeout: float = 20.0) -> None:
    """``shardex:balances:0`` holds exactly account shard 0's balance and fee events (read
    back from the account shard itself), in seq order, each once."""
    r = cluster.redis()
    deadline = time.monotonic() + timeout
    while True:
        with cluster.admin() as c:  # the account shard's leader (replicated: either node)
            direct = c.topology()["account_topology"][0]["direct"]
        want, got = _expected(cluster, 0, direct), _stream(r, 0)  # type: ignore[arg-type]
        if want == got:
            return
        if time.monotonic() > deadline:
            pairs = enumerate(zip(want, got, strict=False))
            diff = next((k for k, (a, b) in pairs if a != b), None)
            shown = (want[diff], got[diff]) if diff is not None else ""
            raise AssertionError(
                f"balances stream: {len(got)} entries, want {len(want)}; first difference "
                f"at {diff}: {shown}"
            )
        time.sleep(0.2)


def _account_leader(cluster: AccountsPair) -> dict[str, Any]:
    with cluster.admin() as c:
        return cluster.account_status(c)


def account_leader_fails_over(apair: AccountsPair, how: str) -> dict[str, Any]:
    """The account shard runs as two replicas too: kill -9 (or SIGSTOP
    past its lease) of its leader under funded load; the standby, which journaled and applied
    every batch before any of its forwards, replies or balance events left, takes the lease
    and goes on from the same seq. Nothing acknowledged is lost, no order is forwarded twice,
    the settlements applied are exactly the engine's, the audit passes and the balances
    stream is exact (the bridge follows the new leader). Returns the new leader's status."""
    with apair.admin() as c:
        _fund(c)
    first = _wait_account_leader(apair, -1, isr=2)  # (its standby may still be joining)
    assert first.get("role") == "primary", first
    load = FundedLoad(apair, how[0])
    try:
        wait_until(lambda: len(load.acked) >= 20, 30, "funded orders acknowledged")
        before = len(load.acked)
        if how == "kill9":
            os.kill(first["pid"], signal.SIGKILL)
            second = _wait_account_leader(apair, first["pid"])
        else:
            os.kill(first["pid"], signal.SIGSTOP)
            try:
                second = _wait_account_leader(apair, first["pid"])
                during = len(load.acked)  # the new leader acknowledges while the old sleeps
                wait_until(lambda: len(load.acked) >= during + 10, 30, "orders acked meanwhile")
            finally:
                os.kill(first["pid"], signal.SIGCONT)  # past its deadline: fenced, exits
        # funded orders go on against the new leader
        wait_until(lambda: len(load.acked) >= before + 20, 30, "orders acked after it")
    finally:
        load.stop()
    assert before, "no order was acknowledged before the failover"
    assert second["epoch"] > first["epoch"] and second["node"] != first["node"]
    assert len(load.acked) > before, "no order was acknowledged after the failover"
    _check_consistent(apair, load.acked)
    if how == "sigstop":
        assert "lost the lease" in apair.output()  # the deposed leader said so and exited
    # the failed replica comes back (the supervisor), catches up and rejoins the in-sync set
    return _wait_account_leader(apair, first["pid"], isr=2)
