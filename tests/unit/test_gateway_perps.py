"""The gateway's perp channels without a cluster: the engine's index, funding and liquidation
events, as the bridge writes them to an events stream (``event_fields``), become ``mark``,
``funding`` and ``liquidations`` messages chained by seq (continued across a gateway restart
by the stream's tail), public only (no account on the liquidations channel); a spot pair's
perp channel is refused ``not_perp``; the private ``user`` channel gets the key's accounts'
positions, margin and liquidations."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from aiohttp import test_utils as aiotest
from aiohttp import web

from shardex.client.market_data import MarketData
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import (
    EV_ADL,
    EV_FUNDING,
    EV_INDEX,
    EV_LIQUIDATION,
    EV_MARGIN,
    EV_POSITION,
)
from shardex.engine.markets import markets_from_table
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.binance.orders import order_json
from shardex.gateway.binance.symbols import SymbolMap
from shardex.gateway.hub import Conn, Hub
from shardex.gateway.outbox import Outbox
from shardex.gateway.rest import Rest
from shardex.gateway.server import Gateway, GatewayConfig
from shardex.gateway.signing import ApiKey
from shardex.gateway.userfeed import UserFeed
from shardex.node.bridge.entries import event_fields
from shardex.wire.codes import NOT_ALLOWED, NOT_PERP
from tests.support.rest import headers

PERP = "BTCPERP-USD"
MARKETS = {**markets_from_table({PERP: {"kind": "perp", "tick": "0.1", "lot": "0.001"}}),
           "BTC-USD": DEFAULT_MARKETS["BTC-USD"]}  # fmt: skip
EVENTS = "shardex:events:0"


def _entry(ev: tuple, ts: int = 1_796_654_084_584) -> tuple[str, dict[str, str]]:
    flat = event_fields(ev, MARKETS, 0, ts)
    return (f"{ev[1]}-0", dict(zip(flat[::2], flat[1::2], strict=True)))


def _index(seq: int, index: int, mark: int) -> tuple[str, dict[str, str]]:
    return _entry((EV_INDEX, seq, PERP, index, mark))


class _Redis:
    """An events stream: its tail (``XREVRANGE``) and one ``XREAD`` answer per step."""

    def __init__(self, stream: list[tuple[str, dict[str, str]]]) -> None:
        self.stream, self.answers = stream, []  # type: ignore[var-annotated]

    async def xrevrange(self, key: str, hi: str, lo: str, count: int) -> list:
        return list(reversed(self.stream))[:count] if key == EVENTS else []

    async def xread(self, pos: dict[str, str], count: int, block: int) -> list[Any]:
        return self.answers.pop(0) if self.answers else []

    async def xrange(self, key: str, min: str, max: str, count: int) -> list:  # noqa: A002
        lo = int(min.split("-")[0])
        return [e for e in self.stream if int(e[0].split("-")[0]) >= lo][:count]


def _hub(r: _Redis) -> Hub:
    async def no_book(symbol: str, depth: int) -> dict[str, Any]:
        raise AssertionError("no book here")

    async def one_shard() -> int:
        return 1

    return Hub(r, no_book, MARKETS, shards=one_shard)


def _conn() -> Conn:
    async def close() -> None:
        return None

    return Conn(Outbox(limit=1000), close)


def _msgs(conn: Conn) -> list[dict[str, Any]]:
    return [json.loads(f) for f in conn.outbox.messages()]


def test_index_funding_and_liquidations_are_chained_public_messages() -> None:
    async def run() -> None:
        r = _Redis(
            [
                _index(3, 300_000, 300_002),
                _entry((EV_INDEX, 4, "BTC-USD", 1, 1)),
                _index(7, 300_010, 300_011),
            ]
        )  # (a spot pair's: not a perp event)
        hub = _hub(r)
        await hub.start_positions()  # a (re)started gateway: the chain from the stream's tail
        mark, funding, liq = _conn(), _conn(), _conn()
        await hub.subscribe_perp(mark, "mark", PERP)
        await hub.subscribe_perp(funding, "funding", PERP)
        await hub.subscribe_perp(liq, "liquidations", PERP)
        (sub,) = _msgs(mark)
        assert (sub["type"], sub["seq"]) == ("subscribed", 7)
        assert sub["last"]["prev_seq"] == 3 and sub["last"]["mark"] == "30001.1"
        assert _msgs(funding)[0]["seq"] is None and _msgs(funding)[0]["last"] is None
        r.answers.append([(EVENTS, [
            _index(9, 299_000, 299_001),
            _entry((EV_FUNDING, 10, PERP, 7_500_000, 15_000_000, 3)),
            _entry((EV_LIQUIDATION, 11, PERP, "alice", 10, 260_000, 2_700_000, 100_000, 0,
                    100_000)),
            _entry((EV_LIQUIDATION, 12, PERP, "bob", -5, 310_000, 1_550_000, -20, 0, 99_980)),
        ])])  # fmt: skip
        await hub.step()
        (m,) = _msgs(mark)[1:]
        assert (m["channel"], m["seq"], m["prev_seq"], m["index"], m["mark"]) == (
            "mark",
            9,
            7,
            "29900.0",
            "29900.1",
        )
        (f,) = _msgs(funding)[1:]
        assert (f["seq"], f["prev_seq"], f["per_lot"], f["cumulative"]) == (
            10,
            None,
            "0.00075",
            "0.0015",
        )
        a, b = _msgs(liq)[1:]
        assert (a["side"], a["qty"], a["bankruptcy"], a["fund"], a["prev_seq"]) == (
            "sell",
            "0.010",
            "26000.0",
            "10.0000",
            None,
        )
        assert (b["side"], b["qty"], b["prev_seq"]) == ("buy", "0.005", 11)
        assert all("alice" not in json.dumps(x) and "bob" not in json.dumps(x) for x in (a, b))
        assert all("settled" not in x and "uncovered" not in x and x["ts"] for x in (a, b))

    asyncio.run(run())


def test_a_slow_perp_subscriber_is_told_its_last_seq_and_gets_the_mark_again() -> None:
    async def run() -> None:
        r = _Redis([])
        hub = _hub(r)
        await hub.start_positions()
        slow = Conn(Outbox(limit=2), _conn()._close)
        await hub.subscribe_perp(slow, "mark", PERP)
        slow.outbox.take()
        for seq in range(20, 26):
            r.answers.append([(EVENTS, [_index(seq, 300_000 + seq, 300_000 + seq)])])
            await hub.step()
        notices = [m for m in _msgs(slow) if m.get("type") == "resync_required"]
        assert notices and notices[0]["channel"] == "mark" and notices[0]["code"] == 123
        while slow.outbox.take() is not None:
            pass
        await hub.subscribe_perp(slow, "mark", PERP)  # the resync: the current mark, then on
        (again,) = _msgs(slow)
        assert again["seq"] == 25 and again["last"]["index"] == "30002.5"

    asyncio.run(run())


def test_a_resume_from_seq_replays_the_pairs_events_stream_then_goes_live() -> None:
    async def run() -> None:
        liq = lambda seq, who: _entry(  # noqa: E731
            (EV_LIQUIDATION, seq, PERP, who, 10, 260_000, 2_700_000, 1, 0, seq)
        )
        stream = [liq(3, "a"), _index(4, 300_000, 300_000), liq(6, "b"),
                  _entry((EV_INDEX, 7, "BTC-USD", 1, 1)), liq(9, "c")]  # fmt: skip
        r = _Redis(stream)
        hub = _hub(r)
        await hub.start_positions()
        back, lost = _conn(), _conn()
        await hub.subscribe_perp(back, "liquidations", PERP, since=3)
        await hub.subscribe_perp(lost, "liquidations", PERP, since=5)  # not a liquidation's
        r.answers.append([(EVENTS, [liq(12, "d")])])
        await hub.step()
        got = _msgs(back)
        assert [(m["seq"], m["prev_seq"]) for m in got if "type" not in m] == [
            (6, 3),
            (9, 6),
            (12, 9),
        ]  # replayed, then live: no gap, no repeat
        (ack,) = [m for m in got if m.get("type") == "subscribed"]
        assert (ack["resumed"], ack["replayed"], ack["from_seq"]) == (True, 2, 3)
        (ack,) = [m for m in _msgs(lost) if m.get("type") == "subscribed"]
        assert ack["resumed"] is False  # (the client is told it may have missed some)

    asyncio.run(run())


def test_perp_channels_of_a_spot_pair_are_refused_not_perp() -> None:
    async def run() -> None:
        hub = _hub(_Redis([]))
        cfg = GatewayConfig("127.0.0.1", 1, "redis://unused", "tcp://unused", MARKETS)
        gw = Gateway(cfg, hub, MarketData(r=_Redis([]), markets=MARKETS))
        conn = _conn()
        for channel in ("mark", "funding", "liquidations"):
            await gw.handle(conn, json.dumps({"op": "subscribe", "channel": channel,
                                              "symbol": "BTC-USD", "id": 4}))  # fmt: skip
        await gw.handle(conn, json.dumps({"op": "subscribe", "channel": "mark", "symbol": PERP}))
        out = _msgs(conn)
        assert [(m["type"], m.get("code")) for m in out[:3]] == [("error", NOT_PERP)] * 3
        assert [m["type"] for m in out[3:]] == ["ack", "subscribed"]
        assert set(conn.subs) == {("mark", PERP)}

    asyncio.run(run())


def test_the_user_channel_gets_its_own_accounts_positions_margin_and_liquidations() -> None:
    feed = UserFeed(lambda a: a == "alice")
    entries = [
        _entry((EV_MARGIN, 5, PERP, "alice", 50_000_000, 50_000_000)),
        _entry((EV_POSITION, 6, PERP, "alice", 400, 120_000_000, 0)),
        _entry((EV_POSITION, 7, PERP, "bob", -400, -120_000_000, 0)),
        _entry((EV_LIQUIDATION, 8, PERP, "alice", 400, 260_000, 104_000_000, 100, 0, 100)),
    ]  # fmt: skip
    for live in (True, False):  # (live, and a resume's replay)
        out = feed.events(EVENTS, entries, 0.0, live=live)
        assert [(a, m["type"], m["src"], m["src_seq"]) for a, m in out] == [
            ("alice", "margin", "e0", 5), ("alice", "position", "e0", 6),
            ("alice", "liquidation", "e0", 8)]  # fmt: skip
        margin, pos, liq = (m for _, m in out)
        assert (margin["amount"], margin["collateral"]) == ("5000.0000", "5000.0000")
        assert (pos["symbol"], pos["size"], pos["cost"], pos["realized"]) == (
            PERP,
            "0.400",
            "12000.0000",
            "0.0000",
        )
        assert (liq["closed"], liq["bankruptcy"], liq["settled"]) == ("0.400", "26000.0", "0.0100")


ALICE = ApiKeyRecord(ApiKey("ka", b"sa", "trader", frozenset({"alice"})), "/none")


class _Positions:
    """What the positions route calls on the key's ``AsyncClient``: ``positions``."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows, self.calls = rows, []  # type: ignore[var-annotated]

    async def positions(self, account: str) -> list[dict[str, str]]:
        self.calls.append(account)
        return self.rows


async def _get(c: aiotest.TestClient, path: str) -> tuple[int, Any]:
    head = headers(ALICE.key.key_id, ALICE.key.secret.decode(), "GET", path, b"")
    resp = await c.get(path, headers=head)
    return resp.status, json.loads(await resp.read())


def test_rest_positions_are_the_keys_accounts_own_and_another_account_is_refused() -> None:
    row = {"symbol": PERP, "size": "0.400", "entry": "30000.0", "collateral": "5000.0000"}
    fake = _Positions([row])

    async def main() -> None:
        rest = Rest("tcp://none", None, {}, client=lambda *a, **kw: fake)
        rest.auth.records = {"ka": ALICE}
        rest.auth.verifier.keys = {"ka": ALICE.key}
        app = web.Application()
        rest.routes(app)
        async with aiotest.TestClient(aiotest.TestServer(app)) as c:
            got = await _get(c, "/v1/positions")
            assert got == (200, {"account": "alice", "positions": [row]})
            status, body = await _get(c, "/v1/positions?account=bob")
            assert (status, body["code"]) == (403, NOT_ALLOWED)

    asyncio.run(main())
    assert fake.calls == ["alice"]


def test_binance_reports_orders_a_liquidation_cancelled_as_expired_by_the_exchange() -> None:
    pair = SymbolMap.of(MARKETS).get("BTCPERPUSD")
    assert not isinstance(pair, str)
    status = {"state": "cancelled", "symbol": PERP, "id": "o1", "side": "buy",
              "price": Decimal("29000.0"), "filled": Decimal("0.002")}  # fmt: skip
    got = {why: order_json(pair, {**status, "reason": why}, None, 1)["status"]
           for why in ("liquidation", "user", "cancel_all", "stp", "ioc")}  # fmt: skip
    assert got == {"liquidation": "EXPIRED", "user": "CANCELED", "cancel_all": "CANCELED",
                   "stp": "EXPIRED_IN_MATCH", "ioc": "EXPIRED"}  # fmt: skip


def test_deleveraging_is_a_public_adl_channel_without_accounts() -> None:
    """Each ``EV_ADL`` is one ``adl`` message: the bankrupt position's closing ``side`` (as
    on ``liquidations``: a long is sold), the ``qty`` deleveraged and the ``price``, chained
    by seq; never either account."""

    async def run() -> None:
        r = _Redis([])
        hub = _hub(r)
        await hub.start_positions()
        conn = _conn()
        await hub.subscribe_perp(conn, "adl", PERP)
        r.answers.append([(EVENTS, [
            _entry((EV_ADL, 20, PERP, "s3", "alice", -10, 260_000)),
            _entry((EV_ADL, 21, PERP, "l1", "bob", 5, 310_000)),
            _entry((EV_LIQUIDATION, 22, PERP, "alice", 10, 260_000, 2_600_000, 0, 0, 0)),
        ])])  # fmt: skip
        await hub.step()
        a, b = _msgs(conn)[1:]
        assert (a["channel"], a["seq"], a["prev_seq"], a["side"], a["qty"], a["price"]) == (
            "adl", 20, None, "sell", "0.010", "26000.0")  # fmt: skip
        assert (b["seq"], b["prev_seq"], b["side"], b["qty"], b["price"]) == (
            21, 20, "buy", "0.005", "31000.0")  # fmt: skip
        assert all(n not in json.dumps(x) for n in ("alice", "bob", "s3", "l1") for x in (a, b))

    asyncio.run(run())


def test_the_user_channel_tells_both_accounts_of_a_deleveraging_without_the_other() -> None:
    """An ``EV_ADL`` is a message to each of its two accounts: the deleveraged one
    (``role`` ``deleveraged``, its own signed lots closed) and the bankrupt one (``bankrupt``,
    the opposite lots), each without the other account's name."""
    feed = UserFeed(lambda a: a in ("s3", "alice"))
    entries = [_entry((EV_ADL, 20, PERP, "s3", "alice", -10, 260_000)),
               _entry((EV_ADL, 21, PERP, "l1", "bob", 5, 310_000))]  # fmt: skip
    for live in (True, False):
        out = feed.events(EVENTS, entries, 0.0, live=live)
        assert [
            (a, m["type"], m["role"], m["closed"], m["price"], m["src_seq"]) for a, m in out
        ] == [
            ("s3", "adl", "deleveraged", "-0.010", "26000.0", 20),
            ("alice", "adl", "bankrupt", "0.010", "26000.0", 20),
        ]
        assert "alice" not in json.dumps(out[0][1]) and "s3" not in json.dumps(out[1][1])
