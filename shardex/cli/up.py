"""``shardex up``: a whole local cluster under one supervisor (the children and their argv come
from the process descriptions, ``shardex.kinds``); Ctrl-C stops it."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

import click

from shardex import endpoints
from shardex.auth import AuthError, KeyStore
from shardex.cli import prometheus as prom
from shardex.cli.banner import print_endpoints
from shardex.cli.base import (
    INSECURE_WARNING,
    UsageLineError,
    check_data_dir,
    fee_schedule,
    markets,
)
from shardex.cli.options import (
    base_port_option,
    check_durability,
    durability_option,
    fsync_option,
    host_option,
    layout_option,
    layout_options,
    lease_ms_option,
    markets_option,
    up_shards,
)
from shardex.coord.connect import is_etcd
from shardex.coord.etcd import parse_url
from shardex.datadir import DataDirError, recorded_shards
from shardex.engine.build import ensure as ensure_build
from shardex.kinds import OPTIONAL, Plan, cluster_ports
from shardex.layout import Layout, idle_shards_warning
from shardex.leasetime import DEFAULT_LEASE_MS
from shardex.node.scaler import Scaler
from shardex.node.supervisor import Supervisor, children_of, port_free


@click.command()
@click.option(
    "--shards",
    default="auto",
    help="Number of engine shards 1..100, or 'auto' [default: auto = the count the data dir "
    "last ran (DATA_DIR/shards.json), else the usable cores].",
)
@host_option
@base_port_option
@markets_option
@click.option(
    "--max-backlog",
    type=int,
    default=10_000,
    show_default=True,
    help="Per-shard load-shedding threshold (messages).",
)
@click.option("--no-pin", is_flag=True, help="Do not pin shards to CPUs.")
@layout_option(
    "routers",
    "Router processes in front of the same shards (clients spread over them: give them "
    "every router's endpoint, comma-separated, as printed).",
    envvar="SHARDEX_ROUTERS",
)
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    envvar="SHARDEX_DATA_DIR",
    help="Journals and snapshots (DATA_DIR/shard-I); a restarted shard recovers from them.",
)
@click.option("--ephemeral", is_flag=True, help="No journal: state lives in memory only.")
@fsync_option
@click.option(
    "--redis-url",
    default=None,
    envvar="SHARDEX_REDIS_URL",
    help="Bridge events to this Redis instead of starting the embedded one.",
)
@click.option(
    "--no-bridge", is_flag=True, help="Start neither Redis nor the bridge (nor candles-worker)."
)
@click.option("--pub-hwm", type=int, default=None, help="Shards' PUB high-water mark.")
@click.option(
    "--prometheus-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a prometheus.yml scraping this cluster's exporters to this path "
    "(rewritten when shardex reshard changes the engine shard processes).",
)
@click.option(
    "--prometheus-reload",
    default=None,
    metavar="URL",
    help="With --prometheus-config: POST URL/-/reload after each rewrite, so this Prometheus "
    "scrapes the new shards at once (it must run with --web.enable-lifecycle).",
)
@click.option(
    "--keys-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="The cluster's key store [DATA_DIR/keys; with --ephemeral a temp dir for this run].",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="SHARDEX_INSECURE",
    help="No authentication (no CURVE keys, no Redis users): a lab only, said loudly.",
)
@layout_options(
    accounts="Account shards M: balances, holds before matching, settlement after (deposit "
    "before trading: shardex deposit). 0: the tier is off, orders are unfunded.",
    replicas="Processes per shard: 2 = a primary and a hot standby with their own journals "
    "(DATA_DIR/shard-I and DATA_DIR/shard-I.r1; DATA_DIR/accounts-J and accounts-J.r1) and a "
    "Redis lease each (needs Redis), for engine and account shards; 1: one process "
    "per shard.",
)
@durability_option
@lease_ms_option
@click.option(
    "--coord",
    default=None,
    metavar="URL",
    envvar="SHARDEX_COORD",
    help="With --replicas 2: keep the leases in this store instead of the cluster's Redis: "
    "etcd://HOST:PORT,HOST:PORT (an etcd cluster, docs/coordination.md) or a Redis URL.",
)
@click.option(
    "--mm",
    is_flag=True,
    help="Also run the market maker (shardex mm with its defaults: quotes every pair from "
    "accounts it funds itself, so the books are live; needs --accounts >= 1). Off by default: "
    "it trades with money it deposits (docs/marketmaker.md).",
)
@layout_option(
    "gateways",
    "Gateways (shardex gateway: HTTP + WebSocket market data) on base+86.. (they need "
    "Redis: none with --no-bridge).",
)
@click.option(
    "--without",
    multiple=True,
    type=click.Choice(OPTIONAL),
    help="Leave out an optional process (repeatable): the candles worker or the history "
    "writer (the streams are still written in full; a worker started later catches up), or "
    "the price feed of the perp markets.",
)
def up(
    shards: str,
    host: str,
    base_port: int,
    markets_file: str | None,
    max_backlog: int,
    no_pin: bool,
    routers: int,
    data_dir: str,
    ephemeral: bool,
    fsync: str,
    redis_url: str | None,
    no_bridge: bool,
    pub_hwm: int | None,
    prometheus_config: str | None,
    prometheus_reload: str | None,
    keys_dir: str | None,
    insecure: bool,
    accounts: int = 0,
    replicas: int = 1,
    durability: str = "both",
    lease_ms: int = DEFAULT_LEASE_MS,
    mm: bool = False,
    gateways: int = 1,
    without: tuple[str, ...] = (),
    coord: str | None = None,
) -> None:
    """Start a local cluster (router + N shards), print endpoints, run until Ctrl-C.

    Secure by default: on first start the cluster's keys and an admin key are created in
    DATA_DIR/keys (clients and the CLI find DATA_DIR/keys/admin.key by themselves); every
    process authenticates with them. --ephemeral keeps its keys in a temp dir for the run.
    """
    layout = _layout(shards, host, base_port, routers, accounts, gateways, data_dir, ephemeral)
    table = markets(markets_file)  # fail fast on a bad markets file, before starting anything
    fee_schedule(markets_file, table)  # (and on a bad [fees] table in it)
    idle = idle_shards_warning(table, layout.shards)
    if idle:  # (said first: also when the start fails below)
        click.echo(idle, err=True)
    _check_roles(layout, replicas, durability, accounts, coord, mm,
                 no_redis_or_journal=(no_bridge and not coord) or ephemeral)  # fmt: skip
    redis = None if no_bridge else (redis_url or "embedded")
    plan = Plan(layout, markets_file, max_backlog, not no_pin, _log_level(),
                None if ephemeral else os.path.abspath(data_dir), fsync, redis, pub_hwm,
                None, replicas, durability, mm, frozenset(without), coord,
                lease_ms)  # fmt: skip
    _check_free(plan, data_dir, ephemeral)
    if not ephemeral:
        check_data_dir(data_dir, layout.shards, table, accounts=accounts)
    prometheus = _prometheus(plan, prometheus_config, prometheus_reload)
    keys, temp_keys = _up_keys(data_dir, keys_dir, ephemeral, insecure)
    ensure_build(lambda line: click.echo(line, err=True))  # the compiled cores, once
    sys.exit(_run(plan, keys, temp_keys, data_dir, redis_url or layout.redis_url, prometheus))


def _prometheus(plan: Plan, path: str | None, reload: str | None) -> prom.PrometheusConfig | None:
    """``--prometheus-config`` written for the plan's layout now (``shardex.cli.prometheus``)."""
    try:
        cfg = prom.for_plan(plan, path, reload, lambda line: click.echo(line, err=True))
    except prom.ReloadURLError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"--prometheus-config {path}: {exc}") from None
    if cfg is not None:
        click.echo(f"wrote {path} (prometheus --config.file={path}"
                   f"{' --web.enable-lifecycle' if reload else ''})")  # fmt: skip
    return cfg


def _shard_count(value: str, data_dir: str, ephemeral: bool) -> int:
    """``--shards``; with 'auto' over a data dir that records a count (its first start, or
    ``shardex reshard`` since), that count: the cluster comes back as it ran."""
    if value != "auto" or ephemeral:
        return up_shards(value)
    try:
        recorded = recorded_shards(data_dir) if os.path.isdir(data_dir) else None
    except DataDirError as exc:
        raise click.ClickException(str(exc)) from None
    if recorded is None:
        return up_shards(value)
    click.echo(f"starting {recorded} engine shard(s), the count recorded in {data_dir} "
               "(give --shards to change it)")  # fmt: skip
    return recorded


def _log_level() -> str:
    """The level the children log at: the one this process was started with."""
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


def _layout(
    shards: str, host: str, base_port: int, routers: int, accounts: int, gateways: int,
    data_dir: str, ephemeral: bool,
) -> Layout:  # fmt: skip
    """The cluster's layout (``--shards`` by ``_shard_count``); one usage line when its ports
    do not fit."""
    n = _shard_count(shards, data_dir, ephemeral)
    try:
        return Layout(host, base_port, n, routers, accounts, gateways)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _check_roles(layout: Layout, replicas: int, durability: str, accounts: int,
                 coord: str | None, mm: bool, no_redis_or_journal: bool) -> None:  # fmt: skip
    """What the replicas, the durability rule, the leases' store and the market maker need."""
    if replicas > 1:
        _check_replicas(layout, no_redis_or_journal)
        check_durability(durability, accounts)
    elif durability != "both":
        raise click.UsageError(f"--durability {durability} needs --replicas 2 (one process "
                               "per shard replies after its own fsync)")  # fmt: skip
    _check_coord(coord, replicas)
    if mm and not accounts:
        raise click.UsageError("--mm needs the account tier (--accounts >= 1): the market "
                               "maker funds its own accounts")  # fmt: skip


def _check_coord(coord: str | None, replicas: int) -> None:
    """``--coord``: only with replicas (it holds their leases), and a URL we can use."""
    if not coord:
        return
    if replicas < 2:
        raise click.UsageError("--coord keeps the replicas' leases: it needs --replicas 2")
    if is_etcd(coord):
        try:
            parse_url(coord)
        except ValueError as exc:
            raise click.UsageError(f"--coord: {exc}") from None


def _check_replicas(layout: Layout, no_redis_or_journal: bool) -> None:
    """What ``--replicas 2`` needs: Redis (the lease), journals, and room for its ports."""
    if no_redis_or_journal:
        raise click.UsageError(
            "--replicas 2 needs Redis for the lease (no --no-bridge) and journals "
            "(no --ephemeral)"
        )
    try:
        layout.replica_ports()  # (says when the base port leaves them no room)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _check_free(plan: Plan, data_dir: str, ephemeral: bool) -> None:
    """Refuse to start over another cluster: one on this data dir, or on any of our ports."""
    taken = None if ephemeral else endpoints.in_use(data_dir)
    if taken:
        raise click.ClickException(taken)
    host = plan.layout.host
    busy = [p for p in cluster_ports(plan) if not port_free(host, p)]
    if busy:
        raise click.ClickException(
            f"ports already in use on {host}: {', '.join(map(str, busy[:8]))} "
            "(is another cluster running? use --base-port)"
        )


def _run(plan: Plan, keys: str | None, temp_keys: bool, data_dir: str, redis: str,
         prometheus: prom.PrometheusConfig | None = None) -> int:  # fmt: skip
    """Start the children, say where everything is once they are up, supervise until a
    signal; then forget the endpoints file and a temporary key store. ``prometheus``: writes
    ``--prometheus-config`` again (and reloads Prometheus) when ``shardex reshard`` changes N."""
    p = plan
    def children_for(n: int) -> list:
        return children_of(replace(p, layout=replace(p.layout, shards=n), keys_dir=keys))

    sup = Supervisor(children_for(p.layout.shards))
    shown = None if p.redis is None else redis

    def resized(n: int) -> None:
        _record_endpoints(data_dir, replace(p.layout, shards=n), p.replicas, shown, keys)
        if prometheus is not None:
            prometheus.rewrite(replace(p.layout, shards=n))

    sup.tick = Scaler(sup, data_dir, p.layout.shards, children_for, resized,
                      _scale_refusal(p), _relink(p)).tick  # fmt: skip

    def ready() -> None:
        print_endpoints(p.layout, shown, keys, temp_keys, p.replicas, p.without)

    recorded = _record_endpoints(data_dir, p.layout, p.replicas, shown, keys)
    try:
        return sup.run(on_ready=ready)
    finally:
        if recorded:
            endpoints.mark_stopped(data_dir, os.getpid())
        if temp_keys:
            shutil.rmtree(keys or "", ignore_errors=True)


def _scale_refusal(plan: Plan) -> str | None:
    """Why ``shardex reshard`` cannot change this cluster's engine shard processes, or None."""
    if plan.data_dir is None:
        return "an --ephemeral cluster has no journals to move pairs through"
    return None


def _relink(plan: Plan) -> Callable[[str], bool] | None:
    """With the account tier, the children a grow restarts: the account shards open one
    forward link per engine shard at start, and the routers keep the account shards' slots
    after the engine shards' (``shardex.node.scaler``); None without it."""
    if not plan.layout.accounts:
        return None
    return lambda name: name.startswith(("accounts.", "router"))


def _record_endpoints(
    data_dir: str, layout: Layout, replicas: int, redis: str | None, keys: str | None
) -> bool:
    """Write DATA_DIR/endpoints.json before the children start, so every other command and the
    SDK find this cluster's ports (shardex.endpoints); False (said) when it cannot be written."""
    rec = endpoints.record(layout, replicas=replicas, redis_url=redis, keys_dir=keys,
                           pid=os.getpid(), now=time.time())  # fmt: skip
    try:
        path = endpoints.write(data_dir, rec)
    except OSError as exc:
        click.echo(f"WARNING: cannot record the endpoints in {data_dir}: {exc}; other commands "
                   "need --endpoint/--base-port", err=True)  # fmt: skip
        return False
    click.echo(f"endpoints recorded in {path} (shardex status and the SDK find them there)")
    return True


def _up_keys(
    data_dir: str, keys_dir: str | None, ephemeral: bool, insecure: bool
) -> tuple[str | None, bool]:
    """``shardex up``'s key store (created on first start), and whether it is a temp one."""
    if insecure:
        if keys_dir:
            raise UsageLineError("--insecure and --keys-dir contradict each other: give one")
        click.echo(INSECURE_WARNING, err=True)
        return None, False
    temp = False
    if keys_dir:
        path = os.path.abspath(keys_dir)
    elif ephemeral:
        path, temp = tempfile.mkdtemp(prefix="shardex-keys-"), True
    else:
        path = os.path.abspath(os.path.join(data_dir, "keys"))
    try:
        if KeyStore(path).init():
            click.echo(f"created the cluster's keys and an admin key in {path}")
    except (AuthError, OSError) as exc:
        raise click.ClickException(f"key store {path}: {exc}") from None
    return path, temp
