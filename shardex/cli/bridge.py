"""``shardex bridge``: the event path from the shards to Redis Streams (its options are
declared in ``shardex.kinds.bridge``)."""

from __future__ import annotations

from typing import Any

import click

from shardex.cli.base import checked_layout, markets, process_keys_dir
from shardex.kinds import BRIDGE
from shardex.kinds.bridge import redis_url_for_bridge
from shardex.node.bridge import BridgeConfig, run_bridge


def bridge_config(**o: Any) -> BridgeConfig:
    """The bridge's config from its options: the layout's router, Redis (as user ``bridge``
    when the cluster has keys) and metrics port unless given."""
    keys = process_keys_dir("bridge", o["data_dir"], o["keys_dir"], o["insecure"])
    layout = checked_layout(o["host"], o["base_port"])
    secure = {"keys_dir": keys} if keys else {}  # (an older BridgeConfig has no keys_dir)
    metrics = o["metrics_port"]
    return BridgeConfig(
        **secure,
        router=o["endpoint"] or layout.frontend,
        redis_url=o["redis_url"] or redis_url_for_bridge(layout.redis_url, keys),
        markets=markets(o["markets_file"]),
        maxlen=max(0, o["maxlen"]),
        batch=max(1, o["batch"]),
        sub_hwm=max(1, o["sub_hwm"]),
        metrics_port=layout.bridge_metrics_port if metrics is None else metrics,
        stall_after=o["stall_after"],
        poll_interval=o["poll_interval"],
    )


@click.command()
@BRIDGE.click_options()
def bridge(**options: Any) -> None:
    """Write every shard's events to Redis Streams, in order, exactly once.

    shardex:events:<shard> gets every event, shardex:trades:<SYMBOL> one entry per trade;
    entry IDs are <seq>-0, so nothing is ever written twice.
    """
    run_bridge(bridge_config(**options))
