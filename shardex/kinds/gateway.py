"""The gateway (``shardex gateway``): HTTP + WebSocket market data from the trades and events
streams and the engines' books (docs/gateway.md). ``shardex up --gateways G`` starts G of them,
gateway g on base+86+g (HTTP, WebSocket and ``/metrics`` on that one port)."""

from __future__ import annotations

import click

from shardex.gateway.book import DEFAULT_DEPTH
from shardex.gateway.outbox import QUEUE_FRAMES
from shardex.kinds.common import BASE_PORT, CLUSTER_DATA_DIR, ENDPOINT, HOST, MARKETS, SECURITY
from shardex.kinds.spec import Kind, Opt, Plan, Spawn
from shardex.layout import MAX_GATEWAYS, Layout
from shardex.redisauth import user_url

OPTIONS = (
    HOST,
    BASE_PORT,
    Opt("--index", type=click.IntRange(0, MAX_GATEWAYS - 1), envvar="SHARDEX_GATEWAY_INDEX",
        help="Which gateway of the cluster this is: it serves on base+86+INDEX unless --port "
        "[under honcho: from HONCHO_PROCESS_NAME (gateway.2 → 1), so -c gateway=2 runs two; "
        "else 0]."),
    Opt("--bind", default=None, metavar="HOST",
        help="Address to serve on [--host]; 0.0.0.0 for every interface."),
    Opt("--port", type=click.IntRange(1, 65535),
        help="HTTP + WebSocket port (/v1/ws, /v1/markets, /healthz, /metrics) [base+86+INDEX]."),
    ENDPOINT,
    Opt("--redis-url", envvar="SHARDEX_REDIS_URL",
        help="Redis holding the streams [default: the embedded one of the layout, base+4, as "
        "user reader]."),
    MARKETS,
    Opt("--depth", type=click.IntRange(10, 100), default=DEFAULT_DEPTH, show_default=True,
        help="Levels per side of the book channel."),
    Opt("--queue", type=click.IntRange(10), default=QUEUE_FRAMES, show_default=True,
        help="Frames a client may have queued before it is told resync_required."),
    CLUSTER_DATA_DIR,
    *SECURITY,
)  # fmt: skip


def redis_url_for_gateway(url: str, keys_dir: str | None) -> str:
    """The embedded Redis as the gateway reads it: as user ``reader`` when the cluster has
    keys (the password from the keys dir, never on a command line)."""
    return user_url(url, "reader") if keys_dir else url


def children(plan: Plan) -> list[Spawn]:
    """``layout.gateways`` gateways when the cluster has Redis (the streams they serve)."""
    if plan.redis is None:
        return []
    lay = plan.layout
    url = redis_url_for_gateway(lay.redis_url, plan.keys_dir) if plan.redis == "embedded" \
        else plan.redis  # fmt: skip
    out = []
    for g in range(lay.gateways):
        values = {"host": lay.host, "base_port": lay.base_port, "index": g, "redis_url": url,
                  "endpoint": lay.frontends, **plan.markets, **plan.security}  # fmt: skip
        out.append(Spawn(f"gateway.{g}" if g else "gateway", values))
    return out


def ports(plan: Plan) -> list[int]:
    return plan.layout.gateway_ports if plan.redis is not None else []


def scrape(layout: Layout, replicas: int) -> list[int]:  # noqa: ARG001 - not replicated
    return layout.gateway_ports


GATEWAY = Kind(
    name="gateway",
    options=OPTIONS,
    children=children,
    ports=ports,
    scrape=scrape,
    procfile="shardex gateway",
)
