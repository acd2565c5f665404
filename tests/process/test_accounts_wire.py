"""The account tier end to end: real ``shardex up --accounts`` clusters
(router, engine shards, account shards as processes, CURVE keys), real sockets: the ``audit``
and ``status`` CLI against them (kill -9 of an account shard and of an engine shard mid-flow:
tests/chaos/test_accounts_kills.py). The money logic (holds, fees, refusals and
their codes, cancels releasing holds) runs in one process: tests/unit/test_inproc_accounts.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal as D

import pytest

from shardex.client import Client
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
