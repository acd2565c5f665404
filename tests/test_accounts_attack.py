"""The account tier attacked like the engine tier was (issue 14, with issue 9's standards).

Hostile input at the account shard (its handler, its journal, live through the router and on
the engine shard's account link), overload through the router, and chaos (kill -9, SIGSTOP) of
either tier under funded load. What must hold afterwards: no process died of its input, every
reject names its reason, the journal grew by bounded records only, every acked hold is on a
book or released, and ``shardex audit`` is clean.
"""

from __future__ import annotations

import os
import tempfile
from decimal import Decimal as D

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardex.accounts.assets import MAX_UNITS, AssetTable
from shardex.accounts.machines import AccountMachineFactory
from shardex.config import load_markets
from shardex.journal import Journal
from shardex.node.accounts import AccountHandler
from shardex.node.shard import NullJournal
from shardex.wire.protocol import (
    OP_AUDIT,
    OP_BALANCE,
    OP_DEPOSIT,
    OP_NEW,
    OP_WITHDRAW,
    VERSION,
    decode_reply,
)

pytestmark = pytest.mark.timeout(120)

MARKETS = load_markets(None)
# Amounts an attacker (or a typo) sends as a decimal string: each must be refused with a
# reason, or taken exactly; never rounded, never an exception out of the account shard.
JUNK_AMOUNTS = [
    "1e999999",  # Overflow out of Decimal division: killed the account shard
    "1E+5000",
    "9" * 64,  # 10^64 units: no msgpack int holds it, the journal commit raised
    "1e30",
    "12345678901234567890123456789.5",
    "1.00000000000000000000000000000001",  # rounded to 1 USD at 28 digits, and accepted
    "0.99999999999999999999999999999999",  # a withdraw of it took 1.00 USD
    "1e-999999999",
    "NaN",
    "sNaN",
    "-Infinity",
    "-5",
    "0",
    "0.0000001",
    " 1",
    "1_000",
    "0x10",
]


def _journaled_handler(path: str) -> tuple[AccountHandler, Journal]:
    factory = AccountMachineFactory(0, 1, lambda _s: 0)
    journal = Journal(path, MARKETS, fsync="none", machine=factory)
    machine = journal.recover().engine
    return AccountHandler(machine, journal), journal  # type: ignore[arg-type]


def _ask(h: AccountHandler, cmds: list) -> tuple:
    out: list = []
    error, results = decode_reply(h.handle(msgpack.packb([VERSION, cmds]), out))
    assert error is None, error
    return results


def _journal_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".log")
    )


def test_junk_amounts_are_refused_with_a_reason_and_never_rounded():
    """Regression: "1e999999" raised ``decimal.Overflow`` out of ``AccountHandler.handle`` (the
    process loop catches nothing: the account shard died with every reply of its batch);
    amounts beyond 64 bits were journaled and the group commit raised ``OverflowError``; and
    28-digit rounding turned a deposit of 1.00000000000000000000000000000001 USD into 1 USD and
    a withdraw of 0.99999999999999999999999999999999 USD into 1 USD (more than asked)."""
    with tempfile.TemporaryDirectory() as path:
        h, journal = _journaled_handler(path)
        (ok,) = _ask(h, [(OP_DEPOSIT, "alice", "USD", "1000", "seed")])
        assert ok["ok"]
        journal.commit()
        for k, amount in enumerate(JUNK_AMOUNTS):
            for op in (OP_DEPOSIT, OP_WITHDRAW):
                (res,) = _ask(h, [(op, "alice", "USD", amount, f"j{k}-{op}")])
                assert "rejected" in res and res["code"], (amount, res)
                assert len(res["rejected"]) < 200
            budget = (OP_NEW, "BTC-USD", f"b{k}", "alice", 0, 1, 0, 10, 1, False, 0, amount)
            (res,) = _ask(h, [budget])
            assert len(res) == 1 and res[0][4], (amount, res)  # rejected, with its reason
            journal.commit()  # must not raise: every journaled int fits 64 bits
        assert h.core.balance("alice", "USD") == (1_000_000_000, 0)  # nothing moved
        h.core.check_integrity()
        journal.close()


def test_exact_units_and_the_largest_amounts():
    table = AssetTable(MARKETS)
    assert table.to_units("USD", D("1.000001")) == 1_000_001
    assert table.to_units("USD", D("1.0000001")) is None
    assert table.to_units("USD", D("1.00000000000000000000000000000001")) is None
    assert table.to_units("USD", D("1e999999")) is None
    assert table.to_units("USD", D("1e-999999999")) is None
    big = table.fmt("USD", MAX_UNITS)
    assert table.to_units("USD", D(big)) == MAX_UNITS  # exact up to the cap
    h = AccountHandler(AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS), NullJournal())
    (res,) = _ask(h, [(OP_DEPOSIT, "alice", "USD", big, "cap")])
    assert res["ok"] and res["available"] == big


def test_huge_fields_are_refused_before_the_journal():
    """Regression: a transfer with a ~1 MiB account, asset or ref (under the frame limit) was
    journaled in full before the core refused it: 1 MiB of journal per request."""
    with tempfile.TemporaryDirectory() as path:
        h, journal = _journaled_handler(path)
        journal.commit()
        before = _journal_bytes(path)
        big = "x" * 900_000
        for cmd in [
            (OP_DEPOSIT, big, "USD", "1", "r1"),
            (OP_DEPOSIT, "alice", big, "1", "r2"),
            (OP_WITHDRAW, "alice", "USD", "1", big),
            (OP_DEPOSIT, "alice", "USD", big, "r3"),
        ]:
            (res,) = _ask(h, [cmd])
            assert res.get("rejected") and len(res["rejected"]) < 200, res
            journal.commit()
        assert _journal_bytes(path) - before < 4_000
        journal.close()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.text(min_size=1000, max_size=3000),
    st.binary(max_size=40),
    st.sampled_from(["BTC-USD", "alice", "USD", "BTC", "", *JUNK_AMOUNTS]),
    st.integers(min_value=-2, max_value=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
VALID = [
    [OP_NEW, "BTC-USD", "o-1", "alice", 0, 0, 3_000_000, 10, 0, False, 0],
    [OP_NEW, "BTC-USD", "o-2", "alice", 0, 1, 0, 10, 1, False, 0, "500"],
    [3, "BTC-USD", "o-1", "alice", 5, 3_000_001],
    [OP_DEPOSIT, "alice", "USD", "5", "d"],
    [OP_WITHDRAW, "alice", "USD", "5", "w"],
    [OP_BALANCE, "alice"],
    [OP_AUDIT],
]


@pytest.fixture(scope="module")
def fuzzed():
    with tempfile.TemporaryDirectory() as path:
        h, journal = _journaled_handler(path)
        _ask(
            h,
            [(OP_DEPOSIT, "alice", "USD", "100000", "f1"), (OP_DEPOSIT, "alice", "BTC", "9", "f2")],
        )
        yield h, journal
        journal.close()


@settings(max_examples=600, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.data())
def test_any_msgpack_in_any_position_is_a_bounded_reply_and_a_journalable_record(fuzzed, data):
    """Issue 9's property for the account shard: garbage anywhere in a request → a bounded
    reply, no exception, a journal that can commit what was added, books that balance."""
    h, journal = fuzzed
    cmd = list(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 3))):
        cmd[data.draw(st.integers(0, len(cmd) - 1))] = data.draw(values)
    if data.draw(st.booleans()):
        cmd = cmd[: data.draw(st.integers(0, len(cmd)))]
    payload = msgpack.packb([VERSION, [cmd]])
    reply = h.handle(payload, [])
    assert len(reply) < 2_000
    journal.commit()
    h.core.check_integrity()


def test_journal_events_see_records_committed_after_the_cursor_began():
    """Regression (``Journal.events``, which serves the bridge's gap repair of both tiers): the
    read position kept between calls listed and read the segments once, so a range committed
    after it began came back cut short (3..5 → [3]) and then "no longer in the journal"."""
    with tempfile.TemporaryDirectory() as path:
        h, journal = _journaled_handler(path)

        def deposits(refs: range) -> None:
            for k in refs:
                (res,) = _ask(h, [(OP_DEPOSIT, "alice", "USD", "1", f"r{k}")])
                assert res["ok"]
            journal.commit()

        deposits(range(3))
        assert [e[1] for e in journal.events(1, 2)] == [1, 2]
        deposits(range(3, 6))
        assert [e[1] for e in journal.events(3, 5)] == [3, 4, 5]
        deposits(range(6, 8))
        assert [e[1] for e in journal.events(4, 7)] == [4, 5, 6, 7]
        assert journal.events(7, 7) == h.machine.events.get(7, 7)
        journal.close()
