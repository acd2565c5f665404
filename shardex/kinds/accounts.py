"""The account shard: balances and holds of the accounts hashing to it; with ``--replicas 2``
a primary and a hot standby under a Redis lease of its own."""

from __future__ import annotations

from typing import Any

import click

from shardex.kinds.checks import endpoint_cb
from shardex.kinds.common import (
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

OPTIONS = (
    Opt("--shard", "index", type=int,
        help="This account shard J (0..M-1) [under honcho: accounts.K → K-1]."),
    Opt(
        "--shards",
        envvar="SHARDEX_ACCOUNTS",
        help="Account shards M, or 'auto' under honcho (the -c accounts=M it was started "
        "with). 0: the account tier is off and this process only waits (so honcho keeps the "
        "rest up).",
    ),
    Opt("--engines", default="1", show_default=True, envvar="SHARDEX_SHARDS",
        help="Engine shards N (symbol → engine shard: the placement map), or 'auto' under honcho."),
    Opt("--routers", default="1", show_default=True, envvar="SHARDEX_ROUTERS",
        help="Routers in the layout (connects to all), or 'auto' under honcho."),
    HOST,
    BASE_PORT,
    Opt("--router", "router_ep", callback=endpoint_cb,
        help="Router backend endpoint(s), comma-separated [layout]."),
    Opt(
        "--engine-links",
        help="Each engine shard's account link endpoint, comma-separated [layout]; a "
        "replicated engine shard (--role auto) gives both replicas' endpoints joined by '+' "
        "(tcp://a:5955+tcp://b:7155): the account shard follows whichever leads.",
    ),
    Opt(
        "--replicas",
        type=click.IntRange(1, 2),
        default=1,
        show_default=True,
        help="Processes per engine shard, for the layout's --engine-links: 2 connects to both "
        "replicas' links of each engine shard (as shardex up --replicas 2 does).",
    ),
    *replica_options("accounts-J", "shardex:lease:accounts-J"),
    MARKETS,
    Opt("--data-dir", envvar="SHARDEX_DATA_DIR",
        help="Journal and snapshots go to DATA_DIR/accounts-J (recovered at start)."),
    FSYNC,
    metrics_port("base+500+J"),
    Opt("--pub", "pub_ep",
        help="Bind endpoint of the balance-event PUB (for the bridge) [layout: base+600+J]."),
    Opt("--direct", "direct_ep",
        help="Bind endpoint for the bridge's status and re-send requests "
        "[layout: base+700+J]."),
    *SECURITY,
)  # fmt: skip


def _values(plan: Plan, j: int, r: int | None) -> dict[str, Any]:
    """Account shard ``j``'s options; ``r`` None: the only process of its shard (linked to
    each engine shard's one link), else replica ``r`` (linked to both engine replicas)."""
    lay = plan.layout
    rep = r or 0
    values: dict[str, Any] = {
        "index": j,
        "shards": lay.accounts,
        "engines": lay.shards,
        "router_ep": lay.backends,
        "engine_links": lay.account_links if r is None else lay.replica_account_links,
        "metrics_port": lay.account_replica_metrics(j, rep),
        "pub_ep": lay.account_replica_pub(j, rep),
        "direct_ep": lay.account_replica_direct(j, rep),
        **plan.markets,
        **plan.security,
    }
    if r is not None:
        values.update(role="auto", replica=r, redis_url=plan.lease_url,
                      repl=lay.account_repl(j, r), durability=plan.durability,
                      lease_ms=plan.lease_ms)  # fmt: skip
    if plan.data_dir:
        values.update(data_dir=plan.data_dir, fsync=plan.fsync)
    return values


def children(plan: Plan) -> list[Spawn]:
    """``accounts.J`` per account shard; replicated, ``accounts.J`` and ``accounts.J.r1``."""
    return replicated_children(
        "accounts", plan.layout.accounts, plan.replicas, lambda k, r: _values(plan, k, r)
    )


def ports(plan: Plan) -> list[int]:
    layout, replicas = plan.layout, plan.replicas
    out = []
    for j in range(layout.accounts):
        reps = range(replicas)
        eps = [layout.account_replica_direct(j, r) for r in reps]
        eps += [layout.account_replica_pub(j, r) for r in reps]
        if replicas > 1:
            eps += [layout.account_repl(j, r) for r in reps]
        out += [port_of(ep) for ep in eps]
        out += [layout.account_replica_metrics(j, r) for r in reps]
    return out


def scrape(layout: Layout, replicas: int) -> list[int]:
    return [layout.account_replica_metrics(j, r)
            for j in range(layout.accounts) for r in range(replicas)]  # fmt: skip


ACCOUNTS = Kind(
    name="accounts",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex accounts",
    env=(("SHARDEX_ACCOUNTS", "auto"),),
)
