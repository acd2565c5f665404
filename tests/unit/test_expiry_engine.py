"""Expiring orders (gtd, day) and cancel-all in the pure engine: unit tests and a differential
test against the reference matcher over random streams that mix them with exchange time."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    DAY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    GTC,
    GTD,
    MARKET,
    OP_ADOPT,
    OP_AMEND,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_HANDOFF,
    OP_NEW,
    OP_TIME,
    REJ_EXPIRED,
    REJ_INVALID,
    REJ_MALFORMED,
)
from shardex.engine.expiry import DAY_MS, day_end
from tests.support.engine_gen import ACCOUNTS, IDS, SYMBOLS, Logged, timed_commands, windows
from tests.support.refmatcher import RefEngine

SYM = "BTC-USD"
T0 = 1_765_000_000_000  # some exchange time (ms)


def new(oid, price=100, tif=None, side=0, account="al", expire=None, qty=5, symbol=SYM):
    if tif is None:
        tif = GTC if expire is None else GTD
    cmd = (OP_NEW, symbol, oid, account, side, 0, price, qty, tif, False, 0)
    return cmd if expire is None else cmd + (None, {"expire": expire})


def run(engine, *cmds):
    out: list = []
    for cmd in cmds:
        engine.apply(cmd, out)
    return out


def fresh(ts=T0):
    engine = Engine(DEFAULT_MARKETS)
    run(engine, (OP_TIME, ts))
    return engine


def kinds(out):
    return [(e[0], e[3], e[4]) if e[0] in (EV_CANCELLED, EV_REJECTED) else (e[0], e[3])
            for e in out]  # fmt: skip


def test_gtd_rests_until_its_expire_time_then_is_cancelled_expired():
    eng = fresh()
    out = run(eng, new("a", expire=T0 + 10))
    assert [e[0] for e in out] == [EV_ACCEPTED] and eng.resting() == 1
    assert run(eng, (OP_TIME, T0 + 9), (OP_EXPIRE, T0 + 9)) == []
    assert not eng.expiry.due(eng.books, T0 + 9) and eng.expiry.due(eng.books, T0 + 10)
    out = run(eng, (OP_TIME, T0 + 10), (OP_EXPIRE, T0 + 10))
    assert out == [(EV_CANCELLED, 2, SYM, "a", "expired", 5)]
    assert eng.resting() == 0
    assert eng.order_status(SYM, "al", "a")["reason"] == "expired"
    eng.check_integrity()


def test_an_expire_time_already_passed_is_rejected_expired():
    eng = fresh()
    for expire in (T0, T0 - 1):
        (ev,) = run(eng, new(f"x{expire}", expire=expire))
        assert ev[0] == EV_REJECTED and ev[5] == REJ_EXPIRED
    assert eng.resting() == 0


def test_the_sweep_never_runs_ahead_of_exchange_time():
    """A forged ``OP_EXPIRE`` from the future cancels only what exchange time reached."""
    eng = fresh()
    run(eng, new("a", expire=T0 + 10))
    assert run(eng, (OP_EXPIRE, T0 + 1000)) == []
    assert eng.resting() == 1


def test_day_orders_expire_at_the_end_of_their_utc_day():
    assert day_end(0) == DAY_MS and day_end(DAY_MS - 1) == DAY_MS and day_end(DAY_MS) == 2 * DAY_MS
    eng = fresh(3 * DAY_MS + 5)
    run(eng, new("d", tif=DAY))
    assert eng.expiry.next_due(eng.books) == 4 * DAY_MS
    assert run(eng, (OP_TIME, 4 * DAY_MS - 1), (OP_EXPIRE, 4 * DAY_MS - 1)) == []
    out = run(eng, (OP_TIME, 4 * DAY_MS), (OP_EXPIRE, 4 * DAY_MS))
    assert kinds(out) == [(EV_CANCELLED, "d", "expired")]


def test_expiry_order_is_expire_time_then_acceptance():
    eng = fresh()
    run(eng, new("late", expire=T0 + 20), new("b", expire=T0 + 10, price=99),
        new("a", expire=T0 + 10, price=101, account="bo"))  # fmt: skip
    out = run(eng, (OP_TIME, T0 + 30), (OP_EXPIRE, T0 + 30))
    assert [e[3] for e in out] == ["b", "a", "late"]


def test_filled_and_amended_orders_keep_their_expiry_right():
    eng = fresh()
    run(eng, new("f", expire=T0 + 5), new("m", expire=T0 + 5, price=90))
    run(eng, (OP_NEW, SYM, "t", "bo", 1, 0, 100, 5, GTC, False, 0))  # fills f
    run(eng, (OP_AMEND, SYM, "m", "al", 3, 91))  # re-priced: same order, same expiry
    out = run(eng, (OP_TIME, T0 + 5), (OP_EXPIRE, T0 + 5))
    assert out[-1][3:] == ("m", "expired", 3) and len(out) == 1


def test_bad_options_are_rejected_with_stable_codes():
    eng = fresh()
    cases = [
        (new("a")[:11] + (None, {"expire": T0 + 1, "bogus": 1}), REJ_INVALID),
        (new("a")[:11] + (None, {"expire": T0 + 1}), REJ_INVALID),  # expire with gtc
        (new("a", tif=GTD)[:11] + (None, {}), REJ_INVALID),  # gtd without expire
        (new("a", tif=DAY)[:11] + (None, {"expire": T0 + 1}), REJ_INVALID),
        (new("a", tif=GTD)[:11] + (None, {"expire": "soon"}), REJ_MALFORMED),
        (new("a", tif=GTD)[:11] + (None, {"expire": True}), REJ_MALFORMED),
        (new("a", tif=GTD)[:11] + (None, [1]), REJ_MALFORMED),
        (new("a", tif=GTD)[:11] + ("12", {"expire": T0 + 1}), REJ_INVALID),
        ((OP_NEW, SYM, "a", "al", 0, MARKET, None, 5, DAY, False, 0), REJ_INVALID),
        (new("a", tif=GTD), REJ_INVALID),  # 11 fields: gtd needs its expire option
    ]
    for cmd, code in cases:
        (ev,) = run(eng, cmd)
        assert ev[0] == EV_REJECTED and ev[5] == code, (cmd, ev)
    assert eng.resting() == 0
    # options without expiry are a plain order
    assert [e[0] for e in run(eng, new("p")[:11] + (None, {}))] == [EV_ACCEPTED]


def test_cancel_all_per_pair_and_for_every_pair():
    eng = fresh()
    eth = "ETH-USD"
    run(eng, new("a1"), new("a2", price=99), new("b1", account="bo", price=98),
        new("e1", symbol=eth, price=10), new("e2", symbol=eth, price=9, tif=DAY))  # fmt: skip
    out = run(eng, (OP_CANCEL_ALL, "ETH-USD", "r1", "al"))
    assert kinds(out) == [(EV_CANCELLED, "e1", "cancel_all"), (EV_CANCELLED, "e2", "cancel_all")]
    assert run(eng, (OP_CANCEL_ALL, "ETH-USD", "r2", "al")) == []
    out = run(eng, (OP_CANCEL_ALL, "", "r3", "al"))
    assert [e[3] for e in out] == ["a1", "a2"] and eng.resting() == 1
    (ev,) = run(eng, (OP_CANCEL_ALL, "NOPE-USD", "r", "al"))
    assert ev[0] == EV_REJECTED
    (ev,) = run(eng, (OP_CANCEL_ALL, "", "r", ""))
    assert ev[0] == EV_REJECTED and ev[5] == REJ_MALFORMED
    assert run(eng, (OP_TIME, 5 * T0), (OP_EXPIRE, 5 * T0)) == []  # e2 went: nothing expires
    eng.check_integrity()


def test_expiring_orders_survive_snapshot_restore_and_a_live_move():
    eng = fresh()
    run(eng, new("a", expire=T0 + 10), new("d", tif=DAY, price=99), new("g", price=98))
    restored = Engine.restore(eng.snapshot(), DEFAULT_MARKETS)
    later = [(OP_TIME, day_end(T0)), (OP_EXPIRE, day_end(T0))]
    assert run(restored, *later) == run(eng, *later)
    # a live move: the pair's state (with its expire times) travels in OP_ADOPT
    src = fresh()
    run(src, new("a", expire=T0 + 10), new("b", expire=T0 + 5, price=99))
    moved = run(src, (OP_HANDOFF, SYM, 1))
    state = src.handed[SYM]
    assert state["expire"] == [["a", T0 + 10], ["b", T0 + 5]], moved
    dst = fresh()
    run(dst, (OP_ADOPT, SYM, 0, moved[0][1], state))
    out = run(dst, (OP_TIME, T0 + 10), (OP_EXPIRE, T0 + 10))
    assert [e[3:5] for e in out] == [("b", "expired"), ("a", "expired")]
    assert run(src, (OP_TIME, T0 + 10), (OP_EXPIRE, T0 + 10)) == []


def test_a_dead_man_switch_fires_unless_refreshed_and_travels_with_its_pair():
    eng = fresh()
    run(eng, new("a1"), new("a2", price=99), new("b1", account="bo", price=98))
    assert run(eng, (OP_CANCEL_ALL, SYM, "hb", "al", 1000)) == []  # armed: nothing now
    run(eng, (OP_TIME, T0 + 900), (OP_CANCEL_ALL, SYM, "hb", "al", 1000))  # refreshed
    assert not eng.expiry.due(eng.books, T0 + 1000)
    restored = Engine.restore(eng.snapshot(), DEFAULT_MARKETS)  # (recovery keeps the switch)
    for e in (eng, restored):
        out = run(e, (OP_TIME, T0 + 1900), (OP_EXPIRE, T0 + 1900))
        assert [ev[3:5] for ev in out] == [("a1", "deadman"), ("a2", "deadman")]
        assert e.resting() == 1 and not e.expiry.switches  # one shot: gone once fired
    # disarmed: nothing fires
    run(eng, new("a3", price=97), (OP_CANCEL_ALL, SYM, "hb", "al", 10),
        (OP_CANCEL_ALL, SYM, "hb", "al", 0), (OP_TIME, T0 + 5000))  # fmt: skip
    assert run(eng, (OP_EXPIRE, T0 + 5000)) == [] and eng.resting() == 2
    for bad, code in ((("", "hb", "al", 10), REJ_INVALID), ((SYM, "hb", "al", -1), REJ_INVALID),
                      ((SYM, "hb", "al", "10"), REJ_MALFORMED)):  # fmt: skip
        (ev,) = run(eng, (OP_CANCEL_ALL, *bad))
        assert ev[0] == EV_REJECTED and ev[5] == code, (bad, ev)


def _comparable(events):
    return [e[:4] + e[5:] if e[0] == EV_REJECTED else e for e in events]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed_commands, windows, st.integers(0, 100))
def test_timed_streams_match_the_reference_and_survive_restore(cmds, window, cut):
    """gtd/day orders, exchange time, sweeps and cancel-all, event for event against the
    reference; an engine restored from a snapshot mid-stream continues identically."""
    engine, ref = Logged(DEFAULT_MARKETS, recent=window), RefEngine(window)
    twin = None
    for i, cmd in enumerate(cmds):
        if i == cut:
            twin = Engine.restore(engine.snapshot(), DEFAULT_MARKETS, recent=window)
        out: list = []
        engine.apply(cmd, out)
        assert _comparable(out) == _comparable(ref.apply(cmd)), cmd
        if twin is not None:
            again: list = []
            twin.apply(cmd, again)
            assert again == out
        engine.check_integrity()
    for sym in SYMBOLS:
        for oid in IDS:
            for account in ACCOUNTS:
                assert engine.order_status(sym, account, oid) == ref.status(sym, account, oid)
