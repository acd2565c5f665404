"""The bridge as a test's process (``BridgeProc``) against fake shards, and the exactly-once check
of what it wrote to Redis.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from shardex.engine.codes import EV_TRADE
from tests.support.cluster import ROOT, Cluster
from tests.support.ports import free_port


class BridgeProc:
    """``shardex bridge`` as a real child process, its log in a file, its metrics on a port."""

    def __init__(self, fake, redis_url: str, tmp_path, keys_dir=None) -> None:
        """``keys_dir``: the bridge authenticates with its key from there (None: --insecure,
        for stand-in shards without CURVE)."""
        self.metrics_port = free_port()
        self.log_path = tmp_path / "bridge.log"
        self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardex.cli", "bridge", "--endpoint", fake.layout.frontend,
             "--redis-url", redis_url, "--metrics-port", str(self.metrics_port),
             *(["--keys-dir", str(keys_dir)] if keys_dir else ["--insecure"])],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Every sample of the exporter, keyed by ``name{labels}`` as printed."""
        try:
            text = (
                urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
                .read()
                .decode()
            )
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def wait_until(cond, timeout: float, what: str, bridge: BridgeProc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    tail = f"\n{bridge.output()[-3000:]}" if bridge else ""
    pytest.fail(f"{what} not reached in {timeout} s{tail}")


def assert_exact(r, fake, bridge: BridgeProc, shard: int = 0) -> None:
    """Redis holds exactly the stand-in's events: 1..seq, no hole, no copy, same fields."""
    evs = fake.events[shard]
    entries = r.xrange(f"shardex:events:{shard}")
    assert [e[0] for e in entries] == [f"{s}-0" for s in range(1, len(evs) + 1)]
    trades = {e[0]: e[1] for e in r.xrange("shardex:trades:BTC-USD")}
    for ev, (eid, f) in zip(evs, entries, strict=True):
        if ev[0] == EV_TRADE:
            assert (f["seq"], f["taker"], f["trade_id"]) == (str(ev[1]), ev[5], str(ev[8]))
            assert trades[eid]["taker"] == ev[5]
    assert "Traceback" not in bridge.output()
    assert bridge.proc.poll() is None, "the bridge process died"


def streams_caught_up(r, cluster: Cluster) -> dict[int, int]:
    """Wait (90 s at most) until every engine shard's events stream holds as many entries as
    the shard's seq; its status ({shard: seq}), or the test fails with the cluster's log."""
    deadline = time.monotonic() + 90
    while True:
        with cluster.client() as c:
            status = {s["shard"]: s.get("seq") for s in c.status()}
        if all(r.xlen(f"shardex:events:{i}") == seq for i, seq in status.items()):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"streams never caught up with {status}\n{cluster.output()[-3000:]}")
        time.sleep(0.3)
