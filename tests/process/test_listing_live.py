"""Listing a pair on a real running cluster (``shardex up --shards 2 --accounts 2`` with a real
redis-server and the bridge): ``shardex market add`` lists it, an SDK client that connected
before learns it on its first order, the pair trades, and the trade is in the pair's Redis
trades stream (the bridge learnt the pair from its listing event instead of dropping its
events) and in its candles and ticker (the candles worker learnt the pair from the shards'
market tables), also after the bridge and the candles worker are killed and restarted;
``shardex audit`` stays clean."""

from __future__ import annotations

import json
import os
import re
import signal
from decimal import Decimal as D

import pytest
import redis

from shardex.accounts.core import account_shard_for
from shardex.candles.store import trades_key
from tests.support.accounts import _wait, accounts_cluster
from tests.support.cli import invoke_cli
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(120)

NEW = "AAPL-USD"


def test_market_add_then_trade_through_the_sdk(tmp_path, redis_server: RedisServer) -> None:
    al = next(a for a in (f"al{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
    bo = next(a for a in (f"bo{k}" for k in range(50)) if account_shard_for(a, 2) == 1)
    cl = accounts_cluster(2, 2, redis=redis_server.url, data_dir=str(tmp_path / "data"),
                          without=("history-writer",))  # (with the candles worker)
    env = {"SHARDEX_KEY": str(cl.key)}

    def cli(*args: str, code: int = 0) -> str:
        out = invoke_cli(*args, "--endpoint", cl.endpoint, env=env)
        assert out.returncode == code, out.stdout + out.stderr
        return (out.stdout + out.stderr).decode()

    def read(*args: str) -> str:
        """``shardex candles|ticker ... --json`` on the cluster's Redis."""
        out = invoke_cli(*args, "--json", "--redis-url", redis_server.url)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.decode()

    def candles(trades: int) -> list[dict]:
        """The pair's 1m candles through ``shardex candles`` once they hold ``trades``."""
        out = json.loads(read("candles", NEW, "--interval", "1m"))
        return out if sum(x["trades"] for x in out) == trades else []

    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with cl.client() as c:
            c.market_rules()  # (this client learns the table before the listing)
            assert NEW not in c.markets
            said = cli("market", "add", NEW, "--base", "AAPL", "--quote", "USD", "--tick", "0.01",
                       "--lot", "0.001", "--max-price", "100000", "--fee", "1,3",
                       "--min-qty", "0.5")  # fmt: skip
            assert re.fullmatch(rf"{NEW}: listed, tick 0.01, lot 0.001, max price 100000, max "
                                r"qty 1000000000, min qty 0.500 \(seq \d+\)\n",
                                said), said  # fmt: skip
            assert "unit_conflict" in cli("market", "add", "FOO-USD", "--tick", "0.0000001",
                                          "--lot", "0.001", code=1)  # fmt: skip
            assert c.deposit(bo, "AAPL", "5", ref="d-bo").ok
            assert c.deposit(al, "USD", "1000", ref="d-al").ok
            assert c.place(NEW, "sell", "2", "150.25", account=bo, id="s1").ok
            _wait(lambda: c.order_status(NEW, "s1", account=bo)["state"] == "live", "s1 rests")
            assert c.place(NEW, "buy", "1.5", "150.25", account=al, id="b1").ok
            _wait(lambda: c.balance(al).get("AAPL") == (D("1.5"), D(0)), "the trade settled")
            entries = _wait(lambda: r.xrange(trades_key(NEW)), "the trade in Redis", 30.0)
            (_, trade), = entries
            got = (trade["price"], trade["qty"], trade["taker_side"])
            assert got == ("150.25", "1.500", "buy"), trade
            got = _wait(lambda: candles(1), "the trade in the 1m candles", 30.0)
            assert (got[-1]["close"], D(got[-1]["volume"])) == ("150.25", D("1.5")), got
            tick = json.loads(read("ticker", NEW))
            assert (tick["last"], D(tick["volume"])) == ("150.25", D("1.5")), tick
            # a bridge that restarts resumes after the listing event: it learns the pair from
            # the shards' HELLOs (the router's topology) and still writes the pair's trades;
            # a restarted candles worker learns it the same way and goes on from its position
            for name in ("bridge", "candles-worker"):
                old = cl.child_pid(name)
                os.kill(old, signal.SIGKILL)
                _wait(lambda n=name, o=old: cl.child_pid(n) != o, f"the {name} restarted")
            assert c.place(NEW, "buy", "0.5", "150.25", account=al, id="b2").ok
            entries = _wait(lambda: r.xlen(trades_key(NEW)) == 2 and r.xrange(trades_key(NEW)),
                            "the second trade in Redis", 30.0)  # fmt: skip
            assert entries[1][1]["qty"] == "0.500", entries
            got = _wait(lambda: candles(2), "both trades in the 1m candles", 30.0)
            assert sum(D(x["volume"]) for x in got) == D(2), got
        assert "audit: ok (2 account shards)" in cli("audit")
    finally:
        r.close()
        cl.stop()
