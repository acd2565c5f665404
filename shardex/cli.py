"""``shardex`` command line: one click group, thin commands that call into the package."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import click

from shardex import endpoints
from shardex.amounts import RULE, parse_decimal, plain
from shardex.config import load_markets
from shardex.endpoints import (
    EndpointsFileError,
    Found,
    connection_error,
    explain,
    find_redis,
    find_router,
)
from shardex.endpoints import read as read_endpoints
from shardex.engine import MarketError
from shardex.envdoc import document_env
from shardex.journal import JournalError
from shardex.layout import (
    DEFAULT_BASE_PORT,
    LINK_REPLICAS,
    MAX_ROUTERS,
    MAX_SHARDS,
    Layout,
    idle_shards_warning,
    pairs_by_shard,
)
from shardex.node.honcho import honcho_concurrency, honcho_index
from shardex.recovery import (
    SNAPSHOT_EVERY,
    SNAPSHOT_INTERVAL,
    snapshot_every_default,
    snapshot_interval_default,
)
from shardex.recovery import describe as recovery_describe
from shardex.tools.workload import DEFAULT_MIX_TEXT
from shardex.wire.protocol import ERR_RECOVERING


def _markets(path: str | None):
    try:
        return load_markets(path)
    except MarketError as exc:
        raise click.ClickException(str(exc)) from exc


class UsageLineError(click.ClickException):
    """A bad option value: one line on stderr (``Error: ...``) and exit code 2, no usage dump."""

    exit_code = 2


_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5}|\*)$")


def check_endpoint(value: str, option: str = "--endpoint", allow: tuple[str, ...] = ()) -> str:
    """A ZeroMQ endpoint a user typed: ``tcp://HOST:PORT`` or ``ipc://PATH``, else one line
    naming the option (instead of zmq's traceback from deep inside a socket call)."""
    if value in allow:
        return value
    m = _TCP.match(value)
    ok = (m is not None and (m.group(2) == "*" or 1 <= int(m.group(2)) <= 65535)) or (
        value.startswith("ipc://") and len(value) > len("ipc://")
    )
    if not ok:
        extra = f" or {' / '.join(allow)}" if allow else ""
        raise UsageLineError(
            f"bad endpoint {value!r} for {option}: expected tcp://HOST:PORT "
            f"(e.g. tcp://127.0.0.1:5555) or ipc://PATH{extra}"
        )
    return value


_WILDCARD_HOSTS = ("*", "0.0.0.0", "[::]", "::")


def advertised(endpoint: str, host: str | None, option: str) -> str:
    """The address other hosts reach a bound ``endpoint`` at: its host replaced by ``host``
    (``--advertise``) when given. One line naming the option when the result would be an
    address nobody can connect to (a wildcard host or port), since the standby (lease), the
    routers' topology and the bridge (HELLO) connect to exactly what is advertised."""
    m = _TCP.match(endpoint)
    if m is None:  # ipc://: one host only; advertised as bound
        if host:
            raise UsageLineError(f"--advertise {host} with {option} {endpoint}: an ipc:// "
                                 "endpoint cannot be reached from another host")  # fmt: skip
        return endpoint
    if m.group(2) == "*":
        raise UsageLineError(f"{option} {endpoint}: a random port cannot be advertised; "
                             "give the port")  # fmt: skip
    if host:
        return check_endpoint(f"tcp://{host}:{m.group(2)}", "--advertise")
    if m.group(1) in _WILDCARD_HOSTS:
        raise UsageLineError(
            f"{option} {endpoint} binds every interface, which is no address to connect to: "
            "give --advertise HOST (the address the other hosts reach this one at)"
        )
    return endpoint


def _endpoint_cb(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:  # noqa: ARG001
    if value is None:
        return None
    allow = ("none",) if param.name == "router_ep" else ()
    if param.name in ("endpoint", "router_ep") and "," in value:  # several routers
        for ep in value.split(","):
            check_endpoint(ep, param.opts[0])
        return value
    return check_endpoint(value, param.opts[0], allow)


def _check_data_dir(
    data_dir: str, shards: int | None, markets, accounts: int | None = None, record: bool = True
) -> None:
    """Refuse (one line, exit 1) when DATA_DIR was written with another engine shard count N
    (``shardex.datadir.check_shard_count``: recorded in DATA_DIR/shards.json, or scanned) or
    another account tier M than ``accounts`` (None: not checked). ``record``: False for a
    process that only compares with what is recorded (the router)."""
    from shardex.datadir import DataDirError, check_account_tier, check_shard_count

    t = time.monotonic()
    try:
        if accounts is not None:
            check_account_tier(data_dir, accounts)
        if shards is not None:
            check_shard_count(data_dir, shards, markets, record)
    except (DataDirError, JournalError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    logging.getLogger("shardex.datadir").info(
        "data dir %s checked in %.2f s", data_dir, time.monotonic() - t
    )


markets_option = click.option(
    "--markets",
    "markets_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file defining extra markets ([markets.SYMBOL] tick/lot/max_price/max_qty).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shardex")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="SHARDEX_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """shardex: a sharded, multiprocess order-matching cluster.

    Start a local cluster with `shardex up`, look at it with `shardex status` and
    `shardex book SYMBOL`, run the engine on a file with `shardex replay`.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.argument("source", type=click.File("rb"), default="-")
@markets_option
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write events here.")
@click.option("--summary", is_flag=True, help="Print counts (commands, trades, rejects) to stderr.")
@click.option(
    "--journal",
    "journal_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Replay a shard's journal directory instead of SOURCE (events as JSON lines).",
)
def replay(
    source: BinaryIO, markets_file: str | None, output, summary: bool, journal_dir: str | None
) -> None:
    """Run JSON-lines commands from SOURCE (a file or -) through one engine; print events.

    Deterministic: the same input always gives the same events. A malformed line becomes a
    `rejected` event naming its line number, and replay goes on. With --journal DIR, the
    events of any journal the cluster writes (DATA_DIR/shard-I, with or without the account
    tier, or DATA_DIR/accounts-J), replayed as its shard does, from its first record still on
    disk (or the oldest snapshot the records continue).
    """
    from shardex.tools.replay import json_commands, replay_journal
    from shardex.tools.replay import replay as run_replay

    markets = _markets(markets_file)
    try:
        if journal_dir is not None:
            result = replay_journal(journal_dir, markets, output.write)
        else:
            result = run_replay(json_commands(source, markets), markets, output.write)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    output.flush()
    if summary:
        click.echo("\n".join(result.lines()), err=True)


@main.group()
def journal() -> None:
    """Look at a shard's journal directory."""


@journal.command("inspect")
@click.argument("directory", type=click.Path(file_okay=False))
@markets_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def journal_inspect(directory: str, markets_file: str | None, as_json: bool) -> None:
    """Records, seq range, snapshots and any damage in DIRECTORY (changes nothing).

    Replays it as its shard would recover it (engine shard, with or without the account tier,
    or account shard). Exit 1, naming each problem, when anything is wrong: damage, records
    recovery would refuse, a damaged snapshot, state that does not add up.
    """
    from shardex.tools.journals import inspect_journal

    try:
        info = inspect_journal(directory, _markets(markets_file))
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(
            f"{info['dir']}: {info['kind']}: {info['commands']} commands, {info['records']} "
            f"records in {len(info['segments'])} segment(s), {len(info['snapshots'])} snapshot(s)"
        )
        for seg in info["segments"]:
            torn = f"torn tail: {seg['torn_tail']}" if seg["torn_tail"] else "ok"
            state = seg["damage"] or torn
            click.echo(
                f"  {seg['file']}  {seg['bytes']:>12,} B  {seg['commands']:>10,} commands  "
                f"{_seq_range(seg)}  {state}"
            )
        for snap in info["snapshots"]:
            click.echo(
                f"  {snap['file']}  seq {snap['seq']}  "
                f"{'valid' if snap['valid'] else 'DAMAGED'}  orders {snap['orders']}"
            )
        if info["seq"] is not None:
            click.echo(f"  recovery reaches seq {info['seq']}")
    for problem in info["problems"]:
        click.echo(f"PROBLEM: {problem}", err=True)
    if info["problems"]:
        click.echo(f"{directory}: {len(info['problems'])} problem(s) found", err=True)
        sys.exit(1)


def _seq_range(seg: dict[str, Any]) -> str:
    """The event seqs a segment's commands produced, when the journal says (first..last event);
    otherwise only what records carry: the seq *before* each record's first command."""
    if seg.get("first_event_seq") is not None:
        return f"events seq {seg['first_event_seq']}..{seg['last_event_seq']}"
    if seg.get("first_seq") is None:
        return "no records"
    return f"records after seq {seg['first_seq']}..{seg['last_seq']}"


# -------------------------------------------------------------------------------- identity

INSECURE_WARNING = (
    "WARNING: INSECURE cluster (--insecure): no authentication, anyone who can reach its ports "
    "can trade as any account and pose as a shard. For a lab only."
)


def keys_dir_of(data_dir: str | None, keys_dir: str | None) -> str | None:
    """The key store a command uses: ``--keys-dir``, else ``DATA_DIR/keys``, else None."""
    if keys_dir:
        return os.path.abspath(keys_dir)
    if data_dir:
        return os.path.abspath(os.path.join(data_dir, "keys"))
    return None


def process_keys_dir(
    component: str, data_dir: str | None, keys_dir: str | None, insecure: bool
) -> str | None:
    """The keys dir of a cluster process (router, engine, bridge, redis), or None with
    ``--insecure`` (said loudly); with neither, one line saying how to proceed (exit 2)."""
    if insecure:
        if keys_dir:
            raise UsageLineError("--insecure and --keys-dir contradict each other: give one")
        logging.getLogger("shardex").warning(
            "%s: %s", component, INSECURE_WARNING.removeprefix("WARNING: ")
        )
        return None
    found = keys_dir_of(data_dir, keys_dir)
    if found is None:
        raise UsageLineError(
            f"{component}: no keys: give --data-dir DIR (keys in DIR/keys, created on first "
            "start or by `shardex keys init`) or --keys-dir DIR, or --insecure to run without "
            "authentication (a lab only)"
        )
    return found


keys_dir_option = click.option(
    "--keys-dir",
    default=None,
    envvar="SHARDEX_KEYS_DIR",
    type=click.Path(file_okay=False),
    help="The cluster's key store (server key, key registry, process keys) [DATA_DIR/keys].",
)
insecure_option = click.option(
    "--insecure",
    is_flag=True,
    envvar="SHARDEX_INSECURE",
    help="No authentication at all (no CURVE, no key registry): a lab only.",
)
key_option = click.option(
    "--key",
    "key_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Key file to connect with [$SHARDEX_KEY, else DATA_DIR/keys/admin.key "
    "($SHARDEX_DATA_DIR or ./data) if it exists, else none]; 'none' for an --insecure cluster.",
)


def client_key(key_file: str | None):
    """``--key`` → what ``Client(key=...)`` takes: a path, False for 'none', None: default."""
    from shardex.wire.transport import NO_KEY

    if key_file is None:
        return None
    return False if key_file.strip().lower() in NO_KEY else key_file


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


def _store_opts(f):
    for opt in reversed(store_options):
        f = opt(f)
    return f


def _store(data_dir: str, keys_dir: str | None, must_exist: bool = True):
    from shardex.auth import KeyStore

    store = KeyStore(keys_dir_of(data_dir, keys_dir) or "")
    if must_exist and not store.exists():
        raise click.ClickException(
            f"no key store in {store.dir} (created by `shardex up` on first start or by "
            "`shardex keys init`; use --data-dir/--keys-dir for another one)"
        )
    return store


@main.group()
def keys() -> None:
    """Identity: who may connect and act for which accounts (keys in DATA_DIR/keys).

    Every connection to the cluster is authenticated with a CURVE key; the key registry says
    which accounts each key may act for. Changes take effect without a restart.
    """


@keys.command("init")
@_store_opts
def keys_init(data_dir: str, keys_dir: str | None) -> None:
    """Create the cluster's keys (server key, registry, admin key) if missing."""
    from shardex.auth import ADMIN_KEY_FILE

    store = _store(data_dir, keys_dir, must_exist=False)
    created = store.init()
    click.echo(
        f"{'created' if created else 'already there:'} key store {store.dir} "
        f"(admin key {store.dir / ADMIN_KEY_FILE})"
    )


@keys.command("add")
@click.option(
    "--account",
    "accounts",
    multiple=True,
    help="An account this key may act for (repeat for several); trader keys need one.",
)
@click.option(
    "--role",
    type=click.Choice(["trader", "reader", "admin", "bridge"]),
    default="trader",
    show_default=True,
    help="trader: orders for its accounts + reads; reader: market data and status only; "
    "admin: everything, any account; bridge: the event stream.",
)
@click.option("--name", default=None, help="Key name [the account; ROLE-xxxx for others].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the key file here [KEYS_DIR/NAME.key].",
)
@_store_opts
def keys_add(
    accounts: tuple[str, ...],
    role: str,
    name: str | None,
    out: str | None,
    data_dir: str,
    keys_dir: str | None,
) -> None:
    """Create a keypair file (mode 0600) for a user and register its public key."""
    from shardex.auth import AuthError

    accounts = tuple(dict.fromkeys(accounts))
    if role != "trader" and accounts:
        raise UsageLineError(f"--account is for trader keys (a {role} key has no accounts)")
    if role == "trader" and not accounts:
        raise UsageLineError("a trader key needs at least one --account")
    if name is None:
        name = "+".join(accounts) if accounts else f"{role}-{os.urandom(2).hex()}"
    store = _store(data_dir, keys_dir, must_exist=False)
    if not store.exists():
        store.init()
        click.echo(f"created the cluster's key store in {store.dir} (with an admin key)")
    path = os.path.abspath(out) if out else str(store.dir / f"{name}.key")
    if os.path.exists(path):
        raise click.ClickException(f"{path} exists: choose another --out or --name")
    try:
        written = store.add(name, role, accounts, path=path)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    from shardex.auth import KeyFile

    kf = KeyFile.read(written)
    what = f"for account(s) {', '.join(accounts)}" if accounts else "(no accounts)"
    click.echo(f"added {role} key {name!r} {what}, key id {kf.public[:8]}…")
    click.echo(f"key file: {written} (mode 0600: it holds the secret key; give it to its user)")
    click.echo(f"use it:   {_client_hint(data_dir, written)}")
    click.echo(f"     or   SHARDEX_KEY={written} shardex status   (or --key FILE)")


def _client_hint(data_dir: str, key_file: str) -> str:
    """How to connect with a new key: the router of DATA_DIR/endpoints.json when ``shardex up``
    wrote one, else the placeholder of the default layout."""
    try:
        rec = read_endpoints(data_dir)
    except EndpointsFileError:
        rec = None
    if rec is None:
        return (f'Client("tcp://HOST:{DEFAULT_BASE_PORT}", key="{key_file}")   (the router '
                "endpoint shardex up prints)")  # fmt: skip
    return f'Client("{rec["router"]}", key="{key_file}")'


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@_store_opts
def keys_list(as_json: bool, data_dir: str, keys_dir: str | None) -> None:
    """Every registered key: name, role, accounts, shard, revoked, key id (never a secret)."""
    store = _store(data_dir, keys_dir)
    infos = sorted(store.registry().keys.values(), key=lambda i: (i.revoked, i.role, i.name))
    if as_json:
        for i in infos:
            click.echo(json.dumps({**i.to_json(), "key": i.key}))
        return
    click.echo(f"{'name':<20} {'role':<7} {'shard':>5} {'state':<8} {'key id':<10} accounts")
    for i in infos:
        accounts = "*" if i.role == "admin" else ",".join(sorted(i.accounts)) or "-"
        click.echo(
            f"{i.name:<20} {i.role:<7} {_s(i.shard):>5} "
            f"{'revoked' if i.revoked else 'live':<8} {i.key[:8] + '…':<10} {accounts}"
        )


@keys.command("revoke")
@click.argument("target")
@_store_opts
def keys_revoke(target: str, data_dir: str, keys_dir: str | None) -> None:
    """Revoke the live key named TARGET (or whose public key is TARGET); its connections are
    refused from their next message (processes re-read the registry within a second)."""
    store = _store(data_dir, keys_dir)
    hits = store.revoke(target)
    if not hits:
        raise click.ClickException(f"no live key named {target!r} or with that key id")
    for i in hits:
        click.echo(f"revoked {i.role} key {i.name!r} (key id {i.key[:8]}…)")
    if any(i.role in ("shard", "bridge") for i in hits):
        click.echo("a revoked process key is replaced by a new one when that process restarts")


# --------------------------------------------------------------------------------- cluster

host_option = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="SHARDEX_HOST",
    help="Host of the default endpoint layout.",
)
base_port_option = click.option(
    "--base-port",
    type=int,
    default=DEFAULT_BASE_PORT,
    show_default=True,
    envvar="SHARDEX_BASE_PORT",
    help="Base port of the default layout: router base+0 (clients), base+1 (shards), router "
    "metrics base+2, bridge metrics base+3, Redis base+4; shard i direct base+100+i, PUB "
    "base+200+i, metrics base+300+i.",
)
fsync_option = click.option(
    "--fsync",
    type=click.Choice(["always", "batch", "none"]),
    default="batch",
    show_default=True,
    envvar="SHARDEX_FSYNC",
    help="Journal fsync: after every command, once per drained batch (group commit), or never.",
)
accounts_option = click.option(
    "--accounts",
    default="auto",
    show_default=True,
    envvar="SHARDEX_ACCOUNTS",
    help="Account shards M (0: the account tier is off; every process of a cluster "
    "needs the same M). auto: under honcho the -c accounts=M it was started with (honcho's "
    "default 1 without one, as shardex up), elsewhere 0.",
)
endpoint_option = click.option(
    "--endpoint",
    default=None,
    envvar="SHARDEX_ENDPOINT",
    callback=_endpoint_cb,
    help="Router client endpoint(s) [default: tcp://HOST:BASE_PORT when either is given, else "
    "the router of DATA_DIR/endpoints.json (written by shardex up; DATA_DIR: $SHARDEX_DATA_DIR "
    "or ./data), else tcp://127.0.0.1:5555].",
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



def client_options(f: Any) -> Any:
    """The options every client command shares, in this order: where the cluster is
    (``--endpoint``, ``--host``, ``--base-port``: see ``shardex.endpoints``) and how long to
    wait for an answer (``--timeout``)."""
    timeout = click.option("--timeout", type=float, default=3.0, show_default=True,
                           help="Seconds to wait for each answer.")  # fmt: skip
    for option in (timeout, client_base_port_option, client_host_option, endpoint_option):
        f = option(f)
    return f

def resolve_shards(value: str) -> int:
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
    if value == "auto":
        return honcho_concurrency("router") or 1
    try:
        n = int(value)
    except ValueError:
        raise click.UsageError(f"--routers must be a number or 'auto', got {value!r}") from None
    if not 1 <= n <= MAX_ROUTERS:
        raise click.UsageError(f"--routers must be 1..{MAX_ROUTERS}, got {n}")
    return n


def _up_shards(value: str) -> int:
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
    if value is not None:
        return value
    index = honcho_index()
    if index is None:
        raise click.UsageError("--shard is required (or run under honcho: engine.N → shard N-1)")
    return index


@main.command()
@click.option(
    "--shards",
    default="1",
    envvar="SHARDEX_SHARDS",
    show_default=True,
    help="Number of engine shards (N in crc32(symbol) % N), or 'auto' under honcho.",
)
@host_option
@base_port_option
@click.option(
    "--frontend", default=None, callback=_endpoint_cb, help="Bind endpoint for clients [layout]."
)
@click.option(
    "--backend", default=None, callback=_endpoint_cb, help="Bind endpoint for shards [layout]."
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Prometheus exporter port [layout: base+2]; 0 disables it.",
)
@click.option(
    "--max-inflight",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Requests one shard may have unanswered; past it, clients get an immediate "
    "'overloaded' (a short queue keeps the p99 of accepted orders bounded).",
)
@click.option(
    "--client-max-inflight",
    type=click.IntRange(1),
    default=250,
    show_default=True,
    help="Requests one client connection may have unanswered (keep it well below "
    "--max-inflight so one client cannot fill a shard's queue).",
)
@click.option(
    "--data-dir",
    default=None,
    envvar="SHARDEX_DATA_DIR",
    help="The cluster's data dir (keys in DATA_DIR/keys).",
)
@click.option(
    "--index",
    type=click.IntRange(0, MAX_ROUTERS - 1),
    default=None,
    envvar="SHARDEX_ROUTER_INDEX",
    help="This router's index in the layout (its ports) [0; router.N under honcho → N-1].",
)
@accounts_option
@keys_dir_option
@insecure_option
def router(
    shards: str,
    host: str,
    base_port: int,
    index: int | None,
    frontend: str | None,
    backend: str | None,
    metrics_port: int | None,
    max_inflight: int,
    client_max_inflight: int,
    data_dir: str | None,
    keys_dir: str | None,
    insecure: bool,
    accounts: str = "auto",
) -> None:
    """Run the router: hash each request's symbol to a shard and forward it."""
    from shardex.node.router import RouterConfig, run_router

    n = resolve_shards(shards)
    m = resolve_accounts(accounts)
    if index is None:
        index = honcho_index() or 0
    if not 0 <= index < MAX_ROUTERS:
        raise click.UsageError(f"router index {index} out of range 0..{MAX_ROUTERS - 1}")
    keys = process_keys_dir("router", data_dir, keys_dir, insecure)
    if data_dir:  # routing by another N than the data's would send pairs to the wrong shard
        _check_data_dir(data_dir, n, _markets(None), record=False)
    layout = Layout(host, base_port, n, index + 1)
    run_router(
        RouterConfig(
            n,
            frontend or layout.router_frontend(index),
            backend or layout.router_backend(index),
            metrics_port=layout.router_metrics(index) if metrics_port is None else metrics_port,
            max_inflight=max_inflight,
            client_max_inflight=client_max_inflight,
            keys_dir=keys,
            accounts=m,
        )
    )


def replica_options(journal: str, lease: str) -> Callable[[Any], Any]:
    """``--role/--replica/--redis-url/--repl/--advertise``: the options of a process that can
    run as one of two replicas (an engine shard, ``journal`` "shard-I", or an account shard,
    "accounts-J"), the same for both tiers."""
    options = [
        click.option(
            "--role", type=click.Choice(["single", "auto"]), default="single",
            show_default=True,
            help="single: the only process of its shard (as before); auto: one of two "
            f"replicas, primary or hot standby as the Redis lease {lease} decides ("
            "needs --data-dir, --redis-url).",
        ),
        click.option(
            "--replica", type=click.IntRange(0, 1), default=0, show_default=True,
            help=f"With --role auto: which replica this is (journal DATA_DIR/{journal} for 0, "
            f"DATA_DIR/{journal}.r1 for 1; its own direct/pub/metrics ports [layout]).",
        ),
        click.option("--redis-url", default=None,
                     help="With --role auto: the Redis of the lease."),
        click.option(
            "--repl", default=None, callback=_endpoint_cb,
            help="With --role auto: bind endpoint for replication when leading [layout]; the "
            "standby learns it from the lease, so on several hosts give an address the other "
            "host can reach (or bind tcp://0.0.0.0:PORT and give --advertise).",
        ),
        click.option(
            "--advertise", default=None, metavar="HOST",
            help="The host other machines reach this process at: --repl, --direct and --pub "
            "are bound as given (e.g. tcp://0.0.0.0:PORT) and announced with HOST (in the "
            "lease and the HELLO) [default: announced as bound; --role auto refuses a "
            "wildcard bind without it].",
        ),
    ]  # fmt: skip

    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def _check_role_auto(data_dir: str | None, redis_url: str | None, fsync: str) -> None:
    """What ``--role auto`` needs, for either tier: a journal and the lease's Redis, and
    group commits to ship (with ``--fsync always`` each command is its own commit)."""
    if not data_dir or not redis_url:
        raise click.UsageError("--role auto needs --data-dir and --redis-url")
    if fsync == "always":
        raise click.UsageError("--role auto takes --fsync batch or none")


@main.command()
@click.option(
    "--shard",
    "index",
    type=int,
    default=None,
    envvar="SHARDEX_SHARD",
    help="This shard's index 0..N-1 [from HONCHO_PROCESS_NAME under honcho].",
)
@click.option(
    "--shards",
    default="1",
    envvar="SHARDEX_SHARDS",
    show_default=True,
    help="Total number of shards, or 'auto' under honcho.",
)
@host_option
@base_port_option
@click.option(
    "--router",
    "router_ep",
    default=None,
    callback=_endpoint_cb,
    help="Router backend endpoint(s) to connect to, comma-separated [layout: every router's]; "
    "'none' for direct only.",
)
@click.option(
    "--routers",
    default="1",
    envvar="SHARDEX_ROUTERS",
    show_default=True,
    help="How many routers the layout has (this shard serves them all), or 'auto' under honcho "
    "(the -c router=R it was started with).",
)
@click.option(
    "--direct",
    default=None,
    callback=_endpoint_cb,
    help="Bind endpoint for direct clients [layout].",
)
@click.option(
    "--pub",
    default=None,
    callback=_endpoint_cb,
    help="Bind endpoint for the event stream [layout].",
)
@markets_option
@click.option(
    "--max-backlog",
    type=int,
    default=10_000,
    show_default=True,
    help="Messages waiting in one wake-up beyond which requests get 'overloaded'.",
)
@click.option("--cpu", type=int, default=None, help="Pin to this CPU [auto: shard i → i mod n].")
@click.option("--no-pin", is_flag=True, help="Do not pin the process to a CPU.")
@click.option(
    "--data-dir",
    default=None,
    envvar="SHARDEX_DATA_DIR",
    help="Journal and snapshots go to DATA_DIR/shard-I (recovered at start). "
    "Without it the shard keeps state in memory only.",
)
@fsync_option
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Prometheus exporter port [layout: base+300+I]; 0 disables it.",
)
@click.option(
    "--pub-hwm",
    type=int,
    default=100_000,
    show_default=True,
    help="PUB high-water mark (messages); past it events are dropped and repaired by seq.",
)
@click.option(
    "--snapshot-every",
    type=int,
    default=None,
    help="Journaled commands between snapshots (bounds a restart's replay) "
    f"[default: SHARDEX_SNAPSHOT_EVERY or {SNAPSHOT_EVERY:,}].",
)
@click.option(
    "--snapshot-interval",
    type=float,
    default=None,
    help="Seconds between snapshots when something changed "
    f"[default: SHARDEX_SNAPSHOT_INTERVAL or {SNAPSHOT_INTERVAL:.0f}]. A clean stop "
    "(SIGTERM/SIGINT) always snapshots.",
)
@accounts_option
@click.option(
    "--account-link",
    default=None,
    callback=_endpoint_cb,
    help="Bind endpoint for the account shards' links [layout, with --accounts].",
)
@replica_options("shard-I", "shardex:lease:I")
@keys_dir_option
@insecure_option
def engine(
    index: int | None,
    shards: str,
    host: str,
    base_port: int,
    router_ep: str | None,
    routers: str,
    direct: str | None,
    pub: str | None,
    markets_file: str | None,
    max_backlog: int,
    cpu: int | None,
    no_pin: bool,
    data_dir: str | None,
    fsync: str,
    metrics_port: int | None,
    pub_hwm: int,
    snapshot_every: int | None,
    snapshot_interval: float | None,
    keys_dir: str | None,
    insecure: bool,
    accounts: str = "auto",
    account_link: str | None = None,
    role: str = "single",
    replica: int = 0,
    redis_url: str | None = None,
    repl: str | None = None,
    advertise: str | None = None,
) -> None:
    """Run one engine shard: the single writer of the pairs that hash to it."""
    from shardex.node.shard import ShardConfig, run_shard

    n = resolve_shards(shards)
    m = resolve_accounts(accounts)
    i = resolve_shard_index(index)
    if not 0 <= i < n:
        raise click.UsageError(
            f"shard index {i} out of range for {n} shards "
            "(under honcho, SHARDEX_SHARDS must match -c engine=N)"
        )
    if max_backlog < 1:
        raise click.UsageError("--max-backlog must be >= 1")
    keys = process_keys_dir("engine", data_dir, keys_dir, insecure)
    markets = _markets(markets_file)
    if data_dir:
        # Another N than the data was written with re-maps pairs and forward chains (refused);
        # the shard's recovery checks its own journal's record and rebuilt state again.
        _check_data_dir(data_dir, n, markets, accounts=m)
    layout = Layout(host, base_port, n, resolve_routers(routers))
    if role == "auto":
        _check_role_auto(data_dir, redis_url, fsync)
        direct = direct or layout.replica_direct(i, replica)
        pub = pub or layout.replica_pub(i, replica)
        if metrics_port is None:
            metrics_port = layout.replica_metrics(i, replica)
    cfg = ShardConfig(
        index=i,
        shards=n,
        router=None if router_ep == "none" else (router_ep or layout.backends),
        direct=direct or layout.direct(i),
        pub=pub or layout.pub(i),
        markets=markets,
        max_backlog=max_backlog,
        pin=not no_pin,
        cpu=cpu,
        journal_dir=os.path.join(data_dir, f"shard-{i}") if data_dir else None,
        fsync=fsync,
        snapshot_every=max(1, snapshot_every or snapshot_every_default()),
        snapshot_interval=snapshot_interval or snapshot_interval_default(),
        pub_hwm=max(1, pub_hwm),
        metrics_port=layout.shard_metrics_port(i) if metrics_port is None else metrics_port,
        keys_dir=keys,
        accounts=m,
        account_link=(
            account_link
            # replicated: each replica its own (a new leader must not need the port a paused,
            # deposed one may still hold); account shards connect to both (``--engine-links``)
            or Layout(host, base_port, n, accounts=m).replica_account_link(
                i, replica if role == "auto" else 0
            )
        )
        if m
        else None,
    )
    if role == "auto" or advertise:  # what the routers' topology and the bridge connect to
        announce = {}
        for name, ep in (("direct", cfg.direct), ("pub", cfg.pub)):
            if ep:
                announce[name] = advertised(ep, advertise, f"--{name}")
        cfg.extra = {**cfg.extra, **announce}
    if role == "auto":
        from shardex.node.replica import replica_dir
        from shardex.node.shard import run_replicated

        cfg.journal_dir = replica_dir(data_dir, i, replica)  # type: ignore[arg-type]
        repl = repl or layout.repl(i, replica)
        repl_at = advertised(repl, advertise, "--repl")
        try:
            run_replicated(cfg, replica, redis_url, repl, repl_at)  # type: ignore[arg-type]
        except JournalError as exc:
            raise click.ClickException(str(exc)) from None
        return
    try:
        run_shard(cfg)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option(
    "--shards",
    default="auto",
    help="Number of engine shards 1..100, or 'auto' [default: auto = usable cores].",
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
@click.option(
    "--routers",
    type=click.IntRange(1, MAX_ROUTERS),
    default=1,
    show_default=True,
    envvar="SHARDEX_ROUTERS",
    help="Router processes in front of the same shards (clients spread over them: give them "
    "every router's endpoint, comma-separated, as printed).",
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
@click.option("--no-bridge", is_flag=True, help="Start neither Redis nor the bridge.")
@click.option("--pub-hwm", type=int, default=None, help="Shards' PUB high-water mark.")
@click.option(
    "--prometheus-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a prometheus.yml scraping this cluster's exporters to this path.",
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
@click.option(
    "--accounts",
    type=click.IntRange(0, 100),
    default=1,
    show_default=True,
    help="Account shards M: balances, holds before matching, settlement after (deposit "
    "before trading: shardex deposit). 0: the tier is off, orders are unfunded.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="Processes per shard: 2 = a primary and a hot standby with their own journals "
    "(DATA_DIR/shard-I and DATA_DIR/shard-I.r1; DATA_DIR/accounts-J and accounts-J.r1) and a "
    "Redis lease each (needs Redis), for engine and account shards; 1: one process "
    "per shard.",
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
    keys_dir: str | None,
    insecure: bool,
    accounts: int = 0,
    replicas: int = 1,
) -> None:
    """Start a local cluster (router + N shards), print endpoints, run until Ctrl-C.

    Secure by default: on first start the cluster's keys and an admin key are created in
    DATA_DIR/keys (clients and the CLI find DATA_DIR/keys/admin.key by themselves); every
    process authenticates with them. --ephemeral keeps its keys in a temp dir for the run.
    """
    from shardex.node.supervisor import Supervisor, build_children, port_free

    n = _up_shards(shards)
    try:
        layout = Layout(host, base_port, n, routers, accounts)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    markets = _markets(markets_file)  # fail fast on a bad markets file, before starting anything
    idle = idle_shards_warning(markets, n)
    if idle:  # (said first: also when the start fails below)
        click.echo(idle, err=True)
    ports = layout.ports()
    if redis_url or no_bridge:
        ports.remove(layout.redis_port)
    if replicas > 1:
        if no_bridge or ephemeral:
            raise click.UsageError(
                "--replicas 2 needs Redis for the lease (no --no-bridge) and journals "
                "(no --ephemeral)"
            )
        try:
            ports += layout.replica_ports()
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    taken = None if ephemeral else endpoints.in_use(data_dir)
    if taken:
        raise click.ClickException(taken)
    busy = [p for p in ports if not port_free(host, p)]
    if busy:
        raise click.ClickException(
            f"ports already in use on {host}: {', '.join(map(str, busy[:8]))} "
            "(is another cluster running? use --base-port)"
        )
    if not ephemeral:
        _check_data_dir(data_dir, n, markets, accounts=accounts)
    if prometheus_config:
        from shardex.metrics import prometheus_config as render

        with open(prometheus_config, "w") as fh:
            fh.write(render(layout, replicas=replicas))
        click.echo(f"wrote {prometheus_config} (prometheus --config.file={prometheus_config})")
    keys, temp_keys = _up_keys(data_dir, keys_dir, ephemeral, insecure)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    sup = Supervisor(
        build_children(
            layout,
            markets_file,
            max_backlog,
            not no_pin,
            level,
            None if ephemeral else os.path.abspath(data_dir),
            fsync,
            redis=None if no_bridge else (redis_url or "embedded"),
            pub_hwm=pub_hwm,
            keys_dir=keys,
            replicas=replicas,
        )
    )

    redis = None if no_bridge else (redis_url or layout.redis_url)

    def ready() -> None:
        _print_endpoints(layout, redis, keys, temp_keys, replicas)

    recorded = _record_endpoints(data_dir, layout, replicas, redis, keys)
    try:
        rc = sup.run(on_ready=ready)
    finally:
        if recorded:
            endpoints.mark_stopped(data_dir, os.getpid())
        if temp_keys:
            import shutil

            shutil.rmtree(keys or "", ignore_errors=True)
    sys.exit(rc)


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
    from shardex.auth import AuthError, KeyStore

    temp = False
    if keys_dir:
        path = os.path.abspath(keys_dir)
    elif ephemeral:
        import tempfile

        path, temp = tempfile.mkdtemp(prefix="shardex-keys-"), True
    else:
        path = os.path.abspath(os.path.join(data_dir, "keys"))
    try:
        if KeyStore(path).init():
            click.echo(f"created the cluster's keys and an admin key in {path}")
    except (AuthError, OSError) as exc:
        raise click.ClickException(f"key store {path}: {exc}") from None
    return path, temp


def _print_endpoints(
    layout: Layout, redis_url: str | None, keys: str | None = None, temp_keys: bool = False,
    replicas: int = 1,
) -> None:
    from shardex.auth import ADMIN_KEY_FILE
    from shardex.client import Client, ShardexError

    admin = os.path.join(keys, ADMIN_KEY_FILE) if keys else None
    registered = []  # per router: the shards registered with it
    recovering: dict[str, Any] = {}  # slot name → its replay estimate (``shardex.recovery``)
    for j in range(layout.routers):
        shards_up = 0
        with Client(layout.router_frontend(j), timeout=1.0, key=admin or False) as c:
            for _ in range(20):
                try:
                    info = c.topology()
                except ShardexError:
                    continue
                shards_up = sum(1 for t in info["topology"] if t.get("pid"))
                recovering = info.get("recovering") or {}
                if shards_up == layout.shards:
                    break
                time.sleep(0.25)
        registered.append(shards_up)
    unlinked: list[int] = []  # account shards not yet heard from by every engine shard
    if layout.accounts:  # "ready" includes the account links: a forward sent before waits
        with Client(layout.frontend, timeout=1.0, key=admin or False) as c:
            for _ in range(40):
                try:
                    sts = c.account_status()
                except ShardexError:
                    sts = []
                want = list(range(layout.shards))
                linked = [list(st.get("engines_linked", ())) == want for st in sts]
                unlinked = [j for j in range(layout.accounts) if j >= len(sts) or not linked[j]]
                if not unlinked:
                    break
                time.sleep(0.25)
    lines = [f"shardex cluster: {layout.shards} shard(s), {min(registered)} registered"]
    if recovering:
        lines[0] += (f"; recovering (answering 'recovering' meanwhile, see shardex status): "
                     f"{'; '.join(recovery_describe(v) for v in recovering.values())}")  # fmt: skip
    if layout.routers > 1:
        lines[0] += f" with each of {layout.routers} routers"
    w = 19 if layout.routers == 1 else 22
    for j in range(layout.routers):
        name = "router" if layout.routers == 1 else f"router {j}"
        lines += [
            f"  {name + ' (clients)':<{w}}{layout.router_frontend(j)}",
            f"  {name + ' (shards)':<{w}}{layout.router_backend(j)}",
            f"  {name + ' metrics':<{w}}http://{layout.host}:{layout.router_metrics(j)}/metrics",
        ]
    if layout.routers > 1:
        lines.append(f"  clients connect to {layout.frontends}")
    for i in range(layout.shards):
        lines.append(
            f"  shard {i:<3} direct   {layout.direct(i)}   events (PUB) {layout.pub(i)}"
            f"   metrics http://{layout.host}:{layout.shard_metrics_port(i)}/metrics"
        )
        if replicas > 1:  # (whichever of the two leads serves; the other answers not_leader)
            lines.append(
                f"    replica 1 direct   {layout.replica_direct(i, 1)}   events (PUB) "
                f"{layout.replica_pub(i, 1)}   metrics "
                f"http://{layout.host}:{layout.replica_metrics(i, 1)}/metrics"
            )
    for j in range(layout.accounts):
        lines.append(
            f"  accounts {j:<3} direct {layout.account_direct(j)}   balances (PUB) "
            f"{layout.account_pub(j)}   metrics "
            f"http://{layout.host}:{layout.account_metrics_port(j)}/metrics"
        )
        if replicas > 1:
            lines.append(
                f"    replica 1 direct   {layout.account_replica_direct(j, 1)}   balances (PUB) "
                f"{layout.account_replica_pub(j, 1)}   metrics "
                f"http://{layout.host}:{layout.account_replica_metrics(j, 1)}/metrics"
            )
    if replicas > 1:
        lines.append("  replicas           2 per shard: shardex status shows who leads")
    if layout.accounts:
        lines.append(
            "  money first        shardex deposit ACCOUNT ASSET AMOUNT (orders hold funds; "
            "--accounts 0: no account tier)"
        )
    if unlinked:
        lines.append(
            f"  WARNING            account shard(s) {', '.join(map(str, unlinked))} not linked "
            "to every engine shard yet (see their log)"
        )
    if redis_url:
        from shardex.redisauth import mask_url

        lines.append(
            f"  redis (events)     {mask_url(redis_url)}   streams shardex:events:<shard>, "
            "shardex:trades:<SYMBOL>"
            + (", shardex:balances:<account shard>" if layout.accounts else "")
        )
        if keys and redis_url == layout.redis_url:
            lines.append(
                f"  redis users        reader (read-only), consumer (consumer groups); "
                f"passwords in {keys}/redis.json"
            )
        lines.append(
            f"  bridge metrics     http://{layout.host}:{layout.bridge_metrics_port}/metrics"
        )
    if keys:
        temp = " (temporary: deleted at exit)" if temp_keys else ""
        lines.append(f"  keys               {keys}{temp}")
        lines.append(
            f"  admin key          {admin}"
            + (f"  (clients: export SHARDEX_KEY={admin})" if temp_keys else "")
        )
        lines.append("  add a trader       shardex keys add --account NAME (a key file for them)")
    else:
        lines.append(INSECURE_WARNING)
    lines.append("Ctrl-C stops everything.")
    click.echo("\n".join(lines), err=False)
    sys.stdout.flush()


@main.command()
@endpoint_option
@host_option
@base_port_option
@click.option(
    "--redis-url",
    default=None,
    envvar="SHARDEX_REDIS_URL",
    help="Redis to write to [default: the embedded one of the layout, base+4].",
)
@markets_option
@click.option(
    "--maxlen",
    type=int,
    default=0,
    show_default=True,
    help="Approximate MAXLEN per stream (0: keep everything).",
)
@click.option("--batch", type=int, default=2000, show_default=True, help="Events per write.")
@click.option(
    "--sub-hwm",
    type=int,
    default=1_000_000,
    show_default=True,
    help="SUB high-water mark (messages); drops past it are repaired by seq.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Prometheus exporter port [layout: base+3]; 0 disables it.",
)
@click.option(
    "--stall-after",
    type=click.FloatRange(0.5),
    default=5.0,
    show_default=True,
    help="Seconds a reachable shard may stay ahead of Redis without progress before an ALERT "
    "(log line and shardex_bridge_stalled=1).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.05),
    default=0.5,
    show_default=True,
    help="Seconds between asking each shard its seq (catches events PUB dropped at the tail).",
)
@click.option(
    "--data-dir",
    default=None,
    envvar="SHARDEX_DATA_DIR",
    help="The cluster's data dir (keys in DATA_DIR/keys).",
)
@keys_dir_option
@insecure_option
def bridge(
    endpoint: str | None,
    host: str,
    base_port: int,
    redis_url: str | None,
    markets_file: str | None,
    maxlen: int,
    batch: int,
    sub_hwm: int,
    metrics_port: int | None,
    stall_after: float,
    poll_interval: float,
    data_dir: str | None,
    keys_dir: str | None,
    insecure: bool,
) -> None:
    """Write every shard's events to Redis Streams, in order, exactly once.

    shardex:events:<shard> gets every event, shardex:trades:<SYMBOL> one entry per trade;
    entry IDs are <seq>-0, so nothing is ever written twice.
    """
    from shardex.node.bridge import BridgeConfig, run_bridge

    keys = process_keys_dir("bridge", data_dir, keys_dir, insecure)
    layout = Layout(host, base_port)
    secure = {"keys_dir": keys} if keys else {}  # (an older BridgeConfig has no keys_dir)
    run_bridge(
        BridgeConfig(
            **secure,
            router=endpoint or layout.frontend,
            redis_url=redis_url or _bridge_redis_url(layout.redis_url, keys),
            markets=_markets(markets_file),
            maxlen=max(0, maxlen),
            batch=max(1, batch),
            sub_hwm=max(1, sub_hwm),
            metrics_port=layout.bridge_metrics_port if metrics_port is None else metrics_port,
            stall_after=stall_after,
            poll_interval=poll_interval,
        )
    )


def _bridge_redis_url(url: str, keys: str | None) -> str:
    """The embedded Redis as the bridge reaches it: as user ``bridge`` when the cluster has
    keys (the password is read from the keys dir, never put on a command line)."""
    if not keys:
        return url
    from shardex.redisauth import bridge_url

    return bridge_url(url)


@main.command("redis")
@host_option
@base_port_option
@click.option(
    "--data-dir",
    default=None,
    envvar="SHARDEX_DATA_DIR",
    help="AOF goes to DATA_DIR/redis (none: in memory only); ACL users from DATA_DIR/keys.",
)
@keys_dir_option
@insecure_option
def redis_cmd(
    host: str, base_port: int, data_dir: str | None, keys_dir: str | None, insecure: bool
) -> None:
    """Run the embedded Redis-compatible server on the layout's port (base+4).

    With keys (the default): ACL users ``bridge`` (writes the streams), ``reader`` (reads),
    ``consumer`` (consumer groups) and ``lease``, passwords in KEYS_DIR/redis.json, no
    anonymous access (docs/redis.md). Needs redis-server/valkey-server >= 7.0.
    """
    from shardex.node.supervisor import embedded_redis_argv, run_filtered

    keys = process_keys_dir("redis", data_dir, keys_dir, insecure)
    data = os.path.abspath(data_dir) if data_dir else None
    sys.exit(run_filtered(embedded_redis_argv(Layout(host, base_port), data, keys)))


@main.command()
@click.argument("symbol")
@client_host_option
@client_base_port_option
@click.option(
    "--redis-url",
    default=None,
    envvar="SHARDEX_REDIS_URL",
    help="Redis to read [default: the embedded one of the layout].",
)
@click.option("--from-start", is_flag=True, help="Print the stream from its first entry.")
@click.option("--count", type=int, default=0, help="Stop after this many trades (0: follow).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per trade.")
@markets_option
@_store_opts
def tail(
    symbol: str,
    host: str | None,
    base_port: int | None,
    redis_url: str | None,
    from_start: bool,
    count: int,
    as_json: bool,
    markets_file: str | None,
    data_dir: str,
    keys_dir: str | None,
) -> None:
    """Follow SYMBOL's trades live from Redis (shardex:trades:SYMBOL, XREAD BLOCK).

    Each line carries read_at, the UTC time it was read (stream IDs are <seq>-0, not times).
    Reads as the Redis user ``reader`` (password from DATA_DIR/keys/redis.json) when the
    cluster has one; --redis-url redis://USER:PASS@HOST:PORT/0 gives other credentials.
    """
    from shardex.tools.tail import TailError, connect, follow, trade_line

    try:
        default = find_redis(host, base_port, data_dir).endpoint
        r = connect(redis_url, default, keys_dir_of(data_dir, keys_dir))
    except (TailError, EndpointsFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    err = sys.stderr  # (click.get_text_stream is deprecated in click 8.5)

    def waiting(msg: str) -> None:
        err.write(msg + "\n")
        err.flush()

    try:
        for rec in follow(r, symbol, _markets(markets_file), from_start, count, waiting):
            click.echo(json.dumps(rec) if as_json else trade_line(rec))
    except TailError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.command()
@endpoint_option
@client_host_option
@client_base_port_option
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Open loop: orders/s offered (latency from intended send time).",
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Closed loop: connections (per generator process).",
)
@click.option(
    "--window",
    type=int,
    default=8,
    show_default=True,
    help="Closed loop: frames in flight per connection.",
)
@click.option(
    "--batch",
    type=int,
    default=100,
    show_default=True,
    help="Orders per frame (open loop: at most, of those due).",
)
@click.option(
    "--duration",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds of load (ignored when --orders is given).",
)
@click.option("--orders", type=int, default=None, help="Send exactly this many commands.")
@click.option(
    "--symbols", type=int, default=2, show_default=True, help="Trade the first K built-in markets."
)
@click.option("--accounts", type=int, default=100, show_default=True)
@click.option(
    "--mix",
    default=DEFAULT_MIX_TEXT,
    show_default=True,
    help="Weights of limit/ioc/market/cancel/amend.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--direct", is_flag=True, help="Send straight to the shards (skip the router).")
@click.option(
    "--procs",
    type=int,
    default=1,
    show_default=True,
    help="Generator processes (their histograms are merged).",
)
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds before an unanswered frame counts as timed out.",
)
@click.option(
    "--fate-wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds after the load to keep asking (with back-off) the fates of orders whose "
    "outcome stayed open; then they count as unknown, with the reason.",
)
@click.option(
    "--max-error-rate",
    type=float,
    default=0.01,
    show_default=True,
    help="Exit 1 when (timeouts + batch errors) / sent exceeds this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the JSON report to this file.",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option(
    "--risk",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="on: orders go through the account shards (@account routing; a default shardex up "
    "runs one); off: straight to the engine shards (only a cluster started with --accounts 0 "
    "takes them); auto: on iff the cluster has account shards.",
)
@click.option(
    "--fund/--no-fund",
    default=True,
    show_default=True,
    help="With risk on: top every account up with admin deposits before sending.",
)
@key_option
def loadgen(
    endpoint: str | None,
    host: str | None,
    base_port: int | None,
    rate: float | None,
    concurrency: int,
    window: int,
    batch: int,
    duration: float,
    orders: int | None,
    symbols: int,
    accounts: int,
    mix: str,
    seed: int,
    direct: bool,
    procs: int,
    timeout: float,
    fate_wait: float,
    max_error_rate: float,
    as_json: bool,
    out: str | None,
    quiet: bool,
    risk: str,
    fund: bool,
    key_file: str | None,
) -> None:
    """Drive the cluster with orders and report throughput and latency percentiles.

    Orders are for accounts acct-0.. (--accounts): the key must be an admin key (the default:
    DATA_DIR/keys/admin.key) or a trader key holding those accounts.
    """
    from shardex.tools.loadgen import LoadConfig, LoadError, format_progress, format_report, run

    found = _router(endpoint, host, base_port)
    try:
        cfg = LoadConfig(
            endpoint=found.endpoint,
            rate=rate,
            concurrency=concurrency,
            window=window,
            batch=batch,
            duration=None if orders is not None else duration,
            orders=orders,
            symbols=symbols,
            accounts=accounts,
            mix=mix,
            seed=seed,
            direct=direct,
            procs=procs,
            timeout=timeout,
            fate_wait=fate_wait,
            key=key_file,
            risk=risk,
            fund=fund,
        )
        err = sys.stderr  # (click.get_text_stream is deprecated in click 8.5)

        def progress(p) -> None:
            if not quiet:
                err.write("\r" + format_progress(p))
                err.flush()

        rep = run(cfg, on_progress=progress)
    except LoadError as exc:
        msg = str(exc)
        raise click.ClickException(explain(msg, found) if connection_error(msg) else msg) from None
    if not quiet:
        click.echo("", err=True)
    report = rep.to_dict()
    if out:
        with open(out, "w") as fh:
            json.dump(report, fh, indent=2)
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in format_report(report):
            click.echo(line)
    if rep.interrupted:
        click.echo(f"interrupted after {report['seconds']:.2f}s: partial report above", err=True)
        sys.exit(130)
    sent = max(1, rep.sent)
    if rep.error_count / sent > max_error_rate:
        click.echo(
            f"error rate {rep.error_count / sent:.2%} > --max-error-rate {max_error_rate:.2%}",
            err=True,
        )
        sys.exit(1)


def _router(endpoint: str | None, host: str | None, base_port: int | None) -> Found:
    """The router a client command talks to (shardex.endpoints: flags, then the endpoints file
    ``shardex up`` wrote, then the default layout); a broken endpoints file is one line."""
    try:
        return find_router(endpoint, host, base_port)
    except EndpointsFileError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # a base port the layout cannot have
        raise UsageLineError(f"--base-port: {exc}") from None


@contextlib.contextmanager
def _client(
    endpoint: str | None, host: str | None, base_port: int | None, timeout: float,
    key_file: str | None,
) -> Iterator[Any]:
    """A ``Client`` for a command; a connection error comes out naming the endpoint tried,
    where it came from and the likely cause (``shardex.endpoints.explain``)."""
    from shardex.client import Client, ShardexError

    found = _router(endpoint, host, base_port)
    try:
        with Client(found.endpoint, timeout=timeout, key=client_key(key_file)) as c:
            yield c
    except ShardexError as exc:
        if not connection_error(str(exc)):
            raise
        raise click.ClickException(explain(str(exc), found)) from None


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


@main.command()
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
    from shardex.client import ShardexError

    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            b = c.book(symbol, depth)
    except ShardexError as exc:
        _fail(exc)
    if "error" in b:
        raise click.ClickException(b["error"])
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
        left = f"{bid[2]:>10} {bid[1]!s:>16} {bid[0]!s:>14}" if bid else " " * 42
        right = f"{ask[0]!s:<14} {ask[1]!s:<16} {ask[2]:<6}" if ask else ""
        click.echo(f"{left} | {right}")
    if not b["bids"] and not b["asks"]:
        click.echo("(empty book)")


def _down(error: str) -> str:
    """A shard's state column when its status read failed: replaying its journal, or down."""
    return "RECOVER" if f"{ERR_RECOVERING}: " in error else "DOWN"


@main.command()
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@key_option
def status(
    endpoint: str | None,
    host: str | None,
    base_port: int | None,
    timeout: float,
    as_json: bool,
    key_file: str | None,
) -> None:
    """Show every shard's status: seq, resting orders, backlog, uptime; and every account
    shard's: seq, accounts, open orders, link gaps, anomalies, journal."""
    from shardex.client import ShardexError

    try:
        with _client(endpoint, host, base_port, timeout, key_file) as c:
            topo = c.topology()
            shards = c.status()
            accounts = c.account_status()
            secure = c.key is not None  # a keyless client got in: the cluster is insecure
            pairs = pairs_by_shard(c.markets, topo["shards"])  # (the cluster's table, learned)
    except ShardexError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"router": topo, "shards": shards, "accounts": accounts,
                               "secure": secure, "pairs": pairs}, default=str))  # fmt: skip
        return
    if not secure:
        click.echo(INSECURE_WARNING)
    click.echo(
        f"router pid {topo['pid']}: {topo['shards']} shard(s), forwarded "
        f"{sum(topo['forwarded'])}, rejected {topo['rejected']}"
    )
    hdr = (
        f"{'shard':>5} {'state':<7} {'pid':>7} {'cpu':>4} {'seq':>10} {'resting':>9} "
        f"{'commands':>10} {'backlog':>7} {'shed':>6} {'uptime':>9} engine"
    )
    click.echo(hdr)
    for st in shards:
        if "error" in st:
            click.echo(f"{st['shard']:>5} {_down(st['error']):<7} {st['error']}")
            continue
        click.echo(
            f"{st['shard']:>5} {'up':<7} {st['pid']:>7} {_s(st.get('cpu')):>4} "
            f"{st['seq']:>10} {st['resting']:>9} {st['commands']:>10} "
            f"{st['backlog']:>7} {st['shed']:>6} {st['uptime_s']:>8.0f}s "
            f"{st.get('engine', '-')}"
        )
        _replica_line(st)
        if isinstance(st.get("shard"), int) and 0 <= st["shard"] < len(pairs):
            click.echo(f"{'':>5} pairs {', '.join(pairs[st['shard']]) or 'none (idle)'}")
    if accounts:  # the account tier (issue 14)
        click.echo(
            f"{'acct':>5} {'state':<7} {'seq':>10} {'accounts':>9} {'open':>8} "
            f"{'commands':>10} {'gaps':>5} {'anomal.':>7} journal"
        )
    for st in accounts:
        if "error" in st:
            click.echo(f"{st['shard']:>5} {_down(st['error']):<7} {st['error']}")
            continue
        click.echo(
            f"{st['account_shard']:>5} {'up':<7} {st['seq']:>10} {st['accounts']:>9} "
            f"{st['open_orders']:>8} {st['commands']:>10} {st['gaps']:>5} "
            f"{st['anomalies']:>7} {st['journal']}"
        )
        _replica_line(st)


def _replica_line(st: dict[str, Any]) -> None:
    """A replicated shard's (engine or account, issue 15) lease and replication state."""
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



# -- the account tier (issue 14, phase 1) --------------------------------------------------------


@main.command()
@click.option("--shard", "index", type=int, default=None,
              help="This account shard J (0..M-1) [under honcho: accounts.K → K-1].")  # fmt: skip
@click.option(
    "--shards",
    default=None,
    envvar="SHARDEX_ACCOUNTS",
    help="Account shards M, or 'auto' under honcho (the -c accounts=M it was started with). "
    "0: the account tier is off and this process only waits (so honcho keeps the rest up).",
)
@click.option("--engines", default="1", show_default=True, envvar="SHARDEX_SHARDS",
              help="Engine shards N (symbol → crc32 % N), or 'auto' under honcho.")  # fmt: skip
@click.option("--routers", default="1", show_default=True, envvar="SHARDEX_ROUTERS",
              help="Routers in the layout (connects to all), or 'auto' under honcho.")  # fmt: skip
@host_option
@base_port_option
@click.option(
    "--router",
    "router_ep",
    default=None,
    callback=_endpoint_cb,
    help="Router backend endpoint(s), comma-separated [layout].",
)
@click.option(
    "--engine-links",
    default=None,
    help="Each engine shard's account link endpoint, comma-separated [layout]; a replicated "
    "engine shard (--role auto) gives both replicas' endpoints joined by '+' "
    "(tcp://a:5955+tcp://b:7155): the account shard follows whichever leads.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="Processes per engine shard, for the layout's --engine-links: 2 connects to both "
    "replicas' links of each engine shard (as shardex up --replicas 2 does).",
)
@replica_options("accounts-J", "shardex:lease:accounts-J")
@markets_option
@click.option(
    "--data-dir",
    default=None,
    envvar="SHARDEX_DATA_DIR",
    help="Journal and snapshots go to DATA_DIR/accounts-J (recovered at start).",
)
@fsync_option
@click.option("--metrics-port", type=int, default=None,
              help="Prometheus exporter port [layout: base+500+J]; 0 disables it.")  # fmt: skip
@click.option(
    "--pub",
    "pub_ep",
    default=None,
    help="Bind endpoint of the balance-event PUB (for the bridge) [layout: base+600+J].",
)
@click.option("--direct", "direct_ep", default=None,
              help="Bind endpoint for the bridge's status and re-send requests "
              "[layout: base+700+J].")  # fmt: skip
@keys_dir_option
@insecure_option
def accounts(
    index: int | None,
    shards: str | None,
    engines: str,
    routers: str,
    host: str,
    base_port: int,
    router_ep: str | None,
    engine_links: str | None,
    markets_file: str | None,
    data_dir: str | None,
    fsync: str,
    metrics_port: int | None,
    pub_ep: str | None,
    direct_ep: str | None,
    keys_dir: str | None,
    insecure: bool,
    replicas: int = 1,
    role: str = "single",
    replica: int = 0,
    redis_url: str | None = None,
    repl: str | None = None,
    advertise: str | None = None,
) -> None:
    """Run account shard J of M: balances and holds of the accounts with crc32 % M == J.

    Under honcho (the Procfile's ``accounts: shardex accounts``) J comes from the process name
    and M from SHARDEX_ACCOUNTS (``auto``: ``honcho start -c accounts=M``). With M = 0 the
    process says so and waits for SIGTERM: honcho stops every process when one exits."""
    from shardex.node.accounts import AccountsConfig, run_accounts

    if shards is None:
        if honcho_index() is None:
            raise click.UsageError("--shards M is required (or SHARDEX_ACCOUNTS)")
        shards = "auto"  # a Procfile without SHARDEX_ACCOUNTS: honcho's -c accounts=M (default 1)
    m = resolve_accounts(shards, "--shards")
    if m == 0:
        _idle_off()
        return
    if index is None:
        index = honcho_index()
        if index is None:
            raise click.UsageError("--shard is required (or run under honcho: accounts.K)")
    if not 0 <= index < m:
        raise click.UsageError(
            f"account shard {index} out of range for {m} (under honcho, -c accounts=M must "
            "match SHARDEX_ACCOUNTS unless it is auto)"
        )
    n = resolve_shards(engines)
    keys = process_keys_dir("accounts", data_dir, keys_dir, insecure)
    if data_dir:
        _check_data_dir(data_dir, n, _markets(markets_file), accounts=m)
    layout = Layout(host, base_port, n, resolve_routers(routers), accounts=m)
    default_links = layout.replica_account_links if replicas > 1 else layout.account_links
    links = (engine_links or default_links).split(",")
    if len(links) != n:
        raise click.UsageError(f"--engine-links: {len(links)} endpoints for {n} engines")
    for link in links:
        ends = link.split(LINK_REPLICAS)
        if len(ends) > 2:
            raise click.UsageError(
                f"--engine-links: {link!r} names {len(ends)} replicas (at most 2, joined by "
                f"'{LINK_REPLICAS}')"
            )
        for ep in ends:
            check_endpoint(ep, "--engine-links")
    if role == "auto":
        _check_role_auto(data_dir, redis_url, fsync)
        direct_ep = direct_ep or layout.account_replica_direct(index, replica)
        pub_ep = pub_ep or layout.account_replica_pub(index, replica)
        if metrics_port is None:
            metrics_port = layout.account_replica_metrics(index, replica)
    cfg = AccountsConfig(
        index=index,
        shards=m,
        engines=n,
        router=router_ep or layout.backends,
        engine_links=links,
        markets=_markets(markets_file),
        journal_dir=os.path.join(data_dir, f"accounts-{index}") if data_dir else None,
        fsync=fsync,
        metrics_port=layout.account_metrics_port(index) if metrics_port is None else metrics_port,
        keys_dir=keys,
        pub=pub_ep or layout.account_pub(index),
        direct=direct_ep or layout.account_direct(index),
    )
    if role == "auto" or advertise:  # what the routers' topology and the bridge connect to
        for name, ep in (("direct", cfg.direct), ("pub", cfg.pub)):
            if ep:
                cfg.extra[name] = advertised(ep, advertise, f"--{name}")
    try:
        if role == "auto":
            from shardex.node.accounts import run_replicated_accounts
            from shardex.node.replica import replica_dir

            cfg.journal_dir = replica_dir(data_dir, index, replica, "accounts")  # type: ignore[arg-type]
            repl = repl or layout.account_repl(index, replica)
            repl_at = advertised(repl, advertise, "--repl")
            run_replicated_accounts(cfg, replica, redis_url, repl, repl_at)  # type: ignore[arg-type]
        else:
            run_accounts(cfg)
    except (JournalError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _idle_off() -> None:
    """The account tier is off (M = 0): one clear line, then wait for SIGTERM/SIGINT and exit
    0 (under honcho an exiting process would stop the whole cluster)."""
    from shardex.wire.transport import StopFlag

    logging.getLogger("shardex.accounts").warning(
        "account tier off (SHARDEX_ACCOUNTS=0): no account shard runs here; this process only "
        "waits. To run M account shards: honcho start -c accounts=M (SHARDEX_ACCOUNTS=auto), "
        "or shardex up --accounts M"
    )
    stop = StopFlag.install()
    while not stop:
        time.sleep(0.2)


def _transfer(kind: str, account, asset, amount, ref, endpoint, host, base_port, timeout, key_file):
    from shardex.client import ShardexError

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
    @main.command(name=kind, cls=_AmountCommand,
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


@main.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_option
def balance(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """Show ACCOUNT's balances per asset (available, held by open orders)."""
    from shardex.client import ShardexError

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


@main.command()
@client_options
@key_option
def audit(endpoint, host, base_port, timeout, key_file) -> None:
    """Check conservation on a live cluster: per asset, over every account shard,
    balances + fees == deposits - withdrawals, and each shard's own integrity; then order
    by order, that every live order in every book is covered by its hold and every hold by
    a live order. Exit 1 on a violation, a settlement anomaly, or a shard that cannot
    answer."""
    from shardex.client import ShardexError, audit_report

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
    click.echo(f"audit: {'ok' if ok else 'FAILED'} ({len(shards)} account shards)")
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("account")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, one per order.")
@key_option
def orders(account, endpoint, host, base_port, timeout, as_json, key_file) -> None:
    """List ACCOUNT's open orders and what each holds (an admin or reader key, or the
    account's own): symbol, id, side, price, open quantity, held amount and asset, amends in
    flight. An order holds funds from the moment its account shard takes it until it ends."""
    from shardex.client import ShardexError

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

document_env(main)  # last: every command is defined

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
