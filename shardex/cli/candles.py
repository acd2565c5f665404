"""``shardex candles-worker`` (the process, options in ``shardex.kinds.candles``) and the readers
``shardex candles PAIR`` and ``shardex ticker PAIR`` (through the SDK's ``MarketData``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
import redis

from shardex.auth import KeyStore
from shardex.candles.core import INTERVALS
from shardex.candles.fmt import CandleView, text
from shardex.candles.ticker import Ticker
from shardex.candles.worker import CandlesConfig, run_worker
from shardex.cli.base import checked_layout, markets, process_keys_dir
from shardex.cli.options import markets_option
from shardex.client.market_data import MAX_LIMIT, MarketData, MarketDataError
from shardex.endpoints import EndpointsFileError
from shardex.kinds import CANDLES
from shardex.kinds.candles import redis_url_for_candles
from shardex.redisauth import RedisAuthError


def candles_config(**o: Any) -> CandlesConfig:
    """The worker's config from its options: the layout's Redis (as user ``candles`` when
    the cluster has keys) and metrics port unless given; the router (asked for pairs listed
    at runtime) with its own ``reader`` key."""
    keys = process_keys_dir("candles-worker", o["data_dir"], o["keys_dir"], o["insecure"])
    layout = checked_layout(o["host"], o["base_port"])
    metrics = o["metrics_port"]
    return CandlesConfig(
        redis_url=o["redis_url"] or redis_url_for_candles(layout.redis_url, keys),
        markets=markets(o["markets_file"]),
        batch=o["batch"],
        keep=o["keep"],
        metrics_port=layout.candles_metrics_port if metrics is None else metrics,
        keys_dir=keys,
        endpoint=o["endpoint"] or layout.frontends,
        key=KeyStore(keys).process_key("candles-worker", "reader") if keys else False,
    )


@click.command("candles-worker")
@CANDLES.click_options()
def candles_worker(**options: Any) -> None:
    """Keep every pair's candles in Redis, from its trades stream, exactly once.

    Reads shardex:trades:SYMBOL from each pair's stored position and writes the candles it
    changes and the new position in one atomic script: a crash never counts a trade twice.
    """
    run_worker(candles_config(**options))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _reader(redis_url: str | None, data_dir: str, keys_dir: str | None, mk: str | None) -> Any:
    try:
        return MarketData(redis_url, data_dir=data_dir, keys_dir=keys_dir, markets=markets(mk))
    except (RedisAuthError, EndpointsFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _ask(f: Any) -> Any:
    """Run a read; its errors as one line (never a traceback, never a URL)."""
    try:
        return f()
    except MarketDataError as exc:
        raise click.ClickException(str(exc)) from None
    except redis.exceptions.RedisError as exc:
        raise click.ClickException(f"cannot read from Redis: {exc}") from None


_redis_url_option = click.option(
    "--redis-url",
    envvar="SHARDEX_REDIS_URL",
    help="Redis to read [default: the local cluster's (DATA_DIR/endpoints.json), as user reader].",
)
_data_dir_option = click.option(
    "--data-dir", default="data", show_default=True, envvar="SHARDEX_DATA_DIR",
    help="The cluster's data dir (Redis credentials in DATA_DIR/keys/redis.json).",
)  # fmt: skip
_keys_dir_option = click.option("--keys-dir", help="Key store [DATA_DIR/keys].")
_json_option = click.option("--json", "as_json", is_flag=True, help="JSON (decimal strings).")


@click.command()
@click.argument("pair")
@click.option("--interval", type=click.Choice(list(INTERVALS)), default="1m", show_default=True)
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=20, show_default=True,
              help="The newest N candles.")  # fmt: skip
@click.option("--end", type=int, help="Newest bucket start at or before this (ms UTC) [now].")
@click.option("--flat", is_flag=True,
              help="Show empty intervals as flat candles (stored: none).")  # fmt: skip
@_json_option
@_redis_url_option
@markets_option
@_data_dir_option
@_keys_dir_option
def candles(pair: str, interval: str, limit: int, end: int | None, flat: bool, as_json: bool,
            redis_url: str | None, markets_file: str | None, data_dir: str,
            keys_dir: str | None) -> None:  # fmt: skip
    """Show PAIR's OHLCV candles (1m 5m 15m 1h 4h 1d), oldest first, from Redis.

    Buckets are UTC, start times in ms since the epoch; an interval without trades has no
    candle unless --flat. Kept up to date by shardex candles-worker.
    """
    md = _reader(redis_url, data_dir, keys_dir, markets_file)
    got: list[CandleView] = _ask(lambda: md.candles(pair, interval, limit, end, flat))
    if as_json:
        click.echo(json.dumps([{"symbol": pair, "interval": interval, **c.to_json()}
                               for c in got]))  # fmt: skip
        return
    if not got:
        click.echo(f"no {interval} candles for {pair} yet")
        return
    click.echo(f"{'start (UTC)':<17} {'open':>14} {'high':>14} {'low':>14} {'close':>14} "
               f"{'volume':>16} {'trades':>7}")  # fmt: skip
    for c in got:
        prices = " ".join(f"{text(p):>14}" for p in (c.open, c.high, c.low, c.close))
        click.echo(f"{_iso(c.start):<17} {prices} {text(c.volume):>16} {c.trades:>7}")


@click.command()
@click.argument("pair")
@click.option("--at", type=int, help="The window's end (ms UTC) [now].")
@_json_option
@_redis_url_option
@markets_option
@_data_dir_option
@_keys_dir_option
def ticker(pair: str, at: int | None, as_json: bool, redis_url: str | None,
           markets_file: str | None, data_dir: str, keys_dir: str | None) -> None:  # fmt: skip
    """Show PAIR's rolling 24 h ticker: last, open, high, low, volume, change.

    The window is the 1440 one-minute buckets ending with the current one (UTC).
    """
    md = _reader(redis_url, data_dir, keys_dir, markets_file)
    t: Ticker = _ask(lambda: md.ticker(pair, at))
    if as_json:
        click.echo(json.dumps(t.to_json()))
        return
    for k, v in t.to_json().items():
        click.echo(f"{k:<15} {'-' if v is None else v}")
