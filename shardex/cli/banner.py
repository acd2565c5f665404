"""What ``shardex up`` prints once its children run: every endpoint, the keys, the next
steps; it first waits (bounded) for the shards to register and the account links to form."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from shardex.auth import ADMIN_KEY_FILE
from shardex.cli.base import INSECURE_WARNING
from shardex.client import Client, ShardexError
from shardex.layout import Layout
from shardex.recovery import describe as recovery_describe
from shardex.redisauth import mask_url


def _registered(layout: Layout, admin: str | None) -> tuple[list[int], dict[str, Any]]:
    """Per router, how many shards registered with it (waiting up to ~5 s for all), and the
    replay estimates of shards still recovering (``shardex.recovery``)."""
    registered = []
    recovering: dict[str, Any] = {}
    for j in range(layout.routers):
        shards_up = 0
        with Client(layout.router_frontend(j), timeout=1.0, key=admin or False) as c:
            for _ in range(20):
                try:
                    info = c.topology()
                except ShardexError:
                    continue
                shards_up = sum(1 for t in info["topology"] if t.get("pid"))
                recovering = info.get("recovering") or {}
                if shards_up == layout.shards:
                    break
                time.sleep(0.25)
        registered.append(shards_up)
    return registered, recovering


def _unlinked(layout: Layout, admin: str | None) -> list[int]:
    """Account shards not yet heard from by every engine shard ("ready" includes the account
    links: a forward sent before waits), after waiting up to ~10 s."""
    unlinked: list[int] = []
    if not layout.accounts:
        return unlinked
    with Client(layout.frontend, timeout=1.0, key=admin or False) as c:
        for _ in range(40):
            try:
                sts = c.account_status()
            except ShardexError:
                sts = []
            want = list(range(layout.shards))
            linked = [list(st.get("engines_linked", ())) == want for st in sts]
            unlinked = [j for j in range(layout.accounts) if j >= len(sts) or not linked[j]]
            if not unlinked:
                break
            time.sleep(0.25)
    return unlinked


def _metrics(layout: Layout, port: int) -> str:
    return f"http://{layout.host}:{port}/metrics"


def _router_lines(layout: Layout) -> list[str]:
    lines = []
    w = 19 if layout.routers == 1 else 22
    for j in range(layout.routers):
        name = "router" if layout.routers == 1 else f"router {j}"
        lines += [
            f"  {name + ' (clients)':<{w}}{layout.router_frontend(j)}",
            f"  {name + ' (shards)':<{w}}{layout.router_backend(j)}",
            f"  {name + ' metrics':<{w}}{_metrics(layout, layout.router_metrics(j))}",
        ]
    if layout.routers > 1:
        lines.append(f"  clients connect to {layout.frontends}")
    return lines


def _shard_lines(layout: Layout, replicas: int) -> list[str]:
    """Engine and account shards (whichever replica leads serves; the other answers
    not_leader)."""
    lines = []
    for i in range(layout.shards):
        lines.append(f"  shard {i:<3} direct   {layout.direct(i)}   events (PUB) {layout.pub(i)}"
                     f"   metrics {_metrics(layout, layout.shard_metrics_port(i))}")  # fmt: skip
        if replicas > 1:
            lines.append(f"    replica 1 direct   {layout.replica_direct(i, 1)}   events (PUB) "
                         f"{layout.replica_pub(i, 1)}   metrics "
                         f"{_metrics(layout, layout.replica_metrics(i, 1))}")  # fmt: skip
    for j in range(layout.accounts):
        lines.append(f"  accounts {j:<3} direct {layout.account_direct(j)}   balances (PUB) "
                     f"{layout.account_pub(j)}   metrics "
                     f"{_metrics(layout, layout.account_metrics_port(j))}")  # fmt: skip
        if replicas > 1:
            lines.append(f"    replica 1 direct   {layout.account_replica_direct(j, 1)}   "
                         f"balances (PUB) {layout.account_replica_pub(j, 1)}   metrics "
                         f"{_metrics(layout, layout.account_replica_metrics(j, 1))}")  # fmt: skip
    if replicas > 1:
        lines.append("  replicas           2 per shard: shardex status shows who leads")
    return lines


def _redis_lines(
    layout: Layout, redis_url: str, keys: str | None, without: frozenset[str] = frozenset()
) -> list[str]:
    balances = ", shardex:balances:<account shard>" if layout.accounts else ""
    lines = [f"  redis (events)     {mask_url(redis_url)}   streams shardex:events:<shard>, "
             f"shardex:trades:<SYMBOL>{balances}"]  # fmt: skip
    if keys and redis_url == layout.redis_url:
        lines.append("  redis users        reader (read-only), consumer (consumer groups); "
                     f"passwords in {keys}/redis.json")  # fmt: skip
    lines.append(f"  bridge metrics     {_metrics(layout, layout.bridge_metrics_port)}")
    if "candles-worker" not in without:
        lines.append(f"  candles metrics    {_metrics(layout, layout.candles_metrics_port)}   "
                     "shardex candles PAIR, shardex ticker PAIR")  # fmt: skip
    for g, port in enumerate(layout.gateway_ports):
        lines.append(f"  gateway {g:<10} http://{layout.host}:{port}   ws /v1/ws, /v1/markets, "
                     "/healthz, /metrics")  # fmt: skip
    return lines


def _key_lines(keys: str | None, admin: str | None, temp_keys: bool) -> list[str]:
    if not keys:
        return [INSECURE_WARNING]
    temp = " (temporary: deleted at exit)" if temp_keys else ""
    return [
        f"  keys               {keys}{temp}",
        f"  admin key          {admin}"
        + (f"  (clients: export SHARDEX_KEY={admin})" if temp_keys else ""),
        "  add a trader       shardex keys add --account NAME (a key file for them)",
    ]


def print_endpoints(
    layout: Layout, redis_url: str | None, keys: str | None = None, temp_keys: bool = False,
    replicas: int = 1, without: frozenset[str] = frozenset(),
) -> None:
    """Say where everything of the cluster is, once its shards registered (or after a
    bounded wait, saying what is missing)."""
    admin = os.path.join(keys, ADMIN_KEY_FILE) if keys else None
    registered, recovering = _registered(layout, admin)
    unlinked = _unlinked(layout, admin)
    head = f"shardex cluster: {layout.shards} shard(s), {min(registered)} registered"
    if recovering:
        head += (f"; recovering (answering 'recovering' meanwhile, see shardex status): "
                 f"{'; '.join(recovery_describe(v) for v in recovering.values())}")  # fmt: skip
    if layout.routers > 1:
        head += f" with each of {layout.routers} routers"
    lines = [head, *_router_lines(layout), *_shard_lines(layout, replicas)]
    if layout.accounts:
        lines.append("  money first        shardex deposit ACCOUNT ASSET AMOUNT (orders hold "
                     "funds; --accounts 0: no account tier)")  # fmt: skip
    if unlinked:
        lines.append(f"  WARNING            account shard(s) {', '.join(map(str, unlinked))} "
                     "not linked to every engine shard yet (see their log)")  # fmt: skip
    if redis_url:
        lines += _redis_lines(layout, redis_url, keys, without)
    lines += _key_lines(keys, admin, temp_keys)
    lines.append("Ctrl-C stops everything.")
    click.echo("\n".join(lines), err=False)
    sys.stdout.flush()
