"""The simulated store against a real redis-server: the same calls of the cluster's own Lua
scripts (the lease's acquire, renew, in-sync set and release; the bridge's WRITE_SCRIPT with
its duplicates, conflicts, foreign tops, deleted entries, epoch fence and predecessor check)
give the same replies on both, so what the simulator finds about the store is about Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import redis
import redis.asyncio as aioredis

from shardex.lease import Lease
from shardex.node.bridge.metrics import Alerts
from shardex.node.bridge.redis_writer import RedisWriter
from shardex.sim.store import SimStore


def _lease_story(client: Any) -> list[Any]:
    """What the lease's scripts answer along one story (no timing: ttls are long)."""
    a = Lease(client, 0, "a", "tcp://a", ttl_ms=60_000, renew_ms=1_000, thread=False)
    b = Lease(client, 0, "b", "tcp://b", ttl_ms=60_000, renew_ms=1_000, thread=False)
    out: list[Any] = [a.try_acquire(3, 0), b.try_acquire(0, 0), a.renew(), a.set_isr(["a", "b"])]
    out += [a.isr(), b.holder(), a.starts()]
    holder, pttl = b.holder_ttl()
    out.append(0 < pttl <= 60_000)
    a.release()
    out += [b.holder_ttl(), b.try_acquire(0, 7), b.starts(), b.isr()]
    try:
        a.renew()
    except Exception as exc:  # LeaseLost: the lease is b's
        out.append(type(exc).__name__)
    return out


def _blob(entries: list[tuple[int, str, str | None]]) -> bytes:
    items = []
    for seq, value, symbol in entries:
        item: list[Any] = [f"{seq}-0", ["seq", str(seq), "v", value]]  # (as the bridge packs)
        if symbol:
            item += [symbol, ["p", value]]
        items.append(item)
    return msgpack.packb(items, use_bin_type=True)


async def _bridge_story(client: Any) -> list[Any]:
    """What WRITE_SCRIPT answers along one story, through ``RedisWriter._eval``."""
    w = RedisWriter.__new__(RedisWriter)
    w.redis, w.sha, w._deleted, w.alerts = client, None, {}, Alerts()
    ev, tr, fence = "shardex:events:0", "shardex:trades:BTC", "shardex:events:0:epoch"
    args = ("shardex:trades:", "0")
    out: list[Any] = [
        await w._eval([ev, tr], (_blob([(1, "x", "BTC"), (2, "y", None)]), *args)),
        await w._eval([ev, tr], (_blob([(1, "x", "BTC"), (2, "y", None)]), *args)),  # dups
        await w._eval([ev], (_blob([(2, "other", None)]), *args)),  # a different entry
        await w._eval([ev, fence], (_blob([(3, "z", None)]), *args, "2")),  # epoch 2
        await w._eval([ev, fence], (_blob([(4, "z", None)]), *args, "1")),  # older epoch
        await w._eval([ev], (_blob([(4, "z", None)]), *args, "0", "3")),  # follows 3: there
        await w._eval([ev], (_blob([(6, "z", None)]), *args, "0", "5")),  # follows 5: gone
    ]
    await client.xadd(ev, {"forged": "1"}, id="9-0")
    out.append(await w._eval([ev], (_blob([(5, "z", None)]), *args)))  # below a foreign top
    await client.xdel(ev, "1-0")
    out.append(await w._eval([ev], (_blob([(10, "z", None)]), *args)))  # a deleted entry
    out.append(w._deleted)
    out.append([e[0] for e in await client.xrange(ev)])
    out.append(await client.get(fence))
    return out


def test_the_scripts_answer_alike(redis_server: Any) -> None:
    real = redis.Redis.from_url(redis_server.url)
    sim = SimStore()
    assert _lease_story(sim.client()) == _lease_story(real)
    real.flushdb()

    async def both() -> tuple[list[Any], list[Any]]:
        areal = aioredis.from_url(redis_server.url)
        try:
            return await _bridge_story(sim.async_client()), await _bridge_story(areal)
        finally:
            await areal.aclose()

    on_sim, on_real = asyncio.run(both())
    assert on_sim == on_real
