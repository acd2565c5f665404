"""``shardex market add``: list a new pair on a running cluster (admin key), journaled on every
account shard and on the pair's engine shard (docs/markets.md, "Listing a pair")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from shardex.cli.base import client_key
from shardex.cli.connect import fail as _fail
from shardex.cli.connect import find
from shardex.cli.move import _store
from shardex.cli.options import client_options, key_option
from shardex.client import AsyncClient, ShardexError
from shardex.config import read_markets_file
from shardex.endpoints import connection_error, explain
from shardex.engine.markets import MarketError
from shardex.placement.store import StoreError
from shardex.tools.list_pin import pin_new_pair
from shardex.tools.mover import MoveError

_GRID = ("tick", "lot", "max_price", "max_qty")


def _from_file(path: str, symbol: str) -> dict[str, Any]:
    """The one ``[markets.SYMBOL]`` entry of a markets-format TOML file."""
    try:
        table = read_markets_file(Path(path))
    except MarketError as exc:
        raise click.BadParameter(str(exc), param_hint="--file") from None
    if not isinstance(table, dict) or list(table) != [symbol]:
        raise click.BadParameter(f"expected exactly one [markets.{symbol}] table",
                                 param_hint="--file")  # fmt: skip
    spec = table[symbol]
    if not isinstance(spec, dict):
        raise click.BadParameter(f"markets.{symbol} must be a table", param_hint="--file")
    return {k: str(v) for k, v in spec.items()}


def _fee(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    try:
        maker, taker = (int(x) for x in raw.split(","))
    except ValueError:
        raise click.BadParameter("expected MAKER,TAKER basis points, e.g. 2,5",
                                 param_hint="--fee") from None  # fmt: skip
    return maker, taker


def _spec(symbol: str, kw: dict[str, Any]) -> dict[str, Any]:
    """The pair's grid from ``--file`` or the options (``--base``/``--quote`` checked against
    the symbol: the account tier splits BASE-QUOTE into its two assets)."""
    base, quote, path = kw.pop("base"), kw.pop("quote"), kw.pop("file")
    grid = {k: kw.pop(k) for k in _GRID}
    if (base is not None or quote is not None) and symbol != f"{base}-{quote}":
        raise click.BadParameter(f"the symbol must be BASE-QUOTE: {base}-{quote}, got {symbol}")
    if path is not None:
        if any(v is not None for v in grid.values()):
            raise click.UsageError("give --file or --tick/--lot/--max-price/--max-qty, not both")
        return _from_file(path, symbol)
    if grid["tick"] is None or grid["lot"] is None:
        raise click.UsageError("give --tick and --lot (or --file)")
    return {k: v for k, v in grid.items() if v is not None}


@click.command()
@click.argument("symbol")
@click.option("--base", help="The base asset (SYMBOL must be BASE-QUOTE).")
@click.option("--quote", help="The quote asset.")
@click.option("--tick", help="Price grid, a decimal string (e.g. 0.01).")
@click.option("--lot", help="Quantity grid, a decimal string (e.g. 0.001).")
@click.option("--max-price", help="Largest price (default 1000000).")
@click.option("--max-qty", help="Largest quantity of one order (default 1000000000).")
@click.option("--min-qty", help="Smallest quantity of one new order (default: one lot); set "
              "right after the listing as the pair's rule (`shardex market set-min`).")
@click.option("--fee", help="MAKER,TAKER basis points of the notional (default 2,5).")
@click.option(
    "--file",
    type=click.Path(dir_okay=False),
    help="A TOML file with one [markets.SYMBOL] table (the markets-file format).",
)
@click.option(
    "--shard",
    type=int,
    default=None,
    metavar="I",
    help="Pin the pair to engine shard I first (default: the placement map's).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="With --shard: record the pin in this data dir's placement map, so a "
    "restart keeps it (as `shardex move`).",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    metavar="URL",
    help="With --shard: record the pin in the placement map kept in this Redis.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@client_options
@key_option
def add(symbol: str, **kw: Any) -> None:  # fmt: skip
    """List SYMBOL (BASE-QUOTE) on the running cluster: every account shard learns its assets
    and fee, then its engine shard (the placement map's, or shard I with --shard, pinned
    first) journals it; no restart. Refused
    (unit_conflict) when an existing asset would need a finer unit; running it again with the
    same grid is a no-op that succeeds."""
    as_json, fee, shard = kw.pop("as_json"), _fee(kw.pop("fee")), kw.pop("shard")
    data_dir, redis_url = kw.pop("data_dir"), kw.pop("redis_url")
    if (data_dir or redis_url) and shard is None:
        raise click.UsageError("--data-dir and --redis record a pin: give --shard too")
    if data_dir and redis_url:
        raise click.UsageError("--data-dir and --redis: give one placement store, not both")
    min_qty = kw.pop("min_qty")
    spec = _spec(symbol, kw)
    if "min_qty" in spec:  # (a markets-file table's: not part of the listing's definition)
        if min_qty is not None:
            raise click.UsageError("give --min-qty or the file's min_qty, not both")
        min_qty = spec.pop("min_qty")
    found = find(kw["endpoint"], kw["host"], kw["base_port"])

    async def run() -> dict[str, Any]:
        async with AsyncClient(found.endpoint, timeout=kw["timeout"], retry=False,
                               key=client_key(kw["key_file"])) as c:  # fmt: skip
            if shard is not None:
                await pin_new_pair(c, symbol, shard, _store(data_dir, redis_url))
            res = await c.list_market(symbol, spec, fee, shard)
            if res.get("ok") and min_qty is not None:  # (journaled right after the listing)
                rule = await c.set_market(symbol, min_qty=min_qty)
                if not rule.get("ok"):
                    why = f"listed, but its min qty was refused: {rule['rejected']}"
                    return {**rule, "rejected": why}
                res = {**res, "min_qty": rule["min_qty"]}
            return res

    try:
        res = asyncio.run(run())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except (ShardexError, MoveError, StoreError) as exc:
        if connection_error(str(exc)):
            raise click.ClickException(explain(str(exc), found)) from None
        _fail(exc)
    if not res.get("ok"):
        where = f" by account shard {res['shard']}" if "shard" in res else ""
        raise click.ClickException(f"add {symbol} rejected{where} ({res['code']}): "
                                   f"{res['rejected']}")  # fmt: skip
    if as_json:
        click.echo(json.dumps(res))
        return
    least = f", min qty {res['min_qty']}" if "min_qty" in res else ""
    click.echo(f"{symbol}: listed, tick {res['tick']}, lot {res['lot']}, max price "
               f"{res['max_price']}, max qty {res['max_qty']}{least} "
               f"(seq {res['seq']})")  # fmt: skip
