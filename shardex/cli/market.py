"""``shardex book`` and ``shardex status``: look at a running cluster (an order book; every
engine and account shard's state)."""

from __future__ import annotations

import json
from typing import Any

import click

from shardex import hoststatus
from shardex.cli.base import INSECURE_WARNING
from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.cli.placement import router_placement
from shardex.client import ShardexError
from shardex.layout import pairs_by_shard
from shardex.wire import codes
from shardex.wire.errors import result_error


@click.command()
@click.argument("symbol")
@click.option("--depth", type=int, default=10, show_default=True, help="Levels per side.")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@key_option
def book(
    symbol: str,
    depth: int,
    endpoint: str | None,
    host: str | None,
    base_port: int | None,
    timeout: float,
    as_json: bool,
    key_file: str | None,
) -> None:
    """Show SYMBOL's order book (L2: price, quantity, orders per level)."""
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            b = c.book(symbol, depth)
    except ShardexError as exc:
        _fail(exc)
    refused = result_error(b)
    if refused is not None:  # (its code is in b["code"]; the text is what a person reads)
        raise click.ClickException(str(refused))
    if as_json:
        click.echo(
            json.dumps(
                {
                    **b,
                    "bids": [[str(p), str(q), n] for p, q, n in b["bids"]],
                    "asks": [[str(p), str(q), n] for p, q, n in b["asks"]],
                }
            )
        )
        return
    click.echo(f"{symbol}  (shard {b['shard']}, seq {b['seq']})")
    click.echo(
        f"{'bid orders':>10} {'bid qty':>16} {'bid':>14} | {'ask':<14} {'ask qty':<16} "
        f"{'orders':<6}"
    )
    for k in range(max(len(b["bids"]), len(b["asks"]))):
        bid = b["bids"][k] if k < len(b["bids"]) else None
        ask = b["asks"][k] if k < len(b["asks"]) else None
        left = right = ""
        if bid:  # a level: (price, qty, orders)
            price, qty, n = bid
            left = f"{n:>10} {qty!s:>16} {price!s:>14}"
        if ask:
            price, qty, n = ask
            right = f"{price!s:<14} {qty!s:<16} {n:<6}"
        click.echo(f"{left or ' ' * 42} | {right}")
    if not b["bids"] and not b["asks"]:
        click.echo("(empty book)")


def _down(entry: dict[str, Any]) -> str:
    """A shard's state column when its status read failed: replaying its journal (the error's
    code says so, ``shardex.wire.codes``; never its wording), or down."""
    return "RECOVER" if entry.get("code") == codes.name_of(codes.RECOVERING) else "DOWN"


@click.command()
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--hosts", "hosts_file", type=click.Path(dir_okay=False), default=None,
              help="A cluster over several hosts: a JSON file naming every process's health "
              "URL (and the router): each is asked, with its host's clock offset, before the "
              "router's view (docs/deploy.md).")  # fmt: skip
@key_option
def status(
    endpoint: str | None,
    host: str | None,
    base_port: int | None,
    timeout: float,
    as_json: bool,
    hosts_file: str | None,
    key_file: str | None,
) -> None:
    """Show every shard's status: seq, resting orders, backlog, uptime; and every account
    shard's: seq, accounts, open orders, link gaps, anomalies, journal."""
    processes = None
    if hosts_file is not None:
        topo_file = _hosts(hosts_file)
        endpoint = endpoint or topo_file.router
        processes = hoststatus.ask(topo_file, timeout)
        if not as_json:
            click.echo("\n".join(hoststatus.lines(processes)))
    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            topo = c.topology()
            shards = c.status()
            accounts = c.account_status()
            secure = c.key is not None  # a keyless client got in: the cluster is insecure
            placement = router_placement(topo)  # (the map the router routes by)
            pairs = pairs_by_shard(c.markets, topo["shards"], placement.owner)
    except (ShardexError, click.ClickException) as exc:
        if processes is not None and as_json:  # (the hosts' answers are still worth having)
            click.echo(json.dumps({"processes": hoststatus.as_json(processes), "error": str(exc)}))
        if isinstance(exc, click.ClickException):
            raise  # (a usage error keeps its own exit code and message)
        _fail(exc)
    if as_json:
        out = {"router": topo, "shards": shards, "accounts": accounts, "secure": secure,
               "pairs": pairs}  # fmt: skip
        if processes is not None:
            out["processes"] = hoststatus.as_json(processes)
        click.echo(json.dumps(out, default=str))
        return
    if not secure:
        click.echo(INSECURE_WARNING)
    click.echo(
        f"router pid {topo['pid']}: {topo['shards']} shard(s), forwarded "
        f"{sum(topo['forwarded'])}, rejected {topo['rejected']}"
    )
    _engine_rows(shards, pairs)
    _account_rows(accounts)


def _hosts(path: str) -> hoststatus.Topology:
    """``--hosts FILE`` read, or one line saying why not."""
    try:
        return hoststatus.load(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _engine_rows(shards: list[dict[str, Any]], pairs: list[list[str]]) -> None:
    """One row per engine shard (and its replication state and pairs)."""
    click.echo(
        f"{'shard':>5} {'state':<7} {'pid':>7} {'cpu':>4} {'seq':>10} {'resting':>9} "
        f"{'commands':>10} {'backlog':>7} {'shed':>6} {'uptime':>9} engine"
    )
    for st in shards:
        if "error" in st:
            click.echo(f"{st['shard']:>5} {_down(st):<7} {st['error']}")
            continue
        click.echo(
            f"{st['shard']:>5} {'up':<7} {st['pid']:>7} {_s(st.get('cpu')):>4} "
            f"{st['seq']:>10} {st['resting']:>9} {st['commands']:>10} "
            f"{st['backlog']:>7} {st['shed']:>6} {st['uptime_s']:>8.0f}s "
            f"{st.get('engine', '-')}"
        )
        _replica_line(st)
        if isinstance(st.get("shard"), int) and 0 <= st["shard"] < len(pairs):
            rules = st.get("rules") or {}  # (pairs not open, or with limits: docs/markets.md)
            named = [f"{p} ({rules[p]['state']})" if p in rules else p for p in pairs[st["shard"]]]
            click.echo(f"{'':>5} pairs {', '.join(named) or 'none (idle)'}")


def _account_rows(accounts: list[dict[str, Any]]) -> None:
    """One row per account shard (none when the cluster has no account tier)."""
    if accounts:
        click.echo(
            f"{'acct':>5} {'state':<7} {'seq':>10} {'accounts':>9} {'open':>8} "
            f"{'commands':>10} {'gaps':>5} {'anomal.':>7} {'core':<11} journal"
        )
    for st in accounts:
        if "error" in st:
            click.echo(f"{st['shard']:>5} {_down(st):<7} {st['error']}")
            continue
        click.echo(
            f"{st['account_shard']:>5} {'up':<7} {st['seq']:>10} {st['accounts']:>9} "
            f"{st['open_orders']:>8} {st['commands']:>10} {st['gaps']:>5} "
            f"{st['anomalies']:>7} {st.get('core', '-'):<11} {st['journal']}"
        )
        _replica_line(st)


def _replica_line(st: dict[str, Any]) -> None:
    """A replicated shard's (engine or account) lease and replication state."""
    if "role" not in st:
        return
    lag = ", ".join(f"{n} {v}" for n, v in sorted(st.get("lag", {}).items())) or "-"
    pids = ", ".join(f"{n} {p}" for n, p in sorted(st.get("standby_pids", {}).items())) or "-"
    click.echo(
        f"{'':>5} {st['role']} {st.get('node', '')} epoch {st['epoch']}, in-sync "
        f"{','.join(st.get('isr', []))}, standby lag (seq) {lag}, standby pid {pids}"
        + (f", refused {st['repl_refused']}" if st.get("repl_refused") else "")
    )


def _s(v: Any) -> str:
    return "-" if v is None else str(v)



# -- the account tier  --------------------------------------------------------
