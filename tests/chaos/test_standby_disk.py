"""A standby process whose journal cannot write fail-stops (docs/failover.md, "A replica's
disk fails"): one ALERT line and exit code 4 (``EXIT_JOURNAL_FAILED``), no traceback, nothing
acked that its journal did not hold; the leader drops it from the in-sync set and acks alone;
restarted on a working disk (as ``shardex up`` restarts any child that exits), it catches up
and is in sync again.

Real processes (a redis-server, a router, two ``shardex engine --role auto`` replicas). The
disk error is real too: the standby's first journal segment is a symlink to ``/dev/full``, so
its first write fails with ENOSPC. About 4 s of CPU (four process starts)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shardex.journal.disk import _seg_name
from shardex.node.failstop import EXIT_JOURNAL_FAILED
from shardex.node.replica import replica_dir
from tests.support.failover import SYMBOL, Pair, _journal_ids, _place_until_ok, started_pair
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    with started_pair(tmp_path) as p:
        yield p


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_standby_whose_disk_fails_exits_4_and_rejoins_once_restarted(pair: Pair) -> None:
    leader = pair.wait_leader()
    standby = "shard-0.r1" if leader == "shard-0.r0" else "shard-0.r0"
    pair.wait_isr({leader, standby})
    where = replica_dir(pair.data, 0, int(standby.rsplit(".r", 1)[1]))
    segment = Path(where) / _seg_name(0)
    assert not segment.exists(), "the standby wrote a segment before any order"
    segment.symlink_to("/dev/full")  # its first journal write: ENOSPC
    proc = pair.proc_of(standby)
    with pair.client() as c:
        r = _place_until_ok(c, c.order(SYMBOL, "buy", "1", "100", id="a0"))
        assert r.ok, r
        assert proc.wait(30) == EXIT_JOURNAL_FAILED
        out = pair.output("r" + standby.rsplit(".r", 1)[1])
        assert f"ALERT {standby} cannot journal the leader's batch" in out, out[-2000:]
        assert "Traceback" not in out, out[-2000:]
        pair.wait_isr({leader})  # the leader goes on alone
        segment.unlink()  # the disk works again; the supervisor's restart:
        pair.start_replica(int(standby.rsplit(".r", 1)[1]))
        pair.wait_isr({leader, standby})
        r = _place_until_ok(c, c.order(SYMBOL, "buy", "1", "101", id="a1"))
        assert r.ok, r
    wait_until(lambda: _journal_ids(where) == ["a0", "a1"], timeout=15,
               what="the restarted standby to journal both orders")  # fmt: skip
