"""The bridge: writes every shard's events to Redis Streams, in order, exactly once."""

from __future__ import annotations

import click

from shardex.kinds.common import (
    BASE_PORT,
    CLUSTER_DATA_DIR,
    ENDPOINT,
    HOST,
    MARKETS,
    SECURITY,
    metrics_port,
)
from shardex.kinds.spec import Kind, Opt, Plan, Spawn
from shardex.layout import Layout
from shardex.redisauth import bridge_url

OPTIONS = (
    ENDPOINT,
    HOST,
    BASE_PORT,
    Opt(
        "--redis-url",
        envvar="SHARDEX_REDIS_URL",
        help="Redis to write to [default: the embedded one of the layout, base+4].",
    ),
    MARKETS,
    Opt(
        "--maxlen",
        type=int,
        default=0,
        show_default=True,
        help="Approximate MAXLEN per stream (0: keep everything).",
    ),
    Opt("--batch", type=int, default=2000, show_default=True, help="Events per write."),
    Opt(
        "--sub-hwm",
        type=int,
        default=1_000_000,
        show_default=True,
        help="SUB high-water mark (messages); drops past it are repaired by seq.",
    ),
    metrics_port("base+3"),
    Opt(
        "--stall-after",
        type=click.FloatRange(0.5),
        default=5.0,
        show_default=True,
        help="Seconds a reachable shard may stay ahead of Redis without progress before an "
        "ALERT (log line and shardex_bridge_stalled=1).",
    ),
    Opt(
        "--poll-interval",
        type=click.FloatRange(0.05),
        default=0.5,
        show_default=True,
        help="Seconds between asking each shard its seq (catches events PUB dropped at the "
        "tail).",
    ),
    CLUSTER_DATA_DIR,
    *SECURITY,
)


def redis_url_for_bridge(url: str, keys_dir: str | None) -> str:
    """The embedded Redis as the bridge reaches it: as user ``bridge`` when the cluster has
    keys (the password is read from the keys dir, never put on a command line)."""
    return bridge_url(url) if keys_dir else url


def children(plan: Plan) -> list[Spawn]:
    """One bridge, when the cluster has Redis."""
    if plan.redis is None:
        return []
    lay = plan.layout
    if plan.redis == "embedded":
        url = redis_url_for_bridge(lay.redis_url, plan.keys_dir)
    else:
        url = plan.redis
    values = {
        "endpoint": lay.frontend,
        "redis_url": url,
        "metrics_port": lay.bridge_metrics_port,
        **plan.markets,
        **plan.security,
    }
    return [Spawn("bridge", values)]


def ports(plan: Plan) -> list[int]:
    return [plan.layout.bridge_metrics_port] if plan.redis is not None else []


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001 - one bridge
    return [layout.bridge_metrics_port]


BRIDGE = Kind(
    name="bridge",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex bridge",
)
