"""The bridge at a cluster's start: shards that are merely starting are not reported as shards
that "do not answer their status requests" (a WARNING per shard at every start)."""

from __future__ import annotations

import time

from shardex.node.bridge import STARTUP_GRACE_S, still_starting
from shardex.tools.tail import connect
from tests.support.cluster import Cluster


def test_still_starting_only_before_the_first_answer_and_within_the_grace() -> None:
    assert still_starting(False, 0.5)
    assert not still_starting(True, 0.5)  # it answered once: silence now is news
    assert not still_starting(False, STARTUP_GRACE_S + 1)  # never came up: warn


def test_no_does_not_answer_warning_at_start() -> None:
    """Regression: every start logged "shard N does not answer its status requests" for every
    shard (the bridge's first polls reach shards still starting). Synchronised on the bridge
    having written both tiers' events (it writes only what a status answer confirmed)."""
    cluster = Cluster(1, redis="embedded", accounts=1)
    try:
        r = connect(None, cluster.layout.redis_url, cluster.keys_dir)
        with cluster.client() as c:
            assert c.deposit("alice", "USD", "1000").ok
            assert c.place("BTC-USD", "buy", "0.01", "100", account="alice").ok
        deadline = time.monotonic() + 30
        while not (r.xlen("shardex:events:0") and r.xlen("shardex:balances:0")):
            assert time.monotonic() < deadline, "the bridge wrote nothing within 30 s"
            time.sleep(0.1)
        out = cluster.output()
        assert "does not answer its status requests" not in out, out[-3000:]
    finally:
        cluster.stop()
