"""The etcd members of the Kubernetes manifests (``shardex.deploy.ha``), run for real: their
generated command line, with the pods' DNS names mapped to loopback ports, forms one cluster
with Debian's etcd, a shard's lease is taken through the ``etcd://`` URL the replicas get, and
the lease keeps renewing with one member lost (the node-loss case the manifests are for)."""

from __future__ import annotations

import re

import pytest

from shardex.coord.connect import connect, lease_store
from shardex.deploy import ha, k8s
from tests.support.etcd import EtcdCluster, etcd_binary

pytestmark = pytest.mark.skipif(etcd_binary() is None, reason="needs etcd (Debian: etcd-server)")
PEER = re.compile(rf"{k8s.name('etcd')}-(\d)\.{k8s.name('etcd')}:(\d+)")


class ManifestEtcd(EtcdCluster):
    """``EtcdCluster`` whose members run the manifests' etcd arguments: ``$(POD_NAME)`` as the
    kubelet expands it, each member's DNS name and port as a loopback port of this test."""

    def argv(self, i: int, state: str) -> list[str]:
        ports = {str(k8s.ETCD_CLIENT_PORT): self.client_ports, str(ha.PEER_PORT): self.peer_ports}
        me = f"{k8s.name('etcd')}-{i}"
        out = []
        for arg in ha.etcd_args():
            arg = arg.replace("$(POD_NAME)", me).replace(ha.ETCD_DATA, str(self.dir / me))
            arg = PEER.sub(lambda m: f"127.0.0.1:{ports[m.group(2)][int(m.group(1))]}", arg)
            for port, mine in ports.items():
                arg = arg.replace(f"0.0.0.0:{port}", f"127.0.0.1:{mine[i]}")
            out.append(arg)
        out = [a for a in out[1:] if not a.startswith("--initial-cluster-state=")]
        return [self.binary, *out, f"--initial-cluster-state={state}"]  # "existing": a restart


def test_the_manifests_etcd_forms_a_cluster_that_keeps_a_lease_with_a_member_lost(tmp_path):
    spec = k8s.Spec()
    url = k8s.coord_url(spec)
    assert url.count(",") == k8s.ETCD_MEMBERS - 1  # the URL names every member
    etcd = ManifestEtcd(tmp_path)  # the three members became healthy: one cluster
    try:
        status = etcd.client(0).call("cluster/member/list", {})
        names = sorted(m["name"] for m in status["members"])
        assert names == [f"{k8s.name('etcd')}-{k}" for k in range(3)]
        # the replicas' URL with the members' names as this test's ports
        local = PEER.sub(lambda m: f"127.0.0.1:{etcd.client_ports[int(m.group(1))]}", url)
        store = lease_store(connect(local), "0")
        epoch, why, token = store.acquire("node-a", "tcp://a:6655", 1000, 0, 0)
        assert epoch > 0 and why == "ok", why
        assert store.holder().node == "node-a"
        lost = next(i for i in range(3) if i != etcd.leader())  # a node (not etcd's leader)
        etcd.kill(lost)
        assert store.renew(token, 1000), "two of three members renew the lease"
        assert store.holder().epoch == epoch
    finally:
        etcd.stop()
