"""The bridge under kills and outages: kill -9 of the bridge or of a shard mid-load, Redis down
for seconds, the bridge SIGSTOPped behind a PUB HWM of 1; Redis still ends with every trade a
client was told of, exactly once, and every shard's events stream contiguous."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import pytest

from shardex.wire.protocol import shard_for
from tests.support.bridge import wait_until
from tests.support.bridge_load import SYMBOLS, Load, check_exactly_once, wait_for_streams
from tests.support.cluster import Cluster
from tests.support.redis import RedisServer


@pytest.fixture
def bridged(redis_server: RedisServer):
    cluster = Cluster(2, redis=redis_server.url)
    try:
        yield cluster, redis_server
    finally:
        cluster.stop()


def test_kill9_bridge_mid_load_still_exactly_once(bridged):
    cluster, server = bridged
    load = Load(cluster, rounds=40, pause=0.05)
    t = load.start()
    wait_until(lambda: load.total >= 100 or load.done.is_set(), 30, "the load under way")
    os.kill(cluster.child_pid("bridge"), signal.SIGKILL)
    t.join(120)
    assert not load.errors
    r = server.client()
    wait_for_streams(r, load, cluster)
    check_exactly_once(r, load, cluster)
    assert "bridge (pid" in cluster.output() and "DIED with signal 9" in cluster.output()


def test_redis_down_for_seconds_then_back_still_exactly_once(bridged):
    cluster, server = bridged
    load = Load(cluster, rounds=50, pause=0.1)  # ~5 s of load
    t = load.start()
    wait_until(lambda: load.total >= 100 or load.done.is_set(), 30, "the load under way")
    server.stop()
    # the engines keep matching meanwhile; the bridge finds Redis gone and retries
    traded = load.total
    wait_until(lambda: "Redis unavailable" in cluster.output(), 30, "the bridge's retries")
    wait_until(lambda: load.total > traded or load.done.is_set(), 30, "matching without Redis")
    server.start()  # same directory: the AOF brings the data back
    t.join(120)
    assert not load.errors
    r = server.client()
    wait_for_streams(r, load, cluster)
    check_exactly_once(r, load, cluster)
    out = cluster.output()
    assert "Redis unavailable" in out and "Redis is back" in out


def test_kill9_shard_mid_load_redis_still_exact_and_contiguous(bridged):
    """A shard dies mid-load: its journal regenerates what it had published, the bridge repairs
    from the restarted shard (ring empty → journal), and Redis ends with no hole and no copy."""
    cluster, server = bridged
    load = Load(cluster, rounds=40, pause=0.05)
    t = load.start()
    wait_until(lambda: load.total >= 100 or load.done.is_set(), 30, "the load under way")
    os.kill(cluster.shard_pid(shard_for("ETH-USD", 2)), signal.SIGKILL)
    t.join(120)
    r = server.client()
    # orders in flight when the shard died time out or are refused; every trade a client was
    # told about must be in Redis, exactly once, and the events streams must have no holes
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with cluster.client() as c:
            status = {s["shard"]: s.get("seq") for s in c.status()}
        if all(
            seq is not None and r.xlen(f"shardex:events:{shard}") == seq
            for shard, seq in status.items()
        ):
            break
        time.sleep(0.3)
    for shard, seq in status.items():
        ids = [int(e[0].split("-")[0]) for e in r.xrange(f"shardex:events:{shard}")]
        assert ids == list(range(1, seq + 1)), f"shard {shard}: holes or copies"
    for sym in SYMBOLS:
        seqs = {int(e[0].split("-")[0]) for e in r.xrange(f"shardex:trades:{sym}")}
        assert set(load.trades[sym]) <= seqs
        trade_ids = [int(f["trade_id"]) for _, f in r.xrange(f"shardex:trades:{sym}")]
        assert trade_ids == list(range(1, len(trade_ids) + 1))
    assert "DIED with signal 9" in cluster.output()
    assert "Traceback" not in cluster.output()


def test_tiny_pub_hwm_drops_are_repaired(redis_server: RedisServer):
    """Moved from tests/process/test_bridge.py: it SIGSTOPs the bridge (and sends 20,000
    orders); the repair path's fast-suite wiring is test_bridge.py's stand-in shard tests."""
    cluster = Cluster(2, "--pub-hwm", "1", redis=redis_server.url)
    try:
        load = Load(cluster, rounds=40, per_round=500)
        # The bridge is stopped while the load runs, so its socket buffers fill and the shards'
        # PUB (HWM 1) must drop: without this a fast bridge kept up and nothing was dropped.
        bridge = cluster.child_pid("bridge")
        os.kill(bridge, signal.SIGSTOP)
        try:
            load.run()
        finally:
            os.kill(bridge, signal.SIGCONT)
        assert not load.errors
        r = redis_server.client()
        wait_for_streams(r, load, cluster)
        check_exactly_once(r, load, cluster)
        metrics = (
            urllib.request.urlopen(
                f"http://127.0.0.1:{cluster.layout.bridge_metrics_port}/metrics", timeout=5
            )
            .read()
            .decode()
        )
        repaired = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("shardex_bridge_repaired_events_total{")
        )
        assert repaired > 0, "the tiny HWM was supposed to force drops and repairs"
    finally:
        cluster.stop()
