"""Liquidation of perp positions and the pair's insurance fund (pure: no sockets, no clock, no
I/O; part of the compiled build).

**Who breaches.** At the mark ``m`` an account with a position breaches when its equity
(``positions.equity``) is below its maintenance margin, ``ceil(maintenance_margin × |size| ×
m)`` notional units (rounded up: against the account), integers throughout (``breaching``).

**Bankruptcy price.** The price ``p`` at which the account's equity ``e0 + size × p − cost``
(``e0`` = collateral + realized + funding) is exactly zero is the rational ``x = (cost − e0) /
size``; it is rounded to a tick against the account: down for a long, up for a short
(``bankruptcy``). So equity at the bankruptcy price is <= 0 and one tick better for the
account (up for a long, down for a short) it is > 0 (``tests/unit/test_liquidation.py``
proves both on random rows).

**Take-over.** Every index (``OP_INDEX``) moves the mark; in the same command the engine
takes over each breaching position, accounts in name order, then those the take-overs' fills
put below maintenance (a maker whose resting order filled away from the mark), each account
at most once per index: it cancels the account's live
and pending orders on the pair (reason ``liquidation``), then sends an IOC reduce-only limit
order for the whole position (at most the pair's max qty) at the bankruptcy price (clamped to
1..max price) into the pair's own matching, the account as the taker, id ``liq:<seq>``.
Once the position is closed, what equity is left moves to the pair's **insurance fund**
(a surplus: the account's collateral goes down by it) or the fund pays the deficit (the
collateral goes up by what it pays); what the fund cannot pay stays on the account as
negative equity and adds to ``uncovered`` (auto-deleveraging is not built). A position the
book could not close wholly stays open and is taken over again at the next index.

One ``(EV_LIQUIDATION, seq, symbol, account, closed, bankruptcy, notional, settled,
uncovered, fund)`` per take-over: signed lots closed, the limit (ticks), Σ qty × price of its
fills (the average is ``notional / |closed|``), equity moved to the fund (> 0) or paid by it
(< 0), the part of the deficit left unpaid, and the fund's balance after.

**A stale oracle** freezes take-overs: the scan runs inside an index command, so what is
stale is the index before it. When that one is older than ``oracle_staleness_ms`` at the
command's exchange time (the feed has just come back from a gap), the new index only
re-anchors the mark; each breaching position adds one to ``Positions.frozen`` instead. The
next fresh index (two fresh prices in a row) liquidates as usual (``fresh_before``).

**Conservation** per pair, at any mark: Σ equity + fund = Σ margin moved in (``EV_MARGIN``
amounts), and Σ collateral + Σ funding + fund = the same (funding's rounding remainder is in
the fund, ``engine.funding``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.codes import (
    BUY,
    EV_LIQUIDATION,
    EV_TRADE,
    IOC,
    LIMIT,
    OP_INDEX,
    OP_NEW,
    SELL,
    STP_NONE,
    Event,
)
from shardex.engine.expiry import LIQUIDATION, _cancel_mine
from shardex.engine.perps import PERP_OPS as _PERP_OPS
from shardex.engine.perps import set_index
from shardex.engine.positions import COLLATERAL, COST, FUNDING, REALIZED, SIZE, Positions, equity

Refusal = tuple[str, int]
# (a trade event's fields: the engine's own layout, ``codes``)
_TR_PRICE, _TR_QTY, _TR_TAKER = 3, 4, 5


def maintenance(size: int, mark: int, num: int, den: int) -> int:
    """Maintenance margin of ``size`` lots at ``mark`` with fraction ``num / den`` (units,
    rounded up)."""
    return -(-abs(size) * mark * num // den)


def breaching(accounts: Mapping[str, list[int]], mark: int, num: int, den: int) -> list[str]:
    """The accounts with a position whose equity at ``mark`` is below maintenance, by name."""
    return sorted(a for a, row in accounts.items() if row[SIZE]
                  and equity(row, mark) < maintenance(row[SIZE], mark, num, den))  # fmt: skip


def bankruptcy(row: list[int]) -> int:
    """The price (ticks) where the row's equity is zero, rounded against the account: down
    for a long, up for a short (may be <= 0 or above any price: the caller clamps)."""
    size = row[SIZE]
    gap = row[COST] - row[COLLATERAL] - row[REALIZED] - row[FUNDING]
    return gap // size if size > 0 else -(-gap // size)


def settle(pos: Positions, row: list[int]) -> tuple[int, int]:
    """A closed position's equity into the fund (surplus) or out of it (deficit, as far as
    the fund goes): returns (settled, uncovered) units."""
    left = row[COLLATERAL] + row[REALIZED] + row[FUNDING]
    if left >= 0:
        row[COLLATERAL] -= left
        pos.fund += left
        return left, 0
    paid = min(pos.fund, -left)
    row[COLLATERAL] += paid
    pos.fund -= paid
    pos.uncovered += -left - paid
    return -paid, -left - paid


def take_over(eng: Any, book: Any, account: str, out: list[Event]) -> None:
    """Close ``account``'s position on ``book`` at no worse than its bankruptcy price (see the
    module docstring) and append its ``EV_LIQUIDATION``."""
    pos: Positions = book.positions
    market = book.market
    row = pos.accounts[account]
    size = row[SIZE]
    limit = max(1, min(bankruptcy(row), market.max_price_ticks))
    _cancel_mine(eng, book, account, LIQUIDATION, out)
    oid = f"liq:{eng.seq + 1}"
    qty = min(abs(size), market.max_qty_lots)
    cmd = (OP_NEW, book.symbol, oid, account, SELL if size > 0 else BUY, LIMIT, limit, qty, IOC,
           False, STP_NONE)  # fmt: skip
    start = len(out)
    pos.armed = False
    try:
        eng._new(cmd, out)
    finally:
        pos.armed = True
    notional = 0
    for ev in out[start:]:
        if ev[0] == EV_TRADE and ev[_TR_TAKER] == oid:
            notional += ev[_TR_QTY] * ev[_TR_PRICE]
    settled = uncovered = 0
    if row[SIZE] == 0:
        settled, uncovered = settle(pos, row)
    eng.seq = seq = eng.seq + 1
    out.append((EV_LIQUIDATION, seq, book.symbol, account, size - row[SIZE], limit, notional,
                settled, uncovered, pos.fund))  # fmt: skip


def fresh_before(eng: Any, symbol: Any) -> bool:
    """The pair's last index, before the one being applied, is within ``oracle_staleness_ms``
    of the exchange time: the feed was live up to this index (no index yet: not fresh)."""
    book = eng.books.get(symbol) if type(symbol) is str else None
    o = book.oracle if book is not None else None
    return o is not None and not o.stale(eng.ts, book.market.perp.oracle_staleness_ms)


def index_and_liquidate(eng: Any, cmd: Any, out: list[Event]) -> Refusal | None:
    """``(OP_INDEX, symbol, index)``: the new index and mark (``perps.set_index``), then every
    position below maintenance at that mark taken over, then any that those take-overs'
    fills put below it (a cascade), each account at most once per index. An index that ends
    a gap in the feed (the one before it was stale at this exchange time) only re-anchors
    the mark: its breaching positions are counted in ``frozen``, not taken over."""
    live = len(cmd) == 3 and fresh_before(eng, cmd[1])
    refused = set_index(eng, cmd, out)
    if refused is not None:
        return refused
    book = eng.book(cmd[1])
    pos: Positions | None = book.positions
    if pos is None or not pos.accounts:
        return None
    num, den = book.market.perp.maintenance_margin.as_integer_ratio()
    if not live:
        pos.frozen += len(breaching(pos.accounts, book.oracle.mark, int(num), int(den)))
        return None
    done: set[str] = set()
    while True:  # (a maker a take-over filled may breach now: each account once per index)
        todo = [a for a in breaching(pos.accounts, book.oracle.mark, int(num), int(den))
                if a not in done]  # fmt: skip
        if not todo:
            return None
        for account in todo:
            done.add(account)
            take_over(eng, book, account, out)


# the engine's dispatch of perp pairs' commands (``Engine.apply``'s admin table)
PERP_OPS = {**_PERP_OPS, OP_INDEX: index_and_liquidate}
