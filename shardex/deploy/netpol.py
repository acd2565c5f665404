"""NetworkPolicies of a deployed cluster: who may open a connection to which pod.

Every port of the cluster already checks who speaks (CURVE keys at the ZeroMQ ports, Redis
users with passwords, signed requests at the gateway); the policies add the network's own
wall, so a compromised pod elsewhere in the Kubernetes cluster cannot even reach a shard's
replication port. The rule set, for the pods labelled ``app.kubernetes.io/name: shardex``:

- ingress is denied unless a policy below allows it;
- every shardex pod may reach every other one (the cluster talks in all directions: shards
  to routers and to each other's replicas, account shards to engine shards, the bridge to the
  routers and shards, workers to Redis);
- the clients' doors are open to anyone: the routers' client port and the gateways' HTTP port
  (traders, bots, market-data users);
- every exporter's metrics port is open to pods of any namespace (Prometheus runs in its
  own; the kubelet's probes come from the node and are not subject to policies).

Egress is not restricted: the feed may read a public exchange stream and the history writer
reaches a database outside the cluster. Pure: a ``Spec`` in, dicts out.
"""

from __future__ import annotations

from typing import Any

from shardex.deploy.k8s import APP, Spec, _labels, _meta, name
from shardex.kinds.spec import port_of

APP_SELECTOR = {"matchLabels": {"app.kubernetes.io/name": APP}}


def _policy(obj_name: str, pods: dict[str, Any], ingress: list[dict[str, Any]]) -> dict[str, Any]:
    spec = {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": ingress}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(obj_name, _labels("policy")), "spec": spec}  # fmt: skip


def _ports(ports: list[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in sorted(set(ports))]


def metrics_ports(spec: Spec) -> list[int]:
    """Every exporter port a pod of ``spec`` may have (a pod without one is not matched)."""
    lay = spec.layout
    out = [lay.router_metrics(0), lay.bridge_metrics_port, lay.candles_metrics_port,
           lay.history_metrics_port, lay.base_port + 8]  # fmt: skip
    out += [lay.shard_metrics_port(i) for i in range(spec.shards)]
    out += [lay.account_metrics_port(j) for j in range(spec.accounts)]
    return out


def policies(spec: Spec) -> list[dict[str, Any]]:
    """Deny by default, then: the cluster's own traffic, the client doors, the exporters."""
    client_doors = [port_of(spec.layout.router_frontend(0))]
    if spec.gateways:
        client_doors.append(spec.layout.gateway_port(0))
    return [
        _policy(name("default-deny"), APP_SELECTOR, []),
        _policy(name("internal"), APP_SELECTOR, [{"from": [{"podSelector": APP_SELECTOR}]}]),
        _policy(name("client-doors"), APP_SELECTOR, [{"ports": _ports(client_doors)}]),
        _policy(name("metrics"), APP_SELECTOR, [{
            "from": [{"namespaceSelector": {}}], "ports": _ports(metrics_ports(spec))}]),
    ]  # fmt: skip
