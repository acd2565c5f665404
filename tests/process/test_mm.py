"""``shardex mm`` on a real cluster (real ZeroMQ, CURVE keys, an account shard): its quotes rest
in the book, it amends them, taker flow trades against them and its inventory, read by the
test from the account's balances (not from the bot), never passes the limit and reaches it;
SIGTERM leaves no open order of its accounts. And ``shardex up --mm``: the bot starts with
the cluster, and stopping the cluster stops the bot first, so its cancels reach the shards."""

from __future__ import annotations

import signal
import subprocess
import sys
from decimal import Decimal

from shardex.client import Client
from tests.support.cluster import ROOT, Cluster
from tests.support.metrics import scrape
from tests.support.ports import free_port
from tests.support.wait import wait_until

ACCOUNT = "mm-BTC-USD"
START_BTC = Decimal("1")
LOT = Decimal("0.0001")
LIMIT = 4  # lots


def _open(c: Client, account: str) -> list[dict]:
    return [r for r in c.open_orders(account) if not r.get("truncated")]


def _inventory(c: Client) -> int:
    """The bot's BTC-USD inventory in lots, from its account's balance (funded by the test)."""
    avail, held = c.balance(ACCOUNT)["BTC"]
    return int((avail + held - START_BTC) / LOT)


def _quotes_in_book(c: Client) -> bool:
    """Every open order of the bot rests in the book at its price (both sides quoted)."""
    mine = _open(c, ACCOUNT)
    book = c.book("BTC-USD", depth=20)
    levels = {("buy", p) for p, _, _ in book["bids"]} | {("sell", p) for p, _, _ in book["asks"]}
    sides = {r["side"] for r in mine}
    return sides == {"buy", "sell"} and all((r["side"], r["price"]) in levels for r in mine)


def test_quotes_rest_amend_trade_within_the_limit_and_sigterm_cancels_them() -> None:
    cl = Cluster(1, accounts=1)
    port = free_port()
    proc = None
    try:
        with cl.client() as c:  # funded here, so the test knows where the inventory starts
            for asset, amount in (("BTC", START_BTC), ("USD", Decimal("1000000"))):
                assert c.deposit(ACCOUNT, asset, amount, ref=f"test-{asset}").ok
            proc = subprocess.Popen(
                [sys.executable, "-m", "shardex.cli", "mm", "--endpoint", cl.endpoint,
                 *cl.key_args(), "--pairs", "BTC-USD", "--levels", "2", "--size", "2",
                 "--max-inventory", str(LIMIT), "--spread", "4", "--spacing", "2",
                 "--interval", "0.2", "--taker-rate", "20", "--progress", "0",
                 "--cycles", "3000", "--seed", "3", "--metrics-port", str(port)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            wait_until(lambda: _quotes_in_book(c), 60, "the bot's quotes in the book", 0.2)
            seen: list[int] = []

            def at_limit() -> bool:
                assert proc.poll() is None, proc.communicate()
                seen.append(_inventory(c))
                assert abs(seen[-1]) <= LIMIT, seen
                return abs(seen[-1]) == LIMIT

            wait_until(at_limit, 90, "the inventory at the limit", 0.05)
            got = wait_until(lambda: (m := scrape(port)).get("shardex_mm_amends_total", 0) > 2
                             and m, 60, "amends", 0.2)  # fmt: skip
            assert got["shardex_mm_fills_total"] > 0
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "open orders left: none" in out and "BTC-USD: ref" in out
            assert abs(_inventory(c)) <= LIMIT
            assert _open(c, ACCOUNT) == [] and _open(c, "mm-taker") == []
            book = c.book("BTC-USD", depth=5)
            assert book["bids"] == [] and book["asks"] == []  # nobody else quoted
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        cl.stop()


def test_up_mm_quotes_every_pair_and_its_stop_cancels_them() -> None:
    """The bot prints ``open orders left: none`` only after its account shard listed none of
    its orders: so the supervisor stopped it while the shards were still up."""
    cl = Cluster(1, "--mm", accounts=1)
    try:
        with cl.client() as c:
            symbols = sorted(c.markets)
            wait_until(lambda: {r["symbol"] for s in symbols for r in _open(c, f"mm-{s}")}
                       == set(symbols), 90, "quotes on every pair", 0.2)  # fmt: skip
    finally:
        cl.stop()
    log = cl.log_path.read_text(errors="replace")
    assert "open orders left: none" in log and "ignored SIGTERM" not in log
    assert log.index("open orders left: none") < log.index("all stopped")
