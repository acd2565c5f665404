"""Failover with the leases in etcd: the same kill -9 scenarios as tests/chaos/test_failover.py,
the lease held in a real 3-member etcd cluster on loopback (``--redis-url etcd://...``).

kill -9 of the shard's leader under load: the standby takes the lease (an epoch from etcd's
revision, above the old one) and nothing acknowledged is lost; the same with etcd's own leader
killed at the same moment (a member lost and an etcd leader change during the shard failover:
the lease survives the etcd leader change, no split brain, nothing acked lost); and SIGSTOP of
the leader: fenced once it resumes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.etcd import EtcdCluster, etcd_fixture  # noqa: F401 - the ``etcd`` fixture
from tests.support.failover import (
    Pair,
    kill9_primary_under_load_loses_nothing_acked,
    sigstop_primary_is_fenced_after_resume,
)


@pytest.fixture
def pair(tmp_path, etcd: EtcdCluster) -> Iterator[Pair]:
    p = Pair(tmp_path, etcd.url)  # (stops what it started if it fails)
    try:
        yield p
    finally:
        p.stop()


def test_kill9_primary_under_load_loses_nothing_acked(pair: Pair) -> None:
    kill9_primary_under_load_loses_nothing_acked(pair)


def test_kill9_primary_and_the_etcd_leader_at_once(pair: Pair, etcd: EtcdCluster) -> None:
    kill9_primary_under_load_loses_nothing_acked(pair, also=lambda: etcd.kill(etcd.leader()))
    assert sum(p is not None for p in etcd.procs) == 2  # (it ran on two members of three)


def test_sigstop_primary_is_fenced_after_resume(pair: Pair) -> None:
    sigstop_primary_is_fenced_after_resume(pair)
