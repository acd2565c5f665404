"""The engine shard: single writer of the pairs that hash to it; with ``--replicas 2`` a
primary and a hot standby (``--role auto``) under a Redis lease."""

from __future__ import annotations

from typing import Any

from shardex.kinds.checks import endpoint_cb
from shardex.kinds.common import (
    ACCOUNTS,
    BASE_PORT,
    FSYNC,
    HOST,
    MARKETS,
    SECURITY,
    metrics_port,
    replica_options,
)
from shardex.kinds.spec import Kind, Opt, Plan, Spawn, port_of, replicated_children
from shardex.layout import Layout
from shardex.recovery import SNAPSHOT_EVERY, SNAPSHOT_INTERVAL

OPTIONS = (
    Opt(
        "--shard",
        "index",
        type=int,
        envvar="SHARDEX_SHARD",
        help="This shard's index 0..N-1 [from HONCHO_PROCESS_NAME under honcho].",
    ),
    Opt(
        "--shards",
        default="1",
        envvar="SHARDEX_SHARDS",
        show_default=True,
        help="Total number of shards, or 'auto' under honcho.",
    ),
    HOST,
    BASE_PORT,
    Opt(
        "--router",
        "router_ep",
        callback=endpoint_cb,
        help="Router backend endpoint(s) to connect to, comma-separated [layout: every "
        "router's]; 'none' for direct only.",
    ),
    Opt(
        "--routers",
        default="1",
        envvar="SHARDEX_ROUTERS",
        show_default=True,
        help="How many routers the layout has (this shard serves them all), or 'auto' under "
        "honcho (the -c router=R it was started with).",
    ),
    Opt("--direct", callback=endpoint_cb, help="Bind endpoint for direct clients [layout]."),
    Opt("--pub", callback=endpoint_cb, help="Bind endpoint for the event stream [layout]."),
    MARKETS,
    Opt(
        "--max-backlog",
        type=int,
        default=10_000,
        show_default=True,
        help="Messages waiting in one wake-up beyond which requests get 'overloaded'.",
    ),
    Opt("--cpu", type=int, help="Pin to this CPU [auto: shard i → i mod n]."),
    Opt("--no-pin", is_flag=True, help="Do not pin the process to a CPU."),
    Opt(
        "--data-dir",
        envvar="SHARDEX_DATA_DIR",
        help="Journal and snapshots go to DATA_DIR/shard-I (recovered at start). "
        "Without it the shard keeps state in memory only.",
    ),
    FSYNC,
    metrics_port("base+300+I"),
    Opt(
        "--pub-hwm",
        type=int,
        default=100_000,
        show_default=True,
        help="PUB high-water mark (messages); past it events are dropped and repaired by seq.",
    ),
    Opt(
        "--snapshot-every",
        type=int,
        help="Journaled commands between snapshots (bounds a restart's replay) "
        f"[default: SHARDEX_SNAPSHOT_EVERY or {SNAPSHOT_EVERY:,}].",
    ),
    Opt(
        "--snapshot-interval",
        type=float,
        help="Seconds between snapshots when something changed "
        f"[default: SHARDEX_SNAPSHOT_INTERVAL or {SNAPSHOT_INTERVAL:.0f}]. A clean stop "
        "(SIGTERM/SIGINT) always snapshots.",
    ),
    ACCOUNTS,
    Opt(
        "--account-link",
        callback=endpoint_cb,
        help="Bind endpoint for the account shards' links [layout, with --accounts].",
    ),
    *replica_options("shard-I", "shardex:lease:I"),
    *SECURITY,
)


def _values(plan: Plan, i: int, r: int | None) -> dict[str, Any]:
    """Engine shard ``i``'s options; ``r`` None: the only process of its shard, else
    replica ``r`` of two (its own ports, replication endpoint and account link)."""
    lay = plan.layout
    rep = r or 0
    values: dict[str, Any] = {
        "index": i,
        "shards": lay.shards,
        "router_ep": lay.backends,
        "direct": lay.replica_direct(i, rep),
        "pub": lay.replica_pub(i, rep),
        "metrics_port": lay.replica_metrics(i, rep),
        "max_backlog": plan.max_backlog,
        **plan.markets,
        "no_pin": not plan.pin,
        "accounts": lay.accounts,
        **plan.security,
    }
    if r is not None:
        values.update(role="auto", replica=r, redis_url=plan.lease_url, repl=lay.repl(i, r),
                      durability=plan.durability, lease_ms=plan.lease_ms)  # fmt: skip
    if plan.data_dir:
        values.update(data_dir=plan.data_dir, fsync=plan.fsync)
    if plan.pub_hwm:
        values["pub_hwm"] = plan.pub_hwm
    if lay.accounts:
        values["account_link"] = lay.replica_account_link(i, rep)
    return values


def children(plan: Plan) -> list[Spawn]:
    """``engine.I`` per shard; replicated, ``engine.I`` and ``engine.I.r1`` (``--role auto``)."""
    return replicated_children(
        "engine", plan.layout.shards, plan.replicas, lambda k, r: _values(plan, k, r)
    )


def ports(plan: Plan) -> list[int]:
    """Direct, PUB, metrics (and account link) of every shard; replicated, also both
    replicas' replication endpoints and replica 1's own ports."""
    layout, replicas = plan.layout, plan.replicas
    out = []
    for i in range(layout.shards):
        reps = range(replicas)
        eps = [layout.replica_direct(i, r) for r in reps] + [layout.replica_pub(i, r) for r in reps]
        if layout.accounts:
            eps += [layout.replica_account_link(i, r) for r in reps]
        if replicas > 1:
            eps += [layout.repl(i, r) for r in reps]
        out += [port_of(ep) for ep in eps] + [layout.replica_metrics(i, r) for r in reps]
    return out


def scrape(layout: Layout, replicas: int) -> list[int]:
    """Every replica's exporter (only the leader exports a shard's metrics)."""
    return [layout.replica_metrics(i, r) for i in range(layout.shards) for r in range(replicas)]


ENGINE = Kind(
    name="engine",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex engine",
    env=(("SHARDEX_SHARDS", "auto"),),
)
