"""The user channel's hub without sockets (a fake Redis, a fake SDK client, real ``Conn``
queues): a message is built once per account and queued with each subscription's own
contiguous ``seq``; a client whose queue fills is told ``resync_required`` with where to resume
and gets nothing more until it subscribes again; cancel-on-disconnect heartbeats once per key
and cancels only when the key's last such connection drops (never as the gateway stops)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.hub import Conn
from shardex.gateway.outbox import Outbox
from shardex.gateway.signing import ApiKey, Verifier
from shardex.gateway.userhub import UserHub
from shardex.wire.codes import LOGIN_REQUIRED, NOT_ALLOWED, SLOW_CLIENT

ALICE = ApiKey("ka", b"sa", "trader", frozenset({"alice"}))
READER = ApiKey("kr", b"sr", "reader")


class FakeSdk:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []

    async def cancel_after(self, ms: int, account: str) -> None:
        self.calls.append(("after", ms, account))

    async def cancel_all(self, account: str) -> None:
        self.calls.append(("all", None, account))


class FakeRest:
    def __init__(self) -> None:
        self.records = {k.key_id: ApiKeyRecord(k, "/dev/null") for k in (ALICE, READER)}
        self.verifier = Verifier({k: r.key for k, r in self.records.items()})
        self.sdk = FakeSdk()
        self.auth = self  # (Rest keeps the keys and the check in its ``auth``)

    def learn(self, key_id: str | None) -> None:
        pass

    def client_for(self, rec: ApiKeyRecord) -> FakeSdk:
        return self.sdk


async def _nothing() -> None:
    pass


def _conn(limit: int = 100) -> Conn:
    return Conn(Outbox(limit), _nothing)


def _frames(conn: Conn) -> list[dict[str, Any]]:
    out = []
    while (f := conn.outbox.take()) is not None:
        out.append(json.loads(f))
    return out


STAMPS = iter(range(10**6))


def _login(key: ApiKey, cod: bool = False) -> str:
    ts = int(time.time() * 1000) + next(STAMPS)  # (a signature is accepted once: new ts)
    sig = hmac.new(key.secret, f"{ts}GET/v1/wslogin".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"op": "login", "key": key.key_id, "ts": ts, "sig": sig,
                       "cancel_on_disconnect": cod})  # fmt: skip


def _hub() -> tuple[UserHub, FakeRest]:
    async def accounts() -> int:
        return 1

    rest = FakeRest()
    return UserHub(None, rest, accounts, {"shardex:balances:0": "5-0"}, cod_timeout_ms=30_000), rest


def _balance(seq: int, account: str = "alice") -> tuple[str, dict[str, str]]:
    return (f"{seq}-0", {"ev": "balance", "account": account, "asset": "USD", "available": "1",
                         "held": "0", "why": "deposit", "ref": f"d{seq}", "ts": "1"})  # fmt: skip


def test_each_subscription_numbers_its_messages_and_a_slow_one_is_told_where_to_resume() -> None:
    async def run() -> None:
        hub, _ = _hub()
        fast, slow, nobody = _conn(), _conn(limit=3), _conn()
        assert await hub.handle(nobody, json.dumps({"op": "subscribe", "channel": "user"}))
        assert _frames(nobody)[0]["code"] == LOGIN_REQUIRED
        assert not await hub.handle(nobody, json.dumps({"op": "ping"}))  # (the public ones')
        for conn in (fast, slow):
            await hub.handle(conn, _login(ALICE))
            await hub.handle(conn, json.dumps({"op": "subscribe", "channel": "user"}))
            login, ack = _frames(conn)
            assert login["accounts"] == ["alice"] and ack["since"] == {"b0": 5}
        hub.entries("shardex:balances:0", [_balance(6), _balance(7, "bob"), _balance(8)])
        assert [(m["seq"], m["src_seq"]) for m in _frames(fast)] == [(1, 6), (2, 8)]
        assert len(slow.outbox) == 2
        hub.entries("shardex:balances:0", [_balance(9), _balance(10)])
        frames = _frames(slow)
        assert frames[-1]["type"] == "resync_required" and frames[-1]["code"] == SLOW_CLIENT
        assert frames[-1]["since"] == {"b0": 5}  # (6, 8, 9 queued, never written: dropped)
        hub.entries("shardex:balances:0", [_balance(11)])
        assert _frames(slow) == []  # nothing until it subscribes again
        assert [m["seq"] for m in _frames(fast)] == [3, 4, 5]
        # a queue dropped by a public channel's frames tells the user subscription too, with
        # the positions of what had surely gone to the socket
        await hub.handle(slow, json.dumps({"op": "subscribe", "channel": "user"}))
        _frames(slow)
        hub.entries("shardex:balances:0", [_balance(12)])
        _frames(slow)  # (written)
        hub.entries("shardex:balances:0", [_balance(13)])
        for _ in range(3):
            slow.push("{}", "book")
        notice = [m for m in _frames(slow) if m.get("channel") == "user"]
        assert notice == [{"type": "resync_required", "channel": "user", "since": {"b0": 12},
                           "code": SLOW_CLIENT, "name": "slow_client"}]  # fmt: skip
        reader = _conn()
        await hub.handle(reader, _login(READER))
        await hub.handle(reader, json.dumps({"op": "subscribe", "channel": "user"}))
        assert _frames(reader)[-1]["code"] == NOT_ALLOWED  # (a key without accounts)

    asyncio.run(run())


def test_cancel_on_disconnect_cancels_when_the_keys_last_such_connection_drops() -> None:
    async def run() -> None:
        hub, rest = _hub()
        one, two, plain = _conn(), _conn(), _conn()
        await hub.handle(one, _login(ALICE, cod=True))
        await hub.handle(two, _login(ALICE, cod=True))
        await hub.handle(plain, _login(ALICE))
        await asyncio.sleep(0)  # (the heartbeat task's first beat)
        assert rest.sdk.calls == [("after", 30_000, "alice")]  # one heartbeat per key
        hub.drop(plain)
        hub.drop(one)
        await asyncio.sleep(0)
        assert ("all", None, "alice") not in rest.sdk.calls  # the other one is still there
        hub.drop(two)
        for _ in range(3):
            await asyncio.sleep(0)
        assert rest.sdk.calls[-2:] == [("after", 0, "alice"), ("all", None, "alice")]
        again = _conn()
        await hub.handle(again, _login(ALICE, cod=True))
        n = len(rest.sdk.calls)
        await hub.handle(again, _login(ALICE, cod=True))  # a login again: no cancel between
        for _ in range(3):
            await asyncio.sleep(0)
        assert ("all", None, "alice") not in rest.sdk.calls[n:] and hub.cod["ka"][0] == 1
        hub.close()  # the gateway stops: the switch stays armed, nothing cancelled now
        n = len(rest.sdk.calls)
        hub.drop(again)
        for _ in range(3):
            await asyncio.sleep(0)
        assert ("all", None, "alice") not in rest.sdk.calls[n:]

    asyncio.run(run())


class FakeRedis:
    """XRANGE over in-memory streams (exclusive ``(`` starts, as Redis); each call first lets
    ``during`` run once (live entries arriving while a replay reads)."""

    def __init__(self, streams: dict[str, list[tuple[str, dict[str, str]]]]) -> None:
        self.streams = streams
        self.during: Any = None

    async def xrange(self, key: str, min: str, max: str, count: int) -> list[Any]:  # noqa: A002
        if self.during is not None:
            self.during, during = None, self.during
            during()
        lo, hi = int(min.lstrip("(").split("-")[0]), int(max.split("-")[0])
        return [e for e in self.streams.get(key, []) if lo < int(e[0].split("-")[0]) <= hi
                ][:count]  # fmt: skip


def test_a_resume_replays_the_accounts_entries_then_goes_live_without_repeats() -> None:
    async def run() -> None:
        hub, _ = _hub()
        key = "shardex:balances:0"
        hub.pos = {key: "8-0"}
        hub.r = fake = FakeRedis({key: [_balance(3), _balance(4, "bob"), _balance(8)]})
        fake.during = lambda: hub.entries(key, [_balance(9)])  # (live, during the replay)
        conn = _conn()
        await hub.handle(conn, _login(ALICE))
        await hub.handle(conn, json.dumps({"op": "subscribe", "channel": "user",
                                           "since": {"b0": 2, "e7": 1}}))  # fmt: skip
        frames = _frames(conn)[1:]
        ack = next(m for m in frames if m["type"] == "subscribed")
        assert ack["resumed"] is False and ack["replayed"] == 2  # (e7: no such stream here)
        got = [(m["seq"], m["src_seq"]) for m in frames if m["type"] == "balance"]
        assert got == [(1, 3), (2, 8), (3, 9)]  # replayed, then the live one: no repeat

    asyncio.run(run())
