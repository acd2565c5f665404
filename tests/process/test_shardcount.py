"""A data dir written with the account tier on keeps the engine shard count N it was written with.

Before, the shard-count check did not see the orders that came through the account tier
(journaled by engine shards as forwarded records, op 40), so every change of ``--shards`` started
and then corrupted money: orders replayed as refusals, forwards re-sent to a new owner and
executed twice, holds kept for orders no book has. Now N is recorded (``DATA_DIR/shards.json``)
and scanned for (forwarded records, the account shards' forward chains), and any other N is
refused by ``up``, ``engine``, ``accounts`` and ``router``.
"""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from shardex.client import audit_report
from shardex.datadir import (
    SHARDS_FILE,
    DataDirError,
    check_data_dir,
    check_shard_count,
    recorded_shards,
    scan,
    scan_account_dir,
)
from shardex.engine import DEFAULT_MARKETS
from shardex.wire.protocol import shard_for
from tests.support.accounts import _wait
from tests.support.cli import invoke_cli, refused
from tests.support.cluster import Cluster
from tests.support.journals import _account_dir, _forwarded_journal
from tests.support.ports import free_layout

# Under N = 2: BTC-USD → shard 0, ETH-USD and SOL-USD → shard 1; under N = 3 (the default, no
# pin): BTC-USD and SOL-USD → shard 2, ETH-USD → shard 1; under N = 1 everything → shard 0.
assert [shard_for(s, 2) for s in ("BTC-USD", "ETH-USD", "SOL-USD")] == [0, 1, 1]
assert [shard_for(s, 3) for s in ("BTC-USD", "ETH-USD", "SOL-USD")] == [2, 1, 2]


def test_forwarded_records_hold_their_pairs(tmp_path):
    """The scan reads a forwarded record's pair: before, a tier-on journal held 'nothing' and
    any shard count passed the check."""
    _forwarded_journal(tmp_path, 1, 2, ["ETH-USD", "SOL-USD"])
    (d,) = scan(tmp_path, DEFAULT_MARKETS)
    assert d.pairs == {"ETH-USD", "SOL-USD"} and d.forwarded
    check_data_dir(tmp_path, 2, DEFAULT_MARKETS)
    with pytest.raises(DataDirError, match=r"shard-1 \(read by no shard of 1\) holds ETH-USD"):
        check_data_dir(tmp_path, 1, DEFAULT_MARKETS)
    # the placement map cannot keep them where they are: no shard of 1 reads shard-1
    with pytest.raises(DataDirError, match=r"would not read: ETH-USD \(shard-1\), SOL-USD"):
        check_shard_count(tmp_path, 1, DEFAULT_MARKETS)
    assert recorded_shards(tmp_path) is None  # nothing recorded on a refusal
    check_shard_count(tmp_path, 2, DEFAULT_MARKETS)
    assert recorded_shards(tmp_path) == 2
    # recorded, with the account tier's forwards: any other N is refused (its chains are per
    # engine shard), also one the map could keep every pair in place under
    with pytest.raises(DataDirError, match=r"written with 2 shard\(s\)"):
        check_shard_count(tmp_path, 3, DEFAULT_MARKETS)


def test_account_forward_chains_tell_the_shard_count(tmp_path):
    """Forwards no engine shard journaled yet (an engine down) are still routed: the account
    shard's snapshot says where each went, and another N would re-route them."""
    _account_dir(tmp_path, 2, ["BTC-USD", "ETH-USD"], snapshot=True)
    a = scan_account_dir(tmp_path / "accounts-0", DEFAULT_MARKETS)
    assert a.routed == {("BTC-USD", 0), ("ETH-USD", 1)} and a.engines == {0, 1}
    with pytest.raises(DataDirError, match=r"forwarded ETH-USD to shard 1 \(→ shard 0\)"):
        check_shard_count(tmp_path, 1, DEFAULT_MARKETS)
    with pytest.raises(DataDirError, match=r"--shards 2 fits it"):
        check_shard_count(tmp_path, 3, DEFAULT_MARKETS)
    check_shard_count(tmp_path, 2, DEFAULT_MARKETS)
    assert recorded_shards(tmp_path) == 2


def test_forwarded_pairs_whose_shard_the_data_cannot_tell_are_refused(tmp_path):
    """Orders journaled by the account shard only (no snapshot, no engine journal): which shard
    they went to depends on N, so only a count that routes them like every fitting one starts."""
    _account_dir(tmp_path, 2, ["ETH-USD"], snapshot=False)
    with pytest.raises(DataDirError, match="ETH-USD to a shard the data does not tell"):
        check_shard_count(tmp_path, 2, DEFAULT_MARKETS)


def test_the_recorded_count_refuses_any_other_over_data(tmp_path):
    check_shard_count(tmp_path, 2, DEFAULT_MARKETS)
    assert recorded_shards(tmp_path) == 2
    check_shard_count(tmp_path, 3, DEFAULT_MARKETS)  # nothing journaled yet: simply re-recorded
    assert recorded_shards(tmp_path) == 3
    _forwarded_journal(tmp_path, 0, 3, ["ADA-USD"])  # a pair that shard 0 owns under 1 and 3
    with pytest.raises(DataDirError, match=r"written with 3 shard\(s\).*--shards 3"):
        check_shard_count(tmp_path, 1, DEFAULT_MARKETS)
    with pytest.raises(DataDirError, match="written with 3"):  # the router only compares
        check_shard_count(tmp_path, 1, DEFAULT_MARKETS, record=False)
    check_shard_count(tmp_path, 3, DEFAULT_MARKETS)
    (tmp_path / SHARDS_FILE).write_text("[1]")
    with pytest.raises(DataDirError, match="unreadable"):
        check_shard_count(tmp_path, 3, DEFAULT_MARKETS)


# -- with real processes ------------------------------------------------------------------------


def _cmd(name: str, data: Path, shards: int, *extra: str):
    layout = free_layout(shards, accounts=1)
    return invoke_cli(
        name, "--shards" if name != "accounts" else "--engines", str(shards),
        "--base-port", str(layout.base_port), "--data-dir", str(data), "--insecure", *extra,
    )  # fmt: skip


@pytest.mark.parametrize("written, others", [(2, (3, 1)), (1, (2,))])
def test_resting_orders_and_fills_through_the_account_tier_pin_the_shard_count(
    tmp_path, written: int, others: tuple[int, ...]
):
    """N shards with the tier on, resting orders and partial fills (on both shards for N = 2);
    then every other count is refused by every process kind, and N starts with every book,
    hold and balance intact (before: 2 → 3 and 2 → 1 started, re-sent forwards traded twice,
    holds outlived their orders; 1 → 2 crash-looped shard 0 and re-executed old trades)."""
    data = tmp_path / "data"
    cl = Cluster(written, data_dir=str(data), accounts=1, insecure=True)
    try:
        with cl.client() as c:
            for acct, asset, amount in (("alice", "USD", "100000"), ("bob", "BTC", "1"),
                                        ("carol", "SOL", "100")):  # fmt: skip
                assert c.deposit(acct, asset, amount).ok
            assert c.place("BTC-USD", "buy", "0.5", "20000", account="alice", id="a1").ok
            assert c.place("BTC-USD", "sell", "0.2", "20000", account="bob", id="b1").ok
            assert c.place("SOL-USD", "buy", "10", "150", account="alice", id="a2").ok
            assert c.place("SOL-USD", "sell", "4", "150", account="carol", id="c1").ok
            _wait(lambda: c.balance("carol")["USD"][0] > 0 and c.balance("bob").get("USD"),
                  "both fills settled")  # fmt: skip
            before = {a: c.balance(a) for a in ("alice", "bob", "carol")}
            books = {s: c.book(s) for s in ("BTC-USD", "SOL-USD")}
    finally:
        cl.stop()
    assert recorded_shards(data) == written
    was = f"written with {written} shard(s)"
    for n in others:
        err = refused(_cmd("up", data, n, "--no-pin", "--no-bridge", "--accounts", "1"),
                      was, f"--shards {written}")  # fmt: skip
        assert "SOL-USD" in err
        refused(_cmd("engine", data, n, "--shard", "0", "--router", "none", "--no-pin",
                     "--metrics-port", "0", "--accounts", "1"), was)  # fmt: skip
        refused(_cmd("accounts", data, n, "--shard", "0", "--shards", "1",
                     "--metrics-port", "0"), was)  # fmt: skip
        refused(_cmd("router", data, n, "--metrics-port", "0", "--accounts", "1"), was)
    assert recorded_shards(data) == written
    cl = Cluster(written, data_dir=str(data), accounts=1, insecure=True)
    try:
        with cl.client() as c:
            assert {a: c.balance(a) for a in before} == before
            assert {s: c.book(s) for s in books} == books
            assert before["alice"]["USD"][1] > D(0)  # the two resting buys still hold
            lines, ok = audit_report(c.audit())
            assert ok, lines
    finally:
        cl.stop()
