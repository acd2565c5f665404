"""``shardex router``: run one router of the cluster (its options: ``shardex.kinds.router``)."""

from __future__ import annotations

from typing import Any

import click

from shardex.cli.base import check_data_dir, checked_layout, markets, process_keys_dir
from shardex.cli.options import resolve_accounts, resolve_shards
from shardex.kinds import ROUTER
from shardex.layout import MAX_ROUTERS
from shardex.node.honcho import honcho_index
from shardex.node.router import RouterConfig, run_router


def router_config(
    shards: str,
    host: str,
    base_port: int,
    index: int | None,
    frontend: str | None,
    backend: str | None,
    metrics_port: int | None,
    max_inflight: int,
    client_max_inflight: int,
    data_dir: str | None,
    keys_dir: str | None,
    insecure: bool,
    accounts: str = "auto",
    max_queue_ms: float = 0.0,
    queue_cap_ms: float = 0.0,
) -> RouterConfig:
    """The router's config from its options: the layout's ports unless given (router j of
    R: its own), N and M resolved (``auto`` under honcho), the data dir's N checked."""
    n = resolve_shards(shards)
    m = resolve_accounts(accounts)
    if index is None:
        index = honcho_index() or 0
    if not 0 <= index < MAX_ROUTERS:
        raise click.UsageError(f"router index {index} out of range 0..{MAX_ROUTERS - 1}")
    keys = process_keys_dir("router", data_dir, keys_dir, insecure)
    if data_dir:  # routing by another N than the data's would send pairs to the wrong shard
        check_data_dir(data_dir, n, markets(None), record=False)
    layout = checked_layout(host, base_port, n, index + 1)
    return RouterConfig(
        n,
        frontend or layout.router_frontend(index),
        backend or layout.router_backend(index),
        metrics_port=layout.router_metrics(index) if metrics_port is None else metrics_port,
        max_inflight=max_inflight,
        client_max_inflight=client_max_inflight,
        shed_limit=max_queue_ms / 1000,
        queue_cap_s=queue_cap_ms / 1000,
        keys_dir=keys,
        accounts=m,
    )


@click.command()
@ROUTER.click_options()
def router(**options: Any) -> None:
    """Run the router: hash each request's symbol to a shard and forward it."""
    run_router(router_config(**options))
