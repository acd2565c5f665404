"""The price feed (``shardex feed``): index prices of the perp markets into their engine
shards, with the cluster's ``feed`` process key (docs/perps.md).

``shardex up`` starts it when the markets file has a perp market; under honcho (the Procfile)
a cluster without one has a feed that only waits (an exiting process would stop them all).
"""

from __future__ import annotations

import click

from shardex.config import load_markets
from shardex.kinds.common import (
    CLIENT_BASE_PORT,
    CLIENT_HOST,
    CLUSTER_DATA_DIR,
    ENDPOINT,
    MARKETS,
    SECURITY,
    metrics_port,
)
from shardex.kinds.spec import Kind, Opt, Plan, Spawn
from shardex.layout import Layout

FEED_METRICS_OFFSET = 8  # base+8: the feed's exporter

OPTIONS = (
    ENDPOINT,
    CLIENT_HOST,
    CLIENT_BASE_PORT,
    Opt("--key", "key_file", type=click.Path(dir_okay=False),
        help="A feed key file [the cluster's feed process key: KEYS_DIR/feed.key, issued on "
        "first use]; 'none' for an --insecure cluster."),
    Opt("--source", "sources", default="walk", show_default=True,
        help="Where index prices come from, comma-separated (a pair's index is their "
        "median): walk (a seeded random walk), file:PATH (recorded JSON lines {ts, symbol, "
        "price}, replayed at --speed, looped), binance:ws://HOST:PORT/PATH (Binance's public "
        "trade / bookTicker stream format; see --binance-symbol)."),
    Opt("--binance-symbol", "binance_symbols",
        help="PERP=EXCHANGE,...: the perp pair each Binance symbol prices (e.g. "
        "BTCPERP-USD=BTCUSDT)."),
    Opt("--interval", type=click.FloatRange(0.05), default=1.0, show_default=True,
        help="Seconds between index prices (one per perp pair per round)."),
    Opt("--seed", type=int, default=1, show_default=True, help="Seed of the walk."),
    Opt("--walk-bps", type=click.IntRange(0, 1000), default=5, show_default=True,
        help="Largest step of the walk per round, in basis points."),
    Opt("--price", help="Start prices of the walk, SYMBOL=PRICE,... [100000 ticks]."),
    Opt("--stale-ms", type=click.IntRange(1), default=5000, show_default=True,
        help="A source whose latest quote is older than this is left out (flagged stale)."),
    Opt("--outlier-bps", type=click.IntRange(1), default=200, show_default=True,
        help="With three sources or more, one further than this from their median is left "
        "out (flagged outlier)."),
    Opt("--speed", type=click.FloatRange(0.01), default=1.0, show_default=True,
        help="Replay speed of file: sources (2: twice as fast as recorded)."),
    Opt("--cycles", type=click.IntRange(0), default=0, show_default=True,
        help="Stop after this many rounds; 0: run until a signal."),
    Opt("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
        help="Seconds to wait for the cluster at the start."),
    MARKETS,
    metrics_port("base+8"),
    CLUSTER_DATA_DIR,
    *SECURITY,
)  # fmt: skip


def has_perps(plan: Plan) -> bool:
    """Whether the cluster's markets (the built-in ones and its file's) include a perp."""
    return any(m.perp is not None for m in load_markets(plan.markets_file).values())


def children(plan: Plan) -> list[Spawn]:
    """One feed, when a perp market exists, with the cluster's feed process key."""
    if not has_perps(plan):
        return []
    lay = plan.layout
    values = {"endpoint": lay.frontend, "metrics_port": lay.base_port + FEED_METRICS_OFFSET,
              **plan.markets, **plan.security}  # fmt: skip
    if plan.data_dir:
        values["data_dir"] = plan.data_dir
    return [Spawn("feed", values, stop_first=True)]


def ports(plan: Plan) -> list[int]:
    return [plan.layout.base_port + FEED_METRICS_OFFSET] if has_perps(plan) else []


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001 - one feed
    return [layout.base_port + FEED_METRICS_OFFSET]


FEED = Kind(
    name="feed",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex feed",
    optional=True,  # (started, and scraped, only when a perp market exists: ``has_perps``)
)
