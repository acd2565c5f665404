"""What keeps the loss of any one node from stopping trading in a Kubernetes deployment
(``shardex deploy k8s``; docs/deploy.md "Losing a node").

- The shards' leases live in a 3-member etcd (``coord="etcd"``, the default): a StatefulSet
  ``shardex-etcd`` whose members are never on one node (required anti-affinity), each with its
  own volume claim, at most one down by a drain (a PodDisruptionBudget), named by a headless
  Service published before the members are ready, all started at once (``Parallel``): a
  member is ready only once a quorum formed, so one at a time would never start the second.
  The member names are fixed (``shardex-etcd-K.shardex-etcd``), so ``--initial-cluster`` is
  written out here and every replica's ``--redis-url`` is ``etcd://`` those names. One member
  lost keeps a quorum; the single Redis pod (``--coord redis``) was a box whose loss fenced
  every leader, and Kubernetes does not replace a StatefulSet pod on a lost node by itself.
- The routers: ``--routers 2`` by default, spread over nodes where the scheduler can
  (``shardex.deploy.k8s.router``'s preferred anti-affinity: a small cluster still schedules
  both), and here their budget: one down at a time by a drain, whichever index.

Pure, like ``shardex.deploy.k8s``: a ``Spec`` in, dicts out.
"""

from __future__ import annotations

from typing import Any

from shardex.deploy.k8s import (
    ETCD_CLIENT_PORT,
    ETCD_MEMBERS,
    UID,
    Spec,
    _budget,
    _labels,
    _service,
    _stateful,
    etcd_peer,
    name,
    spread,
)

PEER_PORT = 2380
ETCD_DATA = "/var/lib/etcd"
COMPACTION = "1h"  # periodic compaction keeps an hour of revisions (the leases renew often)
QUOTA = 2 * 1024**3  # the backend's size limit (bytes): far above a cluster's leases


def uses_etcd(spec: Spec) -> bool:
    """Whether the deployment has leases (two replicas per shard) and keeps them in etcd."""
    return spec.replicas > 1 and spec.coord == "etcd"


def initial_cluster() -> str:
    """``--initial-cluster``: every member by its stable name (the headless Service's)."""
    return ",".join(f"{name('etcd')}-{k}=http://{etcd_peer(k)}:{PEER_PORT}"
                    for k in range(ETCD_MEMBERS))  # fmt: skip


def etcd_args() -> list[str]:
    """One member's command line; ``$(POD_NAME)`` (its member name) expanded by the kubelet.
    Heartbeat and election timeout as docs/coordination.md: a 1 s minimum lease; pre-vote so a
    member cut off and back does not depose a healthy leader; compaction and a quota so the
    revisions the renewals write do not fill the disk."""
    me = f"$(POD_NAME).{name('etcd')}"
    return [
        "etcd", "--name=$(POD_NAME)", f"--data-dir={ETCD_DATA}/data",
        f"--listen-client-urls=http://0.0.0.0:{ETCD_CLIENT_PORT}",
        f"--advertise-client-urls=http://{me}:{ETCD_CLIENT_PORT}",
        f"--listen-peer-urls=http://0.0.0.0:{PEER_PORT}",
        f"--initial-advertise-peer-urls=http://{me}:{PEER_PORT}",
        f"--initial-cluster={initial_cluster()}", "--initial-cluster-state=new",
        f"--initial-cluster-token={name('etcd')}", "--heartbeat-interval=50",
        "--election-timeout=500", "--pre-vote=true", "--auto-compaction-mode=periodic",
        f"--auto-compaction-retention={COMPACTION}", f"--quota-backend-bytes={QUOTA}",
    ]  # fmt: skip


def _etcd_container(spec: Spec) -> dict[str, Any]:
    """Ready while the member has a leader (``/health``); alive while its port answers (a
    restart does not bring a lost quorum back)."""
    port = ETCD_CLIENT_PORT
    return {
        "name": "etcd",
        "image": spec.etcd_image,
        "command": etcd_args()[:1],
        "args": etcd_args()[1:],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "client", "containerPort": port},
                  {"name": "peer", "containerPort": PEER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": ETCD_DATA}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip


def etcd(spec: Spec) -> list[dict[str, Any]]:
    """The etcd members: headless Service, StatefulSet, disruption budget ([] without)."""
    if not uses_etcd(spec):
        return []
    obj, labels = name("etcd"), _labels("etcd")
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                                "fsGroup": UID},
            "terminationGracePeriodSeconds": 30,
            "containers": [_etcd_container(spec)],
            "affinity": spread(labels, required=True),
        },
    }  # fmt: skip
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": spec.etcd_storage}}}}  # fmt: skip
    return [
        _service(obj, labels, {"client": ETCD_CLIENT_PORT, "peer": PEER_PORT}, headless=True,
                 early=True),
        _stateful(obj, labels, ETCD_MEMBERS, pod, claim),
        _budget(obj, labels),
    ]  # fmt: skip


def routers_budget(spec: Spec) -> list[dict[str, Any]]:
    """At most one router down by a drain, whichever index (one Deployment per index)."""
    return [_budget(name("router"), _labels("router"))] if spec.routers > 1 else []
