"""The placement map's Redis store against a real redis-server: a write whose base version is
not the stored one is refused, atomically (the compare runs inside Redis)."""

from __future__ import annotations

import pytest

from shardex.placement import RedisStore, StoreError, initial
from tests.support.redis import RedisServer


def test_redis_store_refuses_a_write_from_a_stale_base(redis_server: RedisServer) -> None:
    r = redis_server.client()
    store, racer = RedisStore(r), RedisStore(redis_server.client())
    assert store.load() is None
    m1 = initial(2).with_pin("BTC-USD", 1)
    assert store.compare_and_set(None, m1)
    assert not racer.compare_and_set(None, initial(2).with_pin("ETH-USD", 0))
    m2 = m1.with_shards(3)
    assert racer.compare_and_set(1, m2)
    assert not store.compare_and_set(1, m1.with_pin("ETH-USD", 0))  # stale base: refused
    assert store.load() == m2 and store.load().owner("BTC-USD") == 1
    r.set("shardex:placement", "not json")
    with pytest.raises(StoreError, match="shardex:placement"):
        store.load()
