"""``shardex placement``: the placement map the cluster routes by (pair → engine shard), its
version, its pins and any move in progress; from a running router, or from a data dir's
stored map without a cluster (``--data-dir``)."""

from __future__ import annotations

import json
from typing import Any

import click

from shardex.cli.connect import client as _client
from shardex.cli.connect import fail as _fail
from shardex.cli.options import client_options, key_option
from shardex.client import ShardexError
from shardex.layout import pairs_by_shard
from shardex.placement.core import PlacementMap, initial
from shardex.placement.store import DirStore, StoreError


def router_placement(topo: dict[str, Any]) -> PlacementMap:
    """The map a router's topology reply carries (``Router.info``); the map without pins when
    it carries none (a router from before the map) or a malformed one."""
    try:
        return PlacementMap.from_wire(topo.get("placement"))
    except ValueError:
        return initial(int(topo.get("shards") or 1))


def render(placement: PlacementMap, symbols: list[str], where: str) -> list[str]:
    """The lines ``shardex placement`` prints: the map's header, then one line per shard with
    its pairs (pinned ones marked ``*``), then the moves in progress."""
    lines = [f"placement v{placement.version}: {placement.shards} shard(s), "
             f"{len(placement.pins)} pinned pair(s) ({where})"]  # fmt: skip
    known = sorted(set(symbols) | set(placement.pins))
    for i, pairs in enumerate(pairs_by_shard(known, placement.shards, placement.owner)):
        shown = " ".join(f"{s}*" if s in placement.pins else s for s in pairs)
        lines.append(f"  shard {i}: {shown or '(no pair)'}")
    for symbol, (src, dst) in sorted(placement.moving.items()):
        lines.append(f"  moving: {symbol} shard {src} -> shard {dst}")
    lines.append("  (* pinned; the others at their default, rendezvous hashing over the shards)")
    return lines


@click.command()
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print the map as JSON.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Read the map stored in DATA_DIR/placement.json instead of asking a router "
              "(the cluster may be down).")  # fmt: skip
@key_option
def placement(
    endpoint: str | None, host: str | None, base_port: int | None, timeout: float,
    as_json: bool, data_dir: str | None, key_file: str | None,
) -> None:  # fmt: skip
    """Show the placement map: which engine shard owns each pair, the map's version, pinned
    pairs and any move in progress."""
    if data_dir:
        try:
            stored = DirStore(data_dir).load()
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
        if stored is None:
            raise click.ClickException(f"{data_dir}: no placement map stored yet")
        placement, symbols, where = stored, list(stored.pins), f"{data_dir}/placement.json"
    else:
        try:
            with _client(endpoint, host, base_port, timeout, key_file) as c:
                topo = c.topology()
                symbols = list(c.markets)
        except ShardexError as exc:
            _fail(exc)
        placement, where = router_placement(topo), "from the router"
    if as_json:
        by = pairs_by_shard(sorted(set(symbols) | set(placement.pins)), placement.shards,
                            placement.owner)  # fmt: skip
        click.echo(json.dumps({**placement.to_wire(), "pairs": by}))
        return
    for line in render(placement, symbols, where):
        click.echo(line)
    if data_dir:  # (the stored map holds pins only: the market table lives with the cluster)
        click.echo("  (a stored map lists its pinned pairs only: ask the running cluster, without "
                   "--data-dir, for every pair)")  # fmt: skip
