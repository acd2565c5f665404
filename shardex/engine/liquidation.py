"""Liquidation of perp positions and the pair's insurance fund (pure: no sockets, no clock, no
I/O; part of the compiled build).

**Who breaches.** At the mark ``m`` an account with a position breaches when its equity
(``positions.equity``) is below its maintenance margin, ``ceil(maintenance_margin × |size| ×
m)`` notional units (rounded up: against the account), integers throughout (``breaching``,
the full scan). A tick finds them through the pair's liquidation index (``below``,
``shardex.engine.liqindex``: positions keyed by the exact mark at which each breaches), so it
costs the rows changed since the last tick and the breaching ones, not every position; the
answer, and so the take-overs' order, is the scan's.

**Bankruptcy price.** The price ``p`` at which the account's equity ``e0 + size × p − cost``
(``e0`` = collateral + realized + funding) is exactly zero is the rational ``x = (cost − e0) /
size``; it is rounded to a tick against the account: down for a long, up for a short
(``bankruptcy``). So equity at the bankruptcy price is <= 0 and one tick better for the
account (up for a long, down for a short) it is > 0 (``tests/unit/test_liquidation.py``
proves both on random rows).

**Take-over.** Every index (``OP_INDEX``) moves the mark; in the same command the engine
takes over each breaching position, accounts in name order, then those the take-overs' fills
put below maintenance (a maker whose resting order filled away from the mark, a position
deleveraged at a price worse than the mark), each account at most once per index. It
cancels the account's live and pending orders on the pair (reason ``liquidation``), then:

1. **Partial** (``partial_lots``): a position of more than ``WHOLE_LOTS`` lots with equity
   > 0 at the mark sends an IOC reduce-only order for just the lots whose close brings the
   rest back to the **initial** margin at the mark, limited to half its equity per lot from
   the mark (the fills may cost that much and the rest still holds initial margin), at most
   the pair's max qty. Initial, not maintenance: an account left at maintenance would be
   taken over again at the next tick. If the account is no longer below maintenance after
   it, the take-over ends there.
2. **Whole**: else an IOC reduce-only order for the rest (at most the pair's max qty) at
   the bankruptcy price (``limit_price``: rounded against the account while the fund can pay
   what that rounding loses, under one unit a lot; toward it otherwise, so nothing is ever
   left unpaid), clamped to 1..max price. Orders are ``liq:<seq>``, the account the taker.
3. **ADL** (``shardex.engine.adl``): what the book left open, when the account's equity at
   the mark is <= 0 (bankrupt: the fund holds no positions and cannot carry it), is closed
   against the opposite positions at that limit, most profitable × leveraged first (each
   side ranked once per index command: Binance's ADL queue). A
   position the book could not close while still solvent at the mark stays open and is
   taken over again at the next index.

Once the position is flat, what equity is left moves to the pair's **insurance fund** (a
surplus: the account's collateral goes down by it) or the fund pays the deficit (the
collateral goes up by what it pays). ``uncovered`` counts what the fund could not pay: the
limit's rounding makes that impossible, so it is a guard that stays 0.

One ``(EV_LIQUIDATION, seq, symbol, account, closed, bankruptcy, notional, settled,
uncovered, fund)`` per take-over: signed lots closed (book and ADL), the limit of its last
order (ticks: the partial's limit when that sufficed, else the bankruptcy price), Σ qty ×
price of its fills and ADL closes (the average is ``notional / |closed|``), equity moved to
the fund (> 0) or paid by it (< 0), the part of the deficit left unpaid (0), and the fund's
balance after.

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

from shardex.engine.adl import deleverage
from shardex.engine.codes import (
    BUY,
    EV_LIQUIDATION,
    EV_POSITION,
    EV_TRADE,
    IOC,
    LIMIT,
    OP_FUNDING,
    OP_INDEX,
    OP_NEW,
    SELL,
    STP_NONE,
    Event,
)
from shardex.engine.expiry import LIQUIDATION, _cancel_mine
from shardex.engine.funding import due_pairs, pay_funding
from shardex.engine.liqindex import LiqIndex
from shardex.engine.perps import PERP_OPS as _PERP_OPS
from shardex.engine.perps import set_index
from shardex.engine.positions import COLLATERAL, COST, FUNDING, REALIZED, SIZE, Positions, equity

Refusal = tuple[str, int]
WHOLE_LOTS = 10  # a position of at most this many lots is taken over whole (no partial)
# (a trade event's fields: the engine's own layout, ``codes``)
_TR_PRICE, _TR_QTY, _TR_TAKER = 3, 4, 5


def maintenance(size: int, mark: int, num: int, den: int) -> int:
    """Maintenance margin of ``size`` lots at ``mark`` with fraction ``num / den`` (units,
    rounded up)."""
    return -(-abs(size) * mark * num // den)


def breaches(row: list[int], mark: int, num: int, den: int) -> bool:
    """Whether the row holds a position whose equity at ``mark`` is below maintenance."""
    size = row[SIZE]
    return size != 0 and equity(row, mark) < maintenance(size, mark, num, den)


def breaching(accounts: Mapping[str, list[int]], mark: int, num: int, den: int) -> list[str]:
    """The accounts that ``breaches`` at ``mark``, by name (the full scan: ``below``'s
    reference)."""
    return sorted(a for a, row in accounts.items() if breaches(row, mark, num, den))


def below(pos: Positions, mark: int, num: int, den: int) -> list[str]:
    """``breaching``'s answer through the pair's liquidation index (``engine.liqindex``),
    built or brought up to date first: the accounts whose key the mark crossed, checked
    exactly again, by name. Costs O((changed rows + breaching) · log n), not O(n)."""
    idx = pos.liq
    if idx is None or idx.num != num or idx.den != den:
        idx = pos.liq = LiqIndex(pos.accounts, num, den)
    elif pos.dirty:
        idx.rekey(pos.accounts, pos.dirty)
    pos.dirty = set()
    accounts = pos.accounts
    found = []
    for a in idx.candidates(mark):
        row = accounts.get(a)
        if row is not None and breaches(row, mark, num, den):
            found.append(a)
    found.sort()
    return found


def bankruptcy(row: list[int]) -> int:
    """The price (ticks) where the row's equity is zero, rounded against the account: down
    for a long, up for a short (may be <= 0 or above any price: the caller clamps)."""
    size = row[SIZE]
    gap = row[COST] - row[COLLATERAL] - row[REALIZED] - row[FUNDING]
    return gap // size if size > 0 else -(-gap // size)


def limit_price(row: list[int], fund: int) -> int:
    """A take-over's limit (ticks, unclamped): the bankruptcy price, rounded against the
    account when the fund can pay what that rounding may lose (under one unit a lot: ``fund
    >= |size|``), else toward it (equity there >= 0: no deficit at all)."""
    size = row[SIZE]
    b = bankruptcy(row)
    if abs(size) <= fund or equity(row, b) == 0:
        return b
    return b + 1 if size > 0 else b - 1


def partial_lots(row: list[int], mark: int, im: tuple[int, int]) -> tuple[int, int]:
    """(lots, limit) of a partial take-over: closing ``lots`` at no worse than ``limit``
    brings the account back to initial margin at ``mark`` on what is left. The limit gives
    up at most half the account's equity per lot (``δ = equity // (2 |size|)`` ticks from
    the mark), so ``lots = ceil((IM·|size|·m − E) / (IM·m − δ))``. (0, 0): no partial (the
    position is small, the equity <= 0, or the answer is the whole position)."""
    size, n = row[SIZE], abs(row[SIZE])
    e = equity(row, mark)
    if n <= WHOLE_LOTS or e <= 0:
        return 0, 0
    a, b = im
    delta = e // (2 * n)
    room = a * mark - b * delta  # (> 0 for a breaching account: δ < MM·m / 2 < IM·m)
    lots = -(-(a * mark * n - b * e) // room) if room > 0 else n
    if lots >= n:
        return 0, 0
    return lots, mark - delta if size > 0 else mark + delta


def settle(pos: Positions, row: list[int]) -> tuple[int, int]:
    """A closed position's equity into the fund (surplus) or out of it (deficit, as far as
    the fund goes: ``limit_price`` makes it always go far enough, ``uncovered`` is a guard
    that stays 0): returns (settled, uncovered) units."""
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


def _ioc(eng: Any, book: Any, account: str, limit: int, qty: int, out: list[Event]) -> int:
    """An IOC reduce-only limit order ``liq:<seq>`` for ``qty`` lots of ``account``'s
    position into the pair's matching (the margin check off for it); returns Σ qty × price
    of its fills."""
    row = book.positions.accounts[account]
    oid = f"liq:{eng.seq + 1}"
    cmd = (OP_NEW, book.symbol, oid, account, SELL if row[SIZE] > 0 else BUY, LIMIT, limit,
           qty, IOC, False, STP_NONE)  # fmt: skip
    start = len(out)
    book.positions.armed = False
    try:
        eng._new(cmd, out)
    finally:
        book.positions.armed = True
    notional = 0
    for ev in out[start:]:
        if ev[0] == EV_TRADE and ev[_TR_TAKER] == oid:
            notional += ev[_TR_QTY] * ev[_TR_PRICE]
    return notional


def take_over(eng: Any, book: Any, account: str, out: list[Event],
              queues: dict[int, list[str]]) -> None:  # fmt: skip
    """Take ``account``'s position over (see the module docstring): cancel its orders; a
    partial close back to initial margin when that is enough; else the whole position at no
    worse than its bankruptcy price; what the book cannot close, deleveraged when bankrupt at
    the mark; settle with the fund once flat; append its ``EV_LIQUIDATION``."""
    pos: Positions = book.positions
    market, mark = book.market, book.oracle.mark
    row = pos.accounts[account]
    size = row[SIZE]
    start = len(out)
    _cancel_mine(eng, book, account, LIQUIDATION, out)
    perp = market.perp
    mm = _ratio(perp.maintenance_margin)
    lots, limit = partial_lots(row, mark, _ratio(perp.initial_margin))
    lots, limit = min(lots, market.max_qty_lots), max(1, min(limit, market.max_price_ticks))
    notional = _ioc(eng, book, account, limit, lots, out) if lots else 0
    if row[SIZE] and (not lots or equity(row, mark) < maintenance(row[SIZE], mark, *mm)):
        limit = max(1, min(limit_price(row, pos.fund), market.max_price_ticks))
        notional += _ioc(eng, book, account, limit, min(abs(row[SIZE]), market.max_qty_lots),
                         out)  # fmt: skip
        if row[SIZE] and equity(row, mark) <= 0:  # (bankrupt, the book too thin: ADL)
            notional += deleverage(eng, book, account, limit, out, queues)[1]
    settled = uncovered = 0
    if row[SIZE] == 0:
        settled, uncovered = settle(pos, row)
    pos.touch(account)
    for ev in out[start:]:  # (the rows deleveraging moved: the liquidation index re-keys them)
        if ev[0] == EV_POSITION:
            pos.touch(ev[3])
    eng.seq = seq = eng.seq + 1
    out.append((EV_LIQUIDATION, seq, book.symbol, account, size - row[SIZE], limit, notional,
                settled, uncovered, pos.fund))  # fmt: skip


def _ratio(fraction: Any) -> tuple[int, int]:
    num, den = fraction.as_integer_ratio()
    return int(num), int(den)


def fresh_before(eng: Any, symbol: Any) -> bool:
    """The pair's last index, before the one being applied, is within ``oracle_staleness_ms``
    of the exchange time: the feed was live up to this index (no index yet: not fresh)."""
    book = eng.books.get(symbol) if type(symbol) is str else None
    if book is None or book.oracle is None:
        return False
    return not book.oracle.stale(eng.ts, book.market.perp.oracle_staleness_ms)


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
    num, den = _ratio(book.market.perp.maintenance_margin)
    if not live:
        pos.frozen += len(below(pos, book.oracle.mark, num, den))
        return None
    done: set[str] = set()
    queues: dict[int, list[str]] = {}  # (each side's ADL queue: ``adl.deleverage``)
    while True:  # (a maker a take-over filled may breach now: each account once per index)
        todo = [a for a in below(pos, book.oracle.mark, num, den) if a not in done]
        if not todo:
            return None
        for account in todo:
            done.add(account)
            take_over(eng, book, account, out, queues)


def funding_and_rekey(eng: Any, cmd: Any, out: list[Event]) -> Refusal | None:
    """``(OP_FUNDING, ts)`` (``funding.pay_funding``): a payment moves every row of the pairs
    it pays, so their liquidation indexes are dropped, rebuilt at their next tick."""
    if len(cmd) == 2 and type(cmd[1]) is int:
        for book in due_pairs(eng, cmd[1]):
            book.positions.liq = None
    return pay_funding(eng, cmd, out)


# the engine's dispatch of perp pairs' commands (``Engine.apply``'s admin table)
PERP_OPS = {**_PERP_OPS, OP_INDEX: index_and_liquidate, OP_FUNDING: funding_and_rekey}
