"""Journals written directly (forwarded records, account shard directories) for data-dir tests."""

from __future__ import annotations

from pathlib import Path

from shardex.accounts.codes import A_DEPOSIT, A_NEW
from shardex.accounts.machines import AccountMachineFactory, SettledEngineFactory
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import BUY, GTC, LIMIT, OP_NEW, STP_NONE
from shardex.journal import Journal
from shardex.wire.protocol import OP_FORWARD, shard_for


def _order(symbol: str, oid: str, price: int = 100) -> tuple:
    return (OP_NEW, symbol, oid, "alice", BUY, LIMIT, price, 1, GTC, False, STP_NONE)


def _forwarded_journal(root: Path, index: int, shards: int, symbols: list[str]) -> None:
    """shard-INDEX of N = ``shards`` as an engine shard with the account tier writes it: every
    order is a forwarded record ``(OP_FORWARD, j, seq, prev, command)``."""
    factory = SettledEngineFactory(index, 1, shards)
    j = Journal(root / f"shard-{index}", DEFAULT_MARKETS, machine=factory)
    engine = factory.new(DEFAULT_MARKETS)
    out: list = []
    prev = 0
    for k, symbol in enumerate(symbols, start=1):
        cmd = (OP_FORWARD, 0, k * 10, prev, _order(symbol, f"o{k}"))
        prev = k * 10
        j.add(engine.seq, cmd)
        engine.apply(cmd, out)
        j.commit()
    assert engine.resting() == len(symbols)  # accepted, resting: nothing refused
    j.close()


def _account_dir(root: Path, shards: int, symbols: list[str], snapshot: bool) -> None:
    """accounts-0 with one funded order per symbol, forwarded under N = ``shards`` (a snapshot
    after them if ``snapshot``: then the forwards' engine shards are known)."""
    factory = AccountMachineFactory(0, 1, lambda s: shard_for(s, shards))
    j = Journal(root / "accounts-0", DEFAULT_MARKETS, machine=factory)
    m = factory.new(DEFAULT_MARKETS)
    cmds: list[tuple] = [(A_DEPOSIT, "alice", "USD", 10**12, "d1")]
    cmds += [(A_NEW, *_order(s, f"o{k}")[1:], None) for k, s in enumerate(symbols)]
    out: list = []
    for cmd in cmds:
        j.add(m.seq, cmd)
        m.apply(cmd, out)
        j.commit()
    assert len(m.core.orders) == len(symbols)
    if snapshot:
        j.snapshot(m)  # type: ignore[arg-type]
    j.close()
