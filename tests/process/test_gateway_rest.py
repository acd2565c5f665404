"""The private REST API as a trader uses it: a real ``shardex up`` cluster with the account
tier, Redis and a gateway; API keys made with ``shardex keys add --api``; every request signed
as docs/gateway-rest.md says (tests/support/rest.py, HMAC with the stdlib). An admin deposit,
a signed amend, a trade and the balances after it, the fill with its fee, cancel-all, open
orders, a timed-out order's fate, another account's order id refused, a replay refused and the
dead-man switch firing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from shardex.wire.codes import ADMIN_REQUIRED, NOT_ALLOWED, REPLAYED
from tests.support.cluster import Cluster
from tests.support.rest import signed
from tests.support.shared_gateway import SharedGateway, tidy
from tests.support.wait import wait_until

SYMBOL = "BTC-USD"


# the accounts this module trades under (the cluster is shared: tests/support/shared_gateway.py)
ACCOUNTS = ("ga", "gb", "gc", "gd", "ge", "go")


@pytest.fixture(scope="module", autouse=True)
def _tidy() -> Iterator[None]:
    yield
    tidy(ACCOUNTS)


@pytest.fixture
def gw(gateway_cluster: SharedGateway) -> tuple[str, Cluster]:
    """The shared cluster's gateway URL and the cluster."""
    return gateway_cluster.url, gateway_cluster.cluster


def _api_key(cluster: Cluster, *args: str) -> dict[str, Any]:
    """``shardex keys add ... --api``: the API key record it wrote."""
    proc = subprocess.run([sys.executable, "-m", "shardex.cli", "keys", "add", *args, "--api",
                           "--data-dir", cluster.data_dir],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(open(proc.stdout.split("API key:")[1].split()[0]).read())


def _order(side: str, qty: str, price: str, oid: str) -> dict[str, str]:
    return {"symbol": SYMBOL, "side": side, "qty": qty, "price": price, "id": oid}


def test_a_trader_funds_amends_trades_reads_fills_and_cancels_over_signed_rest(gw) -> None:
    url, cluster = gw
    admin = _api_key(cluster, "--role", "admin", "--name", "rest-admin")
    alice, bob = _api_key(cluster, "--account", "ga"), _api_key(cluster, "--account", "gb")
    status, body = signed(url, alice, "POST", "/v1/deposit",
                          {"account": "ga", "asset": "USD", "amount": "1000"})
    assert (status, body["code"]) == (403, ADMIN_REQUIRED)
    for acct, asset, amount in (("ga", "USD", "100000"), ("gb", "BTC", "10")):
        status, body = signed(url, admin, "POST", "/v1/deposit",
                              {"account": acct, "asset": asset, "amount": amount})
        assert status == 200 and body["events"][0]["ev"] == "balance", body
    # with the account tier an order's answer is "held and forwarded" (ok, no events): what
    # happens next is read back (the order's state, open orders, balances)
    status, body = signed(url, alice, "POST", "/v1/order", _order("buy", "0.0100", "30000", "g1"))
    assert status == 200 and body["ok"], body
    g1 = f"/v1/order?symbol={SYMBOL}&id=g1"
    wait_until(lambda: signed(url, alice, "GET", g1)[1]["state"] == "live", 30, "g1 rests")
    status, body = signed(url, alice, "PUT", "/v1/order",
                          {"symbol": SYMBOL, "id": "g1", "price": "30001"})
    assert status == 200 and body["ok"], body

    def mine() -> list[dict[str, Any]]:
        return signed(url, alice, "GET", "/v1/openOrders")[1]["orders"]

    wait_until(lambda: [Decimal(o["price"]) for o in mine()] == [30001], 30, "g1 amended")
    (o,) = mine()
    assert (o["id"], Decimal(o["open"]), Decimal(o["filled"])) == ("g1", Decimal("0.01"), 0)
    status, body = signed(url, bob, "POST", "/v1/order", _order("sell", "0.0100", "30001", "s1"))
    assert status == 200 and body["ok"], body

    def btc() -> Decimal:
        return Decimal(signed(url, alice, "GET", "/v1/balances")[1]["balances"]
                       .get("BTC", {"free": "0"})["free"])  # fmt: skip

    wait_until(lambda: btc() == Decimal("0.01"), 30, "alice's BTC after the trade")
    wait_until(lambda: mine() == [], 30, "g1 filled: no open order left")

    def fill() -> dict[str, Any] | None:
        rows = signed(url, alice, "GET", f"/v1/fills?symbol={SYMBOL}&limit=10")[1]["fills"]
        return rows[0] if rows else None

    wait_until(lambda: fill() is not None, 30, "alice's fill in the balances stream")
    f = fill()
    assert f is not None
    assert (f["id"], f["side"], f["role"], Decimal(f["price"]), Decimal(f["qty"])) == (
        "g1", "buy", "maker", Decimal(30001), Decimal("0.01"))
    notional = Decimal("300.01")
    assert f["fee_asset"] and notional * f["fee_bps"] / 10000 <= Decimal(f["fee"]) < Decimal(1)
    status, body = signed(url, alice, "GET", f"/v1/order?symbol={SYMBOL}&id=g1&fate=1")
    assert (status, body["fate"]) == (200, "executed"), body
    assert signed(url, alice, "GET", f"/v1/order?symbol={SYMBOL}&id=g404&fate=1")[1]["fate"] == (
        "not executed")
    for i in range(2):
        assert signed(url, alice, "POST", "/v1/order",
                      _order("buy", "0.0100", "20000", f"g{i + 2}"))[0] == 200
    wait_until(lambda: len(mine()) == 2, 30, "g2 and g3 rest")
    status, body = signed(url, alice, "DELETE", f"/v1/orders?symbol={SYMBOL}")
    assert (status, sorted(c["id"] for c in body["cancelled"])) == (200, ["g2", "g3"]), body
    wait_until(lambda: mine() == [], 30, "no open order after cancel-all")


def test_another_accounts_order_and_a_replay_are_refused_and_the_dead_man_fires(gw) -> None:
    url, cluster = gw
    admin = _api_key(cluster, "--role", "admin", "--name", "rest-admin2")
    carol, dave = _api_key(cluster, "--account", "gc"), _api_key(cluster, "--account", "gd")
    for acct in ("gc", "gd"):
        assert signed(url, admin, "POST", "/v1/deposit",
                      {"account": acct, "asset": "USD", "amount": "100000"})[0] == 200
    assert signed(url, dave, "POST", "/v1/order", _order("buy", "0.0100", "20000", "d1"))[0] == 200
    path = f"/v1/order?symbol={SYMBOL}&id=d1&account=gd"
    wait_until(lambda: signed(url, dave, "GET", path)[1]["state"] == "live", 30, "d1 rests")
    status, body = signed(url, carol, "DELETE", path)
    assert (status, body["code"]) == (403, NOT_ALLOWED)
    status, body = signed(url, carol, "DELETE", f"/v1/order?symbol={SYMBOL}&id=d1")
    assert status == 400 and not body["ok"]  # (carol has no order d1: dave's stays)
    assert signed(url, dave, "GET", path)[1]["state"] == "live"
    ts = int(time.time() * 1000)
    assert signed(url, carol, "GET", "/v1/balances", ts=ts)[0] == 200
    status, body = signed(url, carol, "GET", "/v1/balances", ts=ts)
    assert (status, body["code"]) == (401, REPLAYED)
    status, body = signed(url, dave, "POST", "/v1/cancelAfter", {"seconds": 1, "symbol": SYMBOL})
    assert status == 200 and body["ok"], body
    wait_until(lambda: signed(url, dave, "GET", path)[1]["state"] == "cancelled", 30,
               "the dead-man switch cancels dave's order")  # fmt: skip


def test_a_key_that_traded_before_a_listing_trades_the_new_pair(gw) -> None:
    """Regression: each API key's SDK client was made with a copy of the gateway's markets
    table, so a key used before ``shardex market add`` was refused the new pair (its client
    never asked the cluster). The key's client now learns the cluster's table itself."""
    url, cluster = gw
    admin = _api_key(cluster, "--role", "admin", "--name", "rest-admin3")
    erin = _api_key(cluster, "--account", "ge")
    assert signed(url, admin, "POST", "/v1/deposit",
                  {"account": "ge", "asset": "USD", "amount": "1000"})[0] == 200
    assert signed(url, erin, "POST", "/v1/order", _order("buy", "0.0100", "100", "e1"))[0] == 200
    with cluster.client(timeout=10) as c:
        assert c.list_market("NEWR-USD", {"tick": "0.01", "lot": "0.01"})["ok"]
    order = {"symbol": "NEWR-USD", "side": "buy", "qty": "1", "price": "2", "id": "e2"}
    status, body = signed(url, erin, "POST", "/v1/order", order)
    assert status == 200 and body["ok"], body


def test_the_operator_numbers_come_from_the_clusters_own_exporters(gw) -> None:
    """``GET /v1/ops`` (the operator page's numbers, docs/ops.md) on the real cluster: every
    exporter of the layout read, and the traffic sent after the first read shows as
    latency and throughput per shard (who may read them: tests/unit/test_gateway_ops.py)."""
    url, cluster = gw
    reader = _api_key(cluster, "--role", "reader", "--name", "ops-reader")
    status, first = signed(url, reader, "GET", "/v1/ops")
    assert status == 200, first
    assert [s["shard"] for s in first["shards"]] == ["0"] and first["shards"][0]["up"]
    assert [a["shard"] for a in first["accounts"]] == ["0"]
    assert {s["name"] for s in first["sources"]} == {"router 0", "engine 0", "account 0", "bridge"}
    assert all(s["ok"] for s in first["sources"]), first["sources"]
    with cluster.client() as admin:  # orders through the account shard to the engine
        assert admin.deposit("go", "USD", "1000", ref="ops-go").ok
        for i in range(5):
            assert admin.place(SYMBOL, "buy", "0.0010", str(20000 + i), id=f"ops{i}",
                               account="go").ok  # fmt: skip

    def shown() -> dict[str, Any] | None:
        got = signed(url, reader, "GET", "/v1/ops")[1]
        eng, acc = got["shards"][0], got["accounts"][0]
        seen = (eng["engine_p99_ms"], eng["commands_per_s"], acc["p50_ms"], acc["p99_ms"],
                acc["commands_per_s"])  # fmt: skip
        return got if all(v is not None and v > 0 for v in seen) else None

    got = wait_until(shown, 30, "the orders' latency and throughput on the operator numbers",
                     interval=0.5)
    assert got["totals"]["commands_per_s"] > 0 and got["shards"][0]["backlog"] is not None
