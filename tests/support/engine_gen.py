"""Hypothesis strategies of engine commands (valid, invalid, long streams) and an engine that logs
its events, shared by the property, state and compiled-engine tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

from shardex.engine import Engine
from shardex.engine.codes import (
    DAY,
    FOK,
    GTC,
    GTD,
    IOC,
    LIMIT,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_NEW,
    OP_REJECT,
    OP_TIME,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
)
from shardex.engine.engine import TRADE_SCAN

SYMBOLS = ("BTC-USD", "ETH-USD")


IDS = [f"o{i}" for i in range(12)]


ACCOUNTS = ("alice", "bob", "carol")


new_cmd = st.builds(
    lambda sym, oid, acct, side, otype, price, qty, tif, post_only, stp: (
        OP_NEW,
        sym,
        oid,
        acct,
        side,
        otype,
        None if otype == MARKET else price,
        qty,
        (tif or IOC) if otype == MARKET else tif,
        post_only and otype == LIMIT and tif == GTC,
        stp,
    ),
    st.sampled_from(SYMBOLS),
    st.sampled_from(IDS),
    st.sampled_from(ACCOUNTS),
    st.integers(0, 1),
    st.sampled_from((LIMIT, LIMIT, LIMIT, MARKET)),
    st.integers(95, 105),
    st.integers(1, 10),
    st.sampled_from((GTC, GTC, IOC, FOK)),
    st.booleans(),
    st.integers(0, 3),
)


_MARKET_KINDS = (STOP_MARKET, TAKE_PROFIT)

# stop and take-profit orders (13 fields, the trigger in the options), valid in shape
stop_cmd = st.builds(
    lambda sym, oid, acct, side, otype, price, qty, tif, stp, trigger: (
        OP_NEW,
        sym,
        oid,
        acct,
        side,
        otype,
        None if otype in _MARKET_KINDS else price,
        qty,
        (tif or IOC) if otype in _MARKET_KINDS else tif,
        False,
        stp,
        None,
        {"trigger": trigger},
    ),
    st.sampled_from(SYMBOLS),
    st.sampled_from(IDS),
    st.sampled_from(ACCOUNTS),
    st.integers(0, 1),
    st.sampled_from((STOP_MARKET, STOP_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT)),
    st.integers(95, 105),
    st.integers(1, 10),
    st.sampled_from((GTC, GTC, IOC, FOK)),
    st.integers(0, 3),
    st.integers(95, 105),
)


cancel_cmd = st.builds(
    lambda sym, oid, acct: (OP_CANCEL, sym, oid, acct),
    st.sampled_from(SYMBOLS),
    st.sampled_from(IDS),
    st.sampled_from(ACCOUNTS),
)


amend_cmd = st.builds(
    lambda sym, oid, acct, qty, price: (OP_AMEND, sym, oid, acct, qty, price),
    st.sampled_from(SYMBOLS),
    st.sampled_from(IDS),
    st.sampled_from(ACCOUNTS),
    st.one_of(st.none(), st.integers(1, 10)),
    st.one_of(st.none(), st.integers(95, 105)),
).filter(lambda c: c[4] is not None or c[5] is not None)


commands = st.lists(
    st.one_of(new_cmd, new_cmd, new_cmd, cancel_cmd, amend_cmd), min_size=1, max_size=80
)


# Hypothesis keeps lists short (6 commands on average above: a few trades in 300 examples);
# streams long enough to build books, trade, hit STP and recycle ids through a small window.
long_commands = st.lists(
    st.one_of(new_cmd, new_cmd, new_cmd, cancel_cmd, amend_cmd), min_size=20, max_size=100
)


# streams with stop and take-profit orders among plain ones
stop_commands = st.lists(
    st.one_of(new_cmd, new_cmd, new_cmd, stop_cmd, stop_cmd, cancel_cmd, amend_cmd),
    min_size=20,
    max_size=100,
)


class Logged(Engine):
    """An engine that keeps every event it emitted and gives its order statuses that log as
    their event source (the part a shard's event ring plays), so statuses carry trades."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: list = []

    def apply(self, cmd, out) -> None:
        n = len(out)
        super().apply(cmd, out)
        self.log.extend(out[n:])

    def events(self, first: int, last: int):
        """Events first..last from the log, or None when it does not hold them all."""
        if not self.log:
            return None
        base = self.log[0][1]
        if first < base or last - base >= len(self.log):
            return None
        return self.log[first - base : last - base + 1]

    def order_status(self, symbol, account, oid, events=None, scan=TRADE_SCAN):
        return super().order_status(symbol, account, oid, events or self.events, scan)


# Recent-results windows: none, tiny (ids recycle and eviction order matters), default.
windows = st.sampled_from((0, 1, 3, 100_000))


# Anything at all in a command's positions: plausible values mixed with garbage of every type.
_any_field = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=70),
    st.sampled_from(SYMBOLS + ("NOPE-USD", "") + tuple(IDS) + ACCOUNTS),
    st.lists(st.integers(), max_size=2),
)


_any_cmd = st.one_of(
    st.tuples(
        st.sampled_from((OP_NEW, OP_CANCEL, OP_AMEND, OP_REJECT, 0, 99, "new", None))
    ).flatmap(lambda op: st.lists(_any_field, max_size=12).map(lambda rest: op + tuple(rest))),
    new_cmd,
    cancel_cmd,
    amend_cmd,
    _any_field,
)


# -- expiring orders and cancel-all (``shardex.engine.expiry``) -------------------------------
# exchange times around a UTC day's end, so day orders expire within a stream
_DAY = 86_400_000
TIMES = (1, 2, 3, 5, _DAY - 1, _DAY, _DAY + 1, 2 * _DAY)

time_cmd = st.sampled_from(TIMES).map(lambda ts: (OP_TIME, ts))
expire_cmd = st.sampled_from(TIMES).map(lambda ts: (OP_EXPIRE, ts))

cancel_all_cmd = st.builds(
    lambda sym, acct, after: (OP_CANCEL_ALL, sym, "ref", acct, *after),
    st.sampled_from(SYMBOLS + ("",)),
    st.sampled_from(ACCOUNTS),
    # mostly a cancel-all; else a dead-man switch armed (1 ms, a day) or disarmed (0)
    st.sampled_from(((), (), (0,), (1,), (_DAY,))),
)

# a limit order resting as gtd (13 fields, with its expire time) or day (11 fields)
timed_new_cmd = st.builds(
    lambda new, tif, expire: (
        new[:5] + (LIMIT, new[6] or 100, new[7], tif) + new[9:]
        + ((None, {"expire": expire}) if tif == GTD else ())
    ),
    new_cmd,
    st.sampled_from((GTD, GTD, DAY)),
    st.sampled_from(TIMES),
)

# a stop order as gtd or day: the limit kinds expire pending or triggered; the market kinds
# (now and then) are refused
timed_stop_cmd = st.builds(
    lambda stop, otype, tif, expire: (
        stop[:5] + (otype, stop[6] or 100, stop[7], tif) + stop[9:12]
        + ({**stop[12], "expire": expire} if tif == GTD else stop[12],)
    ),
    stop_cmd,
    st.sampled_from((STOP_LIMIT, STOP_LIMIT, TAKE_PROFIT_LIMIT, TAKE_PROFIT_LIMIT, STOP_MARKET)),
    st.sampled_from((GTD, GTD, DAY)),
    st.sampled_from(TIMES),
)

# (with stop orders too: a cancel-all and a dead-man switch take the pending ones as well)
timed_commands = st.lists(
    st.one_of(new_cmd, new_cmd, timed_new_cmd, timed_new_cmd, stop_cmd, timed_stop_cmd,
              timed_stop_cmd, cancel_cmd, amend_cmd, time_cmd, time_cmd, expire_cmd, expire_cmd,
              cancel_all_cmd),
    min_size=20,
    max_size=100,
)
