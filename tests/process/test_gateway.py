"""The gateway as people use it: a real ``shardex up`` cluster (secure: the gateway reads with
its own reader key and Redis user), its gateway process, WebSocket clients written from the
docs (tests/support/gateway.py). The book a client keeps from snapshot + deltas equals the
engine's (OP_BOOK) with every checksum matching; a dropped delta is seen and resynced with one
message; bad input gets JSON errors with stable codes; a client that never reads is told
resync_required and closed without hurting another; a gateway killed and restarted loses no
trade for a client that resumes from its last seq."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from shardex.client import AsyncClient
from shardex.wire.codes import (
    BAD_MESSAGE,
    NOT_FOUND,
    UNKNOWN_CHANNEL,
    UNKNOWN_SYMBOL,
)
from tests.support.cluster import Cluster
from tests.support.gateway import WsClient, engine_levels, until
from tests.support.ports import free_port
from tests.support.wait import wait_until

SYMBOL = "BTC-USD"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(1, redis="embedded", gateways=1, without=("history-writer",))
    try:
        yield c
    finally:
        c.stop()


def _url(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.layout.gateway_port(0)}"


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metrics(port: int) -> str:
    return _get(f"http://127.0.0.1:{port}/metrics")[1].decode()


def _healthy(url: str) -> bool:
    try:
        return _get(url + "/healthz")[0] == 200
    except OSError:
        return False


async def _orders(c: AsyncClient, rnd: random.Random, n: int, tag: str) -> None:
    """``n`` random limit orders around 50000 (some crossing: trades), a few cancelled."""
    live = []
    for k in range(n):
        side = rnd.choice(["buy", "sell"])
        price = 50000 + rnd.randrange(-30, 31) * (1 if side == "sell" else -1) + rnd.choice(
            [0, 0, 0, 25 if side == "buy" else -25])
        oid = f"{tag}{k}"
        await c.place(SYMBOL, side, f"0.{rnd.randrange(1, 50):04d}", str(price), id=oid,
                      account=f"acct{k % 3}")  # fmt: skip
        live.append((oid, k % 3))
        if rnd.random() < 0.15:
            gone, acct = live.pop(rnd.randrange(len(live)))
            await c.cancel(SYMBOL, gone, account=f"acct{acct}")


async def _same_as_engine(c: AsyncClient, book: Any, timeout: float = 60) -> None:
    """Wait until the client's book equals the engine's top levels (no more orders come)."""
    want: Any = None

    async def probe() -> bool:
        nonlocal want
        want = engine_levels(await c.book(SYMBOL, 25))
        return book.synced and book.levels() == want

    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"client book {book.levels()} != engine {want}")
        await asyncio.sleep(0.1)


def test_snapshot_and_deltas_reproduce_the_engines_book_and_a_dropped_delta_is_resynced(
    cluster: Cluster,
) -> None:
    async def run() -> None:
        url = _url(cluster)
        await until(lambda: _healthy(url), 60, "the gateway is up")
        rnd = random.Random(3)
        async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as c, \
                WsClient(url) as early, WsClient(url) as lossy:  # fmt: skip
            honest = await early.book(SYMBOL)
            await _orders(c, rnd, 60, "a")
            gappy = await lossy.book(SYMBOL, drop_deltas=1)  # joins mid-stream
            await until(lambda: gappy.synced, 30, "the late subscriber's snapshot")
            await _orders(c, rnd, 60, "b")
            await _same_as_engine(c, honest)
            await _same_as_engine(c, gappy)
            assert honest.gaps == 0 and honest.checked >= 10  # every message checked
            assert gappy.gaps == 1 and gappy.drop == 0  # the dropped delta was seen, once
            acks = [m for m in lossy.other if m.get("type") == "ack" and m["op"] == "resync"]
            assert len(acks) == 1  # one message resynced it
            trades = early.trades()
            assert not trades  # (not subscribed to trades: nothing else is pushed)

    asyncio.run(run())
    text = _metrics(cluster.layout.gateway_port(0))
    assert 'shardex_gateway_resyncs_total{channel="book",why="client"} 1.0' in text


def test_bad_input_gets_json_errors_with_stable_codes_and_the_gateway_serves_on(
    cluster: Cluster,
) -> None:
    url = _url(cluster)
    wait_until(lambda: _healthy(url), 60, "the gateway is up")
    status, body = _get(url + "/v1/nope")
    assert status == 404 and json.loads(body)["code"] == NOT_FOUND
    status, body = _get(url + "/v1/markets")
    assert status == 200 and SYMBOL in [m["symbol"] for m in json.loads(body)["markets"]]
    bad = ["not json", "[]", json.dumps({"op": "fly"}), "\u00ff" * 5000,
           json.dumps({"op": "subscribe", "channel": "book", "symbol": "NOPE-USD", "id": 7}),
           json.dumps({"op": "subscribe", "channel": "trades", "symbol": SYMBOL,
                       "from_seq": "x"})]  # fmt: skip
    want = [BAD_MESSAGE, BAD_MESSAGE, UNKNOWN_CHANNEL, BAD_MESSAGE, UNKNOWN_SYMBOL,
            BAD_MESSAGE]  # fmt: skip

    async def run() -> None:
        async with WsClient(url) as ws:
            for raw in bad:
                await ws.send(raw)
            await ws.ws.send_bytes(b"\x00\xff\xfe")
            await until(lambda: len(ws.of_type("error")) == len(bad) + 1, 30, "every error")
            errors = ws.of_type("error")
            assert [e["code"] for e in errors] == [*want, BAD_MESSAGE]
            assert errors[4]["id"] == 7 and errors[4]["name"] == "unknown_symbol"
            await ws.send({"op": "ping", "id": "p"})
            await until(lambda: ws.of_type("pong"), 30, "a pong after the errors")
            await ws.send({"op": "markets"})
            await until(lambda: ws.of_type("markets"), 30, "the market list")
            assert SYMBOL in [mk["symbol"] for mk in ws.of_type("markets")[0]["markets"]]
            await ws.send({"op": "subscribe", "channel": "ticker", "symbol": SYMBOL})
            await until(lambda: [m for m in ws.other if m.get("channel") == "ticker"
                                 and "last" in m], 30, "a ticker")  # fmt: skip
            tick = next(m for m in ws.other if m.get("channel") == "ticker" and "last" in m)
            assert {"volume", "change", "bid", "ask", "seq"} <= tick.keys()
            await until(lambda: len(ws.of_type("heartbeat")) >= 2, 30, "heartbeats")
            beats = [h["counter"] for h in ws.of_type("heartbeat")]
            assert beats == list(range(beats[0], beats[0] + len(beats)))

    asyncio.run(run())
    assert _healthy(url)


def _raw_ws(port: int) -> socket.socket:
    """A WebSocket connection that will never read: a tiny receive buffer, handshake only."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return s


def _frame(obj: dict[str, Any]) -> bytes:
    """One masked client text frame (mask 0: the payload as is)."""
    data = json.dumps(obj).encode()
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data


def test_a_client_that_never_reads_is_told_to_resync_then_closed_and_others_are_not_hurt(
    cluster: Cluster,
) -> None:
    port = free_port()
    gw = subprocess.Popen(
        [sys.executable, "-m", "shardex.cli", "gateway", "--base-port",
         str(cluster.layout.base_port), "--data-dir", cluster.data_dir, "--port", str(port),
         "--queue", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), 60, "the test's gateway is up")

        async def run() -> None:
            async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as c, \
                    WsClient(url) as good:  # fmt: skip
                for k in range(25):  # a deep book: each snapshot a kilobyte or more
                    await c.place(SYMBOL, "buy", "0.0100", str(40000 - 10 * k), account="deep",
                                  id=f"deep-b{k}")  # fmt: skip
                    await c.place(SYMBOL, "sell", "0.0100", str(60000 + 10 * k),
                                  account="deep", id=f"deep-s{k}")  # fmt: skip
                book = await good.book(SYMBOL)
                await until(lambda: book.synced, 30, "the good client's snapshot")
                slow = _raw_ws(port)
                try:
                    ask = _frame({"op": "resync", "channel": "book", "symbol": SYMBOL})
                    slow.sendall(_frame({"op": "subscribe", "channel": "book", "symbol": SYMBOL}))
                    for _ in range(2000):  # each answered with a snapshot it never reads
                        try:
                            slow.sendall(ask)
                        except OSError:
                            break  # closed by the gateway
                    await until(lambda: "shardex_gateway_slow_closes_total 1.0" in _metrics(port),
                                60, "the slow client closed")  # fmt: skip
                finally:
                    slow.close()
                await c.place(SYMBOL, "buy", "0.0100", "39000", account="deep", id="after")
                await _same_as_engine(c, book)
                assert book.gaps == 0
                await until(lambda: len(good.of_type("heartbeat")) >= 2, 30, "heartbeats")
                await until(lambda: "shardex_gateway_connections 1.0" in _metrics(port), 30,
                            "only the good client is left")  # fmt: skip

        asyncio.run(run())
        assert 'shardex_gateway_resyncs_total{channel="book",why="slow"}' in _metrics(port)
    finally:
        gw.terminate()
        gw.wait(15)


def test_a_restarted_gateway_loses_no_trade_for_a_client_that_resumes(cluster: Cluster) -> None:
    url = _url(cluster)

    async def cross(c: AsyncClient, tag: str, n: int) -> None:
        for k in range(n):
            await c.place(SYMBOL, "sell", "0.0010", "45000", id=f"{tag}s{k}", account="m")
            await c.place(SYMBOL, "buy", "0.0010", "45000", id=f"{tag}b{k}", account="t")

    async def run() -> None:
        await until(lambda: _healthy(url), 60, "the gateway is up")
        async with AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as c:
            async with WsClient(url) as ws:
                await ws.send({"op": "subscribe", "channel": "trades", "symbol": SYMBOL})
                await until(lambda: ws.of_type("subscribed"), 30, "subscribed")
                await cross(c, "r1", 5)
                await until(lambda: len(ws.trades()) >= 5, 30, "the first trades")
                before = ws.trades()
            pid = cluster.child_pid("gateway")
            subprocess.run(["kill", "-9", str(pid)], check=True)
            await cross(c, "r2", 7)  # while the gateway is down
            await until(lambda: cluster.output().count("started gateway") >= 2, 60, "restart")
            await until(lambda: _healthy(url), 60, "the gateway is back")
            await cross(c, "r3", 3)
            async with WsClient(url) as ws:
                await ws.send({"op": "subscribe", "channel": "trades", "symbol": SYMBOL,
                               "from_seq": before[-1]["seq"]})  # fmt: skip
                await cross(c, "r4", 2)
                await until(lambda: len(ws.trades()) >= 12, 30, "the missed and new trades")
                after = ws.trades()
                ack = ws.of_type("subscribed")[0]
        assert ack["resumed"] is True and ack["replayed"] >= 10
        got = before + after
        ids = [t["trade_id"] for t in got]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap, no repeat
        assert [t["prev_seq"] for t in got[1:]] == [t["seq"] for t in got[:-1]]

    asyncio.run(run())


def test_a_batch_trades_client_gets_the_same_trades_and_chain_in_fewer_messages(
    cluster: Cluster,
) -> None:
    """``"batch": true`` (docs/gateway.md#batched-trades) through the real gateway: the trades
    a plain subscriber gets one by one arrive in batch messages whose prev_seq/seq chain is
    the same chain."""
    url = _url(cluster)

    async def run() -> None:
        await until(lambda: _healthy(url), 60, "the gateway is up")
        async with (AsyncClient(cluster.endpoint, key=str(cluster.key), timeout=10) as c,
                    WsClient(url) as plain, WsClient(url) as batched):  # fmt: skip
            await plain.send({"op": "subscribe", "channel": "trades", "symbol": SYMBOL})
            await batched.send({"op": "subscribe", "channel": "trades", "symbol": SYMBOL,
                                "batch": True})  # fmt: skip
            await until(lambda: plain.of_type("subscribed") and batched.of_type("subscribed"),
                        30, "subscribed")  # fmt: skip
            start = batched.of_type("subscribed")[0]["seq"]
            for k in range(6):
                await c.place(SYMBOL, "sell", "0.0010", "45000", id=f"bs{k}", account="m")
                await c.place(SYMBOL, "buy", "0.0010", "45000", id=f"bb{k}", account="t")

            def flat() -> list[dict[str, Any]]:
                return [t for b in batched.of_type("batch") for t in b["trades"]]

            await until(lambda: len(plain.trades()) >= 6 and len(flat()) >= 6, 30, "trades")
            singles, batches = plain.trades(), batched.of_type("batch")
        assert [t["seq"] for t in flat()] == [t["seq"] for t in singles]
        assert [t["trade_id"] for t in flat()] == [t["trade_id"] for t in singles]
        assert [b["prev_seq"] for b in batches] == [start] + [b["seq"] for b in batches[:-1]]
        assert all(b["seq"] == b["trades"][-1]["seq"] for b in batches)

    asyncio.run(run())


def _api_key(cluster: Cluster, account: str) -> dict[str, Any]:
    """``shardex keys add --account A --api``: the API key record it wrote."""
    proc = subprocess.run([sys.executable, "-m", "shardex.cli", "keys", "add", "--account",
                           account, "--api", "--data-dir", cluster.data_dir],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.split("API key:")[1].split()[0]
    return json.loads(open(path).read())


def _signed(
    url: str, rec: dict[str, Any], method: str, path: str, body: bytes = b"",
    ts: int | None = None, sig: str | None = None,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One REST request signed as the docs say (HMAC-SHA256 of ts + METHOD + path + body)."""
    stamp = str(ts if ts is not None else int(time.time() * 1000))
    mac = hmac.new(rec["secret"].encode(), (stamp + method + path).encode() + body,
                   hashlib.sha256).hexdigest()  # fmt: skip
    req = urllib.request.Request(url + path, data=body or None, method=method, headers={
        "X-SHARDEX-KEY": rec["key_id"], "X-SHARDEX-TIMESTAMP": stamp,
        "X-SHARDEX-SIGNATURE": sig or mac, "Content-Type": "application/json"})  # fmt: skip
    status, raw = _get_req(req)
    return status, json.loads(raw)


def _get_req(req: urllib.request.Request) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_signed_rest_orders_act_only_for_the_keys_account_and_refuse_replays_and_tampering(
    cluster: Cluster,
) -> None:
    url = _url(cluster)
    wait_until(lambda: _healthy(url), 60, "the gateway is up")
    alice, bob = _api_key(cluster, "ra"), _api_key(cluster, "rb")
    order = json.dumps({"symbol": SYMBOL, "side": "buy", "qty": "0.0100", "price": "30000",
                        "id": "rest-c1"}).encode()  # fmt: skip
    ts = int(time.time() * 1000)
    status, body = _signed(url, alice, "POST", "/v1/order", order, ts=ts)
    assert status == 200 and body["ok"] and body["id"] == "rest-c1", body
    assert body["events"][0]["ev"] == "accepted"
    status, body = _signed(url, alice, "POST", "/v1/order", order, ts=ts)  # the same request
    assert (status, body["code"]) == (401, 128)
    status, body = _signed(url, alice, "POST", "/v1/order", order.replace(b"0.01", b"0.02"),
                           sig=_signed_sig(alice, order))  # fmt: skip
    assert (status, body["code"]) == (401, 126)
    status, body = _signed(url, alice, "POST", "/v1/order", order, ts=ts - 60_000)
    assert (status, body["code"]) == (401, 127)
    status, body = _signed(url, alice, "GET", f"/v1/order?symbol={SYMBOL}&id=rest-c1")
    assert status == 200 and body["state"] == "live", body
    # bob's order: alice's key can neither act as bob nor cancel it by its id
    other = json.dumps({"symbol": SYMBOL, "side": "buy", "qty": "0.0100", "price": "30001",
                        "id": "rest-b1"}).encode()  # fmt: skip
    status, body = _signed(url, bob, "POST", "/v1/order", other)
    assert status == 200, body
    status, body = _signed(url, alice, "DELETE", f"/v1/order?symbol={SYMBOL}&id=rest-b1&account=rb")
    assert (status, body["code"]) == (403, 12)
    status, body = _signed(url, alice, "DELETE", f"/v1/order?symbol={SYMBOL}&id=rest-b1")
    assert status == 400 and not body["ok"]
    assert _signed(url, bob, "GET", f"/v1/order?symbol={SYMBOL}&id=rest-b1")[1]["state"] == "live"
    status, body = _signed(url, alice, "DELETE", f"/v1/order?symbol={SYMBOL}&id=rest-c1")
    assert status == 200 and body["events"][0]["ev"] == "cancelled", body
    assert _get_req(urllib.request.Request(url + "/v1/order", data=order, method="POST"))[0] == 401


def _signed_sig(rec: dict[str, Any], body: bytes) -> str:
    """A valid signature of ``body`` at a fresh timestamp... sent with another body."""
    stamp = str(int(time.time() * 1000))
    return hmac.new(rec["secret"].encode(), (stamp + "POST/v1/order").encode() + body,
                    hashlib.sha256).hexdigest()  # fmt: skip


def test_a_browser_session_stands_for_its_api_key_in_the_real_gateway(cluster: Cluster) -> None:
    """The web page's wiring (docs/web.md): the page at /, a signed login making the session
    cookie, an order placed with cookie + CSRF token and no signature, a missing token refused,
    logout; and the public candles read (the browser tier drives the page itself)."""
    url = _url(cluster)
    wait_until(lambda: _healthy(url), 60, "the gateway is up")
    status, page = _get_req(urllib.request.Request(url + "/"))
    assert status == 200 and b"/web/app.js" in page
    assert _get(f"{url}/v1/candles?symbol={SYMBOL}&interval=1m")[0] == 200
    rec = _api_key(cluster, "sa")
    stamp = str(int(time.time() * 1000))
    mac = hmac.new(rec["secret"].encode(), (stamp + "POST/v1/session{}").encode(),
                   hashlib.sha256).hexdigest()  # fmt: skip
    login = urllib.request.Request(url + "/v1/session", data=b"{}", method="POST", headers={
        "X-SHARDEX-KEY": rec["key_id"], "X-SHARDEX-TIMESTAMP": stamp, "X-SHARDEX-SIGNATURE": mac})
    with urllib.request.urlopen(login, timeout=10) as resp:
        cookie = resp.headers["Set-Cookie"]
        csrf = json.loads(resp.read())["csrf"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";")[0], "Content-Type": "application/json"}
    order = json.dumps({"symbol": SYMBOL, "side": "buy", "qty": "0.0100", "price": "20000",
                        "id": "web-s1"}).encode()  # fmt: skip
    refused = urllib.request.Request(url + "/v1/order", data=order, method="POST", headers=jar)
    status, body = _get_req(refused)
    assert (status, json.loads(body)["code"]) == (403, 145)  # bad_csrf
    placed = urllib.request.Request(url + "/v1/order", data=order, method="POST",
                                    headers={**jar, "X-SHARDEX-CSRF": csrf})  # fmt: skip
    status, body = _get_req(placed)
    assert status == 200 and json.loads(body)["events"][0]["ev"] == "accepted", body
    out = urllib.request.Request(url + "/v1/session", method="DELETE",
                                 headers={**jar, "X-SHARDEX-CSRF": csrf})  # fmt: skip
    assert _get_req(out)[0] == 200
    status, body = _get_req(placed)
    assert (status, json.loads(body)["code"]) == (401, 146)  # no_session: logged out
