"""``shardex market ...`` and ``shardex account ...``: markets and accounts at runtime (admin
key), each a journaled command that takes effect at once, without a restart (docs/markets.md).
"""

from __future__ import annotations

import json
from typing import Any

import click

from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.market_add import add
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError

_CONN = ("endpoint", "host", "base_port", "timeout", "key_file")


def _connect(kw: dict[str, Any]) -> Any:
    return _client(*(kw.pop(k) for k in _CONN))


def _change(symbol: str, what: str, kw: dict[str, Any], **changes: Any) -> None:
    """Send one change of ``symbol``'s rules and say what happened (or fail clearly)."""
    try:
        with _connect(kw) as c:
            res = c.set_market(symbol, **changes)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except ShardexError as exc:
        _fail(exc)
    if not res.get("ok"):
        raise click.ClickException(f"{what} {symbol} rejected ({res['code']}): {res['rejected']}")
    if kw.get("as_json"):
        click.echo(json.dumps(res))
        return
    cancelled = f", {res['cancelled']} orders cancelled" if res.get("cancelled") else ""
    click.echo(f"{symbol}: {res['state']}, band {_band(res['band_bps'])}, max qty "
               f"{_limit(res['max_qty'])}, max notional {_limit(res['max_notional'])}, min qty "
               f"{_limit(res['min_qty'])} (seq {res['seq']}){cancelled}")  # fmt: skip


def _band(bps: int) -> str:
    return f"{bps} bps" if bps else "none"


def _limit(value: str) -> str:
    return "none" if value == "0" else value


def _options(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(f)
    return key_option(client_options(f))


@click.group()
def market() -> None:
    """Markets at runtime (admin key): list each pair's state, add (list) a new pair, halt,
    resume, cancel-only, delist, price bands and maximum order size; journaled, no restart."""


@market.command(name="list")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_option
def list_(**kw: Any) -> None:
    """Show every pair's state (open, halted, cancel_only, delisted), price band, maximum and
    minimum order size, with its engine shard, and its kind (spot, or perp with its margin and
    funding parameters, index and mark price)."""
    as_json = kw.pop("as_json")
    try:
        with _connect(kw) as c:
            rules = c.market_rules()
    except ShardexError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(rules))
        return
    click.echo(f"{'pair':<10} {'shard':>5} {'state':<12} {'band':>10} {'max qty':>14} "
               f"{'max notional':>14} {'min qty':>12}  kind")  # fmt: skip
    for symbol, r in rules.items():
        click.echo(f"{symbol:<10} {r['shard']:>5} {r['state']:<12} {_band(r['band_bps']):>10} "
                   f"{_limit(r['max_qty']):>14} {_limit(r['max_notional']):>14} "
                   f"{_limit(r['min_qty']):>12}  {_kind(r)}")  # fmt: skip


def _kind(r: dict[str, Any]) -> str:
    """``spot``, or a perp pair's parameters, index and mark (docs/perps.md)."""
    if r.get("kind") != "perp":
        return "spot"
    price = (f"index {r['index']} mark {r['mark']}" if "index" in r else "no index yet")
    paid = r.get("funding")  # (the cumulative funding index per lot: ``engine.funding``)
    paid_s = f", funding index {paid['cumulative']}" if isinstance(paid, dict) else ""
    return (f"perp settle {r['settle']} im {r['initial_margin']} mm {r['maintenance_margin']} "
            f"funding {r['funding_cap']}/{r['funding_interval_s']}s oracle "
            f"{r['oracle_staleness_ms']}ms: {price}{' (stale)' if r.get('stale') else ''}"
            f"{paid_s}")


@market.command()
@click.argument("symbol")
@_options
def halt(symbol: str, **kw: Any) -> None:
    """Halt SYMBOL: new orders, amends and cancels are refused (market_halted) until
    `shardex market resume`; the book stays as it is."""
    _change(symbol, "halt", kw, state="halted")


@market.command()
@click.argument("symbol")
@_options
def resume(symbol: str, **kw: Any) -> None:
    """Resume SYMBOL (halted or cancel-only): everything runs again."""
    _change(symbol, "resume", kw, state="open")


@market.command(name="cancel-only")
@click.argument("symbol")
@_options
def cancel_only(symbol: str, **kw: Any) -> None:
    """Put SYMBOL in cancel-only mode: cancels run, new orders and amends are refused
    (cancel_only)."""
    _change(symbol, "cancel-only", kw, state="cancel_only")


@market.command()
@click.argument("symbol")
@click.option("--yes", is_flag=True, help="Do it: delisting is final.")
@_options
def delist(symbol: str, yes: bool, **kw: Any) -> None:
    """Delist SYMBOL for good: every resting order is cancelled (reason delist; the account
    tier releases every hold) and the pair refuses everything after (delisted). Final."""
    if not yes:
        raise click.UsageError(f"delisting {symbol} is final and cancels every order: add --yes")
    _change(symbol, "delist", kw, state="delisted")


@market.command(name="set-band")
@click.argument("symbol")
@click.argument("bps", type=click.IntRange(0))
@_options
def set_band(symbol: str, bps: int, **kw: Any) -> None:
    """Refuse SYMBOL's limit prices further than BPS basis points from its last trade price
    (price_band); 0 lifts the band."""
    _change(symbol, "set-band", kw, band_bps=bps)


@market.command(name="set-max")
@click.argument("symbol")
@click.option("--qty", help="Maximum quantity of one order (base asset; 0: no limit).")
@click.option("--notional", help="Maximum notional of one order (quote asset; 0: no limit).")
@_options
def set_max(symbol: str, qty: str | None, notional: str | None, **kw: Any) -> None:
    """Refuse SYMBOL's orders above a maximum quantity and/or notional (order_too_large)."""
    if qty is None and notional is None:
        raise click.UsageError("give --qty and/or --notional")
    _change(symbol, "set-max", kw, max_qty=qty, max_notional=notional)


@market.command(name="set-min")
@click.argument("symbol")
@click.argument("qty")
@_options
def set_min(symbol: str, qty: str, **kw: Any) -> None:
    """Refuse SYMBOL's new orders below QTY (base asset, on the lot grid; order_too_small);
    0 lifts the minimum."""
    _change(symbol, "set-min", kw, min_qty=qty)


market.add_command(add)


@click.group()
def account() -> None:
    """Accounts at runtime (admin key): restrict and unrestrict; journaled on the account's
    shard, no restart."""


def _restrict(account_id: str, restricted: bool, kw: dict[str, Any]) -> None:
    as_json = kw.pop("as_json")
    try:
        with _connect(kw) as c:
            res = c.restrict(account_id, restricted)
    except ShardexError as exc:
        _fail(exc)
    if not res.get("ok"):
        raise click.ClickException(f"rejected ({res.get('code')}): {res.get('rejected')}")
    if as_json:
        click.echo(json.dumps(res))
        return
    click.echo(f"{account_id}: {'restricted' if restricted else 'unrestricted'}")


@account.command()
@click.argument("account_id", metavar="ACCOUNT")
@_options
def restrict(account_id: str, **kw: Any) -> None:
    """Restrict ACCOUNT: its new orders, amends and withdrawals are refused
    (account_restricted); its cancels and deposits still run."""
    _restrict(account_id, True, kw)


@account.command()
@click.argument("account_id", metavar="ACCOUNT")
@_options
def unrestrict(account_id: str, **kw: Any) -> None:
    """Lift ACCOUNT's restriction."""
    _restrict(account_id, False, kw)
