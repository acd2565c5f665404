"""``shardex keys``: the cluster's identities (who may connect, and act for which accounts)."""

from __future__ import annotations

import json
import os

import click

from shardex.auth import ADMIN_KEY_FILE, AuthError, KeyFile
from shardex.cli.base import UsageLineError, open_store
from shardex.cli.options import store_opts
from shardex.endpoints import EndpointsFileError
from shardex.endpoints import read as read_endpoints
from shardex.gateway.apikeys import create as create_api_key
from shardex.layout import DEFAULT_BASE_PORT


@click.group()
def keys() -> None:
    """Identity: who may connect and act for which accounts (keys in DATA_DIR/keys).

    Every connection to the cluster is authenticated with a CURVE key; the key registry says
    which accounts each key may act for. Changes take effect without a restart.
    """


@keys.command("init")
@store_opts
def keys_init(data_dir: str, keys_dir: str | None) -> None:
    """Create the cluster's keys (server key, registry, admin key) if missing."""
    store = open_store(data_dir, keys_dir, must_exist=False)
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
    type=click.Choice(["trader", "reader", "admin", "bridge", "feed"]),
    default="trader",
    show_default=True,
    help="trader: orders for its accounts + reads; reader: market data and status only; "
    "admin: everything, any account; bridge: the event stream; feed: perp index prices "
    "(shardex feed) and nothing else.",
)
@click.option("--name", default=None, help="Key name [the account; ROLE-xxxx for others].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the key file here [KEYS_DIR/NAME.key].",
)
@click.option("--api", is_flag=True, help="Also an API key (id + secret) for the gateway's "
              "signed REST API, bound to this key (KEYS_DIR/api/ID.json, mode 0600).")
@store_opts
def keys_add(
    accounts: tuple[str, ...],
    role: str,
    name: str | None,
    out: str | None,
    data_dir: str,
    keys_dir: str | None,
    api: bool = False,
) -> None:
    """Create a keypair file (mode 0600) for a user and register its public key."""
    accounts = tuple(dict.fromkeys(accounts))
    if role != "trader" and accounts:
        raise UsageLineError(f"--account is for trader keys (a {role} key has no accounts)")
    if role == "trader" and not accounts:
        raise UsageLineError("a trader key needs at least one --account")
    if name is None:
        name = "+".join(accounts) if accounts else f"{role}-{os.urandom(2).hex()}"
    store = open_store(data_dir, keys_dir, must_exist=False)
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
    kf = KeyFile.read(written)
    what = f"for account(s) {', '.join(accounts)}" if accounts else "(no accounts)"
    click.echo(f"added {role} key {name!r} {what}, key id {kf.public[:8]}…")
    click.echo(f"key file: {written} (mode 0600: it holds the secret key; give it to its user)")
    click.echo(f"use it:   {_client_hint(data_dir, written)}")
    click.echo(f"     or   SHARDEX_KEY={written} shardex status   (or --key FILE)")
    if api:
        rec = create_api_key(store.dir, written, role, list(accounts))
        click.echo(f"API key:  {rec} (mode 0600: its key_id and secret sign REST requests; "
                   "docs/gateway.md)")  # fmt: skip


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
@store_opts
def keys_list(as_json: bool, data_dir: str, keys_dir: str | None) -> None:
    """Every registered key: name, role, accounts, shard, revoked, key id (never a secret)."""
    store = open_store(data_dir, keys_dir)
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
@store_opts
def keys_revoke(target: str, data_dir: str, keys_dir: str | None) -> None:
    """Revoke the live key named TARGET (or whose public key is TARGET); its connections are
    refused from their next message (processes re-read the registry within a second)."""
    store = open_store(data_dir, keys_dir)
    hits = store.revoke(target)
    if not hits:
        raise click.ClickException(f"no live key named {target!r} or with that key id")
    for i in hits:
        click.echo(f"revoked {i.role} key {i.name!r} (key id {i.key[:8]}…)")
    if any(i.role in ("shard", "bridge") for i in hits):
        click.echo("a revoked process key is replaced by a new one when that process restarts")


# --------------------------------------------------------------------------------- cluster


def _s(v: object) -> str:
    return "-" if v is None else str(v)
