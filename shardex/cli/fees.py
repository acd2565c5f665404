"""``shardex fees`` and ``shardex fee-group``: an account's fee rates on a running cluster, and
the admin command that puts an account in a fee group (see docs/fees.md)."""

from __future__ import annotations

import json

import click

from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError


@click.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_option
def fees(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """Show ACCOUNT's fee tier and the maker/taker rates its new orders get per market (basis
    points; a negative maker rate is a rebate), with its fee group and 30-day volume."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            info = c.fees(account)
    except ShardexError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(info))
        return
    vol = ", ".join(f"{v} {a}" for a, v in info.get("volume", {}).items()) or "not counted"
    click.echo(f"{account}: tier {info['tier']}, group {info['group'] or '-'}, "
               f"30-day volume {vol}")  # fmt: skip
    click.echo(f"{'market':<10} {'maker bps':>10} {'taker bps':>10}")
    for symbol, r in info["rates"].items():
        click.echo(f"{symbol:<10} {r['maker_bps']:>10} {r['taker_bps']:>10}")


@click.command(name="fee-group")
@click.argument("account")
@click.argument("group")
@client_options
@key_option
def fee_group(account, group, endpoint, host, base_port, timeout, key_file) -> None:
    """Put ACCOUNT in fee GROUP, a tier name of the fee schedule ("" for none), admin key;
    journaled on the account's shard, it applies to the orders placed after it."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            res = c.set_fee_group(account, group)
    except ShardexError as exc:
        _fail(exc)
    if not res.get("ok"):
        raise click.ClickException(f"fee-group rejected ({res.get('code')}): {res.get('rejected')}")
    click.echo(f"{account}: group {res['group'] or '-'}, tier {res['tier']}")
