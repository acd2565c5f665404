"""The account tier under honcho: the Procfile's ``accounts`` process.

``SHARDEX_ACCOUNTS=auto``: ``honcho start -c accounts=M`` runs M account shards and the router,
engines and bridge all see M; without ``-c accounts`` honcho's default concurrency 1 applies (one
account shard, as ``shardex up``); with ``SHARDEX_ACCOUNTS=0`` the tier is off, the accounts
process says so and waits (an exiting process would make honcho stop the whole cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

import pytest
import redis

from shardex.client import Client
from shardex.redisauth import RedisUsers
from tests.support.cluster import ROOT, wait_for_cluster
from tests.support.ports import free_layout

pytestmark = pytest.mark.timeout(120)


def _honcho(tmp_path: Path, concurrency: str, log: Path, accounts: str = "auto"):
    layout = free_layout(1, accounts=2)
    env_file = tmp_path / "test.env"  # honcho lets .env override the environment: our own
    env_file.write_text(
        f"SHARDEX_SHARDS=auto\nSHARDEX_ROUTERS=auto\nSHARDEX_ACCOUNTS={accounts}\n"
        f"SHARDEX_BASE_PORT={layout.base_port}\nSHARDEX_DATA_DIR={tmp_path / 'data'}\n"
    )
    out = open(log, "w")  # noqa: SIM115 - closed by the caller's finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-e", str(env_file), "-c", concurrency],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return layout, proc, out


def _stop(proc, out) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    out.close()


def test_procfile_runs_account_shards_with_c_accounts(tmp_path):
    layout, proc, out = _honcho(tmp_path, "engine=1,accounts=2", tmp_path / "honcho.log")
    keys = tmp_path / "data" / "keys"
    try:
        info = wait_for_cluster(layout, key=keys / "admin.key")
        assert info["accounts"] == 2
        with Client(layout.frontend, key=keys / "admin.key", timeout=5) as c:
            deadline = time.monotonic() + 20
            while not all(t.get("pid") for t in c.topology()["account_topology"]):
                assert time.monotonic() < deadline, "account shards did not register"
                time.sleep(0.2)
            assert c.deposit("hon", "USD", "100", ref="hon-1").ok
            assert c.balance("hon") == {"USD": (D(100), D(0))}
            broke = c.place("BTC-USD", "buy", "1", "1000", account="hon")
            assert broke.rejected and broke.code == "insufficient_funds"
        # the Procfile's bridge writes the balance change to Redis (read as the reader user)
        reader = RedisUsers.load(keys).url(layout.redis_url, "reader")
        r = redis.Redis.from_url(reader, decode_responses=True)
        deadline = time.monotonic() + 20
        entries: list = []
        while time.monotonic() < deadline:
            try:
                entries = [f for j in range(2) for _, f in r.xrange(f"shardex:balances:{j}")]
            except redis.exceptions.ConnectionError:
                entries = []
            if entries:
                break
            time.sleep(0.2)
        assert [(e["account"], e["why"], e["available"]) for e in entries] == [
            ("hon", "deposit", "100.00")
        ]
    finally:
        _stop(proc, out)


def test_procfile_without_c_accounts_runs_one_account_shard(tmp_path):
    """A plain ``honcho start`` runs the account tier with M = 1, as ``shardex up`` does."""
    log = tmp_path / "honcho.log"
    layout, proc, out = _honcho(tmp_path, "engine=1", log)
    keys = tmp_path / "data" / "keys"
    try:
        info = wait_for_cluster(layout, key=keys / "admin.key")
        assert info.get("accounts") == 1
        with Client(layout.frontend, account="h", key=keys / "admin.key", timeout=5) as c:
            refused = c.place("BTC-USD", "buy", "1", "1")
            assert refused.code == "insufficient_funds", refused.reason
            assert c.deposit("h", "USD", "10").ok
            assert c.place("BTC-USD", "buy", "1", "1").ok
            assert c.balance("h")["USD"][1] > 0  # held
    finally:
        _stop(proc, out)


def test_procfile_with_accounts_0_keeps_the_tier_off(tmp_path):
    log = tmp_path / "honcho.log"
    layout, proc, out = _honcho(tmp_path, "engine=1", log, accounts="0")
    keys = tmp_path / "data" / "keys"
    try:
        info = wait_for_cluster(layout, key=keys / "admin.key")
        assert not info.get("accounts")
        with Client(layout.frontend, account="h", key=keys / "admin.key", timeout=5) as c:
            assert c.place("BTC-USD", "buy", "1", "1").ok  # unfunded orders, as before
        deadline = time.monotonic() + 10
        while "account tier off" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert proc.poll() is None  # the idle accounts process kept honcho (and all) up
    finally:
        _stop(proc, out)
