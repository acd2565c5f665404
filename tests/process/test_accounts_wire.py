"""The account tier end to end: real ``shardex up --accounts`` clusters
(router, engine shards, account shards as processes, CURVE keys), real sockets: the ``audit``
and ``status`` CLI against them, and kill -9 of an account shard and of an engine shard
mid-flow with every trade settled exactly once. The money logic (holds, fees, refusals and
their codes, cancels releasing holds) runs in one process: tests/unit/test_inproc_accounts.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal as D

import pytest

from shardex.client import Client, audit_report
from tests.support.accounts import _wait
from tests.support.cli import invoke_cli
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(120)


def _settled(c: Client, account: str, expect: dict[str, tuple[D, D]]):
    return lambda: c.balance(account) == expect


@pytest.fixture(scope="module")
def cluster():
    cl = Cluster(2, accounts=2)
    try:
        yield cl
    finally:
        cl.stop()


def _client(cl: Cluster) -> Client:
    return Client(cl.endpoint, key=cl.key, timeout=5)


def test_audit_cli_exit_code(cluster):
    env = {**os.environ, "SHARDEX_KEY": str(cluster.key)}
    out = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "audit", "--endpoint", cluster.endpoint],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "audit: ok (2 account shards)" in out.stdout


def test_status_shows_the_account_shards(cluster):
    # (in this process: click's runner; the audit above runs as python -m shardex.cli)
    out = invoke_cli(
        "status", "--endpoint", cluster.endpoint, env={"SHARDEX_KEY": str(cluster.key)}
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.decode().splitlines()]
    acct = rows.index(["acct", "state", "seq", "accounts", "open", "commands", "gaps",
                       "anomal.", "core", "journal"])  # fmt: skip
    assert [r[:2] for r in rows[acct + 1 : acct + 3]] == [["0", "up"], ["1", "up"]], out.stdout
    assert all(r[-1] == "ok" for r in rows[acct + 1 : acct + 3]), out.stdout
    # which account core each runs: the mypyc build or the interpreted reference
    assert {r[-2] for r in rows[acct + 1 : acct + 3]} <= {"compiled", "interpreted"}
    with _client(cluster) as c:
        sts = c.account_status()
        assert [st["account_shard"] for st in sts] == [0, 1]
        # each has heard from both engine shards on its link (what readiness waits for)
        assert [list(st["engines_linked"]) for st in sts] == [[0, 1], [0, 1]]


def test_kill9_account_and_engine_shard_mid_flow():
    cl = Cluster(1, accounts=1)
    try:
        with Client(cl.endpoint, key=cl.key, timeout=5) as c:
            assert c.deposit("m", "BTC", "10", ref="k-m").ok
            assert c.deposit("t", "USD", "100000", ref="k-t").ok
            ids = iter(range(1000))

            def round_trip() -> None:
                for _ in range(5):
                    assert c.place("BTC-USD", "sell", "0.1", "100", account="m",
                                   id=f"s{next(ids)}").ok  # fmt: skip
                    assert c.place("BTC-USD", "buy", "0.1", "100", account="t",
                                   id=f"b{next(ids)}").ok  # fmt: skip

            round_trip()
            info = c.topology()
            os.kill(info["account_topology"][0]["pid"], signal.SIGKILL)
            old = info["account_topology"][0]["pid"]
            _wait(lambda: c.topology()["account_topology"][0].get("pid") not in (None, old),
                  "account shard back")  # fmt: skip
            _wait(lambda: c.balance("m") is not None, "account shard serving")
            round_trip()
            os.kill(info["topology"][0]["pid"], signal.SIGKILL)
            _wait(lambda: c.topology()["topology"][0].get("pid")
                  not in (None, info["topology"][0]["pid"]), "engine shard back")  # fmt: skip
            _wait(lambda: c.place("BTC-USD", "sell", "0.1", "100", account="m",
                                  id=f"s{next(ids)}").ok, "engine path")  # fmt: skip
            _wait(lambda: c.place("BTC-USD", "buy", "0.1", "100", account="t",
                                  id=f"b{next(ids)}").ok, "engine path")  # fmt: skip
            # 11 trades of 0.1 BTC at 100: t paid 110 + 5 bps per order (0.005 each, exact)
            want_t = {"USD": (D("100000") - D("110") - 11 * D("0.005"), D(0)),
                      "BTC": (D("1.1"), D(0))}  # fmt: skip
            want_m = {"BTC": (D("8.9"), D(0)), "USD": (D("110") - 11 * D("0.002"), D(0))}
            _wait(_settled(c, "t", want_t), "taker settled exactly once")
            _wait(_settled(c, "m", want_m), "maker settled exactly once")
            lines, ok = audit_report(c.audit())
            assert ok, lines
            assert all(sh.get("anomalies") == 0 for sh in c.audit())
    finally:
        cl.stop()
