"""The coordination contract, the SAME tests against both stores: a real redis-server and a
real 3-member etcd cluster on loopback (``shardex.coord``: Redis scripts, etcd transactions).

A lease: the first taker gets an epoch above its floor and the next taker is refused while it
holds; renewals keep it; unrenewed it expires and an in-sync member takes it with a greater
epoch; the stale holder is then fenced (renew, in-sync-set writes and release all refused, the
new holder untouched); only in-sync members may take an expired lease; each epoch's start seq
is recorded. The placement map: a write from a stale base version is refused. Plus what only
etcd can do: a member lost and etcd's own leader killed lose no grant.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shardex.coord.connect import connect, placement_store
from shardex.lease import Lease, LeaseLost
from shardex.placement import initial
from tests.support.etcd import EtcdCluster, etcd_binary
from tests.support.redis import RedisServer

TTL_MS, RENEW_MS = 600, 150  # (etcd rounds the ttl up to 1 s: its leases count seconds)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One redis-server and one 3-member etcd cluster for the module."""
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (tests/run.sh installs etcd-server)")
    rdir, edir = tmp_path_factory.mktemp("redis"), tmp_path_factory.mktemp("etcd")
    redis_server, etcd = RedisServer(str(rdir)), None
    try:
        etcd = EtcdCluster(edir)
        yield {"redis": redis_server.url, "etcd": etcd.url, "cluster": etcd}
    finally:
        redis_server.stop()
        if etcd is not None:
            etcd.stop()


@pytest.fixture(params=["redis", "etcd"])
def make(request, stores) -> Callable[[str], Lease]:
    """A factory of leases on one fresh lease name, in the store under test."""
    name = f"t{os.urandom(4).hex()}"
    client = connect(stores[request.param])

    def lease(node: str) -> Lease:
        return Lease(client, 0, node, f"tcp://{node}:1", ttl_ms=TTL_MS, renew_ms=RENEW_MS,
                     name=name, thread=False)  # fmt: skip

    return lease


def until(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``what`` until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_acquire_renew_and_the_epoch_start(make) -> None:
    a, b = make("a"), make("b")
    epoch, why = a.try_acquire(floor=0, start_seq=7)
    assert (why, a.valid()) == ("ok", True) and epoch > 0
    assert b.try_acquire(floor=0, start_seq=0) == (0, "held")
    assert b.holder() == a.holder() and (a.holder().epoch, a.holder().node) == (epoch, "a")
    assert a.isr() == ["a"] and a.starts() == {epoch: 7}
    before = a.deadline
    assert a.renew() and a.deadline >= before
    holder, left = b.holder_ttl()
    assert holder.node == "a" and 0 <= left <= a.ttl_ms


def test_expiry_then_the_stale_holder_is_fenced(make) -> None:
    a, b = make("a"), make("b")
    first, _ = a.try_acquire(0, 0)
    stale = a.value  # (the old holder's token: ``renew`` forgets it once it learns it lost)
    assert a.set_isr(["a", "b"])
    second, why = until(lambda: (got := b.try_acquire(0, 5))[0] and got)  # a stopped renewing
    assert why == "ok" and second > first and b.holder().node == "b"
    with pytest.raises(LeaseLost):
        a.renew()
    assert not a.valid()
    a.value = stale
    with pytest.raises(LeaseLost):
        a.set_isr(["a"])
    a.value = stale
    a.release()  # (a stale release deletes nothing)
    assert b.holder().node == "b" and b.isr() == ["b"] and b.renew()
    assert b.starts()[second] == 5 and first in b.starts()


def test_only_the_in_sync_set_may_take_an_expired_lease(make) -> None:
    a, b, c = make("a"), make("b"), make("c")
    a.try_acquire(0, 0)
    assert a.set_isr(["a", "c"])
    epoch, why = until(lambda: (got := b.try_acquire(0, 0))[1] != "held" and got)
    assert epoch == 0 and why.startswith("not in the in-sync set")
    assert c.try_acquire(0, 0)[1] == "ok" and c.holder().node == "c"


def test_the_epoch_never_goes_below_the_floor_nor_back(make) -> None:
    a = make("a")
    high, _ = a.try_acquire(floor=10**6, start_seq=0)
    assert high > 10**6
    a.release()
    again, why = a.try_acquire(floor=0, start_seq=0)
    assert why == "ok" and again > high


@pytest.mark.parametrize("kind", ["redis", "etcd"])
def test_the_placement_map_refuses_a_stale_base(stores, kind) -> None:
    store, racer = placement_store(connect(stores[kind])), placement_store(connect(stores[kind]))
    base = store.load()
    v0 = None if base is None else base.version
    m1 = (base or initial(2)).with_pin("BTC-USD", 1)
    assert store.compare_and_set(v0, m1)
    assert not racer.compare_and_set(v0, (base or initial(2)).with_pin("ETH-USD", 0))
    m2 = m1.with_shards(3)
    assert racer.compare_and_set(m1.version, m2)
    assert not store.compare_and_set(m1.version, m1.with_pin("ETH-USD", 0))
    assert store.load() == m2


def test_etcd_loses_no_grant_with_a_member_and_its_leader_gone(stores) -> None:
    """etcd only: its leader killed while a lease is held: the holder keeps renewing (its
    client moves to a live member), the lease neither expires early nor changes hands."""
    cluster: EtcdCluster = stores["cluster"]
    client = connect(stores["etcd"])
    a = Lease(client, 0, "a", "tcp://a:1", ttl_ms=TTL_MS, renew_ms=RENEW_MS,
              name=f"t{os.urandom(4).hex()}", thread=False)  # fmt: skip
    b = Lease(client, 0, "b", "tcp://b:1", name=a.name, thread=False)
    epoch, _ = a.try_acquire(0, 0)
    killed = cluster.leader()
    cluster.kill(killed)
    try:
        renewed = until(lambda: a.renew(), timeout=15)  # (a new etcd leader is elected)
        assert renewed and b.try_acquire(0, 0) == (0, "held")
        assert a.holder().epoch == epoch and a.holder().node == "a"
    finally:
        cluster.start(killed)
        cluster.wait_healthy()
