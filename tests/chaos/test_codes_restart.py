"""A retrying client gets its order through a shard's kill -9 and restart exactly once, with
every error text rewritten to nonsense (moved here from tests/process/test_codes_decisions.py:
it kills a process; the decisions themselves are checked there without one)."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

from shardex.client import Retry
from tests.support.cluster import Cluster

SYMBOL = "BTC-USD"


def test_a_retrying_client_gets_through_a_shard_restart_once_with_rewritten_texts(
    cluster1: Cluster, scramble: list[str]
) -> None:
    """kill -9 the shard, then place with ``Retry``: the router's answers (unavailable while
    the shard is down) and the client's own (timeouts) all carry nonsense texts; the order
    still goes through once the supervisor restarted the shard, and ran exactly once."""
    pid = cluster1.shard_pid(0)
    retry = Retry(deadline=60.0, backoff=0.05, max_backoff=0.3)
    with cluster1.client(account="k", timeout=1.0, retry=retry) as c:
        c.markets_source = "given"
        os.kill(pid, signal.SIGKILL)
        made = len(scramble)
        r = c.place(SYMBOL, "buy", "1", "100", id="through-restart")
        assert r.ok and r.attempts >= 2, (r, cluster1.output()[-3000:])
        assert len(scramble) > made  # it did hear rewritten errors on the way
        deadline = time.monotonic() + 10
        while (st := c.order_status(SYMBOL, "through-restart"))["state"] != "live":
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        assert st["qty"] == Decimal("1")
        again = c.place(SYMBOL, "buy", "1", "100", id="through-restart")
        assert again.code == "duplicate_id"  # it ran once: the id is taken
    assert cluster1.shard_pid(0) != pid
