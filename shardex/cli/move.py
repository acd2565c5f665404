"""``shardex move PAIR --to I``: move one pair's book to engine shard I on a running cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from shardex.cli.base import client_key
from shardex.cli.connect import find
from shardex.cli.options import client_options, key_option
from shardex.client import AsyncClient, ShardexError
from shardex.coord.connect import connect, placement_store
from shardex.endpoints import connection_error, explain
from shardex.placement.store import DirStore, Store, StoreError
from shardex.tools.mover import MoveError, move_pair


@click.command()
@click.argument("pair")
@click.option("--to", "target", type=int, required=True, metavar="I",
              help="The engine shard to move PAIR to (0..N-1).")  # fmt: skip
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="The cluster's data dir: record the move in its placement map "
                   "(placement.json), so a restart keeps the pair where it went.")  # fmt: skip
@click.option("--redis", "redis_url", default=None, metavar="URL",
              help="Record the move in the placement map kept in this Redis, or etcd for "
                   "etcd://h:p,h:p (next to the leases of a replicated cluster), instead of a "
                   "data dir.")  # fmt: skip
@client_options
@key_option
def move(pair: str, target: int, data_dir: str | None, redis_url: str | None,
         endpoint: str | None, host: str | None, base_port: int | None, timeout: float,
         key_file: str | None) -> None:  # fmt: skip
    """Move PAIR's book to engine shard I, live (an admin key on a secure cluster).

    The pair's shard journals the hand-off (book, order ids, trade-id counter, recent results)
    and answers the pair with `moving` (clients retry); shard I journals the adoption; the
    placement map then pins PAIR to I and the routers send it there. Resting orders keep their
    ids and holds. One progress line per step. Safe to re-run after any failure: each step is
    decided from what the shards say now, and a step already done is skipped.
    """
    if data_dir and redis_url:
        raise click.UsageError("--data-dir and --redis: give one placement store, not both")
    found = find(endpoint, host, base_port)
    store = _store(data_dir, redis_url)

    async def run() -> dict[str, Any]:
        async with AsyncClient(found.endpoint, timeout=timeout, key=client_key(key_file),
                               retry=False) as c:  # fmt: skip
            return await move_pair(c, pair, target, say=click.echo, store=store)

    try:
        done = asyncio.run(run())
    except MoveError as exc:
        text = str(exc)
        if connection_error(text):
            text = explain(text, found)
        raise click.ClickException(f"{text} (nothing more was changed; run it again)") from None
    except (ShardexError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    if "seconds" in done:
        click.echo(f"{pair}: moved to shard {target} in {done['seconds']:.3f} s")


def _store(data_dir: str | None, redis_url: str | None) -> Store | None:
    if data_dir:
        return DirStore(data_dir)
    if redis_url:
        return placement_store(connect(redis_url))  # (etcd:// -> the map in etcd)
    return None
