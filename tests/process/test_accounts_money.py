"""Money edges of the account tier: no path where money appears or
disappears.

1. A forward the engine shard refuses before or at the engine (its shape, an account of another
   account shard, a symbol of another engine shard, and the engine's own rejects: duplicate id,
   post-only cross, invalid combination, unknown symbol, out of range) is settled back to the
   account shard that forwarded it, which releases the hold exactly once.
2. Settlements and balance events older than the in-memory rings are re-sent from the journal,
   and ``shardex audit`` exits 1 naming the asset on a real violation: with kills, in
   tests/chaos/test_accounts_money_kills.py.

The pure half drives the very machines the processes run (``AccountMachine``,
``SettledEngine``); the rest uses real processes and sockets.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal as D
from typing import Any

import msgpack
import pytest
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

    def __init__(
        self,
        m: int = 2,
        engine_m: int | None = None,
        account_engines: int = N,
        engine_markets: dict | None = None,
    ):
        self.m = m
        self.engine_markets = engine_markets or MARKETS
        fac = AccountMachineFactory(0, m, lambda s: shard_for(s, account_engines), FEES)
        self.acc = fac.new(MARKETS)
        self.efacs = [SettledEngineFactory(i, engine_m or m, N) for i in range(N)]
        self.engines = [f.new(self.engine_markets) for f in self.efacs]
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
        eng = self.efacs[i].new(self.engine_markets)
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


def test_market_tables_that_differ_between_tiers_release_holds():
    """The engine shard's market table lacks a symbol the account shard trades, or bounds the
    price lower (a markets file changed and only some processes restarted): the engine's
    unknown_symbol / out_of_range rejects settle back and release the holds."""
    from dataclasses import replace

    from shardex.engine.codes import REJ_OUT_OF_RANGE, REJ_UNKNOWN_SYMBOL

    sym = _sym_of(0)
    gone = next(s for s in MARKETS if s != sym and shard_for(s, N) == 0)
    low = replace(MARKETS[sym], max_price=MARKETS[sym].tick * 50_00)
    engine_markets = {s: mk for s, mk in MARKETS.items() if s != gone} | {sym: low}
    v = Venue(engine_markets=engine_markets)
    (a,) = _accounts_of(0, 2, 1)
    _fund(v, a)
    v.apply(_new(sym, "too-high", a, side=BUY, price=60_00))  # the engine's bound is 50.00
    v.apply(_new(gone, "nowhere", a, side=SELL, price=1_00))  # the engine has no such market
    _nothing_held(v, [a])
    codes = sorted(m[8] for _, m in v.sent[0] if m[0] == S_REJECTED)
    assert codes == sorted([REJ_OUT_OF_RANGE, REJ_UNKNOWN_SYMBOL]) and not v.anomalies
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
    # o1 cannot rest (an IOC, or refused; junk may have made it trade with o0): cancel o0 if
    # still open, then nothing may stay held and every unit is accounted for
    assert (a, sym, "o1") not in core.orders
    if core.orders:
        v.direct(0, (2, sym, "o0", a))
    assert not core.orders
    core.check_integrity()
    for asset in ("USD", "BTC", "ETH"):
        avail, held = core.balance(a, asset)
        assert held == 0 and avail + core.fees.get(asset, 0) == 10**15, asset
    assert v.replayed(0) == v.sent[0]


# ------------------------------------------------------------------ real processes


class HandCluster:
    """Router, engine shards and account shards started one by one (insecure), so a test can
    give the tiers configurations that disagree, as an operator's mistake would."""

    def __init__(self, engine_args: list[list[str]], account_args: list[list[str]], router_args):
        from tests.support.ports import free_layout

        self.layout = free_layout(2, 1, accounts=2)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.procs: list[subprocess.Popen] = []
        base = ["--base-port", str(self.layout.base_port), "--insecure"]
        try:
            for args in [["router", *router_args], *(["engine", *a] for a in engine_args),
                         *(["accounts", *a] for a in account_args)]:  # fmt: skip
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "shardex.cli", *args, *base, "--metrics-port", "0"],
                        stdout=self.log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                )
            from tests.support.cluster import wait_for_cluster

            wait_for_cluster(self.layout)
        except Exception:
            self.stop()
            raise

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.log.close()


def _wait(pred, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # noqa: BLE001 - a process still starting: ask again
            last = exc
        if last is True:
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.mark.timeout(60)
def test_misconfigured_tiers_refuse_forwards_and_release_holds():
    """Real processes whose tiers disagree: engine shards started with --accounts 2, one
    account shard started as 0 of 1 believing in one engine shard (--engines 1, so every
    symbol is forwarded to engine shard 0). A forward naming an account of the other account
    shard, and one of a symbol engine shard 1 owns, are refused by engine shard 0 and settled
    back: the holds are released (before the fix: ALERT, then matched anyway, the hold stuck
    on an order the account shard never hears of again)."""
    from shardex.client import Client

    sym0, sym1 = _sym_of(0), _sym_of(1)  # owned by engine shard 0 / 1 of 2
    stranger = next(a for a in _accounts_of(0, 1, 8) if account_shard_for(a, 2) == 1)
    local = next(a for a in _accounts_of(0, 1, 8) if account_shard_for(a, 2) == 0)
    hc = None
    try:
        hc = HandCluster(
            engine_args=[
                ["--shard", str(i), "--shards", "2", "--no-pin", "--accounts", "2"]
                for i in range(2)
            ],  # fmt: skip
            account_args=[["--shard", "0", "--shards", "1", "--engines", "1"]],
            router_args=["--shards", "2", "--accounts", "1"],
        )
        with Client(hc.layout.frontend, key=False, timeout=5) as c:
            for acct in (stranger, local):
                for asset in ("USD", "BTC", "ETH"):
                    assert c.deposit(acct, asset, "1000", ref=f"{acct}-{asset}").ok
            quote1 = sym1.split("-")[1]
            r1 = c.place(sym0, "buy", "0.1", "100", account=stranger, id="s-1")
            r2 = c.place(sym1, "buy", "0.1", "1", account=local, id="l-1")
            assert r1.ok and r2.ok  # held and forwarded: the refusal comes back as a settlement
            quote0 = sym0.split("-")[1]
            _wait(lambda: c.balance(stranger)[quote0] == (D(1000), D(0)), "stranger released")
            _wait(lambda: c.balance(local)[quote1] == (D(1000), D(0)), "local released")
        assert "refuses" in hc.output() and "ALERT" in hc.output()
    finally:
        if hc is not None:
            hc.stop()


def _journaled_pair(tmp_path, monkeypatch):
    """An engine shard (``SettledEngine``) and an account shard (``AccountMachine``), each
    journaling to disk exactly as the processes do, rings of 4."""
    from shardex.journal import Journal

    monkeypatch.setenv("SHARDEX_LINK_RING", "4")
    efac = SettledEngineFactory(0, 1, 1)
    afac = AccountMachineFactory(0, 1, lambda _s: 0, FEES)
    ej = Journal(tmp_path / "e", MARKETS, fsync="none", machine=efac, keep_snapshots=1)
    aj = Journal(tmp_path / "a", MARKETS, fsync="none", machine=afac, keep_snapshots=1)
    eng, acc = ej.recover().engine, aj.recover().engine
    sent: list[tuple] = []
    fwds: list[tuple] = []

    def run(cmd: tuple) -> None:
        out: list[tuple] = []
        aj.add(acc.seq, cmd)
        acc.apply(cmd, out)
        aj.commit()
        for ev in out:
            if ev[0] == AE_FORWARD:
                fwds.append((ev[1], ev[3], ev[4]))
                rec = (OP_FORWARD, 0, ev[1], ev[3], ev[4])
                ej.add(eng.seq, rec)
                eng.apply(rec, [])
        ej.commit()
        sent.extend(m for _, m in eng.outgoing)
        eng.outgoing.clear()

    return ej, aj, eng, acc, run, sent, fwds


def test_link_repairs_regenerate_what_was_sent_across_snapshots(tmp_path, monkeypatch):
    """Settlements and forwards older than the rings come back from the journals byte for
    byte, in chunks (``limit``), across snapshots, continuing one replay between requests;
    a journal trimmed past the range says so (JournalError) instead of sending a gap."""
    from shardex.accounts.machines import ForwardRepair, SettlementRepair
    from shardex.journal import JournalError

    ej, aj, eng, acc, run, sent, fwds = _journaled_pair(tmp_path, monkeypatch)
    run((A_DEPOSIT, "m", "BTC", 10**12, "d1"))
    run((A_DEPOSIT, "t", "USD", 10**15, "d2"))
    run(_new("BTC-USD", "m1", "m", side=SELL, price=100_00, qty=1000))
    for k in range(40):
        run(_new("BTC-USD", f"t{k}", "t", side=BUY, price=100_00, qty=1, tif=IOC))
        if k == 20:
            ej.snapshot(eng)  # replays for ranges after it start from it
            aj.snapshot(acc)
    assert len(sent) == 40 and eng.resend(0, sent[0][2])[1] is False  # the ring holds 4
    rep = SettlementRepair(0, ej.replay_from)
    got, after = [], 0
    while True:
        chunk = rep.take(after, budget=7, limit=6)  # tiny budget: several calls per chunk
        if not chunk:
            if rep.replay.done:
                break
            continue
        got.extend(chunk)
        after = chunk[-1][2]
    assert got == sent
    frep = ForwardRepair(0, aj.replay_from)
    assert frep.take(fwds[10][0], 10_000, 100) == fwds[11:]
    assert frep.take(fwds[30][0], 10_000, 5) == fwds[31:36]  # continues the same replay
    ej.snapshot(eng)  # keep_snapshots=1: the records before it are trimmed away
    with pytest.raises(JournalError):
        SettlementRepair(0, ej.replay_from).take(sent[5][2], 10_000, 100)
    tail = SettlementRepair(0, ej.replay_from).take(sent[-1][2], 10_000, 100)
    assert tail == []  # nothing after the newest: nothing to send, no error
