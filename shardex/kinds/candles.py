"""The candles worker: OHLCV and tickers from the trades streams, exactly once (Redis)."""

from __future__ import annotations

import click

from shardex.candles.store import DEFAULT_KEEP, MIN_KEEP
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
from shardex.redisauth import user_url

OPTIONS = (
    HOST,
    BASE_PORT,
    ENDPOINT,
    Opt(
        "--redis-url",
        envvar="SHARDEX_REDIS_URL",
        help="Redis holding the trades streams; candles are written there too [default: the "
        "embedded one of the layout, base+4, as user candles].",
    ),
    MARKETS,
    Opt(
        "--batch",
        type=click.IntRange(1),
        default=1000,
        show_default=True,
        help="Trades-stream entries per pair per read (one atomic commit each).",
    ),
    Opt(
        "--keep",
        type=click.IntRange(MIN_KEEP),
        default=DEFAULT_KEEP,
        show_default=True,
        help="Buckets kept per interval (by trade time: 1m keeps 7 days, 1d 27 years at the "
        "default; at least 1440, the ticker's 24 h of 1m candles).",
    ),
    metrics_port("base+5"),
    CLUSTER_DATA_DIR,
    *SECURITY,
)


def redis_url_for_candles(url: str, keys_dir: str | None) -> str:
    """The embedded Redis as the worker reaches it: as user ``candles`` when the cluster has
    keys (the password is read from the keys dir, never put on a command line)."""
    return user_url(url, "candles") if keys_dir else url


def children(plan: Plan) -> list[Spawn]:
    """One worker, when the cluster has Redis (and so a bridge writing trades)."""
    if plan.redis is None:
        return []
    lay = plan.layout
    if plan.redis == "embedded":
        url = redis_url_for_candles(lay.redis_url, plan.keys_dir)
    else:
        url = plan.redis
    values = {"redis_url": url, "metrics_port": lay.candles_metrics_port,
              "endpoint": lay.frontends, **plan.markets, **plan.security}  # fmt: skip
    return [Spawn("candles-worker", values)]


def ports(plan: Plan) -> list[int]:
    return [plan.layout.candles_metrics_port] if plan.redis is not None else []


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001 - one worker
    return [layout.candles_metrics_port]


CANDLES = Kind(
    name="candles-worker",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex candles-worker",
)
