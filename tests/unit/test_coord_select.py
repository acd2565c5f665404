"""Which coordination store a URL selects, in-process (no server is contacted): ``etcd://``
-> etcd for the lease and the placement map, anything else -> Redis as before; ``shardex up
--coord`` hands the etcd URL to every replica as its lease URL and refuses what cannot work."""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from shardex.cli import main
from shardex.coord.connect import connect, is_etcd, lease_store, placement_store
from shardex.coord.etcd import EtcdClient, EtcdLeaseStore, EtcdStore, parse_url
from shardex.coord.redisstore import RedisLeaseStore
from shardex.kinds import Plan, spawns
from shardex.layout import Layout
from shardex.lease import Lease
from shardex.placement.store import RedisStore

URL = "etcd://10.0.0.1:2379,10.0.0.2:2379,etcd-3.local:2379"


def test_an_etcd_url_selects_etcd_and_names_every_member() -> None:
    assert parse_url(URL) == [("10.0.0.1", 2379), ("10.0.0.2", 2379), ("etcd-3.local", 2379)]
    client = connect(URL)
    assert isinstance(client, EtcdClient) and is_etcd(URL)
    assert isinstance(lease_store(client, "0"), EtcdLeaseStore)
    assert isinstance(placement_store(client), EtcdStore)
    lease = Lease(client, 0, "shard-0.r0", "tcp://a:1")
    assert lease.ttl_ms == 1000 and lease.keys == ()  # (etcd counts whole seconds)


def test_a_redis_url_selects_redis_unchanged() -> None:
    client = connect("redis://127.0.0.1:1/0")
    assert isinstance(client, redis.Redis) and not is_etcd("redis://127.0.0.1:1/0")
    assert isinstance(lease_store(client, "accounts-0"), RedisLeaseStore)
    assert isinstance(placement_store(client), RedisStore)
    lease = Lease(client, 0, "n", "e", name="accounts-0")
    assert lease.ttl_ms == 800 and lease.keys[0] == "shardex:lease:accounts-0"


@pytest.mark.parametrize("bad", ["etcd://", "etcd://host", "etcd://h:p", "etcd://:2379",
                                 "http://h:2379"])  # fmt: skip
def test_a_malformed_etcd_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_url(bad)


def test_up_coord_becomes_every_replicas_lease_url(tmp_path) -> None:
    layout = Layout("127.0.0.1", 20000, 1, 1, 1)
    plan = Plan(layout, data_dir=str(tmp_path), replicas=2, coord=URL)
    assert plan.lease_url == URL
    urls = {s.values.get("redis_url") for _, s in spawns(plan) if s.values.get("role") == "auto"}
    assert urls == {URL}
    assert Plan(layout, data_dir=str(tmp_path), replicas=1, coord=URL).lease_url is None


@pytest.mark.parametrize("args, says", [
    (["--coord", URL], "needs --replicas 2"),
    (["--replicas", "2", "--coord", "etcd://nohost"], "want host:port"),
])  # fmt: skip
def test_up_refuses_a_coord_it_cannot_use(tmp_path, args: list[str], says: str) -> None:
    out = CliRunner().invoke(main, ["up", "--data-dir", str(tmp_path), "--base-port", "20000",
                                    "--insecure", *args])  # fmt: skip
    assert out.exit_code == 2 and says in out.output
