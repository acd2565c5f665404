"""``shardex positions`` and ``shardex margin``: perp positions and their margin on a running
cluster (docs/perps.md). Both read or write the pairs' engine shards, never the account tier."""

from __future__ import annotations

import json

import click

from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError

_COLUMNS = ("symbol", "size", "entry", "mark", "unrealized", "realized", "collateral", "equity",
            "initial", "maintenance")  # fmt: skip


@click.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_option
def positions(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """Show ACCOUNT's perp positions: size, entry and mark price, unrealized and realized PnL,
    collateral, equity and the initial and maintenance margin at the mark."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            rows = c.positions(account)
    except ShardexError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"(no perp positions for {account})")
        return
    click.echo(" ".join(f"{name:>14}" for name in _COLUMNS))
    for row in rows:
        click.echo(" ".join(f"{str(row.get(name, '-')):>14}" for name in _COLUMNS))


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("account")
@click.argument("symbol")
@click.argument("amount")
@client_options
@key_option
@click.option("--ref", default=None, help="Idempotency ref (account tier): a retry is a no-op.")
def margin(account, symbol, amount, endpoint, host, base_port, timeout, key_file, ref) -> None:
    """Move AMOUNT of SYMBOL's settle asset from ACCOUNT's free balance into its margin on
    perp pair SYMBOL; a negative AMOUNT takes it out (as much as the engine shard frees:
    settled money, realized PnL included, less the initial margin). With the account tier the
    account's own key or an admin's; without it an admin's, straight into the margin."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            res = c.set_margin(account, symbol, amount, ref=ref)
    except (ShardexError, ValueError) as exc:
        _fail(exc)
    if not res["ok"]:
        raise click.ClickException(f"margin rejected ({res['code']}): {res['rejected']}")
    if "collateral" in res:  # (no account tier: the engine shard's answer)
        click.echo(f"{account} {symbol}: collateral {res['collateral']} (seq {res['seq']})")
    else:
        click.echo(f"{account} {symbol}: {res['amount']} {res['asset']} forwarded; "
                   f"available {res['available']}, held {res['held']}")  # fmt: skip


@click.command()
@click.argument("symbol")
@client_options
@key_option
def funding(symbol, endpoint, host, base_port, timeout, key_file) -> None:
    """Show perp pair SYMBOL's funding: the cumulative funding index per lot, the next
    payment's exchange time, the samples so far and the rounding remainder kept; then its
    insurance fund and the take-overs a stale oracle held back."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            pair = c.market_rules().get(symbol)
    except ShardexError as exc:
        _fail(exc)
    paid = pair.get("funding") if isinstance(pair, dict) else None
    if not isinstance(paid, dict):
        raise click.ClickException(f"{symbol}: not a perp pair with a book here (no funding)")
    click.echo(f"{symbol}: cumulative {paid['cumulative']} per lot, next payment at "
               f"{paid['next_ms']} ms, {paid['samples']} samples, remainder "
               f"{paid['remainder']}")  # fmt: skip
    if "fund" in paid:  # (a shard older than the fund in this read shows none)
        click.echo(f"{symbol}: insurance fund {paid['fund']}, take-overs held back by a "
                   f"stale oracle: {paid['frozen']}")  # fmt: skip
