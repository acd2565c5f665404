"""Auto-deleveraging of a perp pair (pure: no sockets, no clock, no I/O; part of the compiled
build): the last step of a take-over (``shardex.engine.liquidation``), when the book could
not close a bankrupt position and the insurance fund cannot carry it.

**When.** The take-over's IOC order at the bankruptcy price left part of the position open
and the account's equity at the mark is <= 0: the mark is at or past its bankruptcy price,
so waiting for the next index could only deepen a deficit. This venue's fund holds no
positions (it cannot take the position over, as Binance's does), so it cannot cover it:
the rest is closed against the opposite side's positions at the take-over's limit price
(Binance's "positions are closed at the bankruptcy price of the liquidated order"; dYdX v4
``x/clob`` deleveraging, which also fills the offsetting positions at the bankruptcy price).
The limit is rounded so that the fund can pay what the rounding loses (``liquidation``), so
no deficit is ever left unpaid.

**Who first.** The opposite positions ranked by Binance's ADL order, profit × leverage:
with ``pnl = size × mark − cost`` (unrealized), ``equity`` at the mark and the notional
``|size| × mark``, the score is ``pnl / |cost| × notional / equity`` for a profit and
``pnl / |cost| / (notional / equity)`` for a loss (the most profitable, most leveraged
first); accounts with equity <= 0 come last; ties by account name. Exact rationals, so the
order is deterministic and replay reproduces it. Like Binance's ADL queue, a side is ranked
once per index command (at the mark, when it is first needed) and consumed from its head.

**What.** Each deleveraged account closes ``min(rest, |its size|)`` lots at the price: one
``(EV_ADL, seq, symbol, account, bankrupt, closed, price)`` (signed lots of ``account``'s
position closed: < 0 for a short bought back), then its ``EV_POSITION``; the bankrupt
account's ``EV_POSITION`` follows the last one. Everything happens inside the index command
that took the position over, so the journal replays it exactly.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from shardex.engine.codes import EV_ADL, EV_POSITION, Event
from shardex.engine.positions import COST, REALIZED, SIZE, Positions, equity, fill


def score(row: list[int], mark: int) -> tuple[int, Fraction]:
    """(class, rank) of an opposite position: class 0 with equity > 0, ranked by profit ×
    leverage (``-rank`` sorts first-to-deleverage first), class 1 with equity <= 0."""
    e = equity(row, mark)
    if e <= 0:
        return 1, Fraction(0)
    pnl, basis, notional = row[SIZE] * mark - row[COST], abs(row[COST]) or 1, abs(row[SIZE]) * mark
    if pnl >= 0:
        return 0, -Fraction(pnl * notional, basis * e)
    return 0, -Fraction(pnl * e, basis * notional)


def ranking(pos: Positions, sign: int, mark: int) -> list[str]:
    """The accounts whose position is on the ``sign`` side (+1 long, -1 short), first to be
    deleveraged first (``score``, then the name)."""
    found = [(score(row, mark), name) for name, row in pos.accounts.items()
             if row[SIZE] * sign > 0]  # fmt: skip
    found.sort()
    return [name for _, name in found]


def deleverage(eng: Any, book: Any, account: str, price: int, out: list[Event],
               queues: dict[int, list[str]]) -> tuple[int, int]:  # fmt: skip
    """Close the rest of ``account``'s position against the opposite side at ``price``
    ticks (see the module docstring); returns (lots closed, Σ qty × price) for its
    ``EV_LIQUIDATION``. ``queues``: each side's ADL queue of this index command, head last
    (ranked once, at its first use; an account flat or on the other side by its turn is
    skipped; ranked again if it runs out), so a cascade costs one ranking, not one each."""
    pos: Positions = book.positions
    row = pos.accounts[account]
    sign = 1 if row[SIZE] > 0 else -1
    queue = queues.get(-sign)
    lots = notional = 0
    while row[SIZE]:
        if not queue:
            queue = queues[-sign] = ranking(pos, -sign, book.oracle.mark)[::-1]
            if not queue:  # (cannot happen: a pair's sizes sum to zero)
                break
        crow = pos.accounts[queue[-1]]
        if crow[SIZE] * sign >= 0:  # (flat, or on this side now)
            queue.pop()
            continue
        other = queue[-1]
        q = min(abs(row[SIZE]), abs(crow[SIZE]))
        fill(row, -sign * q, price)
        fill(crow, sign * q, price)
        if not crow[SIZE]:
            queue.pop()
        lots, notional = lots + q, notional + q * price
        eng.seq = seq = eng.seq + 1
        out.append((EV_ADL, seq, book.symbol, other, account, -sign * q, price))
        eng.seq = seq = eng.seq + 1
        out.append((EV_POSITION, seq, book.symbol, other, crow[SIZE], crow[COST], crow[REALIZED]))
    if lots:
        eng.seq = seq = eng.seq + 1
        out.append((EV_POSITION, seq, book.symbol, account, row[SIZE], row[COST], row[REALIZED]))
    return lots, notional
