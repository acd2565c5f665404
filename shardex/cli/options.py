"""Options several commands share (those of the process kinds come from ``shardex.kinds``),
and how the counts a user gives (``--shards auto``, ``--accounts``) become numbers."""

from __future__ import annotations

import os
from typing import Any

import click

from shardex.cli.base import UsageLineError
from shardex.kinds import common
from shardex.layout import DEFAULT_BASE_PORT, MAX_GATEWAYS, MAX_ROUTERS, MAX_SHARDS
from shardex.node.honcho import honcho_concurrency, honcho_index

markets_option = common.MARKETS.decorator()
host_option = common.HOST.decorator()
base_port_option = common.BASE_PORT.decorator()
fsync_option = common.FSYNC.decorator()
durability_option = common.DURABILITY.decorator()
lease_ms_option = common.LEASE_MS.decorator()
accounts_option = common.ACCOUNTS.decorator()
keys_dir_option = common.KEYS_DIR.decorator()
insecure_option = common.INSECURE.decorator()
endpoint_option = common.ENDPOINT.decorator()
key_option = click.option(
    "--key",
    "key_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Key file to connect with [$SHARDEX_KEY, else DATA_DIR/keys/admin.key "
    "($SHARDEX_DATA_DIR or ./data) if it exists, else none]; 'none' for an --insecure cluster.",
)
# A client command's --host/--base-port: no default, so "not given" can fall through to the
# endpoints file ``shardex up`` wrote (shardex.endpoints); the cluster processes keep theirs.
client_host_option = click.option(
    "--host",
    default=None,
    envvar="SHARDEX_HOST",
    help="Host of the default layout [DATA_DIR/endpoints.json's, else 127.0.0.1].",
)
client_base_port_option = click.option(
    "--base-port",
    type=int,
    default=None,
    envvar="SHARDEX_BASE_PORT",
    help=f"Base port of the cluster's layout (router clients: base+0) [DATA_DIR/endpoints.json's, "
    f"else {DEFAULT_BASE_PORT}].",
)
store_options = [
    click.option(
        "--data-dir",
        default="data",
        show_default=True,
        envvar="SHARDEX_DATA_DIR",
        help="The cluster's data dir; keys live in DATA_DIR/keys.",
    ),
    keys_dir_option,
]


def store_opts(f: Any) -> Any:
    """``--data-dir`` and ``--keys-dir``: where a command finds the cluster's key store."""
    for opt in reversed(store_options):
        f = opt(f)
    return f


def client_options(f: Any) -> Any:
    """The options every client command shares, in this order: where the cluster is
    (``--endpoint``, ``--host``, ``--base-port``: see ``shardex.endpoints``) and how long to
    wait for an answer (``--timeout``)."""
    timeout = click.option("--timeout", type=float, default=3.0, show_default=True,
                           help="Seconds to wait for each answer.")  # fmt: skip
    for option in (timeout, client_base_port_option, client_host_option, endpoint_option):
        f = option(f)
    return f


# The layout's counts as options of the commands that take them as numbers (``shardex up``,
# ``shardex deploy k8s|keys``): their ranges here once, their help each command's own (what
# a count means differs: processes on this box, pods, process keys). In the layout's order.
LAYOUT_RANGES: dict[str, tuple[int, int]] = {
    "shards": (1, MAX_SHARDS),
    "accounts": (0, MAX_SHARDS),
    "replicas": (1, 2),
    "routers": (1, MAX_ROUTERS),
    "gateways": (0, MAX_GATEWAYS),
}


def layout_option(name: str, help: str, default: int = 1, **kw: Any) -> Any:  # noqa: A002
    """``--NAME``: one of the layout's counts, in its range, ``default`` shown in --help."""
    low, high = LAYOUT_RANGES[name]
    return click.option(f"--{name}", type=click.IntRange(low, high), default=default,
                        show_default=True, help=help, **kw)  # fmt: skip


def layout_options(defaults: dict[str, int] | None = None, **helps: str) -> Any:
    """The layout counts named in ``helps`` (name: that command's help), in the layout's
    order, each with its default (``defaults``, else 1): one decorator for a command's group."""
    chosen = [name for name in LAYOUT_RANGES if name in helps]
    unknown = set(helps) - set(chosen)
    if unknown:
        raise ValueError(f"not layout counts: {sorted(unknown)}")

    def apply(f: Any) -> Any:
        for name in reversed(chosen):
            f = layout_option(name, helps[name], (defaults or {}).get(name, 1))(f)
        return f

    return apply


def resolve_shards(value: str) -> int:
    """Engine shards N from ``--shards``: a number 1..100, or 'auto' under honcho (the
    ``-c engine=N`` it was started with)."""
    if value == "auto":
        n = honcho_concurrency("engine")
        if n is None:
            raise click.UsageError(
                "--shards auto (SHARDEX_SHARDS=auto) only works under honcho; give a number"
            )
        return n
    try:
        n = int(value)
    except ValueError:
        raise click.UsageError(f"--shards must be a number or 'auto', got {value!r}") from None
    if not 1 <= n <= MAX_SHARDS:
        raise click.UsageError(f"--shards must be 1..{MAX_SHARDS}, got {n}")
    return n


def resolve_accounts(value: str | int, option: str = "--accounts") -> int:
    """Account shards M from ``--accounts``/``SHARDEX_ACCOUNTS``: a number 0..100, or 'auto'
    (under honcho: the ``-c accounts=M`` it was started with, honcho's default 1 when not
    given, as ``shardex up``; elsewhere 0). ``-c accounts=0`` turns the tier off."""
    if value == "auto":
        return honcho_concurrency("accounts") or 0
    try:
        m = int(value)
    except ValueError:
        raise click.UsageError(f"{option} must be 0..100 or 'auto', got {value!r}") from None
    if not 0 <= m <= 100:
        raise click.UsageError(f"{option} must be 0..100, got {m}")
    return m


def resolve_routers(value: str) -> int:
    """Routers R from ``--routers``: a number, or 'auto' under honcho (``-c router=R``)."""
    if value == "auto":
        return honcho_concurrency("router") or 1
    try:
        n = int(value)
    except ValueError:
        raise click.UsageError(f"--routers must be a number or 'auto', got {value!r}") from None
    if not 1 <= n <= MAX_ROUTERS:
        raise click.UsageError(f"--routers must be 1..{MAX_ROUTERS}, got {n}")
    return n


def up_shards(value: str) -> int:
    """``shardex up --shards``: 'auto' is the usable cores; 0 is an error, not a silent auto."""
    if value == "auto":
        return min(MAX_SHARDS, len(os.sched_getaffinity(0)))
    try:
        n = int(value)
    except ValueError:
        raise UsageLineError(f"--shards must be 1..{MAX_SHARDS} or 'auto', got {value!r}") from None
    if not 1 <= n <= MAX_SHARDS:
        raise UsageLineError(f"--shards must be 1..{MAX_SHARDS} or 'auto', got {n}")
    return n


def resolve_shard_index(value: int | None) -> int:
    """``--shard``, else under honcho the process's number (engine.N → shard N-1)."""
    if value is not None:
        return value
    index = honcho_index()
    if index is None:
        raise click.UsageError("--shard is required (or run under honcho: engine.N → shard N-1)")
    return index


def check_role_auto(data_dir: str | None, redis_url: str | None, fsync: str) -> None:
    """What ``--role auto`` needs, for either tier: a journal and the lease's Redis, and
    group commits to ship (with ``--fsync always`` each command is its own commit)."""
    if not data_dir or not redis_url:
        raise click.UsageError("--role auto needs --data-dir and --redis-url")
    if fsync == "always":
        raise click.UsageError("--role auto takes --fsync batch or none")


def check_single_durability(durability: str) -> None:
    """``--durability`` says when a leader's replies leave relative to its standby's copy;
    ``--role single`` has no standby, so only the default (``both``: after our own fsync)
    means what it says. Refused rather than ignored: a user asking for ``replicated``
    believes the batch survives the loss of this machine (as ``shardex up`` refuses it
    without ``--replicas 2``)."""
    if durability != "both":
        raise click.UsageError(
            f"--durability {durability} needs --role auto (a hot standby): a --role single "
            "process has none and replies after its own fsync"
        )


def check_durability(durability: str, accounts: int) -> None:
    """``--durability local`` releases what the standby may not have; with the account tier
    that would be settlements and forwards, money a new leader never moved: refused."""
    if durability == "local" and accounts:
        raise click.UsageError(
            "--durability local with the account tier: settlements and forwards would leave "
            "before the standby has them (a failover would lose money moves the other tier "
            "made); use replicated or both, or --accounts 0"
        )
