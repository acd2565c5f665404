"""Stop and take-profit orders: each pair's trigger book and its firing (pure).

Four order types wait here, not in the order book, until the pair's LAST TRADE PRICE (the
price of the engine's own latest trade of the pair, ``Book.last``; 0 before the first) reaches
their trigger, then enter matching as the order they stand for:

* ``STOP_MARKET`` / ``STOP_LIMIT``: a buy fires when last >= trigger, a sell when last <= trigger.
* ``TAKE_PROFIT`` / ``TAKE_PROFIT_LIMIT``: the opposite: a sell fires when last >= trigger, a
  buy when last <= trigger.

So every pending order is either an "up" order (fires once last >= trigger: stop buys,
take-profit sells) or a "down" one (last <= trigger: stop sells, take-profit buys), kept in two
heaps: up by (trigger, arrival), down by (-trigger, arrival). The rules (docs/orders.md):

* Placing: ``(OP_NEW, ..., stp, None, {"trigger": ticks})``; the market kinds need tif ioc/fok
  (as a market order does), post_only is refused. An order whose trigger the current last price
  has already reached is rejected ``would_trigger``; with no trade yet it is accepted and waits.
  Accepted: ``EV_ACCEPTED`` and nothing else (its fate is ``pending``).
* Cancel: as any order's (``EV_CANCELLED``, reason ``user``). Amend: refused ``untriggered``.
* Firing: after every command in which a pair with a trigger book traded, while the top of a
  heap is reached by the last price, that order leaves the trigger book, ``EV_TRIGGERED`` is
  emitted and the order matches as a taker (its accepted seq and id unchanged; a GTC limit
  remainder rests).
  One at a time, re-reading the last price after each: a fired order's own trades may fire more
  (a cascade) in the same command. When both heaps have a reached top (only possible at a
  pair's first trade) the earlier-accepted fires first. Termination: each step removes one
  order from the trigger book and nothing adds to it during a cascade, so a command fires at
  most as many orders as were pending.

Pure like the engine: it works on ``Engine``/``Book`` state handed in; the matching functions
come as arguments (``engine.py`` imports this module, not the other way round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from heapq import heappop, heappush
from typing import Any

from shardex.engine.book import Book, Finished, IntegrityError, Order
from shardex.engine.book import rest_order as _rest
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_TRIGGERED,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    MAX_ID_LEN,
    OP_NEW,
    REJ_DUPLICATE_ID,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_ORDER_TOO_SMALL,
    REJ_OUT_OF_RANGE,
    REJ_UNTRIGGERED,
    REJ_WOULD_TRIGGER,
    REJ_WRONG_ACCOUNT,
    SELL,
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_PENDING,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
    Event,
)

EngineState = Any  # an ``Engine`` (typed loosely: this module must not import engine.py)
# the option keys this engine knows; others are invalid. ``capped``: a market order its account
# shard sent on as a limit at the price its budget pays for (``expiry.new_capped``)
CAPPED = "capped"
OPT_KEYS = frozenset(("trigger", CAPPED))
NO_LIMIT = 1 << 62  # limit key of a market order (as in engine.py): crosses every level
# the order type a triggered type becomes
BASE = {STOP_MARKET: MARKET, STOP_LIMIT: LIMIT, TAKE_PROFIT: MARKET, TAKE_PROFIT_LIMIT: LIMIT}
NEW_FIELDS = 13  # an OP_NEW with options: the plain 11, the budget (None here), the options


class Pending:
    """An untriggered order. ``n`` is its arrival in this pair's trigger book (the tie-break,
    travels with the pair); ``seq`` the seq of its accepted event (as ``Order.seq``)."""

    __slots__ = (
        "id",
        "account",
        "side",
        "otype",
        "price",
        "qty",
        "tif",
        "stp",
        "trigger",
        "n",
        "seq",
        "up",
    )

    def __init__(self, fields: tuple, n: int, seq: int) -> None:
        (self.id, self.account, self.side, self.otype, self.price, self.qty) = fields[:6]
        (self.tif, self.stp, self.trigger) = fields[6:]
        self.n = n
        self.seq = seq
        self.up = fires_up(self.otype, self.side)

    def row(self) -> list[Any]:
        """Snapshot form (``load`` reads it)."""
        return [
            self.id,
            self.account,
            self.side,
            self.otype,
            self.price,
            self.qty,
            self.tif,
            self.stp,
            self.trigger,
            self.n,
            self.seq,
        ]


class TriggerBook:
    """One pair's pending orders: by id, and in the up and down heaps (lazy deletion: an entry
    whose id is no longer pending, or pending under another arrival, is skipped)."""

    __slots__ = ("orders", "up", "down", "n")

    def __init__(self) -> None:
        self.orders: dict[str, Pending] = {}
        self.up: list[tuple[int, int, str]] = []
        self.down: list[tuple[int, int, str]] = []
        self.n = 0  # arrivals so far

    def add(self, p: Pending) -> None:
        self.orders[p.id] = p
        if p.up:
            heappush(self.up, (p.trigger, p.n, p.id))
        else:
            heappush(self.down, (-p.trigger, p.n, p.id))

    def _top(self, heap: list[tuple[int, int, str]]) -> Pending | None:
        orders = self.orders
        while heap:
            _, n, oid = heap[0]
            p = orders.get(oid)
            if p is not None and p.n == n:
                return p
            heappop(heap)
        return None

    def next_fired(self, last: int) -> Pending | None:
        """The pending order that fires next at last trade price ``last`` (None: none does)."""
        if not last:
            return None
        up, down = self._top(self.up), self._top(self.down)
        up = up if up is not None and last >= up.trigger else None
        down = down if down is not None and last <= down.trigger else None
        if up is None or down is None:
            return up or down
        return up if up.n < down.n else down


def fires_up(otype: int, side: int) -> bool:
    """True for the types that fire when the last price rises to the trigger."""
    return (otype in (STOP_MARKET, STOP_LIMIT)) == (side == BUY)


def reached(p_up: bool, trigger: int, last: int) -> bool:
    """Whether last trade price ``last`` (0: none yet) has reached a trigger."""
    return bool(last) and (last >= trigger if p_up else last <= trigger)


def option_refusal(cmd: Any, book: Book) -> tuple[str, int] | None:
    """Why an OP_NEW with options cannot be a pending order here (reason, code), or None.
    Only the option half and the combinations: the plain fields are the engine's gate."""
    budget, opts = cmd[11], cmd[12]
    if type(opts) is not dict or len(opts) != 1 or "trigger" not in opts:  # (the usual map)
        if not isinstance(opts, Mapping) or not all(type(k) is str for k in opts):
            return "new: options must be a map with string keys", REJ_MALFORMED
        unknown = sorted(set(opts) - OPT_KEYS)
        if unknown:
            return f"new: unknown option {unknown[0][:40]!r}", REJ_INVALID
    if budget is not None:
        return "new: the engine takes no budget (the account tier holds it)", REJ_INVALID
    otype, trigger = cmd[5], opts.get("trigger")
    if otype not in BASE:
        if trigger is not None:
            return "trigger needs a stop or take-profit type", REJ_INVALID
        return None
    if trigger is None:
        return (
            f"a {('stop', 'take-profit')[otype >= TAKE_PROFIT]} order needs a trigger",
            REJ_INVALID,
        )
    if type(trigger) is not int:
        return "trigger must be an integer number of ticks", REJ_MALFORMED
    if not 0 < trigger <= book.market.max_price_ticks:
        return f"trigger out of range (1..{book.market.max_price_ticks} ticks)", REJ_OUT_OF_RANGE
    if cmd[9] is True:
        return "post_only is not allowed on a stop or take-profit order", REJ_INVALID
    if CAPPED in opts and (opts[CAPPED] != 1 or BASE[otype] != LIMIT or cmd[8] not in (IOC, FOK)):
        return "capped: a stop-limit or take-profit-limit, ioc or fok (capped 1)", REJ_INVALID
    return None


def place(eng: EngineState, cmd: Any, out: list[Event], new: Callable[..., None]) -> None:
    """Apply an OP_NEW with options (13 fields): a pending stop / take-profit order, or (no
    trigger) the plain order ``new`` applies. Never raises on input."""
    symbol, oid = _at(cmd, 1), _at(cmd, 2)
    book = eng.book(symbol) if type(symbol) is str else None
    if book is None:
        return eng._reject(symbol, oid, *eng.no_book(symbol), out)
    if len(cmd) != NEW_FIELDS:
        return eng._reject(symbol, oid, "new: expected 11 fields, or 13", REJ_MALFORMED, out)
    refused = option_refusal(cmd, book)
    if refused is not None:
        return eng._reject(symbol, oid, *refused, out)
    otype = cmd[5]
    if otype not in BASE:
        return new(tuple(cmd[:11]), out)
    base = (*cmd[:5], BASE[otype], *cmd[6:11])
    refused = _base_refusal(eng, base, book)
    _, _, _, account, side, _, price, qty, tif, _, stp = base
    if refused is None and book.gate is not None:  # (the pair's state and limits: ``admin``)
        if CAPPED in cmd[12]:  # (a market stop buy capped by its budget: checked as a market)
            refused = book.gate.refuses_new(book, MARKET, None, qty)
        else:
            refused = book.gate.refuses_new(book, BASE[otype], price, qty)
    if refused is not None:
        return eng._reject(symbol, oid, *refused, out)
    trigger = cmd[12]["trigger"]
    if reached(fires_up(otype, side), trigger, book.last):
        return eng._reject(
            symbol,
            oid,
            f"trigger {book.market.price_str(trigger)} already reached by last "
            f"trade price {book.market.price_str(book.last)}",
            REJ_WOULD_TRIGGER,
            out,
        )
    tb = book.stops
    if tb is None:
        tb = book.stops = TriggerBook()
    eng.seq = seq = eng.seq + 1
    out.append((EV_ACCEPTED, seq, symbol, oid))
    book.accepted += 1
    tb.add(Pending((oid, account, side, otype, price, qty, tif, stp, trigger), tb.n, seq))
    tb.n += 1
    return None


def _base_refusal(eng: EngineState, base: tuple, book: Book) -> tuple[str, int] | None:
    """The engine's checks of a plain new (fields, ranges, combinations, duplicate id) for the
    order a stop stands for."""
    if _plain_refusal(base, book) is not None:
        return eng._why_new_invalid(base)
    if base[7] < book.market.min_qty_lots:  # (the markets file's minimum)
        return f"qty below the pair's min order size {book.market.min_qty}", REJ_ORDER_TOO_SMALL
    oid = base[2]
    if oid in book.orders or oid in book.finished or (book.stops and oid in book.stops.orders):
        return (
            f"duplicate id {oid}: a live, pending or recently finished order has it",
            REJ_DUPLICATE_ID,
        )
    return None


def _plain_refusal(base: tuple, book: Book) -> str | None:
    """ "invalid" when ``base`` is not a new order the engine's validity gate lets through
    (the precise reason is ``Engine._why_new_invalid``'s), else None (and the id is free)."""
    _, _, oid, account, side, otype, price, qty, tif, post_only, stp = base
    market = book.market
    ok = (
        type(oid) is str
        and type(account) is str
        and type(qty) is int
        and type(side) is int
        and type(tif) is int
        and type(stp) is int
        and type(post_only) is bool
        and side in (BUY, SELL)
        and tif in (GTC, IOC, FOK)
        and 0 <= stp <= 3
        and 0 < len(oid) <= MAX_ID_LEN
        and 0 < len(account) <= MAX_ID_LEN
        and 0 < qty <= market.max_qty_lots
        and (
            type(price) is int and 0 < price <= market.max_price_ticks
            if otype == LIMIT
            else price is None and tif != GTC
        )
    )
    return None if ok else "invalid"


def touch(
    eng: EngineState, book: Book, p: Pending, account: Any, amend: bool, out: list[Event]
) -> None:
    """A cancel or amend of pending order ``p``: cancelled (reason ``user``), or the amend
    refused ``untriggered``."""
    symbol = book.symbol
    if account != p.account:
        return eng._reject(symbol, p.id, "order belongs to another account", REJ_WRONG_ACCOUNT, out)
    refused = book.gate.refuses_cancel(book) if book.gate is not None else None
    if refused is not None:  # (a halt freezes the pending orders too: ``admin``)
        return eng._reject(symbol, p.id, *refused, out)
    if amend:
        return eng._reject(
            symbol,
            p.id,
            "an untriggered stop or take-profit order cannot be "
            "amended: cancel it and place it again",
            REJ_UNTRIGGERED,
            out,
        )
    cancel_pending(eng, book, p, "user", out)
    return None


def drop_pending(eng: EngineState, book: Book, account: str | None, reason: str,
                 out: list[Event]) -> None:  # fmt: skip
    """Cancel the pair's pending orders of ``account`` (None: every account), in arrival order,
    with ``reason``: a cancel-all, a dead-man switch and a delisting take the untriggered orders
    too, so the account tier releases their holds (after the resting orders' cancels)."""
    tb = book.stops
    if tb is None or not tb.orders:
        return
    mine = sorted((p for p in tb.orders.values() if account is None or p.account == account),
                  key=_arrival)  # fmt: skip
    for p in mine:
        cancel_pending(eng, book, p, reason, out)


def cancel_pending(
    eng: EngineState, book: Book, p: Pending, reason: str, out: list[Event]
) -> None:
    """Cancel pending order ``p`` (a user's cancel, a cancel-all, a delisting, its expiry)."""
    del book.stops.orders[p.id]
    eng.seq = seq = eng.seq + 1
    out.append((EV_CANCELLED, seq, book.symbol, p.id, reason, p.qty))
    book.cancelled += 1
    eng._finish(book, p.id, (p.account, STATE_CANCELLED, 0, reason, p.seq, seq))


def fire(
    eng: EngineState, out: list[Event], match: Callable[..., int], fillable: Callable[..., int]
) -> None:
    """After a command in which ``eng.touched`` (a pair with a trigger book) traded: fire the
    pending orders its trades reached, cascades included (see the module docstring).
    ``match``/``fillable``: the engine's ``_match`` and ``_fillable``. Only a trade can reach
    a trigger (no order is placed reached), so pairs that did not trade are not looked at."""
    book = eng.touched
    tb = book.stops
    p = tb.next_fired(book.last)
    while p is not None:
        del tb.orders[p.id]
        _enter(eng, book, p, out, match, fillable)
        p = tb.next_fired(book.last)
    eng.touched = None


def _enter(
    eng: EngineState,
    book: Book,
    p: Pending,
    out: list[Event],
    match: Callable[..., int],
    fillable: Callable[..., int],
) -> None:
    """A fired order: ``EV_TRIGGERED``, then what ``Engine._new`` does after its accepted event
    (FOK check, match, rest or cancel the remainder, record the finished order)."""
    symbol, oid, account, side, qty, stp = book.symbol, p.id, p.account, p.side, p.qty, p.stp
    eng.seq = seq = eng.seq + 1
    out.append((EV_TRIGGERED, seq, symbol, oid, book.last, p.trigger))
    market = BASE[p.otype] == MARKET
    limit_key = NO_LIMIT if market else (p.price if side == BUY else -p.price)
    opp = book.sides[side ^ 1]
    if p.tif == FOK and fillable(opp, limit_key, qty, account, stp) < qty:
        eng.seq = last = eng.seq + 1
        out.append((EV_CANCELLED, last, symbol, oid, "fok", qty))
        book.cancelled += 1
        eng._finish(book, oid, (account, STATE_CANCELLED, 0, "fok", p.seq, last))
        return
    left = match(eng, book, side, limit_key, qty, oid, account, stp, out)
    if left > 0 and p.tif == GTC:
        _rest(book, Order(oid, account, side, p.price, left, stp, False, p.seq, qty - left))
        return
    if left > 0:
        eng.seq = last = eng.seq + 1
        out.append((EV_CANCELLED, last, symbol, oid, "ioc", left))
        book.cancelled += 1
        rec: Finished = (account, STATE_CANCELLED, qty - left, "ioc", p.seq, last)
    elif left == 0:
        rec = (account, STATE_FILLED, qty, None, p.seq, eng.seq)
    else:  # stopped by STP (left = -1 - open qty it cancelled)
        rec = (account, STATE_CANCELLED, qty + 1 + left, "stp", p.seq, eng.seq)
    eng._finish(book, oid, rec)


def status(book: Book, oid: str, account: str) -> dict[str, Any] | None:
    """The fate of a pending order as its owner sees it, None when ``oid`` is not pending for
    ``account``."""
    tb = book.stops
    p = tb.orders.get(oid) if tb is not None else None
    if p is None or p.account != account:
        return None
    return {
        "state": STATE_PENDING,
        "symbol": book.symbol,
        "id": oid,
        "side": p.side,
        "price": p.price,
        "qty": p.qty,
        "filled": 0,
        "type": p.otype,
        "trigger": p.trigger,
    }


def pending_of(book: Book, oid: Any) -> Pending | None:
    """The pending order ``oid`` of ``book``, if any (the cancel/amend path's lookup)."""
    tb = book.stops
    return tb.orders.get(oid) if tb is not None and type(oid) is str else None


def save(book: Book, pair: dict[str, Any]) -> None:
    """Add the pair's pending orders to its state (``snapshot_pair``; its last trade price is
    the book's own, ``Book.snapshot``); nothing when it has none (a state older engines read
    unchanged)."""
    tb = book.stops
    if tb is not None and tb.orders:
        pair["stops"] = {
            "n": tb.n,
            "orders": [p.row() for p in sorted(tb.orders.values(), key=_arrival)],
        }


def load(book: Book, pair: Mapping[str, Any], since: int = -1) -> None:
    """Install ``save``'s part of a pair state into the new ``book``; ValueError (or the
    KeyError, TypeError of a state of another shape) when unusable. ``since`` >= 0: the
    accepted seq every pending order gets (the pair came from another engine, whose seqs mean
    nothing here)."""
    state = pair.get("stops")
    if not state:
        return
    tb = TriggerBook()
    tb.n = state["n"]
    if type(tb.n) is not int:
        raise ValueError(f"pending arrivals {tb.n!r}")
    for row in state["orders"]:
        oid, account, side, otype, price, qty, tif, stp, trigger, n, seq = row
        p = Pending(
            (oid, account, side, otype, price, qty, tif, stp, trigger),
            n,
            seq if since < 0 else since,
        )
        base = (
            OP_NEW,
            book.symbol,
            oid,
            account,
            side,
            BASE.get(otype),
            price,
            qty,
            tif,
            False,
            stp,
        )
        if (
            otype not in BASE
            or _plain_refusal(base, book) is not None
            or type(trigger) is not int
            or trigger <= 0
            or type(n) is not int
            or not 0 <= n < tb.n
            or type(p.seq) is not int
            or oid in tb.orders
        ):
            raise ValueError(f"bad pending order {tuple(row)!r:.200}")
        tb.add(p)
    book.stops = tb


def check(book: Book) -> None:
    """Raise IntegrityError unless the trigger book agrees with itself and the order book: ids
    unique across pending, live and finished; every pending order in its heap; none reached."""
    tb = book.stops
    if tb is None:
        return
    up, down = set(tb.up), set(tb.down)  # (one pass each: O(pending), not O(pending²))
    for oid, p in tb.orders.items():
        if p.id != oid or oid in book.orders or oid in book.finished:
            raise IntegrityError(f"{book.symbol}: pending order {oid!r} also live or finished")
        entry = (p.trigger if p.up else -p.trigger, p.n, oid)
        if entry not in (up if p.up else down) or not 0 <= p.n < tb.n:
            raise IntegrityError(f"{book.symbol}: pending order {oid!r} in no heap")
        if reached(p.up, p.trigger, book.last):
            raise IntegrityError(f"{book.symbol}: pending order {oid!r} reached, not fired")


def _arrival(p: Pending) -> int:
    return p.n


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None
