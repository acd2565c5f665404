"""The router: hashes each request's symbol to an engine shard; R of them share the shards."""

from __future__ import annotations

import click

from shardex.kinds.checks import endpoint_cb
from shardex.kinds.common import ACCOUNTS, BASE_PORT, CLUSTER_DATA_DIR, HOST, SECURITY, metrics_port
from shardex.kinds.spec import Kind, Opt, Plan, Spawn, port_of
from shardex.layout import MAX_ROUTERS, Layout

OPTIONS = (
    Opt(
        "--shards",
        default="1",
        envvar="SHARDEX_SHARDS",
        show_default=True,
        help="Number of engine shards N (pairs placed by the placement map), or 'auto' under "
        "honcho.",
    ),
    HOST,
    BASE_PORT,
    Opt("--frontend", callback=endpoint_cb, help="Bind endpoint for clients [layout]."),
    Opt("--backend", callback=endpoint_cb, help="Bind endpoint for shards [layout]."),
    metrics_port("base+2"),
    Opt(
        "--max-inflight",
        type=click.IntRange(1),
        default=1000,
        show_default=True,
        help="Requests one shard may have unanswered; past it, clients get an immediate "
        "'overloaded' (a short queue keeps the p99 of accepted orders bounded).",
    ),
    Opt(
        "--client-max-inflight",
        type=click.IntRange(1),
        default=250,
        show_default=True,
        help="Requests one client connection may have unanswered (keep it well below "
        "--max-inflight so one client cannot fill a shard's queue).",
    ),
    Opt(
        "--max-queue-ms",
        type=click.FloatRange(0),
        envvar="SHARDEX_MAX_QUEUE_MS",
        default=0.0,
        show_default=True,
        help="Shed by time queued: once the wait at a shard (or in the router's own socket) "
        "stayed above 5 ms for a whole 100 ms, a request that would wait longer than this "
        "gets 'overloaded' at once (CoDel-style, docs/overload.md; 0: off; 20 where the "
        "cluster has its cores to itself).",
    ),
    Opt(
        "--queue-cap-ms",
        type=click.FloatRange(0),
        envvar="SHARDEX_QUEUE_CAP_MS",
        default=0.0,
        show_default=True,
        help="Cap each shard's unanswered requests at what it serves in this long at its "
        "measured rate (at least 250, at most --max-inflight; a client with nothing in flight "
        "is never refused): a shorter queue, a lower p99 of accepted orders at overload, a "
        "little less goodput (docs/overload.md; 0: off, the count cap alone; 50 measured).",
    ),
    CLUSTER_DATA_DIR,
    Opt(
        "--index",
        type=click.IntRange(0, MAX_ROUTERS - 1),
        envvar="SHARDEX_ROUTER_INDEX",
        help="This router's index in the layout (its ports) [0; router.N under honcho → N-1].",
    ),
    ACCOUNTS,
    *SECURITY,
)


def children(plan: Plan) -> list[Spawn]:
    """Router j of R: its own client, shard and metrics ports; ``--accounts`` always explicit
    (SHARDEX_ACCOUNTS in the environment must not give a child another M than its siblings)."""
    lay = plan.layout
    return [
        Spawn(
            "router" if j == 0 else f"router.{j}",
            {
                "shards": lay.shards,
                "index": j,
                "frontend": lay.router_frontend(j),
                "backend": lay.router_backend(j),
                "metrics_port": lay.router_metrics(j),
                **plan.security,
                "accounts": lay.accounts,
            },
        )
        for j in range(lay.routers)
    ]


def ports(plan: Plan) -> list[int]:
    layout = plan.layout
    out = []
    for j in range(layout.routers):
        out += [port_of(layout.router_frontend(j)), port_of(layout.router_backend(j))]
        out.append(layout.router_metrics(j))
    return out


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001
    return [layout.router_metrics(j) for j in range(layout.routers)]


ROUTER = Kind(
    name="router",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex router",
    env=(("SHARDEX_ROUTERS", "auto"),),
)
