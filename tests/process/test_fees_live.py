"""Fee tiers on a real cluster: ``shardex up --markets FILE`` with a ``[fees]`` schedule, a real
redis-server and the bridge. The admin CLI puts a market maker in a rebate tier (journaled: it
survives kill -9 of its account shard), ``shardex fees`` shows the rates, every fill's fee is in
the balances stream, the stream's fills sum to the shards' fee ledgers, and ``shardex audit``
passes, counting the rebates; ``shardex replay`` of the journal shows the same fees."""

from __future__ import annotations

import json
import os
import signal
from decimal import Decimal as D

import pytest

from shardex.accounts.core import account_shard_for
from tests.support.accounts import _converged, _stream, _wait, accounts_cluster
from tests.support.cli import invoke_cli
from tests.support.fees import FEES
from tests.support.redis import RedisServer

pytestmark = pytest.mark.timeout(120)


def test_fee_tiers_on_a_live_cluster(redis_server: RedisServer, tmp_path) -> None:
    markets = tmp_path / "fees.toml"
    markets.write_text(FEES)
    maker = next(a for a in (f"mm{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
    taker = next(a for a in (f"tk{k}" for k in range(50)) if account_shard_for(a, 2) == 1)
    data = tmp_path / "data"  # (kept after the stop: its journal is replayed below)
    cl = accounts_cluster(1, 2, "--markets", str(markets), redis=redis_server.url,
                          data_dir=str(data))  # fmt: skip
    env = {"SHARDEX_KEY": str(cl.key)}

    def cli(*args: str) -> str:
        out = invoke_cli(*args, "--endpoint", cl.endpoint, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.decode()

    try:
        assert cli("fee-group", maker, "mm") == f"{maker}: group mm, tier mm\n"
        refused = invoke_cli("fee-group", maker, "gold", "--endpoint", cl.endpoint, env=env)
        assert refused.returncode == 1 and b"rejected (invalid)" in refused.stderr
        with cl.client() as c:
            assert c.deposit(maker, "BTC", "1", ref="m").ok
            assert c.deposit(taker, "USD", "1000", ref="t").ok
            assert c.place("BTC-USD", "sell", "0.3", "100", account=maker, id="s1").ok
            _wait(lambda: c.order_status("BTC-USD", "s1", account=maker)["state"] == "live",
                  "the maker's order on the book")  # fmt: skip
            for k in range(3):
                assert c.place("BTC-USD", "buy", "0.1", "100", account=taker, id=f"b{k}").ok
            # 3 fills of 10 USD: the maker is paid 3 bps (0.003 each), the taker pays 5 bps
            _wait(lambda: c.balance(maker).get("USD") == (D("30.009"), D(0)), "maker settled")
            _wait(lambda: c.balance(taker).get("USD") == (D("969.985"), D(0)), "taker settled")

            # the group is journaled: kill -9 the maker's account shard, it replays it
            victim = cl.child_pid("accounts.0")
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: cl.child_pid("accounts.0") != victim, "account shard 0 restarted", 30)
            _wait(lambda: c.fees(maker)["tier"] == "mm", "the group after the restart", 30)
        info = json.loads(cli("fees", maker, "--json"))
        assert info["group"] == "mm" and info["rates"]["BTC-USD"] == {"maker_bps": -3,
                                                                     "taker_bps": 4}  # fmt: skip
        assert "BTC-USD" in cli("fees", taker) and "tier base" in cli("fees", taker)

        r = redis_server.client()
        _converged(cl, r, 2, timeout=30.0)
        fills = [f for j in range(2) for _, f in _stream(r, j) if f["ev"] == "fill"]
        assert sorted((f["account"], f["role"], f["fee"]) for f in fills) == sorted(
            [(maker, "maker", "-0.003")] * 3 + [(taker, "taker", "0.005")] * 3)
        ledgers = {j: [f for _, f in _stream(r, j) if f["ev"] == "fees"][-1] for j in range(2)}
        assert sum(D(f["fee"]) for f in fills) == sum(D(f["total"]) for f in ledgers.values())
        out = cli("audit")
        assert "audit: ok (2 account shards)" in out
        assert "(collected 0.015000, rebates 0.009000)" in out, out
    finally:
        cl.stop()
    # the account shard's journal replays to the same events, given the same [fees]
    out = invoke_cli("replay", "--journal", str(data / "accounts-0"), "--markets", str(markets))
    assert out.returncode == 0, out.stderr
    events = [json.loads(ln) for ln in out.stdout.decode().splitlines()]
    assert [(e["group"], e["tier"]) for e in events if e["ev"] == "fee_group"] == [("mm", "mm")]
    assert [e["fee"] for e in events if e["ev"] == "fill"] == ["-0.003"] * 3
