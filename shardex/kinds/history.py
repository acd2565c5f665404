"""The history writer: the streams the bridge writes → the order, fill and balance history
in a database (SQLite in the data dir by default, or PostgreSQL), exactly once."""

from __future__ import annotations

import click

from shardex.kinds.common import ACCOUNTS, BASE_PORT, CLUSTER_DATA_DIR, HOST, SECURITY, metrics_port
from shardex.kinds.spec import Kind, Opt, Plan, Spawn
from shardex.layout import Layout

DB_FILE = "history.sqlite"  # the default database, in the data dir

HISTORY_DB = Opt(
    "--history-db",
    envvar="SHARDEX_HISTORY_DB",
    help=f"History database URL: sqlite:///PATH (sqlite:////ABS/PATH) or "
    f"postgresql://USER@HOST/DB [default: SQLite in DATA_DIR/{DB_FILE}].",
)
OPTIONS = (
    HOST,
    BASE_PORT,
    Opt(
        "--redis-url",
        envvar="SHARDEX_REDIS_URL",
        help="Redis to read, as user reader when the cluster has keys [default: the embedded "
        "one of the layout, base+4].",
    ),
    HISTORY_DB,
    Opt(
        "--shards",
        default="1",
        envvar="SHARDEX_SHARDS",
        show_default=True,
        help="Engine shards N (their shardex:events:I streams), or 'auto' under honcho.",
    ),
    ACCOUNTS,
    Opt("--batch", type=click.IntRange(1), default=2000, show_default=True,
        help="Stream entries per read and per database transaction."),
    Opt("--poll-interval", type=click.FloatRange(0.01), default=0.2, show_default=True,
        help="Seconds an idle writer waits before reading again."),
    metrics_port("base+7"),
    CLUSTER_DATA_DIR,
    *SECURITY,
)  # fmt: skip


def children(plan: Plan) -> list[Spawn]:
    """One writer, when the cluster has the bridge (Redis), the account tier (orders reach
    the engines through it: that is where a fill's account comes from) and a data dir."""
    lay = plan.layout
    if plan.redis is None or not lay.accounts or plan.data_dir is None:
        return []  # (--ephemeral: no data dir, so no default database either)
    values = {
        "host": lay.host,
        "base_port": lay.base_port,
        "shards": lay.shards,
        "accounts": lay.accounts,
        "metrics_port": lay.history_metrics_port,
        **plan.security,
    }
    if plan.redis != "embedded":
        values["redis_url"] = plan.redis
    values["data_dir"] = plan.data_dir
    return [Spawn("history-writer", values)]


def ports(plan: Plan) -> list[int]:
    """Its metrics port whenever it may run (checked free also for an --ephemeral cluster,
    which starts no writer: the layout reserves it with the account tier)."""
    on = plan.redis is not None and plan.layout.accounts
    return [plan.layout.history_metrics_port] if on else []


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001 - one writer
    return [layout.history_metrics_port] if layout.accounts else []


HISTORY = Kind(
    name="history-writer",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex history-writer",
)
