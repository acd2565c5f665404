"""``shardex deposit``, ``withdraw``, ``balance``, ``orders`` and ``audit``: money on a
running cluster's account tier (transfers, balances, holds, conservation)."""

from __future__ import annotations

import json
import re
import sys

import click

from shardex.amounts import RULE, parse_decimal, plain
from shardex.cli.base import UsageLineError
from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError, audit_report


def _transfer(kind: str, account, asset, amount, ref, endpoint, host, base_port, timeout, key_file):
    """Deposit or withdraw: the amount checked before sending, the new balance printed."""
    value = parse_decimal(amount)
    if value is None:
        raise UsageLineError(f"{kind}: amount {amount[:40]!r} is not a positive amount: {RULE}")
    if not value:
        raise UsageLineError(f"{kind}: amount {amount[:40]!r} is zero: {kind} more than 0")
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            fn = c.deposit if kind == "deposit" else c.withdraw
            res = fn(account, asset, amount, ref=ref)
    except ShardexError as exc:
        _fail(exc)
    if res.rejected:
        raise click.ClickException(f"{kind} rejected ({res.code}): {res.reason}")
    ev = res.events[0]
    click.echo(f"{account} {asset}: available {plain(ev['available'])}, held {plain(ev['held'])}"
               + (" (already applied)" if ev.get("repeated") else ""))  # fmt: skip


class _AmountCommand(click.Command):
    """A command whose AMOUNT argument a user may type as ``-5``: click takes that for an
    unknown option ("No such option '-5'"); say what is wrong with the amount instead."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if re.fullmatch(r"-[0-9.]\S*", exc.option_name or ""):
                out = ctx.info_name == "deposit"
                hint = "; to take money out use shardex withdraw" if out else ""
                raise UsageLineError(
                    f"{ctx.info_name}: amount {exc.option_name} is negative: amounts are "
                    f"positive ({RULE}){hint}"
                ) from None
            raise


def _transfer_command(kind: str):
    @click.command(name=kind, cls=_AmountCommand,
                  help=f"{kind.capitalize()} AMOUNT of ASSET for ACCOUNT (admin key).")  # fmt: skip
    @click.argument("account")
    @click.argument("asset")
    @click.argument("amount")
    @click.option("--ref", default=None, help="Unique transfer ref (a retry with it is a no-op).")
    @client_options
    @key_option
    def cmd(account, asset, amount, ref, endpoint, host, base_port, timeout, key_file) -> None:
        _transfer(kind, account, asset, amount, ref, endpoint, host, base_port, timeout, key_file)

    return cmd


deposit = _transfer_command("deposit")
withdraw = _transfer_command("withdraw")


@click.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_option
def balance(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """Show ACCOUNT's balances per asset (available, held by open orders)."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            b = c.balance(account)
    except ShardexError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({k: [plain(a), plain(h)] for k, (a, h) in b.items()}))
        return
    click.echo(f"{'asset':<8} {'available':>24} {'held':>24}")
    for asset, (avail, held) in sorted(b.items()):  # (at the asset's precision: the shard's)
        click.echo(f"{asset:<8} {plain(avail):>24} {plain(held):>24}")
    if not b:
        click.echo(f"(no balances for {account})")


@click.command()
@client_options
@key_option
def audit(endpoint, host, base_port, timeout, key_file) -> None:
    """Check conservation on a live cluster: per asset, over every account shard,
    balances + fees (+ perp margin) == deposits - withdrawals, and each shard's own
    integrity; per perp pair, collateral + funding + insurance fund == the margin moved;
    then order by order, that every live order in every book is covered by its hold and
    every hold by a live order. Exit 1 on a violation, a settlement anomaly, or a shard that cannot
    answer."""

    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            shards = c.audit()
            try:
                problems = c.audit_orders()
            except ShardexError as exc:  # (the conservation lines are still printed)
                problems = [f"cannot be checked: {exc}"]
    except ShardexError as exc:
        _fail(exc)
    lines, ok = audit_report(shards)
    lines.pop()  # (the summary: printed last, with the per-order result)
    for line in lines:
        click.echo(line)
    for problem in problems:
        click.echo(f"order  {problem}  VIOLATION")
    held = sum(sh.get("open_orders", 0) for sh in shards)
    click.echo(f"orders {held} held, each covering a live order and every live order held: "
               f"{'VIOLATION' if problems else 'ok'}")  # fmt: skip
    ok = ok and not problems
    accounts = sum("engine" not in sh for sh in shards)  # (the engine shards': perp pairs)
    click.echo(f"audit: {'ok' if ok else 'FAILED'} ({accounts} account shards)")
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, one per order.")
@key_option
def orders(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """List ACCOUNT's open orders and what each holds (an admin or reader key, or the
    account's own): symbol, id, side, price, open quantity, held amount and asset, amends in
    flight. An order holds funds from the moment its account shard takes it until it ends."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            rows = c.open_orders(account)
    except ShardexError as exc:
        _fail(exc)
    if as_json:
        for r in rows:
            click.echo(json.dumps({k: None if v is None else v if isinstance(v, bool | int)
                                   else str(v) for k, v in r.items()}))  # fmt: skip
        return
    click.echo(f"{'symbol':<10} {'id':<24} {'side':<4} {'price':>16} {'open':>16} "
               f"{'held':>22} asset")  # fmt: skip
    for r in rows:
        if r.get("truncated"):
            click.echo("(more: the account shard lists at most 2,000 orders at once)")
            continue
        price = "market" if r["price"] is None else str(r["price"])
        pending = f" ({r['pending_amends']} amends in flight)" if r["pending_amends"] else ""
        click.echo(f"{r['symbol']:<10} {r['id']:<24} {r['side']:<4} {price:>16} "
                   f"{r['open']!s:>16} {r['held']!s:>22} {r['asset']}{pending}")  # fmt: skip
    if not rows:
        click.echo(f"(no open orders for {account})")
