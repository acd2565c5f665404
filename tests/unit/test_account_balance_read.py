"""A balance read counts the account's open orders from an index, not by scanning every order.

The account shard answers reads in its single-writer loop. Its ``balance`` reply carries how
many orders the account has open; counting them by walking every open order of the shard made
each read cost O(all open orders) (a loadgen run funds its 100 accounts with one balance read
each: with 20,000 orders resting that was ~1.5 s of the shard's CPU per run, charged to the
run's orders by ``bench/paths.py``). ``AccountCore.open_count`` keeps the counts as orders open
and close, is rebuilt by ``restore``, and ``check_integrity`` proves it against the orders.
~0.1 s of CPU.
"""

from __future__ import annotations

from typing import Any

from shardex.accounts import AccountCore
from shardex.accounts.codes import A_DEPOSIT, A_NEW, S_CANCELLED, S_TRADE
from shardex.accounts.machines import AccountMachineFactory
from shardex.config import load_markets
from shardex.engine.codes import BUY, GTC, LIMIT, SELL
from shardex.node.account_service import AccountHandler
from shardex.node.nulljournal import NullJournal
from shardex.wire.protocol import OP_BALANCE, decode_reply, encode_request

BTC = "BTC-USD"
MARKETS = load_markets(None)
USD6 = 1_000_000


class _NoScan(dict):
    """The shard's open orders, refusing to be walked (a read must look up, not scan)."""

    def __iter__(self) -> Any:
        raise AssertionError("a balance read walked every open order")

    def items(self) -> Any:
        raise AssertionError("a balance read walked every open order")


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
    assert h.core.open_count == {"alice": 3}  # bob's orders ended: no zero left behind


def test_restore_rebuilds_the_counts() -> None:
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS)
    core = machine.core
    _trading(core)
    again = AccountCore.restore(core.snapshot(), MARKETS, None, core.engine_for)
    assert again.open_count == core.open_count == {"alice": 3}
    again.check_integrity()
