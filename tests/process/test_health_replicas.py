"""``GET /healthz`` of real processes through a failover: the router, a leading replica and its
hot standby each answer on their metrics port; after the leader is killed, the standby answers
as the leader on the same port (bound once, kept through the promotion) and the router is
ready again once the new leader said hello (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from typing import Any

from tests.support.failover import Pair
from tests.support.wait import wait_until


class MetricsPair(Pair):
    """``Pair`` with each replica's exporter on its layout port (``Pair`` turns them off)."""

    def start_replica(self, r: int) -> None:
        self.start(f"r{r}", [
            "engine", "--shard", "0", "--shards", "1", "--role", "auto", "--replica", str(r),
            "--redis-url", self.redis_url, "--data-dir", self.data, "--no-pin",
            "--metrics-port", str(self.layout.replica_metrics(0, r)),
        ])  # fmt: skip


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of ``/healthz`` on ``port`` ((0, {}) while nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_a_standby_answers_healthz_and_keeps_its_port_when_it_takes_over(tmp_path, redis_server):
    pair = MetricsPair(tmp_path, redis_server.url)
    try:
        lay = pair.layout
        router, ports = lay.router_metrics_port, {r: lay.replica_metrics(0, r) for r in (0, 1)}
        leader = pair.wait_leader()
        lead, standby = (0, 1) if leader.endswith(".r0") else (1, 0)
        pair.wait_isr({"shard-0.r0", "shard-0.r1"})
        code, doc = wait_until(lambda: (h := healthz(ports[standby]))[1].get("following") and h,
                               what="the standby's /healthz naming its leader")  # fmt: skip
        assert (code, doc["state"], doc["role"], doc["following"]) == (
            200, "standby", "engine", leader)  # fmt: skip
        code, doc = healthz(ports[lead])
        assert (code, doc["state"]) == (200, "serving")
        wait_until(lambda: healthz(router)[0] == 200, what="the router ready")

        os.killpg(pair.procs[f"r{lead}"].pid, signal.SIGKILL)
        pair.procs[f"r{lead}"].wait(10)
        assert healthz(ports[lead])[0] == 0  # gone with its process
        pair.wait_leader(not_node=leader, timeout=30)
        code, doc = wait_until(
            lambda: (h := healthz(ports[standby]))[1].get("state") == "serving" and h,
            timeout=30, what="the promoted standby serving on its own port",
        )  # fmt: skip
        assert code == 200 and doc["role"] == "engine"
        wait_until(lambda: healthz(router)[0] == 200, timeout=30, what="the router ready again")
    finally:
        pair.stop()
