"""Expiring orders and cancel-on-disconnect on a real ``shardex up`` (one engine shard, real
ZeroMQ, journal on disk, the wall clock): a gtd order resting across a restart (snapshot and
recovery keep its expire time) expires on the idle recovered shard by itself; a session's dead-man
switch, never refreshed, cancels its order; ``shardex cancel-all`` cancels the rest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from shardex.client import Client
from tests.support.cluster import ROOT, Cluster
from tests.support.wait import wait_until

A = "exp-live"


def _state(c: Client, symbol: str, oid: str) -> dict:
    return c.order_status(symbol, oid, account=A)


def _gone(c: Client, symbol: str, oid: str, reason: str):
    def pred():
        status = _state(c, symbol, oid)
        return status if status["state"] == "cancelled" and status.get("reason") == reason else None

    return pred


@pytest.mark.timeout(120)
def test_gtd_survives_a_restart_and_expires_and_a_dead_session_loses_its_orders():
    cl = Cluster(1)
    data = cl.data_dir
    cl.own_data = False
    try:
        with cl.client() as c:
            expire = int(time.time() * 1000) + 4_000  # (ms, as the wire takes it)
            assert c.place("BTC-USD", "buy", "1", "100", account=A, id="gtd",
                           expire=expire).ok  # fmt: skip
            assert c.place("BTC-USD", "buy", "1", "99", account=A, id="day", tif="day").ok
            assert _state(c, "BTC-USD", "gtd")["state"] == "live"
        cl.stop()  # a clean stop: a snapshot holding the gtd order's expire time
        cl = Cluster(1, data_dir=data)
        with cl.client() as c:
            # nobody writes: the recovered shard's own loop sweeps it once its time has come
            wait_until(_gone(c, "BTC-USD", "gtd", "expired"), timeout=30, what="gtd expired")
            assert time.time() * 1000 >= expire
            assert _state(c, "BTC-USD", "day")["state"] == "live"
            # a session arms a 1 s dead-man switch and never refreshes it
            assert c.place("ETH-USD", "sell", "1", "200", account=A, id="dm").ok
            assert c.cancel_after(1_000, "ETH-USD", account=A).ok
            wait_until(_gone(c, "ETH-USD", "dm", "deadman"), timeout=30, what="dead-man fired")
        out = subprocess.run(
            [sys.executable, "-m", "shardex.cli", "cancel-all", A, "--json",
             "--base-port", str(cl.layout.base_port), *cl.key_args()],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["cancelled"] == [["BTC-USD", "day"]]
    finally:
        cl.stop()
        shutil.rmtree(data, ignore_errors=True)
