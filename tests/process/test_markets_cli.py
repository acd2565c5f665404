"""Markets and accounts at runtime on a real cluster (``shardex up --shards 1 --accounts 2``,
real processes and sockets) through the admin CLI: ``shardex market halt|resume|set-band|
set-max|set-min|list|delist`` and ``shardex account restrict|unrestrict``, with what each
says, their usage errors, the pair's state in ``shardex status``, and ``shardex audit`` clean
after a delisting released every hold."""

from __future__ import annotations

import re
from decimal import Decimal as D

import pytest

from shardex.accounts.core import account_shard_for
from tests.support.accounts import _wait, accounts_cluster
from tests.support.cli import invoke_cli

pytestmark = pytest.mark.timeout(120)

P = "BTC-USD"


def test_market_and_account_admin_cli(tmp_path) -> None:
    al = next(a for a in (f"al{k}" for k in range(50)) if account_shard_for(a, 2) == 0)
    bo = next(a for a in (f"bo{k}" for k in range(50)) if account_shard_for(a, 2) == 1)
    cl = accounts_cluster(1, 2, data_dir=str(tmp_path / "data"))
    env = {"SHARDEX_KEY": str(cl.key)}

    def cli(*args: str, code: int = 0) -> str:
        out = invoke_cli(*args, "--endpoint", cl.endpoint, env=env)
        assert out.returncode == code, out.stdout + out.stderr
        return (out.stdout + out.stderr).decode()

    try:
        with cl.client() as c:
            assert c.deposit(bo, "BTC", "1", ref="d-bo").ok
            assert c.deposit(al, "USD", "1000", ref="d-al").ok
            assert c.place(P, "sell", "0.5", "100", account=bo, id="s1").ok
            _wait(lambda: c.order_status(P, "s1", account=bo)["state"] == "live", "s1 resting")
            said = cli("market", "halt", P)
            assert re.fullmatch(rf"{P}: halted, band none, max qty none, max notional none, "
                                r"min qty none \(seq \d+\)\n", said), said  # fmt: skip
            assert re.search(rf"{P} +0 +halted ", cli("market", "list"))
            assert f"{P} (halted)" in cli("status")
            assert "market_halted" in str(c.cancel(P, "s1", account=bo).code)
            assert cli("market", "resume", P).startswith(f"{P}: open, band none")
            assert "band 150 bps" in cli("market", "set-band", P, "150")
            assert "max qty 2.0000, max notional 5000.000000" in cli(
                "market", "set-max", P, "--qty", "2", "--notional", "5000")
            assert "not on the lot grid" in cli("market", "set-max", P, "--qty", "0.00001",
                                                code=2)  # fmt: skip
            assert "give --qty and/or --notional" in cli("market", "set-max", P, code=2)
            # a minimum order size (refused through the tier: tests/unit/test_inproc_markets.py)
            assert "min qty 0.0100 (seq" in cli("market", "set-min", P, "0.01")
            assert re.search(rf"{P} +0 +open .* 0\.0100 +spot\n", cli("market", "list")), cli(
                "market", "list")
            assert "not on the lot grid" in cli("market", "set-min", P, "0.00001", code=2)
            assert "min qty none" in cli("market", "set-min", P, "0")
            assert "add --yes" in cli("market", "delist", P, code=2)
            assert "unknown symbol" in cli("market", "halt", "NOPE-USD", code=2)

            assert cli("account", "restrict", al) == f"{al}: restricted\n"
            refused = c.withdraw(al, "USD", "1", ref="w-al")
            assert refused.code == "account_restricted", refused
            assert cli("account", "unrestrict", al) == f"{al}: unrestricted\n"
            assert c.withdraw(al, "USD", "1", ref="w-al2").ok

            said = cli("market", "delist", P, "--yes")
            assert said.startswith(f"{P}: delisted, band 150 bps") and "1 orders cancelled" in said
            _wait(lambda: c.balance(bo)["BTC"] == (D(1), D(0)), "bo's hold released")
            assert "rejected (delisted)" in cli("market", "resume", P, code=1)
            assert '"state": "delisted"' in cli("market", "list", "--json")
        assert "audit: ok (2 account shards)" in cli("audit")
    finally:
        cl.stop()
