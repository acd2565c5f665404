"""Router scale-out: R router processes in front of the same N shards (``shardex up --routers``).

Each shard serves every router over a link of its own, so a reply goes back through the router
that forwarded its request; clients given every router's endpoint spread over them, and keep
working on the others when one router is killed.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request

from shardex.client import Client
from tests.support.cluster import Cluster
from tests.support.ports import listening
from tests.support.wait import wait_until


def _forwarded(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shardex_router_forwarded_total{")
    )


def test_two_routers_share_the_shards_and_survive_the_loss_of_one():
    cluster = Cluster(2, routers=2)
    try:
        layout = cluster.layout
        deadline = time.monotonic() + 20
        while "clients connect to" not in cluster.output() and time.monotonic() < deadline:
            time.sleep(0.1)  # printed once every router has every shard
        assert f"clients connect to {layout.frontends}" in cluster.output()
        # every router has every shard registered (each shard said hello on each link)
        for j in range(2):
            with Client(layout.router_frontend(j), key=cluster.key, timeout=5.0) as c:
                topo = c.topology()["topology"]
                assert all(t.get("pid") for t in topo), (j, topo)
        with Client(layout.frontends, key=cluster.key, timeout=5.0, account="acct") as c:
            results = [c.place("BTC-USD", "buy", "1", str(100 + k % 5)) for k in range(40)]
            results += [c.place("ETH-USD", "sell", "1", str(200 + k % 5)) for k in range(40)]
            assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
        # one client connection spread its requests over both routers
        assert _forwarded(layout.router_metrics(0)) > 0
        assert _forwarded(layout.router_metrics(1)) > 0
        # kill -9 router 1: a client that knows both routers goes on through router 0
        os.kill(cluster.child_pid("router.1"), signal.SIGKILL)
        # the dead router's connections close (its port stops listening); the DEALER stops
        # using it
        port = int(layout.router_frontend(1).rsplit(":", 1)[1])
        wait_until(lambda: not listening(port), 15, "router 1's port closed")
        with Client(layout.frontends, key=cluster.key, timeout=5.0, account="acct") as c:
            after = [c.place("BTC-USD", "sell", "1", "150") for _ in range(30)]
            assert all(r.ok for r in after), [r for r in after if not r.ok][:3]
            # and every order placed through either router is in the one book of its shard
            book = c.book("BTC-USD", depth=10)
            assert book is not None
    finally:
        cluster.stop()
