"""The private WebSocket ``user`` channel as a trader uses it: a real ``shardex up`` cluster
with its account tier, bridge, Redis and gateway; API keys made with ``shardex keys add
--api``; orders placed through the signed REST API. A logged-in key sees its own order
updates, fills (with price, fee, role) and balance changes and nothing of another key's; a bad
login and a subscription without one are refused with stable codes; a resume replays what a
connection saw from the streams; cancel-on-disconnect cancels the key's resting order when its
connection drops."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from shardex.client import AsyncClient
from shardex.wire.codes import LOGIN_REQUIRED, UNAUTHORIZED
from tests.support.cluster import Cluster
from tests.support.gateway import until
from tests.support.gateway_user import UserWs, api_key, login, signed
from tests.support.shared_gateway import SharedGateway, tidy

SYMBOL = "BTC-USD"


# the accounts this module trades under (the cluster is shared: tests/support/shared_gateway.py)
ACCOUNTS = ("ua", "ub", "uc", "ud", "ue")


@pytest.fixture(scope="module", autouse=True)
def _tidy() -> Iterator[None]:
    yield
    tidy(ACCOUNTS)


@pytest.fixture
def cluster(gateway_cluster: SharedGateway) -> Cluster:
    return gateway_cluster.cluster


def _order(oid: str, side: str, price: str = "50000") -> bytes:
    return json.dumps({"symbol": SYMBOL, "side": side, "qty": "0.0100", "price": price,
                       "id": oid}).encode()  # fmt: skip


async def _logged_in(ws: UserWs, rec: dict, cod: bool = False, since: dict | None = None) -> dict:
    """Log in and subscribe; the subscription's answer."""
    await ws.send(login(rec, cod))
    await until(lambda: ws.first("login") or ws.first("error"), 30, "the login answer")
    assert ws.first("login"), ws.got
    sub = {"op": "subscribe", "channel": "user", **({"since": since} if since else {})}
    await ws.send(sub)
    await until(lambda: ws.first("subscribed"), 30, "the subscription answer")
    return ws.first("subscribed")  # type: ignore[return-value]


def test_a_key_sees_its_own_orders_fills_and_balances_only_and_can_resume(
    cluster: Cluster,
) -> None:
    url = f"http://127.0.0.1:{cluster.layout.gateway_port(0)}"
    buyer, seller = api_key(cluster.data_dir, "ua"), api_key(cluster.data_dir, "ub")

    async def run() -> None:
        await until(lambda: _healthy(url), 60, "the gateway is up")
        async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as admin:
            assert (await admin.deposit("ua", "USD", "10000", ref="ua-usd")).ok
            assert (await admin.deposit("ub", "BTC", "1", ref="ub-btc")).ok
        async with UserWs(url) as anon, UserWs(url) as a, UserWs(url) as b:
            await anon.send({"op": "subscribe", "channel": "user"})
            await anon.send(login(buyer, sig="00" * 32))
            await until(lambda: len(anon.got) >= 2, 30, "two refusals")
            assert [m["code"] for m in anon.got] == [LOGIN_REQUIRED, UNAUTHORIZED]
            ack = await _logged_in(a, buyer)
            await _logged_in(b, seller)
            assert signed(url, buyer, "POST", "/v1/order", _order("ua-1", "buy"))[0] == 200
            assert signed(url, seller, "POST", "/v1/order", _order("ub-1", "sell"))[0] == 200
            await until(lambda: any(m["type"] == "fill" for m in a.user()), 60, "a's fill")
            await until(lambda: any(m["type"] == "fill" for m in b.user()), 60, "b's fill")
            await until(lambda: any(m["type"] == "balance" and m["why"] == "trade"
                                    for m in a.user()), 60, "a's balance after the trade")
            mine = a.user()
            assert [m["seq"] for m in mine] == list(range(1, len(mine) + 1)), mine  # no gap
            assert {m["account"] for m in mine} == {"ua"}
            assert {m.get("id") for m in mine if m["type"] != "balance"} == {"ua-1"}
            statuses = [m["status"] for m in mine if m["type"] == "order"]
            assert "new" in statuses and "traded" in statuses, mine
            fill = next(m for m in mine if m["type"] == "fill")
            assert (fill["side"], fill["price"], fill["qty"], fill["symbol"]) == (
                "buy", "50000.00", "0.0100", SYMBOL)
            assert fill["role"] == "maker" and fill["fee_asset"] and fill["fee"] is not None
            assert {m["asset"] for m in mine if m["type"] == "balance"} >= {"USD", "BTC"}
            assert {m["account"] for m in b.user()} == {"ub"}
            # a new connection resuming from where ``a`` started replays the same messages
            async with UserWs(url) as again:
                resumed = await _logged_in(again, buyer, since=ack["since"])
                assert resumed["resumed"] is True and resumed["replayed"] >= len(mine)
                await until(lambda: sorted(map(_where, again.user()), key=_stream_order)
                            == sorted(map(_where, a.user()), key=_stream_order), 30,
                            "the replay brings what a got")  # fmt: skip

    asyncio.run(run())


def _where(m: dict) -> tuple:
    return (m["src"], m["src_seq"], m["type"], m.get("status"), m.get("id"), m.get("asset"))


def _stream_order(k: tuple) -> tuple:
    """A replay's order: orders, then events, then balances streams, each in seq order."""
    return ("oeb".index(k[0][0]), k[0], k[1])


def test_cancel_on_disconnect_cancels_the_keys_resting_order_when_it_drops(
    cluster: Cluster,
) -> None:
    url = f"http://127.0.0.1:{cluster.layout.gateway_port(0)}"
    rec = api_key(cluster.data_dir, "uc")

    async def run() -> None:
        await until(lambda: _healthy(url), 60, "the gateway is up")
        async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as admin:
            assert (await admin.deposit("uc", "USD", "10000", ref="uc-usd")).ok
        ws = UserWs(url)
        await ws.__aenter__()
        try:
            await _logged_in(ws, rec, cod=True)
            assert ws.first("login")["cancel_on_disconnect"] is True  # type: ignore[index]
            status, body = signed(url, rec, "POST", "/v1/order", _order("uc-1", "buy", "100"))
            assert status == 200, body
            await until(lambda: any(m.get("status") == "accepted" for m in ws.user()), 60,
                        "the order rests")  # fmt: skip
        finally:
            await ws.close()
        path = f"/v1/order?symbol={SYMBOL}&id=uc-1"
        await until(lambda: signed(url, rec, "GET", path)[1].get("state") == "cancelled", 60,
                    "cancelled on disconnect")  # fmt: skip

    asyncio.run(run())


def _positions(ack: dict, got: list[dict]) -> dict[str, int]:
    """Where a client resumes: per stream, the last entry it got (from the ack's start)."""
    pos = dict(ack["since"])
    for m in got:
        pos[m["src"]] = max(pos.get(m["src"], 0), m["src_seq"])
    return pos


def test_a_client_resumes_after_a_gateway_restart_with_what_happened_meanwhile(
    cluster: Cluster, gateway_cluster: SharedGateway
) -> None:
    url = f"http://127.0.0.1:{cluster.layout.gateway_port(0)}"
    maker = api_key(cluster.data_dir, "ud")

    async def run() -> None:
        await until(lambda: _healthy(url), 60, "the gateway is up")
        async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as admin:
            assert (await admin.deposit("ud", "USD", "10000", ref="ud-usd")).ok
            assert (await admin.deposit("ue", "BTC", "1", ref="ue-btc")).ok
            async with UserWs(url) as ws:
                ack = await _logged_in(ws, maker)
                status, _ = signed(url, maker, "POST", "/v1/order", _order("ud-1", "buy", "49000"))
                assert status == 200
                await until(lambda: any(m.get("status") == "accepted" for m in ws.user()), 60,
                            "the order rests")  # fmt: skip
                before = ws.user()
            starts = gateway_cluster.gateway_starts()
            subprocess.run(["kill", "-9", str(cluster.child_pid("gateway"))], check=True)
            res = await admin.place(SYMBOL, "sell", "0.0100", "49000", id="ue-1", account="ue")
            assert res.ok, res  # (while the gateway is down: crosses ud-1)
            await until(lambda: gateway_cluster.gateway_starts() > starts, 60, "restart")
            await until(lambda: _healthy(url), 60, "the gateway is back")
        async with UserWs(url) as ws:
            resumed = await _logged_in(ws, maker, since=_positions(ack, before))
            await until(lambda: any(m["type"] == "fill" for m in ws.user()), 60, "the fill")
            await until(lambda: any(m.get("why") == "trade" for m in ws.user()), 60, "balances")
            after = ws.user()
        assert resumed["resumed"] is True
        assert [m["seq"] for m in after] == list(range(1, len(after) + 1))
        assert not set(map(_where, before)) & set(map(_where, after))  # nothing twice
        assert {(m["type"], m.get("status")) for m in after} >= {
            ("order", "traded"), ("fill", None), ("balance", None)}
        fill = next(m for m in after if m["type"] == "fill")
        assert (fill["id"], fill["price"], fill["qty"], fill["side"]) == (
            "ud-1", "49000.00", "0.0100", "buy")

    asyncio.run(run())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False
