"""Money edges of the account tier (issue 14, brief H8): no path where money appears or
disappears.

1. A forward the engine shard refuses before or at the engine (its shape, an account of another
   account shard, a symbol of another engine shard, and the engine's own rejects: duplicate id,
   post-only cross, invalid combination, unknown symbol, out of range) is settled back to the
   account shard that forwarded it, which releases the hold exactly once.
2. Settlements and balance events older than the in-memory rings are re-sent from the journal.
3. ``shardex audit`` exits 1 naming the asset on a real violation, 0 on a clean cluster.

The pure half drives the very machines the processes run (``AccountMachine``,
``SettledEngine``); the rest uses real processes and sockets.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.accounts import Fee
from shardex.accounts.codes import (
    A_AMEND,
    A_DEPOSIT,
    A_NEW,
    AE_ANOMALY,
    AE_FORWARD,
    S_REJECTED,
)
from shardex.accounts.core import account_shard_for
from shardex.accounts.machines import AccountMachineFactory, SettledEngineFactory
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import BUY, GTC, IOC, LIMIT, OP_AMEND, OP_NEW, SELL
from shardex.wire.protocol import OP_FORWARD, shard_for

MARKETS = {s: DEFAULT_MARKETS[s] for s in ("BTC-USD", "ETH-USD", "ETH-BTC")}
FEES = {s: Fee(2, 5) for s in MARKETS}
N = 2  # engine shards of the in-memory venue


def _accounts_of(j: int, m: int, n: int = 4) -> list[str]:
    out, k = [], 0
    while len(out) < n:
        name = f"acct{k}"
        if account_shard_for(name, m) == j:
            out.append(name)
        k += 1
    return out


def _sym_of(i: int) -> str:
    return next(s for s in MARKETS if shard_for(s, N) == i)


class Venue:
    """Account shard 0 of ``m`` and the engine shards, linked in memory: every forward goes to
    the engine shard the account shard *thinks* owns the symbol (``account_engines``), every
    settlement to the account shard the engine shard addresses; each engine shard keeps its
    journal of records (replayed to prove the settlements regenerate byte for byte)."""

    def __init__(self, m: int = 2, engine_m: int | None = None, account_engines: int = N):
        self.m = m
        fac = AccountMachineFactory(0, m, lambda s: shard_for(s, account_engines), FEES)
        self.acc = fac.new(MARKETS)
        self.efacs = [SettledEngineFactory(i, engine_m or m, N) for i in range(N)]
        self.engines = [f.new(MARKETS) for f in self.efacs]
        self.records: list[list[tuple]] = [[] for _ in range(N)]
        self.sent: list[list[tuple]] = [[] for _ in range(N)]
        self.anomalies: list[tuple] = []

    def apply(self, cmd: tuple) -> list[tuple]:
        out: list[tuple] = []
        self.acc.apply(cmd, out)
        for ev in out:
            if ev[0] == AE_FORWARD:
                self.forward(ev[2], ev[1], ev[3], ev[4])
            elif ev[0] == AE_ANOMALY:
                self.anomalies.append(ev)
        return out

    def forward(self, i: int, seq: int, prev: int, cmd: Any) -> None:
        rec = (OP_FORWARD, 0, seq, prev, cmd)
        rec = msgpack.unpackb(msgpack.packb(rec))  # as the journal and the wire carry it
        rec = _tuples(rec)
        self.records[i].append(rec)
        self.engines[i].apply(rec, [])
        self.pump(i)

    def direct(self, i: int, cmd: tuple) -> None:
        """A command straight to engine shard ``i`` (a cancel), journaled like the shard does."""
        self.records[i].append(cmd)
        self.engines[i].apply(cmd, [])
        self.pump(i)

    def pump(self, i: int) -> None:
        eng = self.engines[i]
        msgs, eng.outgoing = eng.outgoing, []
        for j, msg in msgs:
            self.sent[i].append((j, msg))
            if j == 0:
                self.apply(msg)

    def replayed(self, i: int) -> list[tuple]:
        """The settlements engine shard ``i`` regenerates from its journal (recovery)."""
        eng = self.efacs[i].new(MARKETS)
        for rec in self.records[i]:
            eng.apply(rec, [])
        return eng.outgoing


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _new(symbol, oid, account, side=BUY, price=100_00, qty=10, tif=GTC, post=False, stp=0):
    return (A_NEW, symbol, oid, account, side, LIMIT, price, qty, tif, post, stp, None)


def _fund(v: Venue, account: str) -> None:
    for asset in ("USD", "BTC", "ETH"):
        v.apply((A_DEPOSIT, account, asset, 10**15, f"{account}-{asset}"))


def _nothing_held(v: Venue, accounts: list[str]) -> None:
    core = v.acc.core
    core.check_integrity()
    for a in accounts:
        for asset in ("USD", "BTC", "ETH"):
            assert core.balance(a, asset) == (10**15, 0), (a, asset)


def test_engine_rejects_release_the_hold():
    """The engine's own rejects of a forwarded new: each releases its hold (duplicate id of
    another account's live order, post-only cross, an invalid tif, a buy against itself)."""
    v = Venue()
    a, b = _accounts_of(0, 2, 2)
    for acct in (a, b):
        _fund(v, acct)
    sym = _sym_of(0)
    v.apply(_new(sym, "rest", a, side=SELL, price=100_00))  # a's sell rests at 100
    v.apply(_new(sym, "rest", b, side=BUY, price=90_00))  # duplicate id on the engine
    v.apply(_new(sym, "po", b, side=BUY, price=101_00, post=True))  # post-only would cross
    v.apply(_new(sym, "bad-tif", b, side=BUY, price=90_00, tif=7))  # tif unknown to the engine
    assert [k[2] for k in v.acc.core.orders] == ["rest"]  # only a's sell still holds
    codes = [m[8] for _, m in v.sent[0] if m[0] == S_REJECTED]
    assert len(codes) == 3
    assert not v.anomalies
    v.direct(0, (2, sym, "rest", a))  # a cancel goes straight to the engine shard
    _nothing_held(v, [a, b])
    assert v.replayed(0) == v.sent[0]


def test_forward_naming_another_account_shard_is_refused_and_released():
    """Engine shards started with another --accounts than the account shards: the engine shard
    refuses the forward (before: ALERT, then applied, the settlement went to the wrong account
    shard and the hold stayed forever) and settles it back to the sender."""
    v = Venue(m=1, engine_m=2)
    accts = _accounts_of(0, 1, 6)
    stranger = next(x for x in accts if account_shard_for(x, 2) != 0)
    _fund(v, stranger)
    sym = _sym_of(0)
    v.apply(_new(sym, "o1", stranger, side=BUY, price=100_00))
    _nothing_held(v, [stranger])
    assert v.engines[0].refusals == 1 and not v.engines[0].engine.resting()
    rej = [m for _, m in v.sent[0] if m[0] == S_REJECTED]
    assert len(rej) == 1 and rej[0][5] == stranger and rej[0][7] == OP_NEW
    assert not v.anomalies
    assert v.replayed(0) == v.sent[0]


def test_forward_to_the_wrong_engine_shard_is_refused_and_released():
    """Account shards started with another --engines: a symbol lands on an engine shard that
    does not own it; refused (not matched on a book nobody else sees) and released."""
    v = Venue(account_engines=1)  # the account shard sends every symbol to engine shard 0
    (a,) = _accounts_of(0, 2, 1)
    _fund(v, a)
    foreign = _sym_of(1)
    v.apply(_new(foreign, "o1", a, side=SELL, price=100_00))
    _nothing_held(v, [a])
    assert v.engines[0].refusals == 1 and not v.engines[0].engine.resting()
    assert v.replayed(0) == v.sent[0]


def test_refused_amend_puts_the_cap_back():
    """An amend raising a buy's price holds the difference first; refused by the engine shard
    (here: --engines differs for that symbol once the order is on the book) it is released."""
    v = Venue()
    (a,) = _accounts_of(0, 2, 1)
    _fund(v, a)
    sym = _sym_of(0)
    v.apply(_new(sym, "o1", a, side=BUY, price=100_00, qty=10))
    core = v.acc.core
    held = core.balance(a, "USD")[1]
    # a misshapen amend as a buggy forwarder would send it: refused at the engine shard's edge
    out: list[tuple] = []
    core.apply((A_AMEND, sym, "o1", a, None, 120_00), out)
    fwd = next(ev for ev in out if ev[0] == AE_FORWARD)
    assert core.balance(a, "USD")[1] > held
    v.forward(fwd[2], fwd[1], fwd[3], (OP_AMEND, sym, "o1", a, None, 120_00, "extra"))
    assert core.balance(a, "USD")[1] == held and not v.anomalies
    core.check_integrity()


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    field=st.integers(0, 10),
    junk=st.sampled_from([None, -1, 2**40, "x" * 70, 1.5, [1], "", True, "o0", 3]),
)
def test_any_misshapen_forward_releases_its_hold(data, field, junk):
    """Whatever a forward turns into on the way (any field replaced by junk), the engine shard
    settles it and the account shard ends with nothing held: if the engine could still name
    the order it is closed by name, else by the forward's seq (``cause``), with an anomaly."""
    v = Venue()
    (a,) = _accounts_of(0, 2, 1)
    _fund(v, a)
    sym = _sym_of(0)
    out: list[tuple] = []
    side = data.draw(st.sampled_from([BUY, SELL]))
    core = v.acc.core
    v.apply(_new(sym, "o0", a, side=BUY, price=1_00, qty=1))  # rests: a name junk can hit
    core.apply(_new(sym, "o1", a, side=side, price=100_00, qty=10, tif=IOC), out)
    fwd = next(ev for ev in out if ev[0] == AE_FORWARD)
    cmd = list(fwd[4])
    cmd[field] = junk
    v.forward(fwd[2], fwd[1], fwd[3], tuple(cmd))
    # o1 cannot rest (an IOC that finds nothing, or refused): only o0 may still hold
    assert list(core.orders) == [(a, sym, "o0")]
    v.direct(0, (2, sym, "o0", a))
    _nothing_held(v, [a])
    assert v.replayed(0) == v.sent[0]
