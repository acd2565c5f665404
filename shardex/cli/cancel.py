"""``shardex cancel-all``: cancel an account's open orders on a running cluster."""

from __future__ import annotations

import json

import click

from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError


@click.command("cancel-all")
@click.argument("account")
@click.option("--symbol", default=None, help="Only this pair (default: every pair).")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
@key_option
def cancel_all(
    account: str,
    symbol: str | None,
    endpoint: str | None,
    host: str | None,
    base_port: int | None,
    timeout: float,
    as_json: bool,
    key_file: str | None,
) -> None:
    """Cancel every open order of ACCOUNT, in one pair (--symbol) or in every pair, and say
    how many went (an admin key, or the account's own).

    One journaled cancel_all per pair, each on its pair's engine shard; with the account tier
    their holds are released as for any cancel."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            done = c.cancel_all(symbol, account=account)
    except ShardexError as exc:
        _fail(exc)
    refused = [r for r in done.results if not r.ok]
    if as_json:
        why = [{"symbol": r.command.get("symbol"), "code": r.code, "reason": str(r.reason)}
               for r in refused]  # fmt: skip
        click.echo(json.dumps({"cancelled": [list(x) for x in done.cancelled],
                               "count": done.count, "refused": why}))  # fmt: skip
    else:
        for sym, oid in done.cancelled:
            click.echo(f"cancelled {sym} {oid}")
        click.echo(f"{done.count} order(s) of {account} cancelled")
    if refused:
        r = refused[0]
        raise click.ClickException(f"{r.command.get('symbol')}: {r.reason} ({r.code})")
