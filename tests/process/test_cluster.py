"""Integration tests: real router and shard processes over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import msgpack
import pytest
import redis
import zmq

from shardex.client import Client
from shardex.engine.codes import OP_REJECT
from shardex.wire.protocol import (
    MAX_FRAME,
    OP_BOOK,
    OP_STATUS,
    VERSION,
    decode_reply,
    encode_request,
    shard_for,
)
from tests.support.cluster import ROOT, Cluster, wait_for_cluster
from tests.support.ports import free_layout

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "LTC-USD"]


@pytest.fixture
def insecure2():
    """For tests that send raw ZeroMQ frames: ``shardex up --insecure`` (no keys)."""
    c = Cluster(2, insecure=True)
    try:
        yield c
    finally:
        c.stop()


def test_symbols_land_on_the_shard_the_hash_says(cluster2: Cluster):
    assert len({shard_for(s, 2) for s in SYMBOLS}) == 2  # the test really spans both shards
    with cluster2.client(account="alice") as c:
        for s in SYMBOLS:
            r = c.place(s, "buy", "1", "1")
            assert r.ok, r
        status = c.status()
        for s in SYMBOLS:
            assert c.book(s)["shard"] == shard_for(s, 2)
    for st in status:
        assert set(st["symbols"]) == {s for s in SYMBOLS if shard_for(s, 2) == st["shard"]}
        assert st["resting"] == len(st["symbols"])


def test_concurrent_clients_each_get_exactly_their_own_replies(cluster2: Cluster):
    errors: list[str] = []

    def run(n: int) -> None:
        try:
            with cluster2.client(account=f"acct{n}") as c:
                cmds = [
                    c.order(
                        SYMBOLS[k % len(SYMBOLS)],
                        "buy" if k % 2 else "sell",
                        "1",
                        str(1000 + k % 7),
                        id=f"c{n}-{k}",
                    )
                    for k in range(400)
                ]
                results = c.submit_many(cmds, batch=17, window=4)
                for cmd, r in zip(cmds, results, strict=True):
                    ids = {e.get("id") or e.get("taker") for e in r.events}
                    if r.error or ids != {cmd["id"]}:
                        errors.append(f"client {n}: {cmd['id']} got {r}")
                for k in range(0, 400, 40):
                    r = c.cancel(SYMBOLS[k % len(SYMBOLS)], f"c{n}-{k}")
                    if r.events and r.events[0]["id"] != f"c{n}-{k}":
                        errors.append(f"client {n}: cancel reply for {r.events[0]['id']}")
        except Exception as exc:  # surfaced below: a thread's exception would vanish otherwise
            errors.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


SCENARIO = [
    {
        "op": "new",
        "symbol": "BTC-USD",
        "id": "m1",
        "account": "maker",
        "side": "sell",
        "type": "limit",
        "price": "30000.50",
        "qty": "0.50",
    },
    {
        "op": "new",
        "symbol": "BTC-USD",
        "id": "m2",
        "account": "maker",
        "side": "sell",
        "type": "limit",
        "price": "30001.00",
        "qty": "1",
    },
    {
        "op": "new",
        "symbol": "BTC-USD",
        "id": "b1",
        "account": "bob",
        "side": "buy",
        "type": "limit",
        "price": "29999.00",
        "qty": "2",
        "post_only": True,
    },
    {
        "op": "new",
        "symbol": "BTC-USD",
        "id": "t1",
        "account": "taker",
        "side": "buy",
        "type": "limit",
        "price": "30001.00",
        "qty": "0.75",
        "tif": "ioc",
    },
    {"op": "amend", "symbol": "BTC-USD", "id": "m2", "account": "maker", "qty": "0.5"},
    {"op": "amend", "symbol": "BTC-USD", "id": "b1", "account": "bob", "price": "29998.00"},
    {"op": "cancel", "symbol": "BTC-USD", "id": "m1", "account": "maker"},
    {
        "op": "new",
        "symbol": "BTC-USD",
        "id": "t2",
        "account": "taker",
        "side": "sell",
        "type": "market",
        "qty": "3",
    },
    {
        "op": "new",
        "symbol": "BTC-USD",
        "id": "bad",
        "account": "x",
        "side": "buy",
        "type": "limit",
        "price": "1.001",
        "qty": "1",
    },
    {"op": "cancel", "symbol": "BTC-USD", "id": "m2", "account": "maker"},
]


def _jsonable(ev: dict) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in ev.items()}


def test_book_scenario_through_router_equals_replay(cluster1: Cluster, tmp_path):
    got = []
    local = []  # commands the SDK cannot encode: answered by it (seq 0), never sent
    with cluster1.client() as c:
        for cmd in SCENARIO:
            (r,) = c.submit_many([cmd])
            assert r.error is None
            events = [_jsonable(e) for e in r.events]
            if c.command(cmd)[0] == OP_REJECT:
                assert [e["ev"] for e in events] == ["rejected"] and events[0]["seq"] == 0
                local.append(cmd)
                continue
            got.extend(events)
    assert local  # (the scenario has one)
    src = tmp_path / "scenario.jsonl"
    src.write_text("".join(json.dumps(c) + "\n" for c in SCENARIO if c not in local))
    proc = subprocess.run(
        [sys.executable, "-m", "shardex.cli", "replay", str(src)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    expected = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    # the replay names the line of a malformed command; the cluster has no lines
    for e in expected:
        if e["ev"] == "rejected" and e["reason"].startswith("line "):
            e["reason"] = e["reason"].split(": ", 1)[1]
    assert got == expected
    kinds = [e["ev"] for e in got]
    assert kinds.count("trade") == 3 and "amended" in kinds


def test_async_client_same_results(cluster2: Cluster):
    import asyncio

    from shardex.client import AsyncClient

    async def main():
        async with AsyncClient(
            cluster2.endpoint, account="async", timeout=5, key=cluster2.key
        ) as c:
            r1 = await c.place("ETH-USD", "sell", "1.5", "2000.00")
            r2 = await c.place("ETH-USD", "buy", "1", "2000.00")
            many = await c.submit_many(
                [c.order("SOL-USD", "buy", "1", "10.000") for _ in range(250)], batch=20, window=3
            )
            book = await c.book("ETH-USD")
            status = await c.status()
            return r1, r2, many, book, status

    r1, r2, many, book, status = asyncio.run(asyncio.wait_for(main(), 30))
    assert r1.ok and r2.filled == Decimal("1.000")
    assert r2.trades[0]["price"] == Decimal("2000.00")
    assert all(r.ok for r in many) and len(many) == 250
    assert book["asks"] == [(Decimal("2000.00"), Decimal("0.500"), 1)]
    assert sum(s["resting"] for s in status) == 251


def test_direct_mode_skips_router_and_hashes_the_same(cluster2: Cluster):
    with cluster2.client(account="d", direct=True) as c:
        rs = c.submit_many([c.order(s, "buy", "1", "1") for s in SYMBOLS])
        assert all(r.ok for r in rs)
        books = {s: c.book(s) for s in SYMBOLS}
    for s, b in books.items():
        assert b["shard"] == shard_for(s, 2) and b["bids"][0][1] == Decimal(1).quantize(
            b["bids"][0][1]
        )
    with cluster2.client() as c:
        forwarded = c.topology()["forwarded"]
    assert sum(forwarded) == 0  # nothing went through the router


def test_overload_gives_overloaded_rejects_and_no_hang():
    cluster = Cluster(1, "--max-backlog", "2")
    try:
        with cluster.client(account="flood", timeout=10) as c:
            cmds = [c.order("BTC-USD", "buy", "1", "100") for _ in range(3000)]
            results = c.submit_many(cmds, batch=1, window=3000)
            assert all(r is not None for r in results)
            reasons = {r.reason for r in results if r.rejected}
            assert "overloaded" in reasons
            assert reasons <= {"overloaded"}, reasons
            served = sum(r.ok for r in results)
            assert served > 0
            # after the flood the shard serves normally and its count matches what was acked
            assert c.place("BTC-USD", "buy", "1", "100").ok
            (st,) = c.status()
            assert st["resting"] == served + 1 and st["shed"] >= 1
    finally:
        cluster.stop()


def test_kill9_shard_rejects_its_pairs_fast_others_keep_trading_and_it_comes_back(
    cluster2: Cluster,
):
    victim_symbol, other_symbol = "ETH-USD", "BTC-USD"
    victim = shard_for(victim_symbol, 2)
    assert shard_for(other_symbol, 2) != victim
    pid = cluster2.shard_pid(victim)
    with cluster2.client(account="k", timeout=1.0) as c:
        assert c.place(victim_symbol, "buy", "1", "100").ok
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        saw_reject = None
        other_ok = 0
        while time.monotonic() - killed < 15:
            r = c.place(victim_symbol, "buy", "1", "100")
            if r.error is not None and saw_reject is None:
                saw_reject = r.error
            if saw_reject is not None and r.ok:
                break  # restarted and serving again
            other_ok += c.place(other_symbol, "buy", "1", "100").ok
            time.sleep(0.02)
        else:
            pytest.fail(f"victim shard never came back; supervisor log:\n{cluster2.output()}")
    # the client got an explicit reject (not a hang past its 1 s timeout)
    assert saw_reject in ("shard unavailable",) or saw_reject.startswith("timeout after 1.0s")
    assert other_ok > 0
    assert cluster2.shard_pid(victim) != pid
    assert "DIED with signal 9" in cluster2.output()


def _raw(sock, frames):
    sock.send_multipart(frames)
    if not sock.poll(5000):
        return None
    return sock.recv_multipart()


@pytest.mark.parametrize("target", ["router", "direct"])
def test_malformed_frames_get_rejects_and_every_process_stays_up(insecure2: Cluster, target):
    cluster2 = insecure2
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    ep = cluster2.endpoint if target == "router" else cluster2.layout.direct(0)
    sock.connect(ep)
    key = b"BTC-USD" if target == "router" else b"x"
    good = msgpack.packb([VERSION, [[OP_STATUS]]])
    cases = {
        "random bytes": os.urandom(300),
        "truncated msgpack": good[:-3],
        "wrong version": msgpack.packb([99, [[OP_STATUS]]]),
        "not an array": msgpack.packb({"a": 1}),
        "huge frame": b"\x00" * (10 * 1024 * 1024),
        "unknown op": msgpack.packb([VERSION, [[77, "BTC-USD", "x"]]]),
        "garbage command": msgpack.packb([VERSION, [None, 5, [], [1]]]),
    }
    try:
        for name, payload in cases.items():
            reply = _raw(sock, [key, b"r1", payload])
            assert reply is not None, f"{name}: no reply (hang)"
            assert reply[0] == b"r1"
            error, results = decode_reply(reply[1])
            if name in ("unknown op", "garbage command"):
                assert error is None
                for res in results:
                    assert res[0][0] == 3 and res[0][4], f"{name}: {res}"  # a rejected event
            else:
                assert error, f"{name}: expected a batch reject, got {results}"
        assert (
            "too large" in decode_reply(_raw(sock, [key, b"r2", b"\x00" * (MAX_FRAME + 1)])[1])[0]
        )
        # wrong number of frames
        reply = _raw(sock, [b"only-one"])
        if reply is not None:
            assert decode_reply(reply[-1])[0].startswith("malformed message")
        reply = _raw(sock, [key, b"r3", good])
        assert decode_reply(reply[1])[0] is None
    finally:
        sock.close(0)
    with cluster2.client(account="a") as c:
        status = c.status()
        assert all("error" not in s for s in status)
        assert c.place("BTC-USD", "buy", "1", "1").ok
        assert c.book("BTC-USD")["bids"]
    assert cluster2.proc.poll() is None and "DIED" not in cluster2.output()


def test_book_and_status_cli(cluster2: Cluster):
    with cluster2.client(account="cli") as c:
        c.place("BTC-USD", "buy", "0.5", "30000.00")
        c.place("BTC-USD", "sell", "0.25", "30010.00")
    base = ["--base-port", str(cluster2.layout.base_port), *cluster2.key_args()]
    run = [sys.executable, "-m", "shardex.cli"]
    out = subprocess.run(
        [*run, "book", "BTC-USD", *base], capture_output=True, timeout=30, check=True
    ).stdout.decode()
    assert "30000.00" in out and "30010.00" in out and "0.5000" in out
    js = json.loads(
        subprocess.run(
            [*run, "book", "BTC-USD", "--json", *base], capture_output=True, timeout=30, check=True
        ).stdout
    )
    assert js["bids"] == [["30000.00", "0.5000", 1]] and js["asks"] == [["30010.00", "0.2500", 1]]
    out = subprocess.run(
        [*run, "status", *base], capture_output=True, timeout=30, check=True
    ).stdout.decode()
    assert "resting" in out and out.count(" up ") == 2
    js = json.loads(
        subprocess.run(
            [*run, "status", "--json", *base], capture_output=True, timeout=30, check=True
        ).stdout
    )
    assert sum(s["resting"] for s in js["shards"]) == 2 and js["secure"] is True
    # which engine each shard runs: the mypyc build or the interpreted reference
    assert {s["engine"] for s in js["shards"]} <= {"compiled", "interpreted"}
    rows = [line.split() for line in out.splitlines() if " up " in line]  # (not "pairs" lines)
    assert len(rows) == 2 and all(r[-1] in ("compiled", "interpreted") for r in rows), out
    assert out.count(" pairs ") == 2, out  # each shard's pairs under its row
    # with no --key the CLI finds the admin key of $SHARDEX_DATA_DIR (or ./data) by itself
    env = {**os.environ, "SHARDEX_DATA_DIR": cluster2.data_dir}
    del env["SHARDEX_KEY"]
    out = subprocess.run(
        [*run, "status", "--base-port", str(cluster2.layout.base_port)],
        capture_output=True,
        timeout=30,
        check=True,
        env=env,
    ).stdout.decode()
    assert out.count(" up ") == 2 and "INSECURE" not in out
    bad = subprocess.run([*run, "book", "NOPE-USD", *base], capture_output=True, timeout=30)
    assert bad.returncode != 0 and b"unknown symbol NOPE-USD" in bad.stderr


def test_cli_against_nothing_is_a_clear_error():
    layout = free_layout(1)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardex.cli",
            "status",
            "--base-port",
            str(layout.base_port),
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert b"cannot reach tcp://127.0.0.1:" in proc.stderr and b"Traceback" not in proc.stderr


def test_up_refuses_busy_ports(cluster1: Cluster):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardex.cli",
            "up",
            "--shards",
            "1",
            "--base-port",
            str(cluster1.layout.base_port),
        ],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode != 0 and b"ports already in use" in proc.stderr


def test_procfile_under_honcho_with_concurrency(tmp_path):
    layout = free_layout(3)
    # honcho lets .env override the environment, so the test brings its own env file
    env_file = tmp_path / "test.env"
    env_file.write_text(
        f"SHARDEX_SHARDS=auto\nSHARDEX_BASE_PORT={layout.base_port}\n"
        f"SHARDEX_DATA_DIR={tmp_path / 'data'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-e", str(env_file), "-c", "engine=3"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    keys = tmp_path / "data" / "keys"  # every process of the Procfile found (and shared) them
    try:
        info = wait_for_cluster(layout, key=keys / "admin.key")
        assert info["shards"] == 3
        # a plain Procfile runs the account tier too (honcho's default concurrency 1, as `shardex
        # up`): orders trade only what was deposited, and fills settle after the reply
        with Client(layout.frontend, account="h", key=keys / "admin.key") as c:
            assert c.place("BTC-USD", "buy", "1", "1").code == "insufficient_funds"
            assert c.deposit("h", "USD", "100").ok and c.deposit("g", "BTC", "1").ok
            assert all(c.place(s, "buy", "1", "1").ok for s in SYMBOLS)
            sell = c.place("BTC-USD", "sell", "1", "1", account="g")
            assert sell.ok
            deadline = time.monotonic() + 10
            while c.order_status("BTC-USD", sell.command["id"], account="g")["state"] != "filled":
                assert time.monotonic() < deadline, "the sell never filled"
                time.sleep(0.1)
            assert len(c.status()) == 3
        # the Procfile's redis + bridge carry the trade to Redis (read as the reader user)
        from shardex.redisauth import RedisUsers

        reader = RedisUsers.load(keys).url(layout.redis_url, "reader")
        r = redis.Redis.from_url(reader, decode_responses=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if r.xlen("shardex:trades:BTC-USD") == 1:
                    break
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.2)
        assert r.xlen("shardex:trades:BTC-USD") == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_request_to_unregistered_shard_index_rejected(insecure2: Cluster):
    cluster2 = insecure2
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster2.endpoint)
    try:
        reply = _raw(sock, [b"#7", b"r", encode_request([(OP_BOOK, "BTC-USD", 5)])])
        assert decode_reply(reply[1])[0] == "unknown routing key"
    finally:
        sock.close(0)


def test_sdk_result_carries_the_reject_code(cluster2: Cluster):
    """Scripts match on the stable code, never on the reason's wording."""
    with cluster2.client(account="alice") as c:
        off_grid = c.place("BTC-USD", "buy", "1", "100.001")
        assert off_grid.rejected and off_grid.code == "off_grid", off_grid
        ok = c.place("BTC-USD", "buy", "1", "100.01", id="code-1")
        assert ok.ok and ok.code is None
        dup = c.place("BTC-USD", "buy", "1", "100.01", id="code-1")
        assert dup.code == "duplicate_id", dup
