"""``shardex engine``: run one engine shard, alone or as one of two replicas (``--role
auto``); its options are declared in ``shardex.kinds.engine``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import click

from shardex.cli.base import (
    advertised,
    check_data_dir,
    checked_layout,
    markets,
    placement_of,
    process_keys_dir,
)
from shardex.cli.options import (
    check_durability,
    check_role_auto,
    check_single_durability,
    resolve_accounts,
    resolve_routers,
    resolve_shard_index,
    resolve_shards,
)
from shardex.health import start_early
from shardex.journal import JournalError
from shardex.kinds import ENGINE
from shardex.leasetime import DEFAULT_LEASE_MS
from shardex.node.replica import replica_dir
from shardex.node.shard import ShardConfig, run_replicated, run_shard
from shardex.recovery import snapshot_every_default, snapshot_interval_default


@dataclass(frozen=True)
class Replication:
    """How a ``--role auto`` process replicates: which replica, the lease's Redis, where it
    binds its replication endpoint and the address it announces for it."""

    replica: int
    redis_url: str
    repl: str
    repl_at: str


def _counts(
    index: int | None, shards: str, accounts: str, max_backlog: int
) -> tuple[int, int, int]:
    """(N, M, this shard's index), resolved under honcho and checked."""
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
    return n, m, i


def _announce(cfg: Any, advertise: str | None) -> None:
    """What the routers' topology and the bridge connect to: direct and PUB as advertised."""
    for name in ("direct", "pub"):
        ep = getattr(cfg, name)
        if ep:
            cfg.extra = {**cfg.extra, name: advertised(ep, advertise, f"--{name}")}


def engine_config(**o: Any) -> tuple[ShardConfig, Replication | None]:
    """The shard's config from ``shardex engine``'s options (the layout's ports unless given;
    replica r's own with ``--role auto``), and how it replicates (None: ``--role single``)."""
    n, m, i = _counts(o["index"], o["shards"], o.get("accounts", "auto"), o["max_backlog"])
    keys = process_keys_dir("engine", o["data_dir"], o["keys_dir"], o["insecure"])
    table = markets(o["markets_file"])
    data_dir = o["data_dir"]
    if data_dir:
        # Another N than the data was written with re-maps pairs and forward chains (refused);
        # the shard's recovery checks its own journal's record and rebuilt state again.
        check_data_dir(data_dir, n, table, accounts=m)
    auto = o.get("role", "single") == "auto"
    r = o.get("replica", 0) if auto else 0
    if auto:
        check_role_auto(data_dir, o.get("redis_url"), o["fsync"])
        check_durability(o.get("durability", "both"), m)
    else:
        check_single_durability(o.get("durability", "both"))
    layout = checked_layout(o["host"], o["base_port"], n, resolve_routers(o["routers"]), m)
    router_ep, metrics = o["router_ep"], o["metrics_port"]
    cfg = ShardConfig(
        index=i,
        shards=n,
        router=None if router_ep == "none" else (router_ep or layout.backends),
        direct=o["direct"] or layout.replica_direct(i, r),
        pub=o["pub"] or layout.replica_pub(i, r),
        markets=table,
        max_backlog=o["max_backlog"],
        pin=not o["no_pin"],
        cpu=o["cpu"],
        journal_dir=os.path.join(data_dir, f"shard-{i}") if data_dir else None,
        fsync=o["fsync"],
        durability=o.get("durability", "both"),
        snapshot_every=max(1, o["snapshot_every"] or snapshot_every_default()),
        snapshot_interval=o["snapshot_interval"] or snapshot_interval_default(),
        pub_hwm=max(1, o["pub_hwm"]),
        metrics_port=layout.replica_metrics(i, r) if metrics is None else metrics,
        keys_dir=keys,
        accounts=m,
        # replicated: each replica its own link (a new leader must not need the port a paused,
        # deposed one may still hold); account shards connect to both (``--engine-links``)
        account_link=(o.get("account_link") or layout.replica_account_link(i, r)) if m else None,
        placement=placement_of(data_dir, n),
    )
    if auto or o.get("advertise"):
        _announce(cfg, o.get("advertise"))
    if not auto:
        return cfg, None
    cfg.journal_dir = replica_dir(data_dir, i, r)
    cfg.lease_ms = o.get("lease_ms", DEFAULT_LEASE_MS)
    repl = o.get("repl") or layout.repl(i, r)
    return cfg, Replication(r, o["redis_url"], repl, advertised(repl, o.get("advertise"), "--repl"))


@click.command()
@ENGINE.click_options()
def engine(**options: Any) -> None:
    """Run one engine shard: the single writer of the pairs that hash to it."""
    cfg, rep = engine_config(**options)
    start_early("engine", cfg.metrics_port)
    try:
        if rep is None:
            run_shard(cfg)
        else:
            run_replicated(cfg, rep.replica, rep.redis_url, rep.repl, rep.repl_at)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
