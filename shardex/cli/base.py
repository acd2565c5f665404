"""What every ``shardex`` command shares: the markets file, the data-dir checks, key stores,
and the messages and checks of user input (one line, no traceback)."""

from __future__ import annotations

import logging
import os
import time

import click

from shardex.auth import KeyStore
from shardex.config import load_markets
from shardex.datadir import DataDirError, check_account_tier, check_shard_count
from shardex.engine import MarketError
from shardex.journal import JournalError
from shardex.kinds.checks import UsageLineError, advertised, check_endpoint, endpoint_cb
from shardex.layout import Layout
from shardex.placement.core import PlacementMap
from shardex.placement.load import PlacementError, map_for
from shardex.wire.transport import NO_KEY

__all__ = ["INSECURE_WARNING", "UsageLineError", "advertised", "check_data_dir",
           "check_endpoint", "checked_layout", "client_key", "endpoint_cb", "keys_dir_of",
           "markets", "open_store", "process_keys_dir"]  # fmt: skip

INSECURE_WARNING = (
    "WARNING: INSECURE cluster (--insecure): no authentication, anyone who can reach its ports "
    "can trade as any account and pose as a shard. For a lab only."
)


def markets(path: str | None):
    """The market table (built-ins plus ``--markets FILE``); a bad file is one line."""
    try:
        return load_markets(path)
    except MarketError as exc:
        raise click.ClickException(str(exc)) from exc


def checked_layout(
    host: str, base_port: int, shards: int = 1, routers: int = 1, accounts: int = 0
) -> Layout:
    """A process's default layout; a base port (or count) it cannot have is one line (exit 2)
    instead of a traceback."""
    try:
        return Layout(host, base_port, shards, routers, accounts)
    except ValueError as exc:
        raise UsageLineError(f"--base-port {base_port}: {exc}") from None


def check_data_dir(
    data_dir: str, shards: int | None, markets, accounts: int | None = None, record: bool = True
) -> None:
    """Refuse (one line, exit 1) when DATA_DIR was written with another engine shard count N
    (``shardex.datadir.check_shard_count``: recorded in DATA_DIR/shards.json, or scanned) or
    another account tier M than ``accounts`` (None: not checked). ``record``: False for a
    process that only compares with what is recorded (the router)."""
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


def placement_of(data_dir: str | None, shards: int) -> PlacementMap:
    """The placement map a process of ``shards`` shards routes by (``shardex.placement.load``):
    one line (exit 1) instead of a traceback when the stored map cannot serve it."""
    try:
        return map_for(data_dir, shards)
    except PlacementError as exc:
        raise click.ClickException(str(exc)) from None


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


def client_key(key_file: str | None):
    """``--key`` → what ``Client(key=...)`` takes: a path, False for 'none', None: default."""
    if key_file is None:
        return None
    return False if key_file.strip().lower() in NO_KEY else key_file


def open_store(data_dir: str, keys_dir: str | None, must_exist: bool = True) -> KeyStore:
    """The key store of ``--data-dir``/``--keys-dir``; one line when it must exist and
    does not."""
    found = KeyStore(keys_dir_of(data_dir, keys_dir) or "")
    if must_exist and not found.exists():
        raise click.ClickException(
            f"no key store in {found.dir} (created by `shardex up` on first start or by "
            "`shardex keys init`; use --data-dir/--keys-dir for another one)"
        )
    return found
