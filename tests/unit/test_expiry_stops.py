"""Stop orders with tif gtd or day in the pure engine: a pending one expires at its time like a
resting order (reason ``expired``); once triggered, its resting remainder keeps the expire time;
snapshots and live moves carry a pending order's expiry; the market kinds are refused."""

from __future__ import annotations

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    DAY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRIGGERED,
    GTC,
    GTD,
    IOC,
    LIMIT,
    OP_ADOPT,
    OP_EXPIRE,
    OP_HANDOFF,
    OP_NEW,
    OP_TIME,
    REJ_EXPIRED,
    REJ_INVALID,
    SELL,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT_LIMIT,
)
from shardex.engine.expiry import day_end

SYM = "BTC-USD"
T0 = 1_765_000_000_000


def stop(oid, trigger, price=120, tif=GTD, expire=None, otype=STOP_LIMIT, side=BUY, qty=5):
    opts = {"trigger": trigger, **({} if expire is None else {"expire": expire})}
    return (OP_NEW, SYM, oid, "al", side, otype, price, qty, tif, False, 0, None, opts)


def limit(oid, side, price, qty=1, account="mm"):
    return (OP_NEW, SYM, oid, account, side, LIMIT, price, qty, GTC, False, 0)


def run(engine, *cmds):
    out: list = []
    for cmd in cmds:
        engine.apply(cmd, out)
    engine.check_integrity()
    return out


def fresh(ts=T0):
    engine = Engine(DEFAULT_MARKETS)
    run(engine, (OP_TIME, ts))
    return engine


def sweep(engine, ts):
    return run(engine, (OP_TIME, ts), (OP_EXPIRE, ts))


def cancels(out):
    return [(e[3], e[4], e[5]) for e in out if e[0] == EV_CANCELLED]


def test_a_pending_gtd_stop_expires_at_its_time_and_a_day_one_at_midnight():
    eng = fresh()
    out = run(eng, stop("g", 110, expire=T0 + 10), stop("d", 111, tif=DAY),
              stop("t", 90, otype=TAKE_PROFIT_LIMIT, side=SELL, price=95, expire=T0 + 5))
    assert [e[0] for e in out] == [EV_ACCEPTED] * 3
    assert eng.order_status(SYM, "al", "g")["state"] == "pending"
    assert sweep(eng, T0 + 4) == []
    assert cancels(sweep(eng, T0 + 10)) == [("t", "expired", 5), ("g", "expired", 5)]
    assert eng.order_status(SYM, "al", "g")["reason"] == "expired"
    assert sweep(eng, day_end(T0) - 1) == []
    assert cancels(sweep(eng, day_end(T0))) == [("d", "expired", 5)]


def test_a_triggered_stop_rests_with_its_expire_time():
    eng = fresh()
    run(eng, stop("g", 101, price=105, expire=T0 + 10), limit("a", SELL, 101, qty=2))
    out = run(eng, limit("b", BUY, 101, qty=1))  # trades at 101: g fires, takes 1, rests 4
    assert [e[0] for e in out].count(EV_TRIGGERED) == 1
    status = eng.order_status(SYM, "al", "g")
    assert (status["state"], status["filled"]) == ("live", 1), status
    assert cancels(sweep(eng, T0 + 10)) == [("g", "expired", 4)]


def test_a_pending_expiry_survives_snapshot_restore_and_a_live_move():
    eng = fresh()
    run(eng, stop("g", 110, expire=T0 + 10), stop("d", 111, tif=DAY))
    restored = Engine.restore(eng.snapshot(), DEFAULT_MARKETS)
    assert sweep(restored, day_end(T0)) == sweep(eng, day_end(T0))
    src = fresh()
    run(src, stop("g", 110, expire=T0 + 10))
    moved = run(src, (OP_HANDOFF, SYM, 1))
    state = src.handed[SYM]
    assert state["expire"] == [["g", T0 + 10]], state
    dst = fresh()
    run(dst, (OP_ADOPT, SYM, 0, moved[0][1], state))
    assert cancels(sweep(dst, T0 + 10)) == [("g", "expired", 5)]


def test_refused_timed_stops_say_why():
    eng = fresh()
    bad = [
        (stop("m", 110, price=None, otype=STOP_MARKET, expire=T0 + 10), REJ_INVALID),
        (stop("n", 110, expire=T0), REJ_EXPIRED),  # not after exchange time
        (stop("o", 110), REJ_INVALID),  # gtd without expire
        (stop("p", 110, tif=DAY, expire=T0 + 10), REJ_INVALID),
        (stop("q", 110, tif=GTC, expire=T0 + 10), REJ_INVALID),
        (stop("r", 110, tif=IOC, expire=T0 + 10), REJ_INVALID),
    ]
    for cmd, code in bad:
        (ev,) = run(eng, cmd)
        assert ev[0] == EV_REJECTED and ev[5] == code, (cmd, ev)
    book = eng.books.get(SYM)
    assert eng.expiry.heap == [] and (book is None or not book.stops or not book.stops.orders)
