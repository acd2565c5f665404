"""A stale placement map is detected by version and refreshed, never a silent misroute: shards
restarted under a newer map (a pair pinned elsewhere) bring it to the router in their HELLO, a
direct client still holding the old map is refused by the old owner (``wrong_shard`` with the
owner and the map's version), takes the router's map and sends the order once more."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from shardex.client import ShardexError
from shardex.placement import DirStore
from tests.support.cluster import Cluster
from tests.support.wait import wait_until


def _router_map(cluster: Cluster) -> tuple[int, list]:
    """(the router's map version, every shard's pid) once every shard is registered, else
    (-1, [])."""
    try:
        with cluster.client(timeout=2.0) as c:
            topo = c.topology()
    except ShardexError:
        return -1, []
    pids = [t.get("pid") for t in topo["topology"]]
    return (topo["placement"]["version"], pids) if all(pids) else (-1, [])


def test_shards_bring_a_newer_map_and_a_stale_direct_client_is_redirected(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cluster = Cluster(2, data_dir=str(data))
    try:
        store = DirStore(data)
        v1 = store.load()
        assert v1 is not None and v1.owner("BTC-USD") == 0 and v1.owner("ETH-USD") == 1
        assert _router_map(cluster)[0] == v1.version
        with cluster.client(direct=True, account="alice") as direct:
            assert direct.place("ETH-USD", "buy", "1", "10", id="e1").ok  # (learns v1)
            assert direct.placement.version == v1.version
            v2 = v1.with_pin("BTC-USD", 1)  # (no BTC-USD data yet: nothing to move)
            assert store.compare_and_set(v1.version, v2)
            old = _router_map(cluster)[1]
            for pid in old:
                os.kill(pid, signal.SIGKILL)  # the supervisor restarts them under v2
            version, pids = wait_until(
                lambda: (m := _router_map(cluster))[0] == v2.version
                and not set(m[1]) & set(old) and m,
                60, "both shards back, the router on the new map")
            assert version == v2.version and len(pids) == 2
            # the client's v1 sends BTC-USD to shard 0: refused there, then sent to shard 1
            r = direct.place("BTC-USD", "buy", "1", "10", id="b1")
            assert r.ok and [e["ev"] for e in r.events] == ["accepted"], r.events
            assert direct.placement.version == v2.version
        with cluster.client(account="alice") as c:
            assert c.book("BTC-USD")["bids"]  # (routed by the router's v2 to shard 1)
            rows = {st["shard"]: st["resting"] for st in c.status()}
            assert rows == {0: 0, 1: 2}  # ETH-USD and BTC-USD both on shard 1, nothing lost
            eps = [t["direct"] for t in c.topology()["topology"]]
        # a client that is given the shards' endpoints learns no map from the router: its
        # default sends BTC-USD to shard 0, which refuses it naming the owner and its version
        with cluster.client(account="alice", direct=True, shard_endpoints=eps) as pinned_out:
            r = pinned_out.place("BTC-USD", "buy", "1", "10", id="b2")
            (rej,) = r.events
            assert rej["ev"] == "rejected" and rej["code"] == "wrong_shard", r.events
            why = rej["reason"]
            assert "belongs to shard 1, not 0" in why and f"v{v2.version}" in why
    finally:
        cluster.stop()
