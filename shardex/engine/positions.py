"""Positions and margin of one perp pair, kept by the pair's engine (its single writer: nothing
crosses shards on the hot path). Pure: no sockets, no clock, no I/O; part of the compiled build.

Per account of a perp pair, five integers (``Positions.accounts[account]``):

* ``size``: signed lots (long > 0, short < 0);
* ``cost``: the open position's cost basis, signed ``Σ qty × price`` in notional units (one
  unit = one tick × one lot of the settle asset), so the entry price is the rational
  ``cost / size`` ticks and nothing is rounded while a position only grows;
* ``realized``: PnL realized by reducing fills, notional units;
* ``collateral``: margin moved in (``OP_MARGIN``), notional units;
* ``funding``: funding received (> 0) or paid (< 0), notional units (``engine.funding``).

A fill of signed ``q`` lots at ``price`` that grows the position adds ``q × price`` to the
cost. One that reduces it by ``k`` lots moves the closed share of the cost,
``cost × k // |size|`` (floor), out of the basis and realizes ``±k × price`` minus it; a flip
opens the rest at ``price``. The integer the floor leaves stays in the basis, so for every
account ``realized − cost == −Σ q × price`` exactly, and the pair's PnL sums to zero at any
mark (every trade is ``+q`` and ``−q`` at one price).

Equity at the mark ``m`` is ``collateral + realized + funding + size × m − cost`` (unrealized
PnL is the last two terms). An order that may open is checked against initial margin at the
worst price it can fill (``margin_refusal``); reduce-only orders only shrink a position
(``reduce_only_refusal``). Events: ``(EV_POSITION, seq, symbol, account, size, cost, realized)``
once per account a command's trades changed, ``(EV_MARGIN, seq, symbol, account, amount,
collateral)`` per margin move.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from shardex.engine.codes import (
    BUY,
    EV_MARGIN,
    EV_POSITION,
    EV_TRADE,
    FOK,
    IOC,
    LIMIT,
    REJ_INSUFFICIENT_MARGIN,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_NO_MARK,
    REJ_NOT_PERP,
    REJ_OUT_OF_RANGE,
    REJ_REDUCE_ONLY_REJECTED,
    Event,
)

SIZE, COST, REALIZED, COLLATERAL, FUNDING = 0, 1, 2, 3, 4  # (an account's row)
WIDTH = 5
MAX_MARGIN = 1 << 62  # one margin move's bound (notional units)
Refusal = tuple[str, int]
REDUCE_ONLY = "reduce_only"  # a new order's option: 1
# (a triggered order enters matching without ``Engine._new``: no margin check there yet)
STOPS_REFUSED = "stop and take-profit orders are not margined on perp pairs yet"
# (a trade event's fields: the engine's own layout, ``codes``)
_TR_PRICE, _TR_QTY, _TR_MAKER, _TR_SIDE = 3, 4, 6, 7


class Positions:
    """One perp pair's accounts (``account → [size, cost, realized, collateral, funding]``),
    its funding state (``shardex.engine.funding``: premium samples since the last payment,
    the cumulative funding index, the next payment's exchange time, the rounding remainder
    kept by the venue) and the switch that sends its new orders through the margin check once
    (``armed``).

    ``open`` indexes each account's resting order ids (``open_orders``), so a margin check
    walks the account's orders, not the book's. It is derived: not in the state, built from
    the book on first use (``indexed``), given each order that rests after a check, and
    cleaned of finished ids as it is read (a superset of the live ones: the same answer).

    ``liq`` is the pair's liquidation index (``shardex.engine.liqindex``; None: built at the
    next index tick), derived like ``open``: whatever changes a row adds its account to
    ``dirty`` (``touch``), and the next tick re-keys those."""

    __slots__ = ("accounts", "armed", "premium", "samples", "cumulative", "due", "remainder",
                 "open", "indexed", "fund", "uncovered", "frozen", "liq", "dirty")

    def __init__(self) -> None:
        self.accounts: dict[str, list[int]] = {}
        self.armed = True
        self.premium = 0  # Σ (mark − index) ticks over the samples since the last payment
        self.samples = 0
        self.cumulative = 0  # Σ funding per lot paid by longs, millionths of a unit
        self.due = 0  # exchange time (ms) of the next payment; 0: no index yet
        self.remainder = 0  # units the rounding of payments kept (always >= 0)
        self.open: dict[str, set[str]] = {}
        self.indexed = False
        self.fund = 0  # the insurance fund, units (``engine.liquidation``; always >= 0)
        self.uncovered = 0  # Σ deficits the fund could not pay, units (0 with ADL: a guard)
        self.frozen = 0  # take-overs a stale oracle held back (``engine.liquidation``)
        self.liq: Any = None  # (``liqindex.LiqIndex``: derived, never saved)
        self.dirty: set[str] = set()

    def touch(self, account: str) -> None:
        """``account``'s row changed: the liquidation index re-keys it at the next tick."""
        self.dirty.add(account)

    def row(self, account: str) -> list[int]:
        row = self.accounts.get(account)
        if row is None:
            row = self.accounts[account] = [0] * WIDTH
        return row

    def save(self) -> dict[str, Any]:
        """Plain data, sorted by account (a snapshot and a move are byte-identical); the
        insurance fund only once it has been used (older snapshots stay as they were)."""
        state = {"rows": [[a, *r] for a, r in sorted(self.accounts.items()) if any(r)],
                 "funding": [self.premium, self.samples, self.cumulative, self.due,
                             self.remainder]}  # fmt: skip
        if self.fund or self.uncovered or self.frozen:
            state["insurance"] = [self.fund, self.uncovered, self.frozen]
        return state

    def load(self, state: Any) -> None:
        """``save``'s map back; ValueError when it does not fit."""
        self.accounts = {}
        self.fund = self.uncovered = self.frozen = 0
        self.liq, self.dirty = None, set()
        if not state:
            return
        for entry in state["rows"]:  # (a liquidated account's collateral may be < 0)
            if (not isinstance(entry, (list, tuple)) or len(entry) != WIDTH + 1
                    or type(entry[0]) is not str or any(type(v) is not int for v in entry[1:])
                    or (entry[1] == 0) != (entry[2] == 0)):
                raise ValueError(f"bad position {entry!r:.80}")  # fmt: skip
            self.accounts[entry[0]] = list(entry[1:])
        funding = state["funding"]
        if len(funding) != 5 or any(type(v) is not int for v in funding) or funding[4] < 0:
            raise ValueError(f"bad funding state {funding!r:.80}")
        self.premium, self.samples, self.cumulative, self.due, self.remainder = funding
        insurance = state.get("insurance", [0, 0, 0])  # (older snapshots: no frozen count)
        if (len(insurance) not in (2, 3) or any(type(v) is not int or v < 0 for v in insurance)):
            raise ValueError(f"bad insurance state {insurance!r:.80}")
        self.fund, self.uncovered, self.frozen = (*insurance, 0)[:3]


def fill(row: list[int], q: int, price: int) -> None:
    """Apply a fill of signed ``q`` lots (buy > 0) at ``price`` ticks to one account's row."""
    size, cost = row[SIZE], row[COST]
    if size == 0 or (size > 0) == (q > 0):
        row[SIZE], row[COST] = size + q, cost + q * price
        return
    k = min(abs(q), abs(size))
    closed = cost * k // abs(size)
    sign = 1 if size > 0 else -1
    row[REALIZED] += sign * k * price - closed
    size, cost, q = size - sign * k, cost - closed, q + sign * k
    if size == 0:
        cost = 0  # (k == |size|: closed is the whole cost)
    if q:  # a flip: the rest opens at this price
        size, cost = q, q * price
    row[SIZE], row[COST] = size, cost


def equity(row: list[int], mark: int) -> int:
    """Collateral + realized PnL + funding + unrealized PnL at ``mark`` (notional units)."""
    return row[COLLATERAL] + row[REALIZED] + row[FUNDING] + row[SIZE] * mark - row[COST]


def on_match(eng: Any, book: Any, out: list[Event], trades: int, account: str,
             side: int) -> None:  # fmt: skip
    """The last ``trades`` trades ``_match`` appended to ``out`` for ``book`` (a perp pair):
    both sides' positions move, then one ``EV_POSITION`` per account they changed.

    A maker's account is its live order's or, filled, its recent result's (recorded just
    before: an engine with a window of fewer finished orders than one match fills would not
    have it, which is why a perp engine needs the default window)."""
    found: list[Event] = []
    for i in range(len(out) - 1, -1, -1):
        ev = out[i]
        if ev[0] == EV_TRADE and ev[2] == book.symbol:
            found.append(ev)
            if len(found) == trades:
                break
    pos: Positions = book.positions
    touched: dict[str, list[int]] = {}
    for ev in reversed(found):
        maker = book.orders.get(ev[_TR_MAKER])
        other = maker.account if maker is not None else book.finished[ev[_TR_MAKER]][0]
        q = ev[_TR_QTY] if ev[_TR_SIDE] == BUY else -ev[_TR_QTY]
        for who, signed in ((account, q), (other, -q)):
            row = touched.get(who)
            if row is None:
                row = touched[who] = pos.row(who)
            fill(row, signed, ev[_TR_PRICE])
    symbol = book.symbol
    for who, row in touched.items():
        pos.touch(who)
        eng.seq = seq = eng.seq + 1
        out.append((EV_POSITION, seq, symbol, who, row[SIZE], row[COST], row[REALIZED]))


def _ratio(fraction: Any) -> tuple[int, int]:
    num, den = fraction.as_integer_ratio()
    return int(num), int(den)


def requirement(book: Any, account: str, mark: int, extra: tuple[int, int, int] | None,
                skip: str = "") -> int:
    """Initial margin the account needs on this pair at ``mark`` with its resting orders and
    ``extra`` (side, lots, worst price; None: none) all filled, plus what filling them at
    their prices would lose against the mark at once (notional units, rounded up).

    Each order counts ``lots × max(price, mark)`` of notional, even one that would reduce the
    position (conservative: which fills first is unknown). ``skip``: an order id left out
    (an amend's, counted as ``extra``)."""
    row = book.positions.accounts.get(account)
    notional = abs(row[SIZE]) * mark if row is not None else 0
    loss = 0
    for o in open_orders(book, account):  # (one pass over the orders: no list of tuples)
        if o.id == skip:
            continue
        qty, price = o.qty, o.price
        if price > mark:  # (above the mark: counted at its price; a buy loses the gap)
            notional += qty * price
            if o.side == BUY:
                loss += qty * (price - mark)
        else:  # (at or below: counted at the mark; a sell loses the gap)
            notional += qty * mark
            if o.side != BUY:
                loss += qty * (mark - price)
    if extra is not None:
        side, qty, price = extra
        notional += qty * max(price, mark)
        if side == BUY and price > mark:
            loss += qty * (price - mark)
        elif side != BUY and price <= mark:
            loss += qty * (mark - price)
    num, den = _ratio(book.market.perp.initial_margin)
    return -(-notional * num // den) + loss


def open_orders(book: Any, account: str) -> list[Any]:
    """``account``'s live orders on this perp pair, through ``Positions.open`` (any order:
    the sums over them do not depend on it)."""
    pos: Positions = book.positions
    orders = book.orders
    if not pos.indexed:
        pos.open = {}
        for o in orders.values():
            pos.open.setdefault(o.account, set()).add(o.id)
        pos.indexed = True
    ids = pos.open.get(account)
    if not ids:
        return []
    live = []
    for oid in list(ids):
        o = orders.get(oid)
        if o is None or o.account != account:
            ids.discard(oid)
        else:
            live.append(o)
    return live


def worst_price(book: Any, side: int, otype: int, price: Any, qty: int) -> int:
    """The worst price an order can fill at: a limit's price; a market order's, the level of
    the opposite side where its qty runs out (the book cannot change before it matches), or
    its last level (the rest is cancelled); 0 when nothing is there to fill it."""
    if otype == LIMIT:
        return int(price)
    opp = book.sides[side ^ 1]
    got, last = 0, 0
    for key in opp.iter_keys():
        level = opp.levels[key]
        got, last = got + level.total, level.price
        if got >= qty:
            break
    return last


def margin_refusal(book: Any, account: str, side: int, otype: int, price: Any,
                   qty: int) -> Refusal | None:  # fmt: skip
    """Why a new order on a perp pair is refused (``insufficient_margin``, ``no_mark``), or
    None: the account's equity at the mark must cover ``requirement`` with the order."""
    o = book.oracle
    if o is None:
        return f"{book.symbol}: no mark price yet (no index)", REJ_NO_MARK
    worst = worst_price(book, side, otype, price, qty)
    row = book.positions.accounts.get(account)
    have = equity(row, o.mark) if row is not None else 0
    need = requirement(book, account, o.mark, (side, qty, worst) if worst else None)
    if have < need:
        m = book.market
        unit = m.tick * m.lot
        return (f"insufficient margin on {book.symbol}: equity {have * unit}, "
                f"needed {need * unit}", REJ_INSUFFICIENT_MARGIN)  # fmt: skip
    return None


def is_perp(eng: Any, symbol: str) -> bool:
    """True for a perp pair of ``eng``'s markets."""
    market = eng.markets.get(symbol)
    return market is not None and market.perp is not None


def perp_new(eng: Any, book: Any, cmd: tuple, out: list[Event]) -> None:
    """A plain new order on a perp pair (``Engine._new``'s, its shape checked): margin first,
    then placed as any order (the check disarmed for that one call)."""
    _, symbol, oid, account, side, otype, price, qty = cmd[:8]
    refused = margin_refusal(book, account, side, otype, price, qty)
    if refused is not None:
        return eng._reject(symbol, oid, refused[0], refused[1], out)
    pos: Positions = book.positions
    pos.armed = False
    try:
        eng._new(cmd, out)
    finally:
        pos.armed = True
    if oid in book.orders:  # (it rests: the account's index has it)
        pos.open.setdefault(account, set()).add(oid)
    return None


def reduce_only_new(eng: Any, cmd: tuple, out: list[Event]) -> None:
    """A new order with ``{"reduce_only": 1}``: an ioc or fok order on a perp pair that only
    shrinks the account's position, so it needs no margin (it frees some); refused if it
    would open, grow or flip one. (Refused, not cut to the position: the account tier holds
    and settles the qty the order was sent with.)"""
    _, symbol, oid, account, side, otype, price, qty, tif = cmd[:9]
    opts = cmd[12]
    if len(opts) != 1 or opts[REDUCE_ONLY] != 1 or tif not in (IOC, FOK):
        return eng._reject(symbol, oid, "reduce_only: an ioc or fok order only (reduce_only 1)",
                           REJ_INVALID, out)  # fmt: skip
    book = eng.book(symbol) if type(symbol) is str else None
    if book is None or book.positions is None:
        return eng._reject(symbol, oid, f"reduce_only: {str(symbol)[:64]} is not a perpetual "
                           "market", REJ_NOT_PERP, out)  # fmt: skip
    if type(side) is not int or type(qty) is not int or qty <= 0:
        return eng._reject(symbol, oid, *eng._why_new_invalid(cmd[:11]), out)
    refused = reduce_only_refusal(book, account, side, qty)
    if refused is not None:
        return eng._reject(symbol, oid, refused[0], refused[1], out)
    pos: Positions = book.positions
    pos.armed = False
    try:
        eng._new(cmd[:11], out)
    finally:
        pos.armed = True
    return None


def amend_refusal(book: Any, order: Any, qty: int, price: Any) -> Refusal | None:
    """An amend to a new price on a perp pair: margin at that price (a smaller qty alone
    never needs more)."""
    o = book.oracle
    if price is None or price == order.price or o is None:
        return None
    row = book.positions.accounts.get(order.account)
    have = equity(row, o.mark) if row is not None else 0
    need = requirement(book, order.account, o.mark, (order.side, qty, price), order.id)
    if have < need:
        return f"insufficient margin on {book.symbol} at the new price", REJ_INSUFFICIENT_MARGIN
    return None


def reduce_only_refusal(book: Any, account: str, side: int, qty: int) -> Refusal | None:
    """Why a reduce-only order is refused: no position, its side would grow the position, or
    its qty is more than the position (it would flip it); None: it only reduces."""
    row = book.positions.accounts.get(account)
    size = row[SIZE] if row is not None else 0
    if size == 0 or (size > 0) == (side == BUY):
        return (f"reduce-only order would open or grow a position on {book.symbol}",
                REJ_REDUCE_ONLY_REJECTED)  # fmt: skip
    if qty > abs(size):
        return (f"reduce-only order of {book.market.qty_str(qty)} is more than the position "
                f"{book.market.qty_str(abs(size))}", REJ_REDUCE_ONLY_REJECTED)  # fmt: skip
    return None


def margin_free(book: Any, account: str, row: list[int]) -> int:
    """What may leave the account's margin on this pair (notional units, may be < 0): its
    settled money (collateral + realized PnL + funding: profits may leave, not only what was
    moved in) or its equity at the mark if lower (an unrealized loss stays covered; an
    unrealized profit is not money yet), minus the initial margin of its position and resting
    orders at the mark (``requirement``). With a position and no mark yet: nothing."""
    o = book.oracle
    if o is None and row[SIZE]:
        return 0
    mark = o.mark if o is not None else 0
    cash = row[COLLATERAL] + row[REALIZED] + row[FUNDING]
    return min(cash, equity(row, mark)) - requirement(book, account, mark, None)


def set_margin(eng: Any, cmd: Any, out: list[Event]) -> Refusal | None:
    """Apply ``(OP_MARGIN, symbol, account, amount)``: ``amount`` notional units (signed) in or
    out of the account's collateral on a perp pair. Out at most ``margin_free`` (the collateral
    may go below zero when realized PnL or funding leave). Appends ``EV_MARGIN``."""
    if len(cmd) != 4 or type(cmd[2]) is not str or not 0 < len(cmd[2]) <= 64:
        return "margin: expected (op, symbol, account, amount units)", REJ_MALFORMED
    symbol, account, amount = cmd[1], cmd[2], cmd[3]
    market = eng.markets.get(symbol) if type(symbol) is str else None
    if market is None or market.perp is None:
        return f"margin: {str(symbol)[:64]} is not a perpetual market", REJ_NOT_PERP
    if type(amount) is not int or amount == 0 or abs(amount) > MAX_MARGIN:
        return f"margin: amount must be a nonzero int within ±{MAX_MARGIN}", REJ_OUT_OF_RANGE
    book = eng.book(symbol)
    if book is None:
        return eng.no_book(symbol)
    row = book.positions.row(account)
    if amount < 0 and -amount > margin_free(book, account, row):
        if not any(row):
            del book.positions.accounts[account]
        return f"margin: {account} cannot take that out of {symbol}", REJ_INSUFFICIENT_MARGIN
    row[COLLATERAL] += amount
    book.positions.touch(account)
    eng.seq = seq = eng.seq + 1
    out.append((EV_MARGIN, seq, symbol, account, amount, row[COLLATERAL]))
    return None


def position_read(book: Any, account: str) -> dict[str, Any] | None:
    """One account's position on a perp pair as decimal strings (None: none there): size,
    entry price (rounded to the tick, half even: the exact basis is ``cost``), realized and
    unrealized PnL, collateral, equity and the margins at the mark."""
    pos = book.positions
    row = pos.accounts.get(account) if pos is not None else None
    if row is None or not any(row):
        return None
    m, o = book.market, book.oracle
    unit = m.tick * m.lot
    size, cost = row[SIZE], row[COST]
    out = {"symbol": book.symbol, "size": m.qty_str(size), "cost": str(cost * unit),
           "entry": m.price_str(round(Fraction(cost, size))) if size else None,
           "realized": str(row[REALIZED] * unit),
           "collateral": str(row[COLLATERAL] * unit),
           "funding": str(row[FUNDING] * unit)}  # fmt: skip
    if o is not None:
        perp = m.perp
        out["mark"] = m.price_str(o.mark)
        out["unrealized"] = str((size * o.mark - cost) * unit)
        out["equity"] = str(equity(row, o.mark) * unit)
        for key, frac in (("initial", perp.initial_margin), ("maintenance",
                                                            perp.maintenance_margin)):
            num, den = _ratio(frac)
            out[key] = str(-(-abs(size) * o.mark * num // den) * unit)
    return out


def positions_of(books: Mapping[str, Any], account: str) -> list[dict[str, Any]]:
    """Every position ``account`` has on these pairs (the shard's read)."""
    found = (position_read(b, account) for _, b in sorted(books.items()))
    return [p for p in found if p is not None]


def pair_totals(pos: Positions) -> dict[str, int]:
    """One perp pair's sums over its accounts (units of tick × lot) for ``shardex audit``:
    ``collateral``, ``size`` (lots), ``pnl`` (Σ realized − cost: the cash flow of every fill,
    zero-sum), ``funding``, and the pair's ``fund``, ``remainder`` and ``uncovered``; the
    identities they keep are ``pair_violations``'."""
    rows = pos.accounts.values()
    return {"collateral": sum(r[COLLATERAL] for r in rows), "size": sum(r[SIZE] for r in rows),
            "pnl": sum(r[REALIZED] - r[COST] for r in rows),
            "funding": sum(r[FUNDING] for r in rows), "fund": pos.fund,
            "remainder": pos.remainder, "uncovered": pos.uncovered}  # fmt: skip


def pair_violations(t: dict[str, int], moved: int | None) -> list[str]:
    """What breaks one perp pair's exact identities (docs/perps.md), given its totals and
    the margin moved in − out (None: not known, e.g. moves in flight): size == 0, pnl == 0,
    funding + remainder == 0 (the funding remainder is in the fund), and what the pair holds,
    Σ collateral + Σ funding + fund (= Σ equity + fund), == the margin moved."""
    bad = [f"{k} {v}" for k, v in (("size", t["size"]), ("pnl", t["pnl"]),
           ("funding+remainder", t["funding"] + t["remainder"])) if v]  # fmt: skip
    held = t["collateral"] + t["funding"] + t["fund"]
    if moved is not None and held != moved:
        bad.append(f"collateral+funding+fund {held} != margin moved {moved} (difference "
                   f"{held - moved}: money {'appeared' if held > moved else 'disappeared'})")
    return bad
