"""The history wired into a real ``shardex up`` (real processes, ZeroMQ and Redis): the bridge
writes each forwarded order to ``shardex:orders:0``, the history writer ``shardex up`` starts
turns the streams into rows of ``DATA_DIR/history.sqlite``, ``shardex history`` shows them and
``shardex history --check`` finds them equal to what the journals replay."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
import redis

from shardex.history import History
from shardex.redisauth import RedisUsers
from tests.support.cluster import ROOT, Cluster
from tests.support.wait import wait_until


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardex.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip


@pytest.mark.timeout(240)
def test_up_writes_the_history_and_it_agrees_with_the_journals():
    cl = Cluster(1, accounts=1, redis="embedded", without=())
    try:
        with cl.client() as c:
            for who in ("alice", "bob"):
                assert c.deposit(who, "USD", "10000", ref=f"{who}-usd").ok
                assert c.deposit(who, "BTC", "10", ref=f"{who}-btc").ok
            assert c.place("BTC-USD", "sell", "0.5", "100", id="s1", account="alice").ok
            assert c.place("BTC-USD", "buy", "0.2", "100", id="b1", account="bob").ok
            assert c.place("BTC-USD", "buy", "0.1", "90", id="b2", account="bob").ok
            assert c.cancel("BTC-USD", "b2", account="bob").ok
        url = f"sqlite:///{cl.data_dir}/history.sqlite"

        def written() -> bool:
            with History(url) as h:
                orders = {o["id"]: o["status"] for o in h.rows("bob", "orders")}
                return orders == {"b1": "filled", "b2": "cancelled"} and \
                    len(list(h.rows("alice", "fills"))) == 1  # fmt: skip

        wait_until(written, 90, "the history writer caught up", interval=0.2)
        with History(url) as h:
            (fill,) = h.rows("alice", "fills")
            assert (fill["order_id"], fill["role"], fill["side"], fill["price"], fill["qty"]) == \
                ("s1", "maker", "sell", "100.00", "0.2000")  # fmt: skip
            assert {b["why"] for b in h.rows("bob", "balances")} >= {"deposit", "hold", "trade"}
        # the bridge's orders stream (read as user reader): each order with its fields
        users = RedisUsers.load(cl.keys_dir)
        r = redis.Redis.from_url(users.url(cl.layout.redis_url, "reader"), decode_responses=True)
        entries = [f for _, f in r.xrange("shardex:orders:0")]
        assert [(f["id"], f["account"], f["side"], f["price"], f["qty"]) for f in entries] == [
            ("s1", "alice", "sell", "100.00", "0.5000"), ("b1", "bob", "buy", "100.00", "0.2000"),
            ("b2", "bob", "buy", "90.00", "0.1000")]  # fmt: skip
        res = _cli("history", "bob", "--data-dir", cl.data_dir, "--kind", "fills", "--csv")
        assert res.returncode == 0 and res.stdout.count("\n") == 2, res.stdout + res.stderr
        res = _cli("history", "--check", "--data-dir", cl.data_dir)
        assert res.returncode == 0 and "agrees" in res.stdout, res.stdout + res.stderr
        port = cl.layout.history_metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as m:
            text = m.read().decode()
        assert 'shardex_history_rows_written_total{table="hx_fills"} 2.0' in text
    finally:
        cl.stop()
