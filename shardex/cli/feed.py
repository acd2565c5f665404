"""``shardex feed``: the price feed process (options in ``shardex.kinds.feed``, the loop in
``shardex.feed.node``)."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from shardex.auth import KeyStore
from shardex.cli.base import client_key, process_keys_dir
from shardex.cli.connect import find
from shardex.config import load_markets
from shardex.endpoints import connection_error, explain
from shardex.feed.node import FeedConfig, FeedError, run
from shardex.kinds.feed import FEED
from shardex.node.honcho import honcho_index
from shardex.wire.transport import StopFlag


def _pairs(raw: str | None, what: str) -> dict[str, str]:
    out = {}
    for item in (raw or "").split(","):
        if item.strip():
            name, sep, value = item.strip().partition("=")
            if not sep or not name or not value:
                raise click.BadParameter(f"{what}: expected NAME=VALUE, got {item!r}")
            out[name] = value
    return out


def _prices(raw: str | None) -> dict[str, Decimal]:
    try:
        return {s: Decimal(p) for s, p in _pairs(raw, "--price").items()}
    except InvalidOperation:
        raise click.BadParameter(f"--price: not a decimal in {raw!r}") from None


def _key(o: dict[str, Any]) -> Any:
    """``--key``, else the cluster's ``feed`` process key (None with --insecure)."""
    if o["key_file"] is not None:
        return client_key(o["key_file"])
    keys = process_keys_dir("feed", o["data_dir"], o["keys_dir"], o["insecure"])
    return False if keys is None else KeyStore(keys).process_key("feed", "feed")


def _idle() -> None:
    """Under honcho with no perp market: wait until stopped (an exit would stop them all)."""
    logging.getLogger("shardex.feed").warning("feed: no perp market: this process only waits")
    stop = StopFlag.install()
    while not stop:
        time.sleep(0.2)


@click.command()
@FEED.click_options()
def feed(**o: Any) -> None:
    """Send index prices of every perp market to its engine shard (a feed key).

    Each round (--interval) it combines the latest quote of each --source per perp pair: the
    median of the fresh ones, an outlier left out (with three sources or more); a source left
    out is flagged in the log and in shardex_feed_dropped_total. The engine journals each
    index and recomputes the pair's mark price (docs/perps.md).
    """
    markets = load_markets(o["markets_file"])
    if honcho_index() is not None and not any(m.perp for m in markets.values()):
        _idle()
        return
    found = find(o["endpoint"], o["host"], o["base_port"])
    cfg = FeedConfig(
        endpoint=found.endpoint, key=_key(o),
        sources=tuple(x.strip() for x in o["sources"].split(",") if x.strip()),
        interval=o["interval"], seed=o["seed"], step_bps=o["walk_bps"],
        prices=_prices(o["price"]),
        binance_symbols={v: k for k, v in _pairs(o["binance_symbols"],
                                                 "--binance-symbol").items()},
        stale_ms=o["stale_ms"], outlier_bps=o["outlier_bps"], speed=o["speed"],
        metrics_port=o["metrics_port"] or 0, wait=o["wait"], cycles=o["cycles"],
    )  # fmt: skip
    stop = StopFlag.install()
    try:
        done = asyncio.run(run(cfg, lambda: bool(stop)))
    except FeedError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one line for a cluster that cannot be reached
        msg = str(exc)
        if not connection_error(msg):
            raise
        raise click.ClickException(explain(msg, found)) from None
    click.echo(f"feed: {done.sent} index prices sent", err=True)
