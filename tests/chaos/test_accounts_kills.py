"""kill -9 of an account shard and then of an engine shard mid-flow on a real ``shardex up
--accounts`` cluster: both come back, and every trade is settled exactly once (balances to the
unit, fees included; the audit clean)."""

from __future__ import annotations

import os
import signal
from decimal import Decimal as D

import pytest

from shardex.client import Client, audit_report
from tests.support.accounts import _wait
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(120)


def _settled(c: Client, account: str, expect: dict[str, tuple[D, D]]):
    return lambda: c.balance(account) == expect


def test_kill9_account_and_engine_shard_mid_flow():
    cl = Cluster(1, accounts=1)
    try:
        with Client(cl.endpoint, key=cl.key, timeout=5) as c:
            assert c.deposit("m", "BTC", "10", ref="k-m").ok
            assert c.deposit("t", "USD", "100000", ref="k-t").ok
            ids = iter(range(1000))

            def round_trip() -> None:
                for _ in range(5):
                    assert c.place("BTC-USD", "sell", "0.1", "100", account="m",
                                   id=f"s{next(ids)}").ok  # fmt: skip
                    assert c.place("BTC-USD", "buy", "0.1", "100", account="t",
                                   id=f"b{next(ids)}").ok  # fmt: skip

            round_trip()
            info = c.topology()
            os.kill(info["account_topology"][0]["pid"], signal.SIGKILL)
            old = info["account_topology"][0]["pid"]
            _wait(lambda: c.topology()["account_topology"][0].get("pid") not in (None, old),
                  "account shard back")  # fmt: skip
            _wait(lambda: c.balance("m") is not None, "account shard serving")
            round_trip()
            os.kill(info["topology"][0]["pid"], signal.SIGKILL)
            _wait(lambda: c.topology()["topology"][0].get("pid")
                  not in (None, info["topology"][0]["pid"]), "engine shard back")  # fmt: skip
            _wait(lambda: c.place("BTC-USD", "sell", "0.1", "100", account="m",
                                  id=f"s{next(ids)}").ok, "engine path")  # fmt: skip
            _wait(lambda: c.place("BTC-USD", "buy", "0.1", "100", account="t",
                                  id=f"b{next(ids)}").ok, "engine path")  # fmt: skip
            # 11 trades of 0.1 BTC at 100: t paid 110 + 5 bps per order (0.005 each, exact)
            want_t = {"USD": (D("100000") - D("110") - 11 * D("0.005"), D(0)),
                      "BTC": (D("1.1"), D(0))}  # fmt: skip
            want_m = {"BTC": (D("8.9"), D(0)), "USD": (D("110") - 11 * D("0.002"), D(0))}
            _wait(_settled(c, "t", want_t), "taker settled exactly once")
            _wait(_settled(c, "m", want_m), "maker settled exactly once")
            lines, ok = audit_report(c.audit())
            assert ok, lines
            assert all(sh.get("anomalies") == 0 for sh in c.audit())
    finally:
        cl.stop()
