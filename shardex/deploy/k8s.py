"""Kubernetes manifests for a cluster, generated from the process descriptions.

Each container's arguments are ``Kind.argv`` of the same option values ``shardex up`` gives its
children (``shardex.kinds``), with the addresses a cluster of pods has instead of one box's:
every process binds ``0.0.0.0`` and announces a stable DNS name. Ports are the default layout's
(``shardex.layout``), so a port means the same in a pod as on a laptop.

- an engine shard and an account shard are each a StatefulSet of ``replicas`` pods (replica r
  is pod ``NAME-r``, its ordinal passed as ``--replica``), a headless Service giving each pod a
  name (``NAME-r.NAME``, published before the pod is ready: the standby connects to the leader
  through it), a volume claim per pod for its journal, a PodDisruptionBudget and a required
  pod anti-affinity so the two replicas of a shard never share a node;
- router j is a Deployment of one pod with two Services: ``shardex-router-j-shards`` (the port
  shards connect to, published before the router is ready: it is ready only once every shard
  said hello) and ``shardex-router-j`` (the client port, ready routers only); the routers
  prefer nodes without another router;
- the bridge is a Deployment of one pod, the gateways a Deployment of G pods behind one
  Service, the embedded Redis a StatefulSet of one pod (the streams; the leases too with
  ``coord="redis"``, else a 3-member etcd: ``shardex.deploy.ha``);
- the markets file is a ConfigMap; the keys a Secret made by the operator (``shardex deploy
  keys``: never in the manifests), of which each pod is given only the files its process needs
  (``shardex.deploy.keys.pod_keys``), copied by an init container into its own folder;
- the workers around the streams (candles, the history writer, the price feed) and the
  NetworkPolicies are in ``shardex.deploy.workers`` and ``shardex.deploy.netpol``;
  ``shardex.deploy.bundle`` puts every object together.

Pure: a ``Spec`` in, dicts out (``shardex.deploy.render`` writes them as YAML).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shardex import __version__
from shardex.deploy.keys import pod_keys
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.kinds import ACCOUNTS, BRIDGE, ENGINE, GATEWAY, REDIS, ROUTER, Kind
from shardex.kinds.spec import port_of
from shardex.layout import DEFAULT_BASE_PORT, Layout
from shardex.redisauth import bridge_url, user_url

APP = "shardex"
UID = 10001  # the image's user (Dockerfile)
DATA = "/data"  # journals, snapshots, Redis's AOF: a volume claim per pod
KEYS = "/keys"  # the pod's copy of the keys Secret (an emptyDir)
SECRET_MOUNT = "/run/shardex/secret"
SECRET = "shardex-keys"  # made by the operator: docs/deploy.md
MARKETS_DIR = "/etc/shardex"
MARKETS = f"{MARKETS_DIR}/markets.toml"
ANY = "0.0.0.0"
REPLICA_ENV = "SHARDEX_REPLICA"  # the pod's ordinal in its StatefulSet = its replica
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
ETCD_MEMBERS, ETCD_CLIENT_PORT = 3, 2379  # shardex.deploy.ha: one member may be lost
ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"


def default_markets() -> str:
    """The markets file of a deployment given none: the built-in markets restated (a
    markets file extends or overrides them per symbol; it may not be empty)."""
    out = ["# The built-in markets (docs/markets.md): edit, or add [markets.SYMBOL] tables;",
           "# `shardex deploy k8s --markets FILE` puts FILE here instead."]  # fmt: skip
    for m in DEFAULT_MARKETS.values():
        out += ["", f"[markets.{m.symbol}]", f'tick = "{m.tick}"', f'lot = "{m.lot}"',
                f'max_price = "{m.max_price}"', f'max_qty = "{m.max_qty}"']  # fmt: skip
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Spec:
    """What ``shardex deploy k8s`` was asked for."""

    shards: int = 1
    accounts: int = 1
    replicas: int = 2
    routers: int = 2  # one router's node lost: clients reconnect to the other
    gateways: int = 1
    image: str = f"shardex:{__version__}"
    markets: str = ""  # the markets file's text (the ConfigMap; "": ``default_markets``)
    storage: str = "10Gi"  # each journal's volume claim
    history: bool = False  # a history writer, its PostgreSQL URL from a Secret (``workers``)
    coord: str = "etcd"  # where the leases live: "etcd" (3 members) or "redis" (the one pod)
    etcd_image: str = ETCD_IMAGE
    etcd_storage: str = "2Gi"  # each member's volume claim (the quota is 2 GiB)

    @property
    def layout(self) -> Layout:
        return Layout(ANY, DEFAULT_BASE_PORT, self.shards, self.routers, self.accounts,
                      self.gateways)  # fmt: skip


# -- names and addresses ------------------------------------------------------------------------


def name(component: str, index: int | None = None) -> str:
    return f"{APP}-{component}" + ("" if index is None else f"-{index}")


def bind(port: int) -> str:
    return f"tcp://{ANY}:{port}"


def tcp(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def _redis_url(spec: Spec) -> str:
    return f"redis://{name('redis')}:{spec.layout.redis_port}/0"


def lease_in_redis(spec: Spec) -> bool:
    """Whether the shards hold leases (two replicas) and keep them in the Redis pod."""
    return spec.replicas > 1 and spec.coord == "redis"


def etcd_peer(k: int) -> str:
    """etcd member ``k``'s stable DNS name (its StatefulSet's headless Service)."""
    return f"{name('etcd')}-{k}.{name('etcd')}"


def coord_url(spec: Spec) -> str:
    """Every replica's ``--redis-url`` (the lease's store): the etcd members, or the Redis's
    ``lease`` user (its password from the keys)."""
    if spec.coord == "etcd":
        return "etcd://" + ",".join(f"{etcd_peer(k)}:{ETCD_CLIENT_PORT}"
                                    for k in range(ETCD_MEMBERS))  # fmt: skip
    return user_url(_redis_url(spec), "lease")


def _router_backends(spec: Spec) -> str:
    port = port_of(spec.layout.router_backend(0))
    return ",".join(tcp(name("router", j) + "-shards", port) for j in range(spec.routers))


def _router_frontends(spec: Spec) -> str:
    port = port_of(spec.layout.router_frontend(0))
    return ",".join(tcp(name("router", j), port) for j in range(spec.routers))


def _engine_links(spec: Spec) -> str:
    """An account shard's ``--engine-links``: each engine shard's replicas by pod name."""
    lay = spec.layout
    return ",".join(
        "+".join(tcp(f"{name('engine', i)}-{r}.{name('engine', i)}",
                     port_of(lay.account_link(i))) for r in range(spec.replicas))
        for i in range(spec.shards)
    )  # fmt: skip


# -- pieces of a pod ----------------------------------------------------------------------------


def _labels(component: str, index: int | None = None) -> dict[str, str]:
    """A component's labels; ``index``: which shard (or router) of its kind."""
    out = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}
    if index is not None:
        out["shardex.io/index"] = str(index)
    return out


def _meta(obj_name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": obj_name, "labels": labels}


def _probes(port: int | None, http: bool) -> dict[str, Any]:
    """Readiness on ``/healthz`` (503 while it does not serve), liveness on ``/healthz?live``
    (200 while the process answers: a router whose shards are away is not restarted for it);
    a process without an exporter (Redis): its port."""
    if port is None:
        return {}
    if not http:
        return {
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 10},
        }
    return {
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz?live=1", "port": port},
                          "periodSeconds": 10, "failureThreshold": 6},
    }  # fmt: skip


def _container(spec: Spec, kind: Kind, values: dict[str, Any], ports: dict[str, int],
               health: int | None, http: bool = True,
               cpu: str = "250m", memory: str = "256Mi") -> dict[str, Any]:  # fmt: skip
    """The process ``shardex <kind>`` with ``values`` (the kind's option names), its ports
    (name → port) and probes on ``health``."""
    env = [
        {"name": "SHARDEX_METRICS_HOST", "value": ANY},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if isinstance(values.get("replica"), str):
        env.append({"name": REPLICA_ENV, "valueFrom": {"fieldRef": {"fieldPath": POD_INDEX}}})
    mounts = [
        {"name": "keys", "mountPath": KEYS},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "markets", "mountPath": MARKETS_DIR, "readOnly": True},
    ]
    if values.get("data_dir"):
        mounts.append({"name": "data", "mountPath": DATA})
    return {
        "name": kind.name,
        "image": spec.image,
        "command": [APP],
        "args": kind.argv(values),
        "env": env,
        "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
        **_probes(health, http),
        "resources": {"requests": {"cpu": cpu, "memory": memory}},
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip


def _keys_init(spec: Spec) -> dict[str, Any]:
    """Copies the keys Secret into the pod's own folder, each file mode 0600 (the processes
    refuse nothing there, and a key file readable by others is warned about)."""
    return {
        "name": "keys",
        "image": spec.image,
        "command": ["sh", "-c", f"cp -L {SECRET_MOUNT}/* {KEYS}/ && chmod 600 {KEYS}/*"],
        "volumeMounts": [{"name": "secret", "mountPath": SECRET_MOUNT, "readOnly": True},
                         {"name": "keys", "mountPath": KEYS}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip


def spread(labels: dict[str, str], required: bool) -> dict[str, Any]:
    """A pod anti-affinity to the pods of ``labels`` per node: required, or preferred (the
    scheduler still places the pod when every node has one)."""
    term = {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
    if required:
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term}]}}  # fmt: skip


def _secret_volume(spec: Spec, labels: dict[str, str]) -> dict[str, Any]:
    """The keys Secret, only the files this pod's process needs (``pod_keys``)."""
    index = labels.get("shardex.io/index")
    files = pod_keys(labels["app.kubernetes.io/component"],
                     None if index is None else int(index), lease_in_redis(spec))  # fmt: skip
    return {
        "name": "secret",
        "secret": {
            "secretName": SECRET,
            "defaultMode": 0o440,
            "items": [{"key": f, "path": f} for f in files],
        },
    }


def _pod(spec: Spec, labels: dict[str, str], container: dict[str, Any],
         metrics: int | None, affinity: dict[str, Any] | None = None,
         grace: int = 30) -> dict[str, Any]:  # fmt: skip
    """A pod template: the keys init container, the volumes, Prometheus's scrape annotations
    (``metrics``), and ``affinity`` (``spread``)."""
    meta: dict[str, Any] = {"labels": labels}
    if metrics is not None:
        meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics),
                               "prometheus.io/path": "/metrics"}  # fmt: skip
    pod: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "fsGroup": UID},
        "terminationGracePeriodSeconds": grace,
        "initContainers": [_keys_init(spec)],
        "containers": [container],
        "volumes": [
            _secret_volume(spec, labels),
            {"name": "keys", "emptyDir": {"medium": "Memory"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "markets", "configMap": {"name": name("markets")}},
        ],
    }  # fmt: skip
    if affinity:
        pod["affinity"] = affinity
    return {"metadata": meta, "spec": pod}


def _claim(spec: Spec) -> dict[str, Any]:
    return {"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": spec.storage}}}}  # fmt: skip


def _service(obj_name: str, labels: dict[str, str], ports: dict[str, int],
             headless: bool = False, early: bool = False) -> dict[str, Any]:  # fmt: skip
    """A Service over the pods with ``labels``; ``headless``: one DNS name per pod;
    ``early``: published before the pods are ready (``publishNotReadyAddresses``)."""
    svc: dict[str, Any] = {"selector": labels,
                           "ports": [{"name": n, "port": p, "targetPort": p}
                                     for n, p in ports.items()]}  # fmt: skip
    if headless:
        svc["clusterIP"] = "None"
    if early:
        svc["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(obj_name, labels),
            "spec": svc}  # fmt: skip


def _budget(obj_name: str, labels: dict[str, str]) -> dict[str, Any]:
    """At most one pod of ``labels`` down at a time by a voluntary disruption (a drain)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(obj_name, labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}}  # fmt: skip


def _stateful(obj_name: str, labels: dict[str, str], replicas: int, pod: dict[str, Any],
              claim: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """A StatefulSet: pods started together (the lease, not the start order, decides who
    leads), updated one at a time, each with its own claim."""
    sts: dict[str, Any] = {"serviceName": obj_name, "replicas": replicas,
                           "podManagementPolicy": "Parallel",
                           "selector": {"matchLabels": labels}, "template": pod}  # fmt: skip
    if claim is not None:
        sts["volumeClaimTemplates"] = [claim]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(obj_name, labels),
            "spec": sts}  # fmt: skip


def _deployment(obj_name: str, labels: dict[str, str], replicas: int, pod: dict[str, Any],
                recreate: bool) -> dict[str, Any]:  # fmt: skip
    """A Deployment; ``recreate``: never two pods of it at once (one router index, one
    bridge)."""
    dep: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": labels},
                           "template": pod}  # fmt: skip
    if recreate:
        dep["strategy"] = {"type": "Recreate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(obj_name, labels),
            "spec": dep}  # fmt: skip


# -- one component each -------------------------------------------------------------------------


def _replica_values(spec: Spec, host: str, repl_port: int) -> dict[str, Any]:
    """What a shard's process is told about its place: the name it is reached at (its pod's
    DNS name); with two replicas ``--role auto``, its ordinal and the lease's store."""
    out: dict[str, Any] = {"advertise": f"$(POD_NAME).{host}", "data_dir": DATA,
                           "fsync": "batch", "markets_file": MARKETS, "keys_dir": KEYS}  # fmt: skip
    if spec.replicas > 1:
        out.update(role="auto", replica=f"$({REPLICA_ENV})", durability="both",
                   redis_url=coord_url(spec), repl=bind(repl_port))  # fmt: skip
    return out


def engine_shard(spec: Spec, i: int) -> list[dict[str, Any]]:
    """Engine shard ``i``: its StatefulSet, headless Service and disruption budget."""
    lay, obj = spec.layout, name("engine", i)
    ports = {"direct": port_of(lay.direct(i)), "pub": port_of(lay.pub(i)),
             "metrics": lay.shard_metrics_port(i)}  # fmt: skip
    if spec.accounts:
        ports["account-link"] = port_of(lay.account_link(i))
    if spec.replicas > 1:
        ports["repl"] = port_of(lay.repl(i, 0))
    values: dict[str, Any] = {
        "index": i, "shards": spec.shards, "routers": spec.routers,
        "router_ep": _router_backends(spec), "direct": bind(ports["direct"]),
        "pub": bind(ports["pub"]), "metrics_port": ports["metrics"], "no_pin": True,
        "accounts": spec.accounts, **_replica_values(spec, obj, ports.get("repl", 0)),
    }  # fmt: skip
    if spec.accounts:
        values["account_link"] = bind(ports["account-link"])
    labels = _labels("engine", i)
    box = _container(spec, ENGINE, values, ports, ports["metrics"], cpu="1", memory="1Gi")
    pod = _pod(spec, labels, box, ports["metrics"], spread(labels, True), grace=60)
    return [
        _service(obj, labels, ports, headless=True, early=True),
        _stateful(obj, labels, spec.replicas, pod, _claim(spec)),
        _budget(obj, labels),
    ]


def account_shard(spec: Spec, j: int) -> list[dict[str, Any]]:
    """Account shard ``j``: its StatefulSet, headless Service and disruption budget."""
    lay, obj = spec.layout, name("accounts", j)
    ports = {"pub": port_of(lay.account_pub(j)), "direct": port_of(lay.account_direct(j)),
             "metrics": lay.account_metrics_port(j)}  # fmt: skip
    if spec.replicas > 1:
        ports["repl"] = port_of(lay.account_repl(j, 0))
    values: dict[str, Any] = {
        "index": j, "shards": spec.accounts, "engines": spec.shards, "routers": spec.routers,
        "router_ep": _router_backends(spec), "engine_links": _engine_links(spec),
        "replicas": spec.replicas, "metrics_port": ports["metrics"],
        "pub_ep": bind(ports["pub"]), "direct_ep": bind(ports["direct"]),
        **_replica_values(spec, obj, ports.get("repl", 0)),
    }  # fmt: skip
    labels = _labels("accounts", j)
    box = _container(spec, ACCOUNTS, values, ports, ports["metrics"], cpu="500m", memory="512Mi")
    pod = _pod(spec, labels, box, ports["metrics"], spread(labels, True), grace=60)
    return [
        _service(obj, labels, ports, headless=True, early=True),
        _stateful(obj, labels, spec.replicas, pod, _claim(spec)),
        _budget(obj, labels),
    ]


def router(spec: Spec, j: int) -> list[dict[str, Any]]:
    """Router ``j``: a Deployment of one pod, its shards' Service and its clients'."""
    lay, obj = spec.layout, name("router", j)
    front, back = port_of(lay.router_frontend(0)), port_of(lay.router_backend(0))
    metrics = lay.router_metrics(0)
    values = {"shards": spec.shards, "index": j, "frontend": bind(front),
              "backend": bind(back), "metrics_port": metrics, "accounts": spec.accounts,
              "keys_dir": KEYS}  # fmt: skip
    labels = _labels("router", j)
    ports = {"clients": front, "shards": back, "metrics": metrics}
    box = _container(spec, ROUTER, values, ports, metrics, cpu="500m")
    pod = _pod(spec, labels, box, metrics, spread(_labels("router"), required=False))
    return [
        _service(obj, labels, {"clients": front}),
        _service(f"{obj}-shards", labels, {"shards": back}, early=True),
        _deployment(obj, labels, 1, pod, recreate=True),
    ]


def bridge(spec: Spec) -> list[dict[str, Any]]:
    """The bridge: one pod (it writes each event to Redis exactly once)."""
    lay, obj = spec.layout, name("bridge")
    metrics = lay.bridge_metrics_port
    values = {"endpoint": _router_frontends(spec), "redis_url": bridge_url(_redis_url(spec)),
              "metrics_port": metrics, "markets_file": MARKETS, "keys_dir": KEYS}  # fmt: skip
    labels = _labels("bridge")
    box = _container(spec, BRIDGE, values, {"metrics": metrics}, metrics)
    return [_deployment(obj, labels, 1, _pod(spec, labels, box, metrics), recreate=True)]


def gateways(spec: Spec) -> list[dict[str, Any]]:
    """G gateways behind one Service (each reads the same streams: any serves a client)."""
    if not spec.gateways:
        return []
    obj, port = name("gateway"), spec.layout.gateway_port(0)
    values = {"index": 0, "bind": ANY, "port": port, "endpoint": _router_frontends(spec),
              "redis_url": user_url(_redis_url(spec), "reader"), "markets_file": MARKETS,
              "keys_dir": KEYS}  # fmt: skip
    labels = _labels("gateway")
    box = _container(spec, GATEWAY, values, {"http": port}, port)
    pod = _pod(spec, labels, box, port)
    return [
        _service(obj, labels, {"http": port}),
        _deployment(obj, labels, spec.gateways, pod, recreate=False),
        _budget(obj, labels),
    ]


def redis(spec: Spec) -> list[dict[str, Any]]:
    """The embedded Redis (``shardex redis``): the streams (and the leases with
    ``coord="redis"``), one pod with its AOF on a claim. A single point: docs/deploy.md."""
    obj, port = name("redis"), spec.layout.redis_port
    values = {"host": ANY, "base_port": spec.layout.base_port, "data_dir": DATA,
              "keys_dir": KEYS}  # fmt: skip
    labels = _labels("redis")
    box = _container(spec, REDIS, values, {"redis": port}, port, http=False, memory="1Gi")
    pod = _pod(spec, labels, box, None)
    return [_service(obj, labels, {"redis": port}), _stateful(obj, labels, 1, pod, _claim(spec))]


def markets(spec: Spec) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": _meta(name("markets"), _labels("config")),
             "data": {"markets.toml": spec.markets or default_markets()}}]  # fmt: skip
