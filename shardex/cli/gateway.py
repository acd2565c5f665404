"""``shardex gateway`` (the process; its options in ``shardex.kinds.gateway``)."""

from __future__ import annotations

from typing import Any

import click

from shardex.auth import KeyStore
from shardex.cli.base import checked_layout, markets, process_keys_dir
from shardex.gateway.server import GatewayConfig, run_gateway
from shardex.kinds import GATEWAY
from shardex.kinds.gateway import redis_url_for_gateway
from shardex.layout import MAX_GATEWAYS, MAX_ROUTERS
from shardex.node.honcho import honcho_index


def gateway_config(**o: Any) -> GatewayConfig:
    """The gateway's config from its options: the layout's port, router(s) and Redis (as user
    ``reader`` when the cluster has keys; its own ``reader`` key for the engines' books)."""
    keys = process_keys_dir("gateway", o["data_dir"], o["keys_dir"], o["insecure"])
    # (as many routers as the endpoint names: the operator page reads each one's exporter)
    routers = min(len(o["endpoint"].split(",")), MAX_ROUTERS) if o["endpoint"] else 1
    layout = checked_layout(o["host"], o["base_port"], routers=routers)
    key: Any = KeyStore(keys).process_key("gateway", "reader") if keys else False
    return GatewayConfig(
        host=o["bind"] or o["host"],
        port=o["port"] or layout.gateway_port(_index(o["index"])),
        redis_url=o["redis_url"] or redis_url_for_gateway(layout.redis_url, keys),
        endpoint=o["endpoint"] or layout.frontends,
        markets=markets(o["markets_file"]),
        key=key,
        keys_dir=keys,
        depth=o["depth"],
        queue=o["queue"],
        layout=layout,
    )


def _index(given: int | None) -> int:
    """This gateway's index: as given, else honcho's process number, else 0."""
    if given is not None:
        return given
    under = honcho_index()
    return under if under is not None and 0 <= under < MAX_GATEWAYS else 0


@click.command("gateway")
@GATEWAY.click_options()
def gateway(**options: Any) -> None:
    """Serve market data over HTTP and WebSocket: trades, L2 book, ticker, market list.

    Reads the bridge's Redis Streams and the engines' books (no key needed by its clients);
    one port serves /v1/ws, /v1/markets, /healthz and /metrics (docs/gateway.md).
    """
    run_gateway(gateway_config(**options))
