"""Shard-count safety: a data dir written with N shards is refused by a count under which no
shard would read some of its pairs (never a silently dropped book), and accepted by the same N
with every book intact (a larger N starts too: tests/process/test_placement_up.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shardex.datadir import (
    DataDirError,
    check_account_tier,
    check_data_dir,
    fitting_counts,
    recorded_tier,
    scan,
)
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import BUY, GTC, LIMIT, OP_CANCEL, OP_NEW, SELL, STP_NONE
from shardex.journal import Journal
from shardex.wire.protocol import shard_for
from tests.support.cli import invoke_cli, refused
from tests.support.cluster import Cluster
from tests.support.ports import free_layout

# Under N = 2: BTC-USD and ADA-USD → shard 0, ETH-USD and SOL-USD → shard 1.
assert shard_for("BTC-USD", 2) == 0 and shard_for("ETH-USD", 2) == 1


def up(data_dir: Path, shards: int) -> subprocess.CompletedProcess:
    layout = free_layout(shards)
    return invoke_cli(
        "up",
        "--shards",
        str(shards),
        "--base-port",
        str(layout.base_port),
        "--no-pin",
        "--no-bridge",
        "--accounts",
        "0",
        "--data-dir",
        str(data_dir),
    )


def engine(data_dir: Path, index: int, shards: int) -> subprocess.CompletedProcess:
    layout = free_layout(shards)
    return invoke_cli(
        "engine",
        "--shard",
        str(index),
        "--shards",
        str(shards),
        "--base-port",
        str(layout.base_port),
        "--router",
        "none",
        "--no-pin",
        "--metrics-port",
        "0",
        "--data-dir",
        str(data_dir),
    )


def rest_orders(cluster: Cluster, symbols: list[str]) -> dict[str, dict]:
    """One resting bid and ask on each symbol; returns each symbol's book."""
    books = {}
    with cluster.client(account="alice") as c:
        for s in symbols:
            assert c.place(s, "buy", "1", "10", id=f"{s}-b").ok
            assert c.place(s, "sell", "2", "20", id=f"{s}-a").ok
        for s in symbols:
            books[s] = c.book(s)
            assert books[s]["bids"] and books[s]["asks"]
    return books


def test_two_shards_to_one_is_refused_and_two_again_keeps_every_book(tmp_path):
    data = tmp_path / "data"
    cluster = Cluster(2, data_dir=str(data))
    try:
        before = rest_orders(cluster, ["BTC-USD", "ETH-USD", "SOL-USD"])
        # a second engine on a running shard's directory (a copied unit file, a typo in
        # --shard): refused before it reads or repairs the journal the first one writes
        refused(engine(data, 0, 2), "shard-0 is in use by another process (pid")
    finally:
        cluster.stop()
    # honcho's Procfile with 1 shard on the same ./data: the supervisor refuses, naming the
    # pairs of shard-1 that no shard would read, and says how to proceed
    err = refused(up(data, 1), "shard-1", "ETH-USD", "SOL-USD", "--shards 2")
    assert "BTC-USD" not in err  # shard 0's pair is where N = 1 looks for it
    # the engine alone (as honcho runs it) refuses too: shard-1 >= N holds pairs
    refused(engine(data, 0, 1), "shard-1", "ETH-USD")
    # the same count starts and finds every book as it was
    cluster = Cluster(2, data_dir=str(data))
    try:
        with cluster.client() as c:
            for s, book in before.items():
                after = c.book(s)
                assert (after["bids"], after["asks"]) == (book["bids"], book["asks"])
    finally:
        cluster.stop()


def _journal_dir(root: Path, index: int, commands: list[tuple], snapshot_after: int | None):
    """A shard-INDEX journal holding ``commands`` (a snapshot after the first K, if given)."""
    j = Journal(root / f"shard-{index}", DEFAULT_MARKETS)
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    for k, cmd in enumerate(commands):
        j.add(engine.seq, cmd)
        engine.apply(cmd, out)
        j.commit()
        if snapshot_after is not None and k + 1 == snapshot_after:
            j.snapshot(engine)
    j.close()
    return engine


def _new(symbol: str, oid: str, side: int = BUY, price: int = 100) -> tuple:
    return (OP_NEW, symbol, oid, "a", side, LIMIT, price, 1, GTC, False, STP_NONE)


def test_scan_reads_snapshot_books_and_records_after_it_and_ignores_unknown_symbols(tmp_path):
    cmds = [
        _new("BTC-USD", "1"),
        _new("ETH-USD", "2", SELL),
        (OP_CANCEL, "ETH-USD", "2", "a"),  # ETH-USD's book exists (empty): still its pair
        _new("NOPE-USD", "3"),  # unknown: a reject, no book, holds nothing
        _new("SOL-USD", "4"),
    ]
    engine = _journal_dir(tmp_path, 0, cmds, snapshot_after=3)
    # the segments before the snapshot are not needed: the snapshot names BTC and ETH
    (d,) = scan(tmp_path, DEFAULT_MARKETS)
    assert d.pairs == set(engine.books) == {"BTC-USD", "ETH-USD", "SOL-USD"}
    assert d.snapshot_seq == 3 and d.records == 2
    # N = 1 owns everything; N = 2 would send ETH-USD and SOL-USD to shard 1
    check_data_dir(tmp_path, 1, DEFAULT_MARKETS)
    with pytest.raises(DataDirError, match=r"ETH-USD \(→ shard 1\), SOL-USD \(→ shard 1\)"):
        check_data_dir(tmp_path, 2, DEFAULT_MARKETS)
    assert fitting_counts([d])[0] == 1


def test_shard_dir_beyond_n_with_only_rejects_does_not_block(tmp_path):
    _journal_dir(tmp_path, 0, [_new("BTC-USD", "1")], None)
    _journal_dir(tmp_path, 1, [_new("NOPE-USD", "1")], None)  # no pair: nothing to lose
    check_data_dir(tmp_path, 1, DEFAULT_MARKETS)
    _journal_dir(tmp_path, 2, [_new("ETH-USD", "1")], None)
    with pytest.raises(DataDirError, match=r"shard-2 \(read by no shard of 1\) holds ETH-USD"):
        check_data_dir(tmp_path, 1, DEFAULT_MARKETS)
    # an engine checks only its own dir and those >= N: shard 0 of 1 sees shard-2
    check_data_dir(tmp_path, 1, DEFAULT_MARKETS, only=lambda k: k == 0)
    with pytest.raises(DataDirError, match="ETH-USD"):
        check_data_dir(tmp_path, 1, DEFAULT_MARKETS, only=lambda k: k == 0 or k >= 1)


def test_missing_or_empty_data_dir_is_fine(tmp_path):
    assert check_data_dir(tmp_path / "nothing", 4, DEFAULT_MARKETS) == []
    (tmp_path / "shard-7").mkdir()
    assert check_data_dir(tmp_path, 2, DEFAULT_MARKETS)[0].pairs == set()


# -- the account tier: a data dir keeps the M it was written with -------------------------------


def up_accounts(data_dir: Path, accounts: int) -> subprocess.CompletedProcess:
    layout = free_layout(1, accounts=accounts)
    return invoke_cli(
        "up", "--shards", "1", "--base-port", str(layout.base_port), "--no-pin", "--no-bridge",
        "--accounts", str(accounts), "--data-dir", str(data_dir),
    )  # fmt: skip


def test_account_tier_on_over_books_written_without_it_is_refused(tmp_path):
    """Resting orders journaled without the tier hold no funds: settling their fills under the
    (now default) tier would create money. Before the record existed, `shardex up` started."""
    data = tmp_path / "data"
    cluster = Cluster(1, data_dir=str(data), accounts=0)
    try:
        rest_orders(cluster, ["BTC-USD"])
    finally:
        cluster.stop()
    refused(up_accounts(data, 1), "without the account tier", "create money", "--accounts 0")
    # a data dir from before the record (no accounts.json) with books: refused the same way
    (data / "accounts.json").unlink()
    refused(up_accounts(data, 1), "engine journals (shard-0)", "--accounts 0")
    assert check_account_tier(data, 0) is None  # the tier it was written with still starts


def test_account_tier_off_or_other_m_over_balances_is_refused(tmp_path):
    data = tmp_path / "data"
    cluster = Cluster(1, data_dir=str(data), accounts=1)
    try:
        with cluster.client() as c:
            assert c.deposit("alice", "USD", "100").ok
    finally:
        cluster.stop()
    assert recorded_tier(data) == 1
    refused(up_accounts(data, 0), "started with 1", "--accounts 1")
    refused(up_accounts(data, 2), "started with 1", "--accounts 1")
    # without the record: the balances in accounts-0 still tell
    (data / "accounts.json").unlink()
    with pytest.raises(DataDirError, match="accounts-0"):
        check_account_tier(data, 0)
    check_account_tier(data, 1)  # the count that fits starts, and is recorded again
    assert recorded_tier(data) == 1
    cluster = Cluster(1, data_dir=str(data), accounts=1)
    try:
        with cluster.client() as c:
            assert c.balance("alice")["USD"][0] == 100
    finally:
        cluster.stop()


def test_account_tier_record_is_first_writer_wins(tmp_path):
    check_account_tier(tmp_path, 2)
    assert recorded_tier(tmp_path) == 2
    check_account_tier(tmp_path, 2)  # every process of the cluster checks: same M is fine
    (tmp_path / "accounts.json").write_text("{not json")
    with pytest.raises(DataDirError, match="unreadable"):
        check_account_tier(tmp_path, 2)
    # a recorded tier under which nothing was journaled yet is simply re-recorded
    empty = tmp_path / "empty"
    check_account_tier(empty, 0)
    check_account_tier(empty, 1)
    assert recorded_tier(empty) == 1
