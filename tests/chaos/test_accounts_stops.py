"""``shardex loadgen``'s fate of orders sent through a SIGSTOPped account shard, on a real
``shardex up --accounts`` cluster (moved here from tests/process/test_accounts_edges.py: it
stops a process). The SDK's fates of writes through the account shard run in one process:
tests/unit/test_inproc_fates.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.cluster import ROOT, Cluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tier() -> Iterator[Cluster]:
    """One engine shard and one account shard (insecure: the tests stop processes, not keys)."""
    c = Cluster(1, insecure=True, accounts=1)
    try:
        yield c
    finally:
        c.stop()


@contextmanager
def stopped_for(pid: int, seconds: float) -> Iterator[None]:
    """SIGSTOP ``pid`` now and SIGCONT it ``seconds`` later (or on the way out at the latest):
    the account shard is frozen while a request is in flight and resumes after the client's
    timeout, as a long GC pause, a swapped-out process or a wedged disk would do."""
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    resume.start()
    try:
        yield
    finally:
        resume.join()
        os.kill(pid, signal.SIGCONT)


def _account_pid(c) -> int:
    return c.topology()["account_topology"][0]["pid"]


def test_loadgen_asks_the_account_shard_for_timed_out_orders_first(tier: Cluster):
    """Regression: ``shardex loadgen`` with risk on asked the *engine* shard the fate of a
    timed-out order: one still queued at its stopped account shard was counted "not
    executed" and then ran (held, forwarded, matched). It now asks the account shard first
    (``ClientCore.held_fate``, as the SDK): ``held`` → executed, no answer in time →
    unknown, never "not executed" for an order that ran."""
    with tier.client() as admin:
        for asset, amount in (("USD", "100000000"), ("BTC", "100000")):
            assert admin.deposit("acct-0", asset, amount, ref=f"lg-{asset}").ok
        base = admin.account_status()[0]["commands"]
        pid = _account_pid(admin)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "loadgen", "--endpoint", tier.endpoint,
         "--key", "none", "--orders", "40", "--rate", "20", "--batch", "1", "--timeout", "0.5",
         "--accounts", "1", "--symbols", "1", "--mix", "limit=1", "--no-fund", "--risk", "on",
         "--json", "--quiet", "--max-error-rate", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        with tier.client() as admin:
            deadline = time.monotonic() + 20
            while admin.account_status()[0]["commands"] == base:  # loadgen is sending
                assert time.monotonic() < deadline, "loadgen never sent"
                time.sleep(0.02)
        with stopped_for(pid, 1.5):  # orders sent meanwhile time out; their fates are asked
            time.sleep(1.5)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    report = json.loads(out)
    assert report["timeouts"] > 0, report  # (the scenario happened)
    assert report["fates"]["not_executed"] == 0, json.dumps(report)
    assert report["fates"]["executed"] > 0, report["fates"]
    assert not report["rejected"], report["rejected"]  # (every order it sent could run)
