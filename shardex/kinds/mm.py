"""The market maker (``shardex mm``): a client of the cluster that quotes every pair, so a
fresh cluster shows a live market (docs/marketmaker.md).

Optional: ``shardex up`` starts it only with ``--mm``. Off by default because it trades with
money it deposits out of nothing (admin deposits on its own accounts, in the journals and in
``shardex audit``), and because a cluster started for tests, benchmarks or production must not
get orders nobody asked for. Under honcho the same: the Procfile's ``mm`` process only waits
unless ``SHARDEX_MM=on`` (an exiting process would make honcho stop the whole cluster).
"""

from __future__ import annotations

import os

import click

from shardex.auth import ADMIN_KEY_FILE
from shardex.kinds.common import CLIENT_BASE_PORT, CLIENT_HOST, ENDPOINT, metrics_port
from shardex.kinds.spec import Kind, Opt, Plan, Spawn
from shardex.layout import Layout

OPTIONS = (
    Opt("--run", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
        envvar="SHARDEX_MM",
        help="on: quote; off: only wait until stopped (a Procfile process must not exit); auto: "
        "as shardex up does, off under honcho (SHARDEX_MM=on in .env turns it on), on when "
        "run by hand."),
    ENDPOINT,
    CLIENT_HOST,
    CLIENT_BASE_PORT,
    Opt("--key", "key_file", type=click.Path(dir_okay=False),
        help="An admin key file (the bot deposits to fund its accounts) [$SHARDEX_KEY, else "
        "DATA_DIR/keys/admin.key]; 'none' for an --insecure cluster."),
    Opt("--pairs", help="Comma-separated pairs to quote [every market of the cluster]."),
    Opt("--levels", type=click.IntRange(1, 50), default=3, show_default=True,
        help="Quotes per side and pair."),
    Opt("--size", type=click.IntRange(1), default=10, show_default=True,
        help="Lots per quote (BTC-USD's lot: 0.0001)."),
    Opt("--spread", type=click.IntRange(1), default=20, show_default=True,
        help="Ticks between the best bid and the best ask."),
    Opt("--spacing", type=click.IntRange(1), default=10, show_default=True,
        help="Ticks between two quotes of one side."),
    Opt("--max-inventory", type=click.IntRange(1), default=50, show_default=True,
        help="Inventory limit in lots, long or short: resting quotes never add up to more "
        "room than is left, and a side at the limit is not quoted."),
    Opt("--skew", type=click.IntRange(0), default=2, show_default=True,
        help="Ticks the quotes move against the inventory per --size lots held."),
    Opt("--refill-pct", type=click.IntRange(0, 100), default=50, show_default=True,
        help="A quote filled below this percentage of its size is replaced (an amend only "
        "shrinks)."),
    Opt("--reference", type=click.Choice(["walk", "mid"]), default="walk", show_default=True,
        help="walk: a seeded random walk (the same --seed, the same prices); mid: the mid "
        "of the others' orders in the book (kept while a side of theirs is empty)."),
    Opt("--seed", type=int, default=1, show_default=True, help="Seed of the walk and taker."),
    Opt("--walk-bps", type=click.IntRange(0, 1000), default=5, show_default=True,
        help="Largest step of the walk per round, in basis points."),
    Opt("--price", help="Start prices, SYMBOL=PRICE,... [built-in table for the built-in "
        "markets, else the book's mid, else 10000 ticks]."),
    Opt("--interval", type=click.FloatRange(0.05), default=1.0, show_default=True,
        help="Seconds between quoting rounds."),
    Opt("--taker-rate", type=click.FloatRange(0), default=0.0, show_default=True,
        help="Taker orders/s (IOC at the best price, from account PREFIX-taker); 0: none."),
    Opt("--cycles", type=click.IntRange(0), default=0, show_default=True,
        help="Stop (cancelling every order) after this many rounds; 0: run until a signal."),
    Opt("--progress", type=click.FloatRange(0), default=10.0, show_default=True,
        help="Seconds between progress lines; 0: none."),
    Opt("--account-prefix", default="mm", show_default=True,
        help="The bot's accounts: PREFIX-SYMBOL (one per pair) and PREFIX-taker."),
    Opt("--timeout", type=click.FloatRange(0.1), default=5.0, show_default=True,
        help="Seconds to wait for each answer."),
    Opt("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
        help="Seconds to wait for the cluster at the start."),
    metrics_port("base+9"),
)  # fmt: skip


def children(plan: Plan) -> list[Spawn]:
    """One market maker with ``shardex up --mm``, using the cluster's admin key."""
    if not plan.mm:
        return []
    lay = plan.layout
    key = os.path.join(plan.keys_dir, ADMIN_KEY_FILE) if plan.keys_dir else "none"
    values = {"run": "on", "endpoint": lay.frontend, "key_file": key,
              "metrics_port": lay.mm_metrics_port}  # fmt: skip
    return [Spawn("mm", values, stop_first=True)]


def ports(plan: Plan) -> list[int]:
    return [plan.layout.mm_metrics_port] if plan.mm else []


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001 - one bot
    return [layout.mm_metrics_port]


MM = Kind(
    name="mm",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex mm",
    env=(("SHARDEX_MM", "auto"),),
    optional=True,
)
