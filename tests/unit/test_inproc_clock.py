"""A whole cluster on a virtual clock (``InProcCluster(plan, clock=VirtualClock())``): every node
reads the time through its transport's clock, so while the clock stands still no timer of
theirs fires, however many rounds run and however much real time passes (orders still flow),
and once it is advanced the due ones fire, stamped with the virtual time. The timer watched
is the one every sequenced node runs: its HELLO to the routers every ``HELLO_EVERY_S``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.net import mem_transport
from shardex.node.sequenced import HELLO_EVERY_S
from tests.support.inproc import plan, published

ROUNDS = 200  # scheduler rounds a frozen clock must survive with no timer firing


def _spy_hellos(node: Any) -> list[float]:
    """The ``now`` of each HELLO ``node`` sends from here on (its timer's firings)."""
    seen: list[float] = []
    send = node.hello

    def hello(now: float) -> None:
        seen.append(now)
        send(now)

    node.hello = hello
    return seen


@pytest.mark.timeout(60)
def test_timers_wait_for_the_virtual_clock_and_fire_when_it_moves() -> None:
    clock = VirtualClock()
    cluster = InProcCluster(plan(shards=2, accounts=1), net=mem_transport(clock=clock))
    sequenced = [*cluster.engines, *cluster.accounts]
    hellos = [_spy_hellos(node) for node in sequenced]

    async def main() -> None:
        async with cluster:
            # the first turn at virtual 0 registers every shard (a "never" timer is due at
            # once on any clock), so the router opens and an order goes through
            await cluster.until(lambda: all(hellos), what="first HELLOs")
            async with cluster.client() as cl:
                assert (await cl.deposit("acct-1", "USD", "1000", ref="d1")).ok
                r = await cl.place("BTC-USD", "buy", "0.01", "100", account="acct-1")
                assert r.ok, r  # (held and forwarded: its engine shard accepts it next)
            await cluster.until(lambda: any(published(n) for n in cluster.engines),
                                what="the order on its engine shard")  # fmt: skip
            first = cluster.rounds
            await cluster.until(lambda: cluster.rounds >= first + ROUNDS, what="rounds")
            assert hellos == [[0.0]] * len(sequenced)  # the clock stood still: no timer fired
            router = cluster.routers[0]
            assert (router.started, router.last_expire) == (0.0, 0.0)
            assert {node.last_snap for node in sequenced} == {0.0}

            clock.advance(HELLO_EVERY_S / 2)  # not due yet
            half = cluster.rounds
            await cluster.until(lambda: cluster.rounds >= half + ROUNDS, what="rounds")
            assert hellos == [[0.0]] * len(sequenced)

            clock.advance_to(HELLO_EVERY_S)  # due: each node says HELLO once, at that time
            await cluster.until(lambda: all(len(h) == 2 for h in hellos), what="HELLOs")
            assert hellos == [[0.0, HELLO_EVERY_S]] * len(sequenced)
            assert {node.last_hello for node in sequenced} == {HELLO_EVERY_S}

    asyncio.run(main())


def test_a_cluster_takes_its_clock_or_its_transports_not_two() -> None:
    clock = VirtualClock()
    given = InProcCluster(plan(), clock=clock)
    assert given.net.clock is clock and given.client().clock is clock
    asyncio.run(given.stop())
    with pytest.raises(ValueError, match="clock"):
        InProcCluster(plan(), net=mem_transport(clock=clock), clock=VirtualClock())
