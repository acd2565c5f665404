"""``shardex reshard`` on a running cluster (real processes, real Redis, the account tier):
shrink 2 -> 1 then grow 1 -> 2 with resting orders and their holds on the moving pairs; the
books and holds come along, ``shardex audit`` is clean, every shard's events stream and every
pair's trades stream are contiguous (nothing lost, nothing twice), a re-run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from shardex.placement import default_owner
from tests.support.bridge import streams_caught_up
from tests.support.cluster import ROOT, Cluster
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(240)

PAIRS = ("BTC-USD", "ETH-USD", "SOL-USD")  # shard 0, 1, 1 under two shards
MOVED = [s for s in PAIRS if default_owner(s, 2) == 1]


def _cli(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHARDEX_KEY": str(cluster.key)}
    return subprocess.run([sys.executable, "-m", "shardex.cli", *args, "--endpoint",
                           cluster.endpoint], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def _trade_round(c, tag: str) -> None:
    """One crossing trade per pair between two funded accounts."""
    for s in PAIRS:
        assert c.place(s, "sell", "1", "100", id=f"{tag}-s-{s}", account="bo").ok
        r = c.place(s, "buy", "1", "100", id=f"{tag}-b-{s}", account="al")
        assert r.ok, r  # (the trade is checked in the trades stream at the end)


def test_reshard_down_and_up_keeps_books_holds_and_streams(redis_server: RedisServer) -> None:
    assert MOVED and len(MOVED) < len(PAIRS)
    cluster = Cluster(2, redis=redis_server.url, accounts=1,
                      data_dir=tempfile.mkdtemp(prefix="shardex-rs-"))  # fmt: skip
    try:
        with cluster.client(timeout=10) as c:
            for acct in ("al", "bo", "rest"):
                for asset in ("USD", "BTC", "ETH", "SOL"):
                    assert c.deposit(acct, asset, "1000000", ref=f"d-{acct}-{asset}").ok
            for s in PAIRS:
                for k in range(3):  # resting bids, each holding USD
                    assert c.place(s, "buy", "1", str(50 + k), id=f"R{k}-{s}",
                                   account="rest").ok  # fmt: skip
            _trade_round(c, "t0")
        beyond = _cli(cluster, "reshard", "--shards", "3")  # (2 shard processes run)
        assert beyond.returncode == 1 and "shardex up --shards 3" in beyond.stderr, beyond
        assert "Traceback" not in beyond.stderr
        dry = _cli(cluster, "reshard", "--shards", "1", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        planned = json.loads(dry.stdout)
        assert {m["symbol"] for m in planned["moves"]} >= set(MOVED)
        assert planned["emptied"] == [1]
        down = _cli(cluster, "reshard", "--shards", "1", "--data-dir", cluster.data_dir)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "hand-off journaled by shard 1" in down.stdout and "[1/" in down.stdout
        with cluster.client(timeout=10) as c:
            assert {s: c.book(s)["shard"] for s in PAIRS} == dict.fromkeys(PAIRS, 0)
            _trade_round(c, "t1")
        up = _cli(cluster, "reshard", "--shards", "2", "--data-dir", cluster.data_dir)
        assert up.returncode == 0, up.stdout + up.stderr
        again = _cli(cluster, "reshard", "--shards", "2", "--data-dir", cluster.data_dir)
        assert again.returncode == 0 and ": 0 move(s)" in again.stdout, again.stdout
        with cluster.client(timeout=10) as c:
            assert {s: c.book(s)["shard"] for s in PAIRS} == {s: default_owner(s, 2)
                                                              for s in PAIRS}  # fmt: skip
            _trade_round(c, "t2")
            for s in MOVED:  # a moved resting order's cancel releases its hold
                done = c.cancel(s, f"R0-{s}", account="rest")
                assert done.ok and done.events[0]["ev"] == "cancelled", done
        audit = _cli(cluster, "audit")
        assert audit.returncode == 0, audit.stdout + audit.stderr
        r = redis_server.client()
        deadline = time.monotonic() + 60  # (fills of account-tier orders land after the reply)
        while any(r.xlen(f"shardex:trades:{s}") < 3 for s in PAIRS):
            assert time.monotonic() < deadline, [r.xlen(f"shardex:trades:{s}") for s in PAIRS]
            time.sleep(0.2)
        status = streams_caught_up(r, cluster)
        for i, seq in status.items():
            ids = [int(e[0].split("-")[0]) for e in r.xrange(f"shardex:events:{i}")]
            assert ids == list(range(1, seq + 1)), f"shard {i}: holes or copies"
        for s in PAIRS:
            trade_ids = [int(f["trade_id"]) for _, f in r.xrange(f"shardex:trades:{s}")]
            assert trade_ids == [1, 2, 3], f"{s}: {trade_ids}"
        assert "Traceback" not in cluster.output()
    finally:
        cluster.stop()
