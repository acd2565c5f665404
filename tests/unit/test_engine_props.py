"""Property tests: random command streams against invariants and against the reference matcher."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_NEW,
    OP_TIME,
    REJECT_NAMES,
)
from shardex.tools.workload import Workload
from tests.support.engine_gen import (
    ACCOUNTS,
    IDS,
    SYMBOLS,
    Logged,
    _any_cmd,
    commands,
    long_commands,
    windows,
)
from tests.support.refmatcher import RefEngine


def _comparable(events):
    """Reject reasons are not modelled by the reference; compare everything else (codes too)."""
    return [e[:4] + e[5:] if e[0] == EV_REJECTED else e for e in events]


def _check_reject_codes(events) -> None:
    """Every rejected event carries a reason and a known code, and nothing after the code."""
    for e in events:
        if e[0] == EV_REJECTED:
            assert len(e) == 6, e
            assert type(e[4]) is str and e[4], e
            assert type(e[5]) is int and 0 <= e[5] < len(REJECT_NAMES), e


def _check_not_crossed(engine: Engine) -> None:
    for book in engine.books.values():
        bid, ask = book.best(BUY), book.best(1)
        if bid is not None and ask is not None:
            assert bid < ask, f"{book.symbol} crossed: bid {bid} >= ask {ask}"


class Ledger:
    """Tracks every accepted order's open qty from events alone (quantity conservation)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], int] = {}
        self.time: dict[tuple[str, str], int] = {}
        self.clock = 0
        self.submitted: dict[tuple[str, str], int] = {}
        self.reprice: set[tuple[str, str, int]] = set()

    def feed(self, events) -> None:
        for e in events:
            kind, sym = e[0], e[2]
            if kind == EV_ACCEPTED:
                self.open[(sym, e[3])] = self.submitted[(sym, e[3])]
                self.clock += 1
                self.time[(sym, e[3])] = self.clock
            elif kind == EV_TRADE:
                for oid in (e[5], e[6]):
                    self.open[(sym, oid)] -= e[4]
                    assert self.open[(sym, oid)] >= 0
            elif kind == EV_CANCELLED:
                # A cancel always removes the whole open remainder.
                assert self.open[(sym, e[3])] == e[5]
                self.open[(sym, e[3])] = 0
            elif kind == EV_AMENDED:
                assert 0 < e[4] <= self.open[(sym, e[3])]
                self.open[(sym, e[3])] = e[4]
                self.reprice.add((sym, e[3], e[5]))


def _check_status(engine: Engine, ref: RefEngine, symbol: str, oid: str) -> None:
    for account in ACCOUNTS:
        got = engine.order_status(symbol, account, oid)
        assert got == ref.status(symbol, account, oid), (symbol, account, oid)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_commands, windows)
def test_engine_matches_reference_and_keeps_invariants(cmds, window):
    engine, ref = Logged(DEFAULT_MARKETS, recent=window), RefEngine(window)
    ledger = Ledger()
    prices: dict[tuple[str, str], int] = {}
    for cmd in cmds:
        if cmd[0] == OP_NEW:
            ledger.submitted[(cmd[1], cmd[2])] = cmd[7]
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd))
        assert out, "every command yields at least one event"
        _check_reject_codes(out)
        _check_not_crossed(engine)
        engine.check_integrity()
        _check_status(engine, ref, cmd[1], cmd[2])
        # quantity conservation: submitted = filled + cancelled + amended away + open
        ledger.reprice = set()
        ledger.feed(out)
        for sym, oid, price in ledger.reprice:
            order = engine.books[sym].orders.get(oid)
            if order is not None and prices.get((sym, oid)) != price:
                ledger.clock += 1
                ledger.time[(sym, oid)] = ledger.clock
        for book in engine.books.values():
            for oid, order in book.orders.items():
                prices[(book.symbol, oid)] = order.price
    for sym in SYMBOLS:
        for oid in IDS:
            _check_status(engine, ref, sym, oid)
    for book in engine.books.values():
        live = {oid: o.qty for oid, o in book.orders.items()}
        for (sym, oid), q in ledger.open.items():
            if sym == book.symbol:
                assert q == live.get(oid, 0), f"{sym} {oid}: ledger {q} != book {live.get(oid)}"
        # FIFO within each level: orders sit in the order they (re)entered the book.
        for side in (0, 1):
            for level in book.level_orders(side):
                times = [ledger.time[(book.symbol, oid)] for oid, _ in level]
                assert times == sorted(times)


@settings(max_examples=100, deadline=None)
@given(commands, windows)
def test_same_commands_same_events(cmds, window):
    a, b = Logged(DEFAULT_MARKETS, recent=window), Logged(DEFAULT_MARKETS, recent=window)
    assert a.apply_many(cmds) == b.apply_many(cmds)


@settings(max_examples=300, deadline=None)
@given(st.lists(_any_cmd, min_size=1, max_size=30), windows)
def test_every_rejected_event_has_a_known_code(cmds, window):
    """Whatever arrives, a rejected event is (kind, seq, symbol, id, reason, known code)."""
    engine = Logged(DEFAULT_MARKETS, recent=window)
    per_code = [0] * len(REJECT_NAMES)
    for cmd in cmds:
        out: list = []
        engine.apply(cmd, out)
        # (exchange time, the expiry sweep and a cancel-all emit nothing when nothing is due)
        assert out or cmd[0] in (OP_TIME, OP_EXPIRE, OP_CANCEL_ALL)
        _check_reject_codes(out)
        for e in out:
            if e[0] == EV_REJECTED:
                per_code[e[5]] += 1
    assert engine.rejected == per_code  # the metrics counters are the events' codes
    engine.check_integrity()


def test_cross_check_thousands_of_random_commands():
    """Long random streams (deep books, many levels) against the reference, event for event."""
    rng = random.Random(7)
    # a window smaller than the id space, so finished ids come back once they leave it
    engine, ref = Logged(DEFAULT_MARKETS, recent=60), RefEngine(60)
    for n in range(6000):
        kind = rng.random()
        sym = rng.choice(SYMBOLS)
        oid = f"o{rng.randrange(300)}"
        acct = rng.choice(ACCOUNTS)
        if kind < 0.6:
            otype = MARKET if rng.random() < 0.08 else LIMIT
            tif = rng.choice((GTC, GTC, GTC, IOC, FOK))
            if otype == MARKET and tif == GTC:
                tif = IOC
            side = rng.randrange(2)
            price = None if otype == MARKET else rng.randrange(80, 121)
            post_only = otype == LIMIT and tif == GTC and rng.random() < 0.1
            stp = rng.choice((0, 0, 0, 1, 2, 3))
            cmd = (
                OP_NEW,
                sym,
                oid,
                acct,
                side,
                otype,
                price,
                rng.randrange(1, 30),
                tif,
                post_only,
                stp,
            )
        elif kind < 0.9:
            cmd = (OP_CANCEL, sym, oid, acct)
        else:
            qty = rng.choice((None, rng.randrange(1, 30)))
            price = rng.randrange(80, 121) if qty is None or rng.random() < 0.3 else None
            cmd = (OP_AMEND, sym, oid, acct, qty, price)
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd)), f"diverged at command {n}: {cmd}"
        if n % 10 == 0:
            engine.check_integrity()
            _check_status(engine, ref, sym, oid)
    engine.check_integrity()
    for sym in SYMBOLS:
        for i in range(300):
            _check_status(engine, ref, sym, f"o{i}")
    assert engine.resting() > 50, "the stream should leave a real book behind"


def test_workload_stream_cross_checked_against_reference():
    """The bench's realistic stream (amends, FOK, cancels of live orders) on both matchers."""
    wl = Workload(symbols=("BTC-USD", "SOL-USD"), seed=3)
    cmds = wl.warmup(150) + wl.take(2500)
    engine, ref = Logged(DEFAULT_MARKETS), RefEngine()
    trades = 0
    for cmd in cmds:
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd))
        engine.check_integrity()
        trades += sum(1 for e in out if e[0] == EV_TRADE)
    assert trades > 100
