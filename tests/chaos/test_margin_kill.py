"""kill -9 of the engine shard and of the account shard in the middle of perp margin moves on a
real ``shardex up --accounts 1`` cluster: each move lands exactly once (balance and collateral
to the unit, the audit clean; docs/perps.md "Margin in and out")."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path

import pytest

from shardex.client import Client, audit_report
from tests.support.accounts import _wait
from tests.support.cli import invoke_cli
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

PERP = "BTCPERP-USD"
MARKETS = f'[markets.{PERP}]\nkind = "perp"\ntick = "0.1"\nlot = "0.001"\n'


def _landed(c: Client, usd: str, collateral: str) -> Callable[[], bool]:
    def done() -> bool:
        rows = [p for p in c.positions("alice") if p["symbol"] == PERP]
        have = D(rows[0]["collateral"]) if rows else D(0)
        return c.balance("alice").get("USD") == (D(usd), D(0)) and have == D(collateral)

    return done


def _kill(c: Client, tier: str) -> None:
    """kill -9 shard 0 of ``tier`` (``topology`` or ``account_topology``) and wait until
    another process serves it."""
    old = c.topology()[tier][0]["pid"]
    os.kill(old, signal.SIGKILL)
    _wait(lambda: c.topology()[tier][0].get("pid") not in (None, old), f"{tier} back")


def test_kill9_of_either_side_mid_margin_move_lands_each_move_once(tmp_path: Path) -> None:
    markets = tmp_path / "markets.toml"
    markets.write_text(MARKETS)
    cl = Cluster(1, "--markets", str(markets), accounts=1,
                 without=("candles-worker", "history-writer", "feed"))  # fmt: skip
    try:
        with Client(cl.endpoint, key=cl.key, timeout=5) as c:
            assert c.deposit("alice", "USD", "10000", ref="d").ok
            moved = invoke_cli(
                "margin",
                "alice",
                PERP,
                "1000",
                "--ref",
                "m0",
                "--base-port",
                str(cl.layout.base_port),
                "--key",
                str(cl.key),
            )
            assert moved.returncode == 0 and b"forwarded" in moved.stdout, moved.stderr
            _wait(_landed(c, "9000", "1000"), "the first move in")
            # in: the account shard takes it and forwards; the engine shard dies at once
            assert c.set_margin("alice", PERP, "4000", ref="m1")["ok"]
            _kill(c, "topology")
            _wait(_landed(c, "5000", "5000"), "the move in landed once")
            # out: the account shard dies right after forwarding it
            assert c.set_margin("alice", PERP, "-1500", ref="m2")["ok"]
            _kill(c, "account_topology")
            _wait(_landed(c, "6500", "3500"), "the move out credited once")
            lines, ok = audit_report(c.audit())
            assert ok, lines
            audit = invoke_cli("audit", "--base-port", str(cl.layout.base_port), "--key",
                               str(cl.key))  # fmt: skip
            assert audit.returncode == 0, audit.stdout + audit.stderr
            out = audit.stdout.decode()
            assert "audit: ok (1 account shards)" in out, out
            (pair,) = [line for line in out.splitlines() if line.startswith(PERP)]
            assert pair.split() == [PERP, "collateral", "35000000", "fund", "0", "uncovered",
                                    "0", "margin", "moved", "35000000", "units", "of", "tick",
                                    "x", "lot", "ok"], pair  # fmt: skip
            _wait_says_moved_or_refused(cl)
    finally:
        cl.stop()


def _wait_says_moved_or_refused(cl: Cluster) -> None:
    """``shardex margin --wait`` polls the account shard until the engine has answered and
    says which: a move out beyond what may leave is refused (exit 1), a move in is moved;
    ``shardex positions`` shows the pair's insurance fund."""
    port = ("--base-port", str(cl.layout.base_port), "--key", str(cl.key))
    refused = invoke_cli("margin", "alice", PERP, "-100000", "--wait", *port)
    assert refused.returncode == 1 and b"refused the move" in refused.stderr, refused.stderr
    moved = invoke_cli("margin", "alice", PERP, "100", "--wait", *port)
    assert moved.returncode == 0 and moved.stdout.decode().endswith(": moved\n"), moved.stdout
    shown = invoke_cli("positions", "alice", *port).stdout.decode().splitlines()
    assert shown[0].split()[-1] == "fund" and D(shown[1].split()[-1]) == 0, shown
