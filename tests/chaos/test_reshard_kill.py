"""kill -9 at every step of a reshard (real processes): the mover dies right after a step, and
the shard that step depends on is killed -9 with it (the source after the map records the move
and after its hand-off, the target after its adoption and after the pre-copy of the book); the
supervisor restarts the shard from its journal (or the router, which learns the half-done map
again from the shards' HELLOs), ``reshard`` is run again and finishes: every resting order is
on exactly one shard, a further run plans nothing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest

from shardex.cli.placement import render, router_placement
from shardex.client import AsyncClient
from shardex.engine import DEFAULT_MARKETS
from shardex.placement import default_owner
from shardex.placement.store import DirStore
from shardex.tools.reshard import reshard
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(240)

RESTING = 3  # per pair
# (the step's progress line, the reshard's shard count, whose shard is killed with the mover)
KILLS = (("records the move", 1, "source"), ("hand-off journaled", 2, "source"),
         ("adopted by shard", 1, "target"),
         ("hand-off journaled", 2, "router"),  # (it rebuilds the map from the shards' HELLOs)
         ("copied ahead", 1, "target"))  # (the pre-copy is lost: the re-run copies again)


class Died(Exception):
    """The mover's death right after a step (everything it did is in the cluster already)."""


def _pid(cluster: Cluster, shard: int) -> int | None:
    with cluster.client(timeout=5) as c:
        return c.topology()["topology"][shard].get("pid")


def _restarted(cluster: Cluster, shard: int, old: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            pid = _pid(cluster, shard)
            if pid and pid != old:
                with cluster.client(timeout=5) as c:
                    if all(s.get("seq") is not None for s in c.status()):
                        return
        except Exception:  # noqa: BLE001 - (not up yet: ask again)
            pass
        time.sleep(0.3)
    pytest.fail(f"shard {shard} never came back\n{cluster.output()[-3000:]}")


def _shows_moving(cluster: Cluster, symbol: str) -> None:
    """``shardex placement`` (the router's map) shows the half-done move (the shards' HELLOs
    bring the map the mover sent them)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with cluster.client(timeout=5) as c:
            lines = render(router_placement(c.topology()), [], "from the router")
        if any(line.startswith(f"  moving: {symbol} shard") for line in lines):
            return
        time.sleep(0.2)
    pytest.fail(f"the router's map never showed {symbol} moving: {lines}")


def _kill_router(cluster: Cluster) -> None:
    """kill -9 of the router; back once the supervisor started another that answers with every
    shard (the map it routes by comes from their HELLOs)."""
    old = cluster.child_pid("router")
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if cluster.child_pid("router") != old:
                with cluster.client(timeout=5) as c:
                    if all(s.get("seq") is not None for s in c.status()):
                        return
        except Exception:  # noqa: BLE001 - (not up yet: ask again)
            pass
        time.sleep(0.3)
    pytest.fail(f"the router never came back\n{cluster.output()[-3000:]}")


async def _reshard(cluster: Cluster, n: int, die_at: str | None = None) -> list[str]:
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if die_at is not None and die_at in line:
            raise Died(line)

    async with AsyncClient(cluster.endpoint, timeout=20, key=cluster.key, retry=False) as c:
        try:
            await reshard(c, n, say=say, store=DirStore(cluster.data_dir))
        except Died:
            pass
    return lines


def test_kill_9_of_the_mover_and_a_shard_at_every_step_then_run_again() -> None:
    cluster = Cluster(2)
    try:
        with cluster.client(account="rest", timeout=10) as c:
            for s in DEFAULT_MARKETS:
                for k in range(RESTING):
                    assert c.place(s, "buy", "1", str(1 + k), id=f"R{k}").ok
        for step, n, victim in KILLS:
            lines = asyncio.run(_reshard(cluster, n, die_at=step))
            move = next(line for line in lines if line.startswith("[1/"))
            src, dst = map(int, re.search(r"shard (\d+) -> shard (\d+)", move).groups())
            _shows_moving(cluster, move.split("] ")[1].split(":")[0])
            if victim == "router":
                _kill_router(cluster)
            else:
                shard = src if victim == "source" else dst
                old = _pid(cluster, shard)
                os.kill(old, signal.SIGKILL)
                _restarted(cluster, shard, old)
            done = asyncio.run(_reshard(cluster, n))
            assert "(in progress: finishing it)" in done[1], (step, done)  # (resumed first)
            assert any(f"resharded to {n} shard(s)" in line for line in done), done
            again = asyncio.run(_reshard(cluster, n))
            assert ": 0 move(s)" in again[0], again
            with cluster.client(timeout=10) as c:
                held = {st["shard"]: st["symbols"] for st in c.status()}
            for s in DEFAULT_MARKETS:
                where = {i: syms.get(s, 0) for i, syms in held.items() if syms.get(s)}
                assert where == {default_owner(s, n): RESTING}, (step, s, held)
        assert "Traceback" not in cluster.output()
        assert re.search(r"router \(pid \d+\) DIED with signal 9", cluster.output())
    finally:
        cluster.stop()
