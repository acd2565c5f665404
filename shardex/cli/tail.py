"""``shardex tail``: follow a pair's trades live from the Redis stream the bridge writes."""

from __future__ import annotations

import json
import sys

import click

from shardex.cli.base import keys_dir_of
from shardex.cli.base import markets as _markets
from shardex.cli.options import (
    client_base_port_option,
    client_host_option,
    markets_option,
    store_opts,
)
from shardex.endpoints import EndpointsFileError, find_redis
from shardex.tools.tail import TailError, connect, follow, trade_line


@click.command()
@click.argument("symbol")
@client_host_option
@client_base_port_option
@click.option(
    "--redis-url",
    default=None,
    envvar="SHARDEX_REDIS_URL",
    help="Redis to read [default: the embedded one of the layout].",
)
@click.option("--from-start", is_flag=True, help="Print the stream from its first entry.")
@click.option("--count", type=int, default=0, help="Stop after this many trades (0: follow).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trade.")
@markets_option
@store_opts
def tail(
    symbol: str,
    host: str | None,
    base_port: int | None,
    redis_url: str | None,
    from_start: bool,
    count: int,
    as_json: bool,
    markets_file: str | None,
    data_dir: str,
    keys_dir: str | None,
) -> None:
    """Follow SYMBOL's trades live from Redis (shardex:trades:SYMBOL, XREAD BLOCK).

    Each line carries read_at, the UTC time it was read (stream IDs are <seq>-0, not times).
    Reads as the Redis user ``reader`` (password from DATA_DIR/keys/redis.json) when the
    cluster has one; --redis-url redis://USER:PASS@HOST:PORT/0 gives other credentials.
    """
    try:
        default = find_redis(host, base_port, data_dir).endpoint
        r = connect(redis_url, default, keys_dir_of(data_dir, keys_dir))
    except (TailError, EndpointsFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    err = sys.stderr  # (click.get_text_stream is deprecated in click 8.5)

    def waiting(msg: str) -> None:
        err.write(msg + "\n")
        err.flush()

    try:
        for rec in follow(r, symbol, _markets(markets_file), from_start, count, waiting):
            click.echo(json.dumps(rec) if as_json else trade_line(rec))
    except TailError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
