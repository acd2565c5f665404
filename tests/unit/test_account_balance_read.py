"""Reads of one account's orders look them up in an index, not by scanning every order.

The account shard answers reads in its single-writer loop. Its ``balance`` reply carries how
many orders the account has open; counting them by walking every open order of the shard made
each read cost O(all open orders) (a loadgen run funds its 100 accounts with one balance read
each: with 20,000 orders resting that was ~1.5 s of the shard's CPU per run, charged to the
run's orders by ``bench/paths.py``). The ``orders`` read of one account and each page of the
audit walked them too (an audit read page by page: O(n²)). ``AccountCore.open_by`` (account →
its open orders) is kept as orders open and close, rebuilt by ``restore``, and proved against
the orders by ``check_integrity``. ~0.1 s of CPU.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shardex.accounts import AccountCore
from shardex.accounts.codes import A_DEPOSIT, A_NEW, S_CANCELLED, S_TRADE
from shardex.accounts.machines import AccountMachineFactory
from shardex.accounts.orders import held_rows
from shardex.config import load_markets
from shardex.engine.book import IntegrityError
from shardex.engine.codes import BUY, GTC, LIMIT, SELL
from shardex.node.account_service import AccountHandler
from shardex.node.nulljournal import NullJournal
from shardex.wire.protocol import OP_AUDIT, OP_BALANCE, OP_ORDER, decode_reply, encode_request

BTC = "BTC-USD"
MARKETS = load_markets(None)
USD6 = 1_000_000


class _NoScan(dict):
    """The shard's open orders, refusing to be walked (a read must look up, not scan)."""

    def __iter__(self) -> Any:
        raise AssertionError("a read walked every open order")

    def items(self) -> Any:
        raise AssertionError("a read walked every open order")


def _orders_of(h: AccountHandler, account: str) -> Any:
    error, results = decode_reply(h.handle(encode_request([(OP_BALANCE, account)]), [], None))
    assert error is None, error
    return results[0]["orders"]


def _trading(core: AccountCore) -> None:
    """alice: four buys, one fills whole; bob: two sells, one fills whole, one is cancelled."""
    cmds: list[tuple] = [
        (A_DEPOSIT, "alice", "USD", 1000 * USD6, "d1"),
        (A_DEPOSIT, "bob", "BTC", 10_000_000, "d2"),
        (A_NEW, BTC, "s1", "bob", SELL, LIMIT, 2_900_000, 4, GTC, False, 0, None),
        (A_NEW, BTC, "s2", "bob", SELL, LIMIT, 3_100_000, 4, GTC, False, 0, None),
        (A_NEW, BTC, "b0", "alice", BUY, LIMIT, 2_900_000, 4, GTC, False, 0, None),
        *(
            (A_NEW, BTC, f"b{k}", "alice", BUY, LIMIT, 2_000_000, 5, GTC, False, 0, None)
            for k in (1, 2, 3)
        ),  # fmt: skip
        (S_TRADE, 0, 1, 0, BTC, 2_900_000, 4, "alice", "b0", "bob", "s1", BUY, 1),
        (S_CANCELLED, 0, 2, 1, BTC, "bob", "s2", "user", 4),
    ]
    out: list[tuple] = []
    for cmd in cmds:
        core.apply(cmd, out)
    core.check_integrity()


def test_balance_reads_count_open_orders_without_walking_them() -> None:
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS)
    h = AccountHandler(machine, NullJournal(), None)
    _trading(h.core)
    orders = h.core.orders
    h.core.orders = _NoScan(orders)
    assert [_orders_of(h, a) for a in ("alice", "bob", "nobody")] == [3, 0, 0]
    h.core.orders = orders
    assert list(h.core.open_by) == ["alice"]  # bob's orders ended: no empty entry left behind
    assert h.core.open_count("alice") == 3 and h.core.open_count("bob") == 0


def test_restore_rebuilds_the_counts() -> None:
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS)
    core = machine.core
    _trading(core)
    again = AccountCore.restore(core.snapshot(), MARKETS, None, core.engine_for)
    listed = {"alice": [(BTC, f"b{k}") for k in (1, 2, 3)]}
    assert {a: list(mine) for a, mine in again.open_by.items()} == listed
    assert {a: list(mine) for a, mine in core.open_by.items()} == listed
    assert all(o is again.orders[("alice", *k)] for k, o in again.open_by["alice"].items())
    again.check_integrity()
    b2 = again.open_by["alice"].pop((BTC, "b2"))
    with pytest.raises(IntegrityError, match="alice: 1 open orders not in its index, 0 indexed"):
        again.check_integrity()
    again.open_by["alice"][(BTC, "b2")] = copy.copy(b2)  # (a read would list a stale copy)
    with pytest.raises(IntegrityError, match="alice: its index holds another order"):
        again.check_integrity()


def _read(h: AccountHandler, cmd: tuple) -> Any:
    error, results = decode_reply(h.handle(encode_request([cmd]), [], None))
    assert error is None, error
    return results[0]


def test_an_accounts_orders_read_lists_its_own_without_walking_the_shards() -> None:
    """Regression: ``shardex orders ACCOUNT`` walked every open order of the shard."""
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS)
    h = AccountHandler(machine, NullJournal(), None)
    _trading(h.core)
    orders = h.core.orders
    h.core.orders = _NoScan(orders)
    got = _read(h, (OP_ORDER, "alice"))
    assert [(r["id"], r["side"], r["open"]) for r in got["orders"]] == [
        ("b1", "buy", "0.0005"), ("b2", "buy", "0.0005"), ("b3", "buy", "0.0005")]  # fmt: skip
    assert not got["truncated"] and len(_read(h, (OP_ORDER, "bob"))["orders"]) == 0


def test_audit_pages_cover_every_held_order_once_without_walking_the_shards() -> None:
    """Regression: each page of the audit walked the orders before its offset (the whole
    audit O(n²) in the writer loop). Pages look accounts up by their counts; read page by
    page they give every held order exactly once."""
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS)
    h = AccountHandler(machine, NullJournal(), None)
    core = h.core
    _trading(core)
    out: list[tuple] = []
    core.apply((A_DEPOSIT, "carol", "BTC", 10_000_000, "d3"), out)
    for k in range(4):
        core.apply((A_NEW, BTC, f"c{k}", "carol", SELL, LIMIT, 3_000_000 + k, 1, GTC, False, 0,
                    None), out)  # fmt: skip
    want = sorted(core.orders)
    orders = core.orders
    core.orders = _NoScan(orders)
    page = _read(h, (OP_AUDIT, 0))
    assert page["total"] == 7 and sorted(tuple(r[:3]) for r in page["orders"]) == want
    assert list(_read(h, (OP_AUDIT, 5))["orders"]) == list(page["orders"][5:])
    assert len(_read(h, (OP_AUDIT, 7))["orders"]) == 0
    for limit in (1, 2, 3, 7, 10):  # pages of any size, across account boundaries
        rows = [r for at in range(0, 8, limit) for r in held_rows(core.open_by, at, limit)]
        assert sorted(tuple(r[:3]) for r in rows) == want and len(rows) == 7, limit
