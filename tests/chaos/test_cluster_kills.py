"""kill -9 of an engine shard on a real two-shard ``shardex up``: clients get a fast reject
for its pairs (not a hang), the other shard's pairs keep trading, and the supervisor brings the
shard back (moved here from tests/process/test_cluster.py: it kills a process)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from shardex.wire.protocol import shard_for
from tests.support.cluster import Cluster


def test_kill9_shard_rejects_its_pairs_fast_others_keep_trading_and_it_comes_back(
    cluster2: Cluster,
):
    victim_symbol, other_symbol = "ETH-USD", "BTC-USD"
    victim = shard_for(victim_symbol, 2)
    assert shard_for(other_symbol, 2) != victim
    pid = cluster2.shard_pid(victim)
    with cluster2.client(account="k", timeout=1.0) as c:
        assert c.place(victim_symbol, "buy", "1", "100").ok
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        saw_reject = None
        other_ok = 0
        while time.monotonic() - killed < 15:
            r = c.place(victim_symbol, "buy", "1", "100")
            if r.error is not None and saw_reject is None:
                saw_reject = r.error
            if saw_reject is not None and r.ok:
                break  # restarted and serving again
            other_ok += c.place(other_symbol, "buy", "1", "100").ok
            time.sleep(0.02)
        else:
            pytest.fail(f"victim shard never came back; supervisor log:\n{cluster2.output()}")
    # the client got an explicit reject (not a hang past its 1 s timeout)
    assert saw_reject in ("shard unavailable",) or saw_reject.startswith("timeout after 1.0s")
    assert other_ok > 0
    assert cluster2.shard_pid(victim) != pid
    assert "DIED with signal 9" in cluster2.output()
