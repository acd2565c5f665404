"""The multi-host rehearsal, small: a full cluster over four network namespaces ("hosts"),
every process started only with explicit endpoints and names (``tests/support/multihost.py``:
Redis, router and bridge on h1, engine replica 0 and account replica 1 on h2, engine replica 1
and account replica 0 on h3, clients on h4), and the engine leader's host h2 cut off under
load (every packet dropped both ways, the links up), then healed.

What must hold: no split brain (asked from its own cut-off host, the deposed leader stops
answering as leader before the standby takes the lease: fencing), nothing acknowledged lost
or doubled, the bridge's stream whole, the audit clean after the heal, the deposed replica
back in the in-sync set, and ``shardex status --hosts`` reading every process on every host.

CI only (chaos tier). Needs root (``ip netns``, ``tc``) and redis-server; skipped with the
reason otherwise. Run with the leases in Redis and in a 3-member etcd (one member on each of
h1-h3). Namespaces, the bridge and every process are removed at the end.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from conftest import require

from tests.support.multihost import Plan, Rehearsal
from tests.support.netns import netns_unavailable


@pytest.fixture(scope="module", params=["redis", "etcd"])
def rehearsal(request, tmp_path_factory) -> Any:
    """The cluster with its leases in the Redis on h1, or in a 3-member etcd (a member on
    h1, h2, h3: the cut takes one member away, possibly etcd's leader)."""
    why = netns_unavailable() or (None if shutil.which("redis-server") else "needs redis-server")
    if request.param == "etcd" and why is None and not shutil.which("etcd"):
        why = "needs etcd (Debian: etcd-server)"
    require(why is None, why or "")
    work = tmp_path_factory.mktemp("multihost")
    try:
        reh = Rehearsal(work, request.param)
    except (subprocess.CalledProcessError, OSError) as exc:  # e.g. no CAP_NET_ADMIN
        err = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")
        require(False, f"cannot create network namespaces here: {err or exc}")
    try:
        reh.start()
        yield reh
    finally:
        reh.close()


def test_a_partitioned_leaders_host_fails_over_without_split_brain_or_loss(rehearsal) -> None:
    out = rehearsal.run(Plan(before=2.0, cut=3.0, after=2.0, rate=50.0))
    n = out.numbers
    assert n["first_leader"] == "shard-0.r0"
    # fencing: the cut-off leader answered as leader before the cut, and never once the
    # standby could have taken over
    assert n["fence_led_before_cut"] > 0
    assert n["deposed_answered_after_takeover"] == 0, n
    assert n["engine_failover_s"] is not None and n["engine_failover_s"] >= n["lease_moved_s"]
    # nothing acknowledged lost or doubled; the bridge's history whole; the money adds up
    assert n["acked"] > 0 and n["lost"] == 0 and n["duplicated"] == 0, n
    assert n["stream_gaps"] == 0 and n["stream_duplicates"] == 0, n
    assert n["audit"]["exit"] == 0, n["audit"]
    # the leaders on hosts never cut off kept leading (etcd runs with --pre-vote, its own
    # leader moved off the cut host first: its election time is etcd's, not ours to assert)
    assert n["etcd_leader_at_cut"] == ("h1" if n["coord"] == "etcd" else None), n
    assert n["uncut_leaders_fenced"] == 0, n
    # every replica compared its clock with the lease store's at start, across hosts (Redis
    # TIME, etcd's HTTP Date), and found it in sync (one box: one clock)
    for name in ("engine.r0", "engine.r1", "accounts.r0", "accounts.r1"):
        log = rehearsal.fleet.log_text(name)
        assert "could not compare" not in log and "CLOCK:" not in log, name
    # status across hosts: every process answered its health endpoint, on its own host
    text = out.status_text
    for name in ("router", "bridge", "engine.r0", "engine.r1", "accounts.r0", "accounts.r1"):
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert " 200 " in row and ("serving" in row or "standby" in row), row
    assert "primary shard-0.r1" in text  # the router's view: h3's replica leads now
