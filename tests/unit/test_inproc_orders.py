"""The order path's logic through a whole cluster in one process (``shardex.inproc``): routing by
symbol hash, each client getting exactly its own replies, the book scenario equal to an offline
replay, the SDK (router and direct mode, reject codes, custom markets, order status with trades),
and the router shedding load with ``overloaded``. The same router and shard code as
``shardex up`` runs, over the in-memory transport; tests/process/test_cluster.py keeps what
needs real processes (kill -9, raw frames on real sockets, the CLI, CURVE)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardex.cli.replay import replay
from shardex.engine.codes import OP_REJECT
from shardex.inproc import InProcCluster
from shardex.wire.protocol import OP_BOOK, decode_reply, encode_request, shard_for
from tests.support.inproc import plan, run

pytestmark = pytest.mark.timeout(60)

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "LTC-USD"]


def test_symbols_land_on_the_shard_the_hash_says():
    assert len({shard_for(s, 2) for s in SYMBOLS}) == 2  # the test really spans both shards

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="alice") as c:
            for s in SYMBOLS:
                r = await c.place(s, "buy", "1", "1")
                assert r.ok, r
            status = await c.status()
            for s in SYMBOLS:
                assert (await c.book(s))["shard"] == shard_for(s, 2)
        for st in status:
            assert set(st["symbols"]) == {s for s in SYMBOLS if shard_for(s, 2) == st["shard"]}
            assert st["resting"] == len(st["symbols"])

    run(plan(2), body)


async def _one_client(cluster: InProcCluster, n: int, errors: list[str]) -> None:
    async with cluster.client(account=f"acct{n}") as c:
        cmds = [
            c.order(
                SYMBOLS[k % len(SYMBOLS)],
                "buy" if k % 2 else "sell",
                "1",
                str(1000 + k % 7),
                id=f"c{n}-{k}",
            )  # fmt: skip
            for k in range(400)
        ]
        results = await c.submit_many(cmds, batch=17, window=4)
        for cmd, r in zip(cmds, results, strict=True):
            ids = {e.get("id") or e.get("taker") for e in r.events}
            if r.error or ids != {cmd["id"]}:
                errors.append(f"client {n}: {cmd['id']} got {r}")
        for k in range(0, 400, 40):
            r = await c.cancel(SYMBOLS[k % len(SYMBOLS)], f"c{n}-{k}")
            if r.events and r.events[0]["id"] != f"c{n}-{k}":
                errors.append(f"client {n}: cancel reply for {r.events[0]['id']}")


def test_concurrent_clients_each_get_exactly_their_own_replies():
    errors: list[str] = []

    async def body(cluster: InProcCluster) -> None:
        await asyncio.gather(*[_one_client(cluster, n, errors) for n in range(6)])

    run(plan(2), body)
    assert errors == []


SCENARIO = [
    {"op": "new", "symbol": "BTC-USD", "id": "m1", "account": "maker", "side": "sell",
     "type": "limit", "price": "30000.50", "qty": "0.50"},
    {"op": "new", "symbol": "BTC-USD", "id": "m2", "account": "maker", "side": "sell",
     "type": "limit", "price": "30001.00", "qty": "1"},
    {"op": "new", "symbol": "BTC-USD", "id": "b1", "account": "bob", "side": "buy",
     "type": "limit", "price": "29999.00", "qty": "2", "post_only": True},
    {"op": "new", "symbol": "BTC-USD", "id": "t1", "account": "taker", "side": "buy",
     "type": "limit", "price": "30001.00", "qty": "0.75", "tif": "ioc"},
    {"op": "amend", "symbol": "BTC-USD", "id": "m2", "account": "maker", "qty": "0.5"},
    {"op": "amend", "symbol": "BTC-USD", "id": "b1", "account": "bob", "price": "29998.00"},
    {"op": "cancel", "symbol": "BTC-USD", "id": "m1", "account": "maker"},
    {"op": "new", "symbol": "BTC-USD", "id": "t2", "account": "taker", "side": "sell",
     "type": "market", "qty": "3"},
    {"op": "new", "symbol": "BTC-USD", "id": "bad", "account": "x", "side": "buy",
     "type": "limit", "price": "1.001", "qty": "1"},
    {"op": "cancel", "symbol": "BTC-USD", "id": "m2", "account": "maker"},
]  # fmt: skip


def _jsonable(ev: dict) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in ev.items()}


def test_book_scenario_through_router_equals_replay():
    got: list[dict] = []
    local: list[dict] = []  # commands the SDK cannot encode: answered by it (seq 0), never sent

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client() as c:
            for cmd in SCENARIO:
                (r,) = await c.submit_many([cmd])
                assert r.error is None
                events = [_jsonable(e) for e in r.events]
                if c.command(cmd)[0] == OP_REJECT:
                    assert [e["ev"] for e in events] == ["rejected"] and events[0]["seq"] == 0
                    local.append(cmd)
                    continue
                got.extend(events)

    run(plan(1), body)
    assert local  # (the scenario has one)
    src = "".join(json.dumps(c) + "\n" for c in SCENARIO if c not in local)
    out = CliRunner().invoke(replay, ["-"], input=src, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    expected = [json.loads(line) for line in out.output.splitlines()]
    # the replay names the line of a malformed command; the cluster has no lines
    for e in expected:
        if e["ev"] == "rejected" and e["reason"].startswith("line "):
            e["reason"] = e["reason"].split(": ", 1)[1]
    assert got == expected
    kinds = [e["ev"] for e in got]
    assert kinds.count("trade") == 3 and "amended" in kinds


def test_async_client_same_results():
    async def body(cluster: InProcCluster) -> tuple:
        async with cluster.client(account="async", timeout=5) as c:
            r1 = await c.place("ETH-USD", "sell", "1.5", "2000.00")
            r2 = await c.place("ETH-USD", "buy", "1", "2000.00")
            many = await c.submit_many(
                [c.order("SOL-USD", "buy", "1", "10.000") for _ in range(250)], batch=20, window=3
            )
            return r1, r2, many, await c.book("ETH-USD"), await c.status()

    r1, r2, many, book, status = run(plan(2), body)
    assert r1.ok and r2.filled == Decimal("1.000")
    assert r2.trades[0]["price"] == Decimal("2000.00")
    assert all(r.ok for r in many) and len(many) == 250
    assert book["asks"] == [(Decimal("2000.00"), Decimal("0.500"), 1)]
    assert sum(s["resting"] for s in status) == 251


def test_direct_mode_skips_router_and_hashes_the_same():
    async def body(cluster: InProcCluster) -> tuple[dict, list]:
        async with cluster.client(account="d", direct=True) as c:
            rs = await c.submit_many([c.order(s, "buy", "1", "1") for s in SYMBOLS])
            assert all(r.ok for r in rs)
            books = {s: await c.book(s) for s in SYMBOLS}
        async with cluster.client() as c:
            return books, (await c.topology())["forwarded"]

    books, forwarded = run(plan(2), body)
    for s, b in books.items():
        assert b["shard"] == shard_for(s, 2) and b["bids"][0][1] == Decimal(1).quantize(
            b["bids"][0][1]
        )
    assert sum(forwarded) == 0  # nothing went through the router


def test_overload_gives_overloaded_rejects_and_no_hang():
    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="flood", timeout=10) as c:
            cmds = [c.order("BTC-USD", "buy", "1", "100") for _ in range(3000)]
            results = await c.submit_many(cmds, batch=1, window=3000)
            assert all(r is not None for r in results)
            reasons = {r.reason for r in results if r.rejected}
            assert "overloaded" in reasons
            assert reasons <= {"overloaded"}, reasons
            served = sum(r.ok for r in results)
            assert served > 0
            # after the flood the shard serves normally and its count matches what was acked
            assert (await c.place("BTC-USD", "buy", "1", "100")).ok
            (st,) = await c.status()
            assert st["resting"] == served + 1 and st["shed"] >= 1

    run(plan(1, max_backlog=2), body)


def test_request_to_unregistered_shard_index_rejected():
    async def body(cluster: InProcCluster) -> tuple:
        async with cluster.client() as c:  # (the shards have registered once it answers)
            await c.topology()
        sock = cluster.net.Context().socket(cluster.net.DEALER)  # (a raw client socket)
        sock.connect(cluster.endpoint)
        try:
            sock.send_multipart([b"#7", b"r", encode_request([(OP_BOOK, "BTC-USD", 5)])])
            return await cluster.until(lambda: sock.poll(0) and sock.recv_multipart(),
                                       what="the router's reply")  # fmt: skip
        finally:
            sock.close(0)

    reply = run(plan(2), body)
    assert decode_reply(reply[1])[0] == "unknown routing key"


def test_sdk_result_carries_the_reject_code():
    """Scripts match on the stable code, never on the reason's wording."""

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="alice") as c:
            off_grid = await c.place("BTC-USD", "buy", "1", "100.001")
            assert off_grid.rejected and off_grid.code == "off_grid", off_grid
            ok = await c.place("BTC-USD", "buy", "1", "100.01", id="code-1")
            assert ok.ok and ok.code is None
            dup = await c.place("BTC-USD", "buy", "1", "100.01", id="code-1")
            assert dup.code == "duplicate_id", dup

    run(plan(2), body)


def test_custom_market_just_works(tmp_path: Path) -> None:
    path = tmp_path / "mk.toml"
    path.write_text('[markets.ZED-USD]\ntick = "0.5"\nlot = "2"\n')

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="z") as c:
            r = await c.place("ZED-USD", "buy", "4", "10.5")
            assert r.ok, r.reason
            assert (await c.order_status("ZED-USD", r.command["id"]))["qty"] == Decimal("4")

    run(plan(2, markets_file=str(path)), body)


def test_live_order_status_lists_the_orders_trades() -> None:
    """The engine keeps only each order's seq range; the shard finds its trades in the event
    ring, for a resting maker and for a filled one."""

    async def body(cluster: InProcCluster) -> None:
        async with cluster.client(account="mk") as maker, cluster.client(account="tk") as taker:
            assert (await maker.place("BTC-USD", "sell", "1", "100", id="m-1")).ok
            assert (await taker.place("BTC-USD", "buy", "0.4", "100", id="t-1")).ok
            st1 = await maker.order_status("BTC-USD", "m-1")
            assert st1["state"] == "live" and st1["qty"] == Decimal("0.6")
            assert [(p, q) for p, q, _ in st1["trades"]] == [(Decimal("100.00"), Decimal("0.4"))]
            assert (await taker.place("BTC-USD", "buy", "0.6", "101", id="t-2")).ok
            st2 = await maker.order_status("BTC-USD", "m-1")
            assert st2["state"] == "filled" and st2["filled"] == Decimal("1")
            assert [q for _, q, _ in st2["trades"]] == [Decimal("0.4"), Decimal("0.6")]
            assert all(p == Decimal("100.00") for p, _, _ in st2["trades"])  # the maker's price
            t2 = await taker.order_status("BTC-USD", "t-2")
            assert t2["trades"][0][1] == Decimal("0.6")

    run(plan(1), body)
