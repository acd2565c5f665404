"""``shardex mm``: the market-maker bot (its options are declared in ``shardex.kinds.mm``, the
bot itself lives in ``shardex.tools.mm``)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

import click

from shardex.cli.base import client_key
from shardex.cli.connect import find
from shardex.endpoints import connection_error, explain
from shardex.kinds import MM
from shardex.layout import MM_METRICS_OFFSET
from shardex.node.honcho import honcho_index
from shardex.tools.mm import MMConfig, MMError, parse_prices, run
from shardex.tools.mmreport import format_summary
from shardex.wire.transport import StopFlag


def metrics_port_of(endpoint: str, given: int | None) -> int:
    """``--metrics-port``, else the layout's base+9 counted from the router's client port
    (base+0) of the first endpoint; 0 when that is not a tcp endpoint."""
    if given is not None:
        return given
    port = endpoint.split(",")[0].rsplit(":", 1)[-1]
    return int(port) + MM_METRICS_OFFSET if port.isdigit() else 0


def idle_off() -> None:
    """The bot is off (``--run off``, or under honcho without ``SHARDEX_MM=on``): one clear
    line, then wait for SIGTERM/SIGINT and exit 0 (honcho stops every process when one
    exits)."""
    logging.getLogger("shardex.mm").warning(
        "market maker off (SHARDEX_MM=%s): this process only waits. To quote every pair: "
        "SHARDEX_MM=on in .env (honcho), or shardex up --mm",
        os.environ.get("SHARDEX_MM", "auto"),
    )
    stop = StopFlag.install()
    while not stop:
        time.sleep(0.2)


def mm_config(endpoint: str, o: dict[str, Any]) -> MMConfig:
    """The bot's config from its options (MMError on values that cannot work)."""
    pairs = tuple(p.strip() for p in (o["pairs"] or "").split(",") if p.strip())
    same = ("levels", "size", "spread", "spacing", "max_inventory", "skew", "refill_pct",
            "reference", "seed", "walk_bps", "interval", "taker_rate", "cycles", "progress",
            "timeout", "wait")  # fmt: skip
    return MMConfig(
        endpoint=endpoint,
        key=client_key(o["key_file"]),
        pairs=pairs,
        prices=parse_prices(o["price"]),
        prefix=o["account_prefix"],
        metrics_port=metrics_port_of(endpoint, o["metrics_port"]),
        **{name: o[name] for name in same},
    )


@click.command()
@MM.click_options()
def mm(**o: Any) -> None:
    """Run a market maker: quote every pair around a reference price with inventory limits.

    Quotes --levels post-only orders per side on each pair from account PREFIX-SYMBOL, which it
    funds itself with admin deposits (so it needs an admin key and the account tier), re-quotes
    with amends as the reference moves (a seeded random walk, or the book's mid), leans against
    its inventory and stops quoting a side at --max-inventory. SIGINT/SIGTERM cancels its
    orders, prints a summary and exits (1 if an order was left open). Metrics on base+9:
    inventory in lots, profit in units of the quote asset (docs/marketmaker.md).
    """
    if o["run"] == "off" or (o["run"] == "auto" and honcho_index() is not None):
        idle_off()
        return
    found = find(o["endpoint"], o["host"], o["base_port"])
    try:
        bot = asyncio.run(run(mm_config(found.endpoint, o),
                              out=lambda line: click.echo(line, err=True)))  # fmt: skip
    except MMError as exc:
        msg = str(exc)
        raise click.ClickException(explain(msg, found) if connection_error(msg) else msg) from None
    for line in format_summary(bot):
        click.echo(line)
    if bot.totals.left_open != 0:
        sys.exit(1)
