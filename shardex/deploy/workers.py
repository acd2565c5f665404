"""The workers around the streams, as Kubernetes objects: the candles worker, the history
writer and the price feed (``shardex deploy k8s``; docs/deploy.md).

Each is one pod of a Deployment that is never two pods at once (``Recreate``): the candles
worker and the history writer keep their stream positions in their own stores and write exactly
once, and two feeds would each send every index price. They are built from the same process
descriptions (``shardex.kinds``) as the shards, so a container runs the command ``shardex up``
would start.

- candles: whenever the cluster has the bridge (it always has, here);
- the history writer: only when asked (``--history``) and with the account tier, because a
  pod has no data dir worth a SQLite file: it writes to PostgreSQL, whose URL (with its
  password) comes from the Secret ``shardex-history-db`` (key ``url``) as the environment
  variable the writer reads, never from the manifests;
- the feed: when the markets file has a perp market (as ``shardex up`` decides).
"""

from __future__ import annotations

import tomllib
from typing import Any

from shardex.deploy.k8s import (
    KEYS,
    MARKETS,
    Spec,
    _container,
    _deployment,
    _labels,
    _pod,
    _redis_url,
    _router_frontends,
    name,
)
from shardex.engine.markets import markets_from_table
from shardex.kinds import CANDLES, FEED, HISTORY
from shardex.kinds.feed import FEED_METRICS_OFFSET
from shardex.redisauth import user_url

HISTORY_SECRET = "shardex-history-db"  # made by the operator: ``url`` = postgresql://…
HISTORY_ENV = "SHARDEX_HISTORY_DB"  # the writer's --history-db, from that Secret


def has_perps(spec: Spec) -> bool:
    """Whether the deployment's markets file (the built-in markets have none) lists a perp."""
    if not spec.markets:
        return False
    table = tomllib.loads(spec.markets).get("markets")
    return any(m.perp is not None for m in markets_from_table(table, "markets").values())


def _one(component: str, box: dict[str, Any], metrics: int, spec: Spec) -> list[dict[str, Any]]:
    labels = _labels(component)
    return [_deployment(name(component), labels, 1, _pod(spec, labels, box, metrics),
                        recreate=True)]  # fmt: skip


def candles(spec: Spec) -> list[dict[str, Any]]:
    """The candles worker: OHLCV and tickers from the trades streams, as Redis user candles."""
    metrics = spec.layout.candles_metrics_port
    values = {"endpoint": _router_frontends(spec), "metrics_port": metrics,
              "redis_url": user_url(_redis_url(spec), "candles"), "markets_file": MARKETS,
              "keys_dir": KEYS}  # fmt: skip
    box = _container(spec, CANDLES, values, {"metrics": metrics}, metrics)
    return _one("candles", box, metrics, spec)


def history(spec: Spec) -> list[dict[str, Any]]:
    """The history writer (``Spec.history`` and the account tier), to PostgreSQL."""
    if not (spec.history and spec.accounts):
        return []
    metrics = spec.layout.history_metrics_port
    values = {"shards": spec.shards, "accounts": spec.accounts, "metrics_port": metrics,
              "redis_url": user_url(_redis_url(spec), "reader"), "keys_dir": KEYS}  # fmt: skip
    box = _container(spec, HISTORY, values, {"metrics": metrics}, metrics)
    box["env"].append({"name": HISTORY_ENV, "valueFrom": {"secretKeyRef": {
        "name": HISTORY_SECRET, "key": "url"}}})  # fmt: skip
    return _one("history", box, metrics, spec)


def feed(spec: Spec) -> list[dict[str, Any]]:
    """The price feed (a perp market in the markets file), with the cluster's feed key."""
    if not has_perps(spec):
        return []
    metrics = spec.layout.base_port + FEED_METRICS_OFFSET
    values = {"endpoint": _router_frontends(spec), "metrics_port": metrics,
              "markets_file": MARKETS, "keys_dir": KEYS}  # fmt: skip
    box = _container(spec, FEED, values, {"metrics": metrics}, metrics)
    return _one("feed", box, metrics, spec)
