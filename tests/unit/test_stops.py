"""Stop and take-profit orders in the pure engine: the trigger rules one by one, and random
streams with stop orders cross-checked against the reference matcher (``tests/support``),
through snapshots, restores and a pair's move."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    EV_TRIGGERED,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_ADOPT,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_HANDOFF,
    OP_MARKET_RULE,
    OP_NEW,
    OP_TIME,
    REJ_DUPLICATE_ID,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_OUT_OF_RANGE,
    REJ_UNTRIGGERED,
    REJ_WOULD_TRIGGER,
    REJ_WRONG_ACCOUNT,
    SELL,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
)
from shardex.tools.workload import Workload
from shardex.wire.layouts import EV_ID, EV_KIND, REJECTED_CODE, TRIGGERED_AT, TRIGGERED_LAST
from tests.support.engine_gen import ACCOUNTS, IDS, SYMBOLS, Logged, stop_commands, windows
from tests.support.refmatcher import RefEngine

S = "BTC-USD"


def _new(oid, acct, side, price, qty, tif=GTC, otype=LIMIT):
    return (OP_NEW, S, oid, acct, side, otype, price, qty, tif, False, 0)


def _stop(oid, acct, side, otype, trigger, qty=5, price=None, tif=None, **extra):
    market = otype in (STOP_MARKET, TAKE_PROFIT)
    tif = tif if tif is not None else (IOC if market else GTC)
    opts = {"trigger": trigger, **extra}
    return (OP_NEW, S, oid, acct, side, otype, price, qty, tif, False, 0, None, opts)


def _run(engine, *cmds):
    out: list = []
    for cmd in cmds:
        engine.apply(cmd, out)
    return out


def _traded_at(engine, price):
    """Make the last trade price ``price`` with a cross of two accounts nobody else uses."""
    n = engine.seq
    return _run(engine, _new(f"mk{n}", "zed", SELL, price, 1), _new(f"tk{n}", "yan", BUY, price, 1))


def _comparable(events):
    return [e[:4] + e[5:] if e[0] == EV_REJECTED else e for e in events]


def _check_status(engine, ref, symbol, oid):
    for account in ACCOUNTS:
        assert engine.order_status(symbol, account, oid) == ref.status(symbol, account, oid)


# (type, side, last move that fires it): stops follow the move, take-profits the opposite way
DIRECTIONS = [
    (STOP_MARKET, BUY, "up"),
    (STOP_LIMIT, BUY, "up"),
    (STOP_MARKET, SELL, "down"),
    (STOP_LIMIT, SELL, "down"),
    (TAKE_PROFIT, SELL, "up"),
    (TAKE_PROFIT_LIMIT, SELL, "up"),
    (TAKE_PROFIT, BUY, "down"),
    (TAKE_PROFIT_LIMIT, BUY, "down"),
]


@pytest.mark.parametrize(("otype", "side", "way"), DIRECTIONS)
def test_each_type_fires_on_its_side_of_the_trigger_only(otype, side, way):
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    limit = None if otype in (STOP_MARKET, TAKE_PROFIT) else 100
    trigger = 102 if way == "up" else 98
    out = _run(e, _stop("s", "al", side, otype, trigger, price=limit))
    assert [ev[EV_KIND] for ev in out] == [EV_ACCEPTED]
    wrong = 97 if way == "up" else 103  # the other direction: nothing fires
    assert EV_TRIGGERED not in [ev[EV_KIND] for ev in _traded_at(e, wrong)]
    assert e.order_status(S, "al", "s")["state"] == "pending"
    out = _traded_at(e, trigger)
    fired = [ev for ev in out if ev[EV_KIND] == EV_TRIGGERED]
    assert len(fired) == 1 and fired[0][EV_ID] == "s"
    assert (fired[0][TRIGGERED_LAST], fired[0][TRIGGERED_AT]) == (trigger, trigger)
    assert e.order_status(S, "al", "s")["state"] != "pending"
    e.check_integrity()


@pytest.mark.parametrize(("otype", "side", "way"), DIRECTIONS)
def test_a_trigger_the_last_price_reached_is_refused(otype, side, way):
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    price = None if otype in (STOP_MARKET, TAKE_PROFIT) else 100
    for trigger in (100, 99 if way == "up" else 101):
        out = _run(e, _stop(f"s{trigger}", "al", side, otype, trigger, price=price))
        assert out[0][EV_KIND] == EV_REJECTED and out[0][REJECTED_CODE] == REJ_WOULD_TRIGGER


def test_no_trade_yet_accepts_and_the_first_trade_fires_by_arrival():
    e = Engine(DEFAULT_MARKETS)
    out = _run(
        e,
        _stop("down", "al", SELL, STOP_MARKET, 105),  # reached by any last <= 105
        _stop("up", "bo", BUY, STOP_MARKET, 95),  # reached by any last >= 95
    )
    assert [ev[EV_KIND] for ev in out] == [EV_ACCEPTED, EV_ACCEPTED]
    out = _traded_at(e, 100)
    assert [ev[EV_ID] for ev in out if ev[EV_KIND] == EV_TRIGGERED] == ["down", "up"]


def test_cascade_fires_in_trigger_order_in_the_same_command():
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    _run(
        e,
        _new("a1", "mm", SELL, 101, 1),
        _new("a2", "mm", SELL, 102, 1),
        _new("a3", "mm", SELL, 103, 1),
        _stop("s3", "x", BUY, STOP_MARKET, 102, qty=1),
        _stop("s2", "x", BUY, STOP_MARKET, 101, qty=1),
        _stop("s1", "x", BUY, STOP_MARKET, 101, qty=1),
    )
    out = _run(e, _new("t", "y", BUY, 101, 1))
    kinds = [(ev[EV_KIND], ev[EV_ID] if ev[EV_KIND] != EV_TRADE else ev[3]) for ev in out]
    # t's trade at 101 reaches s2 and s1 (same trigger: by arrival, s2 first); s2's trade at
    # 102 also reaches s3, but s1's trigger 101 was crossed first; s3 finds no ask left
    assert kinds == [
        (EV_ACCEPTED, "t"),
        (EV_TRADE, 101),
        (EV_TRIGGERED, "s2"),
        (EV_TRADE, 102),
        (EV_TRIGGERED, "s1"),
        (EV_TRADE, 103),
        (EV_TRIGGERED, "s3"),
        (EV_CANCELLED, "s3"),  # a market order with nothing left to take: its IOC cancel
    ]
    e.check_integrity()


def test_cancel_amend_and_ids_of_a_pending_order():
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    _run(e, _stop("s", "al", BUY, STOP_LIMIT, 110, qty=4, price=111))
    assert e.order_status(S, "al", "s") == {
        "state": "pending",
        "symbol": S,
        "id": "s",
        "side": BUY,
        "price": 111,
        "qty": 4,
        "filled": 0,
        "type": STOP_LIMIT,
        "trigger": 110,
    }
    assert e.order_status(S, "bo", "s")["state"] == "unknown"  # no leak to other accounts
    codes = [
        _run(e, cmd)[0][REJECTED_CODE]
        for cmd in (
            (OP_AMEND, S, "s", "al", 2, None),
            (OP_CANCEL, S, "s", "bo"),
            _new("s", "al", BUY, 90, 1),
            _stop("s", "al", BUY, STOP_LIMIT, 120, price=121),
        )
    ]
    assert codes == [REJ_UNTRIGGERED, REJ_WRONG_ACCOUNT, REJ_DUPLICATE_ID, REJ_DUPLICATE_ID]
    out = _run(e, (OP_CANCEL, S, "s", "al"))
    assert out == [(EV_CANCELLED, e.seq, S, "s", "user", 4)]
    assert e.order_status(S, "al", "s")["state"] == "cancelled"
    assert EV_TRIGGERED not in [ev[EV_KIND] for ev in _traded_at(e, 115)]  # gone for good
    e.check_integrity()


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        (_stop("s", "al", BUY, STOP_MARKET, 110, extra=1), REJ_INVALID),  # unknown option
        ((*_stop("s", "al", BUY, STOP_MARKET, 110)[:11], 5, {"trigger": 110}), REJ_INVALID),
        ((*_stop("s", "al", BUY, STOP_MARKET, 110)[:12], [110]), REJ_MALFORMED),
        ((*_stop("s", "al", BUY, STOP_MARKET, 110)[:12], {}), REJ_INVALID),  # no trigger
        (_stop("s", "al", BUY, STOP_MARKET, 110, tif=GTC), REJ_INVALID),  # market kind: ioc/fok
        (_stop("s", "al", BUY, STOP_MARKET, 110, price=111), REJ_INVALID),
        (_stop("s", "al", BUY, STOP_LIMIT, 110), REJ_INVALID),  # limit kind without a price
        (_stop("s", "al", BUY, STOP_MARKET, 0), REJ_OUT_OF_RANGE),
        (_stop("s", "al", BUY, STOP_MARKET, 10**12), REJ_OUT_OF_RANGE),
        (_stop("s", "al", BUY, STOP_MARKET, "110"), REJ_MALFORMED),
        ((*_new("s", "al", BUY, 90, 1), None, {"trigger": 110}), REJ_INVALID),  # plain type
        ((*_new("s", "al", BUY, 90, 1)[:9], True, 0, None, {"trigger": 95}), REJ_INVALID),
        ((*_new("s", "al", BUY, 90, 1), None), REJ_MALFORMED),  # 12 fields: no options
    ],
)
def test_bad_options_are_rejected_and_change_nothing(cmd, code):
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    before = e.snapshot()
    out = _run(e, cmd)
    assert len(out) == 1 and out[0][EV_KIND] == EV_REJECTED and out[0][REJECTED_CODE] == code
    after = e.snapshot()
    assert after["seq"] == before["seq"] + 1 and after["books"] == before["books"]


def test_a_plain_order_with_empty_options_is_a_plain_order():
    a, b = Engine(DEFAULT_MARKETS), Engine(DEFAULT_MARKETS)
    plain = _new("p", "al", BUY, 90, 1)
    assert _run(a, (*plain, None, {})) == _run(b, plain)


def test_snapshot_restore_and_a_move_keep_pending_orders():
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    _run(e, _stop("s", "al", SELL, STOP_LIMIT, 95, qty=2, price=94), _new("b", "bo", BUY, 94, 9))
    assert e.snapshot()["version"] == 6  # (an engine that would drop pending orders refuses it)
    twin = Engine.restore(e.snapshot(), DEFAULT_MARKETS)
    assert twin.snapshot() == e.snapshot()
    assert _traded_at(twin, 95) == _traded_at(e, 95)  # both fire it, event for event
    assert e.snapshot()["version"] == 4  # nothing pending: readable as before
    _run(e, _stop("s2", "al", SELL, STOP_LIMIT, 90, qty=2, price=89))
    _run(e, (OP_HANDOFF, S, 1))
    assert S not in e.books
    state = e.handed[S]
    target = Engine(DEFAULT_MARKETS)
    assert _run(target, (OP_ADOPT, S, 0, e.seq, state))[0][EV_KIND] != EV_REJECTED
    assert target.order_status(S, "al", "s2")["state"] == "pending"
    assert target.books[S].last == 94  # s fired at 95 and traded with b at 94
    _run(target, (OP_CANCEL, S, "b", "bo"))  # (b's bid at 94 would take the sell at 90)
    fired = [ev for ev in _traded_at(target, 90) if ev[EV_KIND] == EV_TRIGGERED]
    assert [ev[EV_ID] for ev in fired] == ["s2"]
    target.check_integrity()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_commands, windows)
def test_streams_with_stops_match_the_reference(cmds, window):
    engine, ref = Logged(DEFAULT_MARKETS, recent=window), RefEngine(window)
    for cmd in cmds:
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd)), cmd
        engine.check_integrity()
        _check_status(engine, ref, cmd[1], cmd[2])
    for sym in SYMBOLS:
        for oid in IDS:
            _check_status(engine, ref, sym, oid)
    twin = Engine.restore(engine.snapshot(), DEFAULT_MARKETS, recent=window)
    assert twin.snapshot() == engine.snapshot()


def _random_cmd(rng: random.Random, stops: float) -> tuple:
    sym, oid, acct = rng.choice(SYMBOLS), f"o{rng.randrange(300)}", rng.choice(ACCOUNTS)
    kind = rng.random()
    if kind < stops:
        otype = rng.choice((STOP_MARKET, STOP_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT))
        market = otype in (STOP_MARKET, TAKE_PROFIT)
        tif = rng.choice((IOC, FOK)) if market else rng.choice((GTC, GTC, IOC, FOK))
        price = None if market else rng.randrange(85, 116)
        qty = rng.randrange(1, 30)
        opts = {"trigger": rng.randrange(85, 116)}
        return (
            OP_NEW,
            sym,
            oid,
            acct,
            rng.randrange(2),
            otype,
            price,
            qty,
            tif,
            False,
            rng.choice((0, 0, 1, 2, 3)),
            None,
            opts,
        )
    if kind < 0.65:
        otype = MARKET if rng.random() < 0.08 else LIMIT
        tif = rng.choice((GTC, GTC, GTC, IOC, FOK))
        tif = IOC if otype == MARKET and tif == GTC else tif
        price = None if otype == MARKET else rng.randrange(85, 116)
        return (
            OP_NEW,
            sym,
            oid,
            acct,
            rng.randrange(2),
            otype,
            price,
            rng.randrange(1, 30),
            tif,
            False,
            rng.choice((0, 0, 0, 1, 2, 3)),
        )
    if kind < 0.9:
        return (OP_CANCEL, sym, oid, acct)
    return (
        OP_AMEND,
        sym,
        oid,
        acct,
        rng.choice((None, rng.randrange(1, 30))),
        rng.choice((None, rng.randrange(85, 116))),
    )


def test_long_random_stream_with_ten_percent_stops_matches_the_reference():
    """Thousands of commands, deep books, cascades: the engine and the reference agree, and a
    restore from any snapshot continues identically."""
    rng = random.Random(11)
    engine, ref = Logged(DEFAULT_MARKETS, recent=60), RefEngine(60)
    fired = 0
    for n in range(4000):
        cmd = _random_cmd(rng, 0.10)
        if cmd[0] == OP_AMEND and cmd[4] is None and cmd[5] is None:
            continue
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd)), f"diverged at {n}: {cmd}"
        fired += sum(1 for ev in out if ev[EV_KIND] == EV_TRIGGERED)
        if n % 500 == 0:
            engine.check_integrity()
            twin = Engine.restore(engine.snapshot(), DEFAULT_MARKETS, recent=60)
            assert twin.snapshot() == engine.snapshot()
    for sym in SYMBOLS:
        for i in range(300):
            _check_status(engine, ref, sym, f"o{i}")
    assert fired > 50, "the stream should fire stops"
    assert any(b.stops and b.stops.orders for b in engine.books.values()), "and leave some"


def test_workload_stream_with_stops_cross_checked_against_reference():
    """The load generator's stop kind (``--mix ...,stop=N``) on both matchers: valid orders
    (nothing malformed), some fired, the same events."""
    mix = {"limit": 45, "ioc": 10, "market": 5, "cancel": 25, "amend": 5, "stop": 10}
    wl = Workload(symbols=("BTC-USD", "SOL-USD"), seed=5, mix=mix)
    engine, ref = Logged(DEFAULT_MARKETS), RefEngine()
    kinds: list[int] = []
    for cmd in wl.warmup(100) + wl.take(1500):
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd)), cmd
        kinds += [ev[EV_KIND] for ev in out]
        assert all(ev[REJECTED_CODE] == REJ_WOULD_TRIGGER for ev in out if ev[0] == EV_REJECTED)
    engine.check_integrity()
    assert kinds.count(EV_TRIGGERED) > 20


@pytest.mark.parametrize(
    ("field", "value"),
    [(1, 7), (2, 2), (3, 0), (5, 0), (6, 9), (8, "95"), (9, 99), (4, None)],
)
def test_a_snapshot_with_a_bad_pending_order_is_refused(field, value):
    """An unusable pending row (account, side, type, qty, tif, trigger, arrival, price) fails
    the restore with ValueError, naming the pair, instead of a later command crashing."""
    e = Engine(DEFAULT_MARKETS)
    _traded_at(e, 100)
    _run(e, _stop("s", "al", SELL, STOP_LIMIT, 95, qty=2, price=94))
    snap = e.snapshot()
    Engine.restore(snap, DEFAULT_MARKETS)  # (as it is: fine)
    row = snap["books"][S]["stops"]["orders"][0]
    row[field] = value
    with pytest.raises(ValueError, match=S):
        Engine.restore(snap, DEFAULT_MARKETS)


@pytest.mark.parametrize("how", ["cancel_all", "cancel_all_pairs", "deadman", "delist"])
def test_cancel_all_deadman_and_delist_take_the_pending_orders_too(how):
    """Regression: a cancel-all, a fired dead-man switch and a delisting cancelled the resting
    orders only, so a pending stop survived them (after a delisting, holding its funds on the
    account tier for a pair that accepts nothing). Now each cancels the pending orders too,
    after the resting ones, in arrival order, with the same reason."""
    e = Engine(DEFAULT_MARKETS)
    _run(e, (OP_TIME, 1_000))
    _traded_at(e, 100)
    _run(e, _new("r1", "alice", BUY, 90, 5), _stop("s1", "alice", BUY, STOP_LIMIT, 120, price=121),
         _stop("s2", "alice", SELL, STOP_MARKET, 80), _stop("b1", "bob", BUY, STOP_MARKET, 130))
    cmd, reason = {
        "cancel_all": ((OP_CANCEL_ALL, S, "ref", "alice"), "cancel_all"),
        "cancel_all_pairs": ((OP_CANCEL_ALL, "", "ref", "alice"), "cancel_all"),
        "deadman": ((OP_CANCEL_ALL, S, "ref", "alice", 5), "deadman"),
        "delist": ((OP_MARKET_RULE, S, {"state": "delisted"}), "delist"),
    }[how]
    out = _run(e, cmd)
    if how == "deadman":  # armed: fires once exchange time passes its deadline
        out = _run(e, (OP_TIME, 1_010), (OP_EXPIRE, 1_010))
    gone = [(ev[EV_ID], ev[4]) for ev in out if ev[EV_KIND] == EV_CANCELLED]
    expected = ["r1", "s1", "s2"] + (["b1"] if how == "delist" else [])
    assert gone == [(oid, reason) for oid in expected]
    for oid in ("s1", "s2"):
        assert e.order_status(S, "alice", oid, lambda first, last: [])["state"] == "cancelled"
    assert (e.order_status(S, "bob", "b1", lambda first, last: [])["state"] == "pending") == (
        how != "delist"
    )
    e.check_integrity()
