"""``shardex positions`` and ``shardex margin``: perp positions and their margin on a running
cluster (docs/perps.md). Positions are read from the pairs' engine shards (with each pair's
insurance fund, from its funding read); a margin move goes through the account's shard when
there is an account tier, and ``--wait`` polls that shard until the engine has answered."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import click

from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError
from shardex.client.perps import margin_outcome

_COLUMNS = ("symbol", "size", "entry", "mark", "unrealized", "realized", "collateral", "equity",
            "initial", "maintenance", "fund")  # fmt: skip
WAIT_POLL_S = 0.05  # (``margin --wait``: between two reads of the account shard)


@click.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_option
def positions(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """Show ACCOUNT's perp positions: size, entry and mark price, unrealized and realized PnL,
    collateral, equity, the initial and maintenance margin at the mark, and the pair's
    insurance fund."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            rows = c.positions(account)
            pairs = c.market_rules() if rows else {}
    except ShardexError as exc:
        _fail(exc)
    for row in rows:  # (the fund is the pair's, from its funding read; none: not known)
        paid = (pairs.get(row["symbol"]) or {}).get("funding")
        row["fund"] = paid.get("fund") if isinstance(paid, dict) else None
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
@click.option("--wait", is_flag=True, help="Account tier: wait (up to --timeout) until the "
              "pair's engine shard has moved or refused it; exit 1 if refused.")  # fmt: skip
def margin(account, symbol, amount, endpoint, host, base_port, timeout, key_file, ref,
           wait) -> None:  # fmt: skip
    """Move AMOUNT of SYMBOL's settle asset from ACCOUNT's free balance into its margin on
    perp pair SYMBOL; a negative AMOUNT takes it out (as much as the engine shard frees:
    settled money, realized PnL included, less the initial margin). With the account tier the
    account's own key or an admin's; without it an admin's, straight into the margin."""
    fate = None
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            before = c.margin_moves(account) if wait and _tier(c) else None
            res = c.set_margin(account, symbol, amount, ref=ref)
            if before is not None and res["ok"] and not res.get("repeated"):
                fate = _wait_for(c, account, symbol, Decimal(amount), before, timeout)
    except (ShardexError, ValueError) as exc:
        _fail(exc)
    if not res["ok"]:
        raise click.ClickException(f"margin rejected ({res['code']}): {res['rejected']}")
    if "collateral" in res:  # (no account tier: the engine shard's answer)
        click.echo(f"{account} {symbol}: collateral {res['collateral']} (seq {res['seq']})")
        return
    click.echo(f"{account} {symbol}: {res['amount']} {res['asset']} forwarded; "
               f"available {res['available']}, held {res['held']}")  # fmt: skip
    if fate == "refused":
        raise click.ClickException(f"{symbol}'s engine shard refused the move: nothing moved "
                                   f"(what may leave: shardex positions {account})")  # fmt: skip
    if fate is not None:
        click.echo(f"{account} {symbol}: {fate}")


def _tier(c: Any) -> bool:
    """Whether the cluster has an account tier (the client learns it on its first read)."""
    c.market_rules()
    return bool(c.accounts)


def _wait_for(c: Any, account: str, symbol: str, amount: Decimal, before: dict[str, Any],
              timeout: float) -> str:  # fmt: skip
    """Poll the account shard until the move is answered: ``moved``, ``refused``, or
    ``still in flight`` when ``timeout`` seconds pass first."""
    end = time.monotonic() + timeout
    while True:
        fate = margin_outcome(before, c.margin_moves(account), symbol, amount)
        if fate is not None:
            return fate
        if time.monotonic() >= end:
            return f"still in flight after {timeout:g} s (see shardex positions {account})"
        time.sleep(WAIT_POLL_S)


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
