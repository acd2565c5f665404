"""The router reads the time through its node's clock: a shard's HELLO is stamped with it, and
its reports judge "up" (a HELLO within 3 s) on that same clock, never on the process's."""

from __future__ import annotations

from shardex.clock import VirtualClock
from shardex.node.router import Router, RouterConfig
from shardex.wire.protocol import OP_HELLO, packb


def _up(router: Router) -> float:
    return next(s.value for fam in router.collect() for s in fam.samples
                if s.name == "shardex_router_shard_up" and s.labels == {"shard": "0"})  # fmt: skip


def test_shard_up_is_judged_on_the_clock_its_hello_was_stamped_with() -> None:
    clock = VirtualClock(start=100.0)
    router = Router(1, RouterConfig(1, "", ""), None, clock)
    hello = packb((OP_HELLO, {"shard": 0, "shards": 1, "pid": 9, "direct": "d", "pub": "p"}))
    router.from_shard([b"shard-0", b"", b"HELLO", hello], clock.perf_counter())
    assert router.last_seen == {0: 100.0}
    assert _up(router) == 1
    clock.advance(2.5)  # real time passes too, but only this counts
    assert _up(router) == 1
    clock.advance(1.0)
    assert _up(router) == 0
