"""Integration tests: real router and shard processes over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import msgpack
import pytest
import redis
import zmq

from shardex.client import Client
from shardex.wire.protocol import (
    MAX_FRAME,
    OP_STATUS,
    VERSION,
    decode_reply,
)
from tests.support.cli import invoke_cli
from tests.support.cluster import ROOT, Cluster, wait_for_cluster
from tests.support.ports import free_layout
from tests.support.wait import wait_until

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "LTC-USD"]


@pytest.fixture(scope="module")
def insecure2():
    """For tests that send raw ZeroMQ frames: ``shardex up --insecure`` (no keys). One for the
    module: its two cases (router, direct) kill nothing and each checks every process is up."""
    c = Cluster(2, insecure=True)
    try:
        yield c
    finally:
        c.stop()


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


def ok(proc: subprocess.CompletedProcess) -> bytes:
    """The stdout of a command that must have exited 0."""
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


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
    # the other forms in this process (click's runner: the same code from argv to output)
    js = json.loads(ok(invoke_cli("book", "BTC-USD", "--json", *base)))
    assert js["bids"] == [["30000.00", "0.5000", 1]] and js["asks"] == [["30010.00", "0.2500", 1]]
    out = ok(invoke_cli("status", *base)).decode()
    assert "resting" in out and out.count(" up ") == 2
    js = json.loads(ok(invoke_cli("status", "--json", *base)))
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
    bad = invoke_cli("book", "NOPE-USD", *base)
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


def test_up_refuses_busy_ports(cluster1: Cluster, tmp_path):
    """Its own data dir: with the default (``./data``) another test's ``shardex up`` in the same
    directory made it refuse for the data dir in use instead of the ports (a race)."""
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
            "--data-dir",
            str(tmp_path / "data"),
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
        # and the Procfile's gateway serves it (market data, no key) on base+86
        url = f"http://127.0.0.1:{layout.gateway_port(0)}/v1/markets"
        markets = wait_until(lambda: _get_json(url), 60, "the Procfile's gateway")
        assert "BTC-USD" in [m["symbol"] for m in markets["markets"]]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None
