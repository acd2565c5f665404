"""A whole cluster whose every lease is in etcd: ``shardex up --replicas 2 --accounts 1 --coord
etcd://...`` (secure, embedded Redis for the bridge's streams), a real 3-member etcd on loopback.

The account shard's leader killed -9 under funded load (the scenario tests/chaos/
test_failover_accounts.py runs with the leases in Redis); and the engine shard's leader, the
account shard's leader and etcd's own leader killed -9 at the same moment under funded load.
Both check what the Redis runs check (``_check_consistent``): nothing acknowledged lost, no
order forwarded twice, the settlements applied exactly the engine's, ``shardex audit`` clean,
the balances stream exact; and that the leases the new leaders hold are etcd's.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from shardex.coord.connect import connect
from shardex.lease import Lease
from tests.support.etcd import EtcdCluster, etcd_fixture  # noqa: F401 - the ``etcd`` fixture
from tests.support.failover_accounts import (
    AccountsPair,
    FundedLoad,
    _check_consistent,
    _fund,
    _wait_account_leader,
    account_leader_fails_over,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def apair(etcd: EtcdCluster) -> Iterator[AccountsPair]:
    c = AccountsPair(coord=etcd.url)  # (stops what it started if it fails)
    try:
        yield c
    finally:
        c.stop()  # before the etcd cluster it depends on


def _assert_etcd_holds(etcd: EtcdCluster, name: str | None, leader: dict[str, Any]) -> None:
    """The lease ``name`` (None: engine shard 0's) in etcd is held by ``leader``'s node and
    epoch: the cluster's leases are etcd's, not Redis's."""
    holder = Lease(connect(etcd.url), 0, "test-observer", "none", name=name).holder()
    assert holder is not None and (holder.node, holder.epoch) == (
        leader["node"], leader["epoch"]
    ), (holder, leader)  # fmt: skip


def test_account_shard_leader_kill9_under_funded_load(apair: AccountsPair,
                                                      etcd: EtcdCluster) -> None:  # fmt: skip
    leader = account_leader_fails_over(apair, "kill9")
    _assert_etcd_holds(etcd, "accounts-0", leader)


def test_engine_account_and_etcd_leaders_kill9_at_once(apair: AccountsPair,
                                                       etcd: EtcdCluster) -> None:  # fmt: skip
    """Both tiers fail over together while etcd elects a leader of its own: each standby
    takes its lease once etcd answers again (a member lost, two of three left)."""
    with apair.admin() as c:
        _fund(c)
    engine = apair.wait_isr(2)
    account = _wait_account_leader(apair, -1, isr=2)
    _assert_etcd_holds(etcd, None, engine)
    _assert_etcd_holds(etcd, "accounts-0", account)
    load = FundedLoad(apair, "e")
    try:
        load.wait_more(20)
        before = len(load.acked)
        os.kill(engine["pid"], signal.SIGKILL)
        os.kill(account["pid"], signal.SIGKILL)
        etcd.kill(etcd.leader())
        new_engine = apair.wait_isr(None, not_pid=engine["pid"], timeout=30)
        new_account = _wait_account_leader(apair, account["pid"], timeout=30)
        load.wait_more(20)  # funded orders go on against both new leaders
    finally:
        load.stop()
    assert before, "no order was acknowledged before the kills"
    assert new_engine["epoch"] > engine["epoch"] and new_engine["node"] != engine["node"]
    assert new_account["epoch"] > account["epoch"] and new_account["node"] != account["node"]
    _check_consistent(apair, load.acked)
    assert sum(p is not None for p in etcd.procs) == 2  # (it ran on two members of three)
    # the killed replicas come back (the supervisor), catch up and rejoin; etcd holds both
    _assert_etcd_holds(etcd, None, apair.wait_isr(2, timeout=30))
    _assert_etcd_holds(etcd, "accounts-0", _wait_account_leader(apair, account["pid"], isr=2))
