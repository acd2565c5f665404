"""loadgen across a failover (kill -9 of the leader under load, ``--replicas 2`` shard 0 with
Redis): every open outcome is asked of the new leader and told, none counted as a bare timeout."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pair(tmp_path):
    """``test_failover``'s pair: a router, two ``--role auto`` replicas of shard 0, Redis."""
    from tests.support.failover import started_pair

    with started_pair(tmp_path) as p:
        yield p


def test_failover_leaves_no_fate_unasked(pair) -> None:
    """Regression: across a failover loadgen counted the router's "it may have run: ask its
    fate" answers as timeouts and never asked them (``timeouts 115`` vs ``executed 0, not
    executed 0, unknown 0``). kill -9 of the leader under load: every open outcome is asked
    of the new leader and told."""
    first = pair.wait_leader()
    pair.wait_isr({"shard-0.r0", "shard-0.r1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "loadgen", "--endpoint", pair.layout.frontend,
         "--key", "none", "--duration", "8", "--symbols", "1", "--window", "4", "--batch", "20",
         "--timeout", "5", "--json", "--quiet", "--max-error-rate", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        with pair.client() as c:
            deadline = time.monotonic() + 30
            while (c.status()[0].get("commands") or 0) < 2000:  # loadgen is sending
                assert time.monotonic() < deadline and proc.poll() is None, "loadgen never sent"
                time.sleep(0.05)
        pair.proc_of(first).send_signal(signal.SIGKILL)
        pair.wait_leader(not_node=first)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    d = json.loads(out)
    assert d["timeouts"] > 0, (
        d["errors"],
        d["fates"],
    )  # (the kill left requests in flight: the scenario happened)
    assert sum(d["fates"].values()) == d["timeouts"], d
    assert d["fates"]["unknown"] == 0, (d["fates"], d["unknown_why"])
