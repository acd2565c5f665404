"""The bridge stops on SIGTERM whatever Redis is doing, and frees its metrics port at once.

Regression: with Redis already gone (``shardex up`` stopped it first, or it died), the bridge
sat in its Redis retry loop and ignored SIGTERM until the supervisor killed it after its grace
period; a restart meanwhile found the metrics port still taken. Real processes here: the bridge
(``python -m shardex.cli bridge``), a real redis-server and the ZeroMQ stand-in shard.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cluster import ROOT
from tests.support.fakeshard import FakeShards, trade
from tests.support.ports import free_layout
from tests.support.redis import RedisServer

EXIT_WAIT = 10.0  # bounded wait for an exit that used to never come (the supervisor's grace: 5 s)


class Bridge:
    """A bridge child process on a given metrics port, its output in a file."""

    def __init__(self, fake: FakeShards, redis_url: str, log: Path, metrics_port: int) -> None:
        self.log_path = log
        self.log = open(log, "w+b")  # noqa: SIM115 - closed in stop()
        self.metrics_port = metrics_port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardex.cli", "bridge", "--endpoint", fake.layout.frontend,
             "--redis-url", redis_url, "--metrics-port", str(metrics_port), "--insecure"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def serves_metrics(self) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return b"shardex_bridge_redis_up" in resp.read()
        except OSError:
            return False

    def wait_for(self, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what in self.output():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the bridge exited before {what!r}:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        pytest.fail(f"{what!r} not logged in {timeout} s:\n{self.output()[-3000:]}")

    def terminate_and_wait(self) -> int | None:
        """SIGTERM, then the exit code, or None if it did not exit within EXIT_WAIT."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def _sigterm_exits_and_port_is_free(fake: FakeShards, bridge: Bridge, url: str, tmp: Path) -> None:
    rc = bridge.terminate_and_wait()
    assert rc is not None, f"SIGTERM ignored for {EXIT_WAIT} s:\n{bridge.output()[-3000:]}"
    assert rc == 0 and "bridge stopped" in bridge.output(), bridge.output()[-3000:]
    assert "Traceback" not in bridge.output()
    again = Bridge(fake, url, tmp / "again.log", bridge.metrics_port)  # restarted at once
    try:
        deadline = time.monotonic() + 30
        while not again.serves_metrics():
            assert again.proc.poll() is None, f"restart failed:\n{again.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no metrics:\n{again.output()[-3000:]}"
            time.sleep(0.1)
        assert again.terminate_and_wait() == 0
    finally:
        again.stop()


def test_sigterm_while_redis_is_gone_since_start(tmp_path: Path) -> None:
    """Redis never there: the bridge retries its first read of the streams; SIGTERM ends it."""
    fake = FakeShards(1)
    url = f"redis://127.0.0.1:{free_layout(1).base_port}/0"  # nothing listens there
    bridge = Bridge(fake, url, tmp_path / "bridge.log", free_layout(1).base_port)
    try:
        bridge.wait_for("Redis unavailable")
        _sigterm_exits_and_port_is_free(fake, bridge, url, tmp_path)
    finally:
        bridge.stop()
        fake.stop()


def test_sigterm_after_redis_went_away_mid_run(tmp_path: Path) -> None:
    """Redis served, then stopped (as ``shardex up`` stops it first): the bridge is in its
    outage loop with a batch to write; SIGTERM ends it and the port is free for a restart."""
    rdir = tmp_path / "redis"
    rdir.mkdir()
    server = RedisServer(str(rdir))
    fake = FakeShards(1)
    bridge = Bridge(fake, server.url, tmp_path / "bridge.log", free_layout(1).base_port)
    try:
        fake.publish(trade, 20)
        r = server.client()
        deadline = time.monotonic() + 30
        while r.xlen("shardex:events:0") < 20:
            assert time.monotonic() < deadline, bridge.output()[-3000:]
            time.sleep(0.05)
        server.stop()
        fake.publish(trade, 20)
        bridge.wait_for("Redis unavailable")
        _sigterm_exits_and_port_is_free(fake, bridge, server.url, tmp_path)
    finally:
        bridge.stop()
        fake.stop()
        server.stop()
