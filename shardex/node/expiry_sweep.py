"""The engine shard leader's half of expiring orders: when to journal ``(OP_EXPIRE, ts)``
(and, the same way, a perp pair's funding payment ``(OP_FUNDING, ts)``: ``engine.funding``).

The pure engine (``shardex.engine.expiry``) cancels expired orders only when it applies an
``OP_EXPIRE``; the leader journals one right after a batch's ``OP_TIME`` whenever the engine's
index says an order's expire time is <= that time. So the sweep is a journaled command like any
other: a replay, a standby or a recovery applies the very same one and emits the same events
at the same seqs, whatever its own clock says. Two moments lead to it: a batch with writes
(its ``OP_TIME`` first, so an expired order never trades after its time), and, on an idle
shard, the loop's turn noticing that the clock passed the earliest expire time
(``ShardCore.expire_due``): a batch of its own, time then sweep.
"""

from __future__ import annotations

from typing import Any

from shardex.engine.codes import OP_EXPIRE, OP_FUNDING, Event


def next_expiry(engine: Any) -> int | None:
    """The earliest expire time of a live order or deadline of an armed dead-man switch of
    ``engine`` (an ``Engine`` or a ``SettledEngine``), None when it has neither."""
    index = engine.expiry
    if not index.heap and not index.sheap:  # (the common case, at no cost)
        return None
    expire, switch = index.next_due(engine.books), index.next_switch()
    if expire is None or switch is None:
        return switch if expire is None else expire
    return min(expire, switch)


def sweep(engine: Any, journal: Any, ts: int, out: list[Event]) -> None:
    """Journal and apply ``(OP_EXPIRE, ts)`` when an order's expire time is <= ``ts``, then
    ``(OP_FUNDING, ts)`` when a perp pair's funding payment time is (``engine.funding``)."""
    first = next_expiry(engine)
    if first is not None and first <= ts:
        _journaled(engine, journal, (OP_EXPIRE, ts), out)
    if funding_due(engine, ts):
        _journaled(engine, journal, (OP_FUNDING, ts), out)


def funding_due(engine: Any, ts: int) -> bool:
    """True when a perp pair's funding payment time is <= ``ts`` (a walk of the books: a
    shard serves a few dozen pairs, and spot pairs cost one attribute each)."""
    for book in engine.books.values():
        pos = book.positions
        if pos is not None and pos.due and pos.due <= ts:
            return True
    return False


def _journaled(engine: Any, journal: Any, cmd: tuple, out: list[Event]) -> None:
    seq = engine.seq
    engine.apply(cmd, out)
    journal.add(seq, cmd)
