"""``shardex reshard --shards N``: spread the pairs over N engine shards of a running cluster,
one live move at a time (``shardex.tools.reshard``)."""

from __future__ import annotations

import asyncio
import json

import click

from shardex.cli.base import client_key
from shardex.cli.connect import find
from shardex.cli.move import _store
from shardex.cli.options import client_options, key_option
from shardex.client import AsyncClient, ShardexError
from shardex.endpoints import connection_error, explain
from shardex.layout import MAX_SHARDS
from shardex.placement.reshard import ReshardError, ReshardPlan
from shardex.placement.store import StoreError
from shardex.tools.mover import MoveError
from shardex.tools.reshard import after_plan
from shardex.tools.reshard import reshard as run_reshard
from shardex.tools.scale import supervisor_of


@click.command()
@click.option("--shards", "n", type=click.IntRange(1, MAX_SHARDS), required=True, metavar="N",
              help="Place the pairs on engine shards 0..N-1; under shardex up start or stop "
                   "shard processes to run N of them.")
@click.option("--dry-run", is_flag=True, help="Show the plan (the moves, then each shard's "
              "pairs) and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="The cluster's data dir: record each move in its placement map "
                   "(placement.json), so a restart keeps the pairs where they went; its "
                   "endpoints.json names the shardex up that starts and stops shard processes "
                   "[$SHARDEX_DATA_DIR, ./data].")
@click.option("--redis", "redis_url", default=None, metavar="URL",
              help="Record the moves in the placement map kept in this Redis instead.")
@client_options
@key_option
def reshard(n: int, dry_run: bool, as_json: bool, data_dir: str | None, redis_url: str | None,
            endpoint: str | None, host: str | None, base_port: int | None, timeout: float,
            key_file: str | None) -> None:  # fmt: skip
    """Spread the pairs over N engine shards of a running cluster, live (an admin key on a
    secure cluster).

    Each pair goes to its rendezvous default over N shards: growing N moves only the pairs
    that go to a new shard, shrinking empties shards N and up. On a cluster started by
    shardex up growing first starts shard processes up to N and
    shrinking stops the emptied ones after the moves (with the account tier once they settled
    with every account shard); elsewhere N is at most the running count and emptied shards
    stay up, idle. The pairs move one at a time (shardex move: a
    short `moving` window per pair, resting orders keep their ids and holds), with one
    progress line per step. Safe to re-run after any failure: a move the placement map records
    as in progress is finished first, pairs already in place are skipped.
    """
    if data_dir and redis_url:
        raise click.UsageError("--data-dir and --redis: give one placement store, not both")
    if as_json and not dry_run:
        raise click.UsageError("--json prints the plan: give it with --dry-run")
    found = find(endpoint, host, base_port)
    store = _store(data_dir, redis_url)
    sup = supervisor_of(data_dir, found.endpoint)
    say = (lambda _line: None) if as_json else click.echo

    async def run() -> ReshardPlan:
        async with AsyncClient(found.endpoint, timeout=timeout, key=client_key(key_file),
                               retry=False) as c:  # fmt: skip
            return await run_reshard(c, n, say=say, store=store, dry_run=dry_run, sup=sup)

    try:
        done = asyncio.run(run())
    except (MoveError, ReshardError) as exc:
        text = str(exc)
        if connection_error(text):
            text = explain(text, found)
        raise click.ClickException(f"{text} (run it again: it goes on from where the cluster "
                                   "stands)") from None  # fmt: skip
    except (ShardexError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(after_plan(done)))
