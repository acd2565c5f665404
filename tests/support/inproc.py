"""A whole cluster in the test's own process (``shardex.inproc``): the plan ``shardex up`` would
make, and a runner for a test body on it. No port, no process: for tests/unit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shardex.inproc import InProcCluster
from shardex.kinds import Plan
from shardex.layout import Layout


def plan(shards: int = 1, accounts: int = 0, **kw: Any) -> Plan:
    """``shardex up --shards N --accounts M --no-bridge``'s plan (``kw``: its other options,
    e.g. ``data_dir``, ``max_backlog``, ``markets_file``). The layout only names endpoints:
    the in-memory hub binds no port, so any base port does."""
    return Plan(layout=Layout(base_port=20000, shards=shards, accounts=accounts), pin=False,
                redis=None, **kw)  # fmt: skip


def run(p: Plan, body: Callable[[InProcCluster], Awaitable[Any]]) -> Any:
    """``body(cluster)`` on the cluster of ``p``, started before and stopped after; its value."""

    async def main() -> Any:
        async with InProcCluster(p) as cluster:
            return await body(cluster)

    return asyncio.run(main())
