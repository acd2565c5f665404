"""Every Kubernetes object of a deployment, by the file it is written to (``shardex deploy
k8s``): the core processes (``shardex.deploy.k8s``), the etcd members and the routers'
budget (``shardex.deploy.ha``), the workers around the streams (``shardex.deploy.workers``)
and the NetworkPolicies (``shardex.deploy.netpol``)."""

from __future__ import annotations

from typing import Any

from shardex.deploy import ha, k8s, netpol, workers
from shardex.deploy.k8s import Spec


def manifests(spec: Spec) -> dict[str, list[dict[str, Any]]]:
    """Every object, by the file it goes in (in apply order: policies, config, etcd, Redis,
    routers, shards, bridge, gateways, workers)."""
    out = {"policies.yaml": netpol.policies(spec), "markets.yaml": k8s.markets(spec)}
    if ha.uses_etcd(spec):
        out["etcd.yaml"] = ha.etcd(spec)
    out["redis.yaml"] = k8s.redis(spec)
    out |= {f"router-{j}.yaml": k8s.router(spec, j) for j in range(spec.routers)}
    if spec.routers > 1:
        out["routers.yaml"] = ha.routers_budget(spec)
    out |= {f"engine-{i}.yaml": k8s.engine_shard(spec, i) for i in range(spec.shards)}
    out |= {f"accounts-{j}.yaml": k8s.account_shard(spec, j) for j in range(spec.accounts)}
    out["bridge.yaml"] = k8s.bridge(spec)
    if spec.gateways:
        out["gateway.yaml"] = k8s.gateways(spec)
    out["candles.yaml"] = workers.candles(spec)
    for fname, docs in (("history.yaml", workers.history(spec)),
                        ("feed.yaml", workers.feed(spec))):  # fmt: skip
        if docs:
            out[fname] = docs
    return out
