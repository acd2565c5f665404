"""Expiring orders (good-till-date, day) and cancel-all: the engine's half of them.

Pure like the rest of the engine: no clock. An order's expiry is judged only by the exchange
time the engine already receives as journaled ``OP_TIME`` commands (``EngineState.ts``), and it
fires only when the shard's leader journals ``(OP_EXPIRE, ts)`` after a batch's ``OP_TIME``
(``Expiries.due`` tells it when): so a replay, a standby and a recovery cancel the same orders
at the same seqs. ``OP_TIME`` itself stays what it was (no event, no seq): every reader of the
journal marks a batch's time at the ``OP_TIME`` and the sweep's events come after it.

* **gtd**: rests like gtc until ``expire`` (ms of exchange time, UTC epoch), given in the new
  order's options map (``(OP_NEW, ..., stp, budget, {"expire": ms})``). An ``expire`` not
  after the engine's exchange time is refused ``expired``: it would expire at once.
* **day**: rests like gtc until the end of the UTC day (00:00:00.000 of the next day) of the
  exchange time at which it was accepted. It needs no option (11 fields suffice).
* A **stop-limit or take-profit-limit** order may be gtd or day too: it waits in the trigger
  book as a gtc one and its expire time is indexed from acceptance, so a pending order expires
  like a resting one, and once triggered its resting remainder (same accept seq) keeps it.

Expired orders are cancelled with the ordinary ``cancelled`` event, reason ``expired``, so
every consumer (account-tier settlement releasing holds, the bridge, history, the SDK's fates)
handles them as the cancels they are; in (expire time, accept seq, symbol, id) order.

The index is a heap of ``(expire, accept seq, symbol, id)`` with lazy deletion: an entry whose
order is no longer live (filled, cancelled, moved away) is dropped when it reaches the top, so
a sweep costs O(expired log n), never a scan of the books. An amend keeps the order's accept
seq (``Order.seq``), hence its expiry. Per pair it also keeps ``id -> (expire, seq)`` so a
pair's snapshot (``snapshot_pair``: recovery, live moves) carries its orders' expire times.

Cancel-all ``(OP_CANCEL_ALL, symbol | "", ref, account)`` cancels the account's live orders of
one pair, or of every pair of this shard, in (symbol, accept seq) order: one ``cancelled`` event
each (reason ``cancel_all``), none when the account has none. A halted pair's book is frozen
(``engine.admin``): named, it refuses ``market_halted`` like a cancel; with ``""`` it is skipped.
It scans the books it covers (a rare command; a per-account index would cost every new order).

Cancel-on-disconnect (a dead-man switch) is its 5-field form, ``(OP_CANCEL_ALL, symbol, ref,
account, after_ms)``: it cancels nothing now; it arms (or, sent again, pushes back) a switch of
(account, pair) at exchange time ``ts + after_ms``; ``after_ms`` 0 disarms it. When exchange time
reaches a switch still armed, the same ``OP_EXPIRE`` sweep (after the orders' own expiries)
cancels that account's orders of that pair, reason ``deadman``, and the switch is gone (one
shot). So a session that stops refreshing loses its open orders ``after_ms`` after its last
refresh, by journaled time. Switches travel in their pair's state like expire times.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Any

from shardex.engine.admin import HALTED
from shardex.engine.book import Book, Order, unlink_order
from shardex.engine.codes import (
    DAY,
    EV_CANCELLED,
    FOK,
    GTC,
    GTD,
    IOC,
    LIMIT,
    MARKET,
    MAX_ID_LEN,
    REJ_EXPIRED,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_MARKET_HALTED,
    STATE_CANCELLED,
    Event,
)
from shardex.engine.positions import REDUCE_ONLY, STOPS_REFUSED, is_perp, reduce_only_new
from shardex.engine.stops import BASE, CAPPED, Pending, cancel_pending, drop_pending, place

DAY_MS = 86_400_000
MAX_EXPIRE = (1 << 63) - 1
OPTS_WIDTH = 13  # (OP_NEW, ..., stp, budget|None, opts)
CANCEL_ALL_AFTER = 4  # (OP_CANCEL_ALL, symbol, ref, account, after): ``wire.layouts``' name
# (trigger, capped: ``shardex.engine.stops``; a client may not send capped to an account shard)
OPTION_KEYS = frozenset(("expire", "trigger", CAPPED, REDUCE_ONLY))
CLIENT_OPTION_KEYS = OPTION_KEYS - {CAPPED}
EXPIRED, CANCEL_ALL, DEADMAN = "expired", "cancel_all", "deadman"  # cancelled events' reasons
LIQUIDATION = "liquidation"  # (a liquidated account's orders: ``engine.liquidation``)
# (the reasons above, which a snapshot's recent results may hold: ``state``)
OWN_REASONS = (EXPIRED, CANCEL_ALL, DEADMAN, LIQUIDATION)
MAX_AFTER = DAY_MS  # the longest dead-man switch
COMPACT_MIN = 1024  # index entries below which stale ones are never swept out (``compact``)


def day_end(ts: int) -> int:
    """The expire time of a day order accepted at ``ts``: the next UTC midnight."""
    return (ts // DAY_MS + 1) * DAY_MS


class Expiries:
    """The engine's expire-time index (see the module docstring)."""

    __slots__ = ("heap", "by_pair", "switches", "sheap", "compact_at")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, str, str]] = []
        self.by_pair: dict[str, dict[str, tuple[int, int]]] = {}
        # heap size at which ``compact`` runs: stale entries behind a live earlier one would
        # otherwise stay until it goes (a maker churning day orders: without bound)
        self.compact_at = COMPACT_MIN
        # dead-man switches: (symbol, account) -> deadline, and a heap of (deadline, symbol,
        # account) whose entries are stale once the switch moved or went
        self.switches: dict[tuple[str, str], int] = {}
        self.sheap: list[tuple[int, str, str]] = []

    def arm(self, symbol: str, account: str, deadline: int | None) -> None:
        """Arm (or move) the switch of (``symbol``, ``account``); None disarms it."""
        if deadline is None:
            self.switches.pop((symbol, account), None)
            return
        self.switches[(symbol, account)] = deadline
        heappush(self.sheap, (deadline, symbol, account))

    def next_switch(self) -> int | None:
        """The earliest deadline of an armed switch (stale entries on top are dropped)."""
        sheap, switches = self.sheap, self.switches
        while sheap:
            deadline, symbol, account = sheap[0]
            if switches.get((symbol, account)) == deadline:
                return deadline
            heappop(sheap)
        return None

    def add(self, expire: int, seq: int, symbol: str, oid: str) -> None:
        heappush(self.heap, (expire, seq, symbol, oid))
        pair = self.by_pair.get(symbol)
        if pair is None:
            pair = self.by_pair[symbol] = {}
        pair[oid] = (expire, seq)

    def compact(self, books: dict[str, Book]) -> None:
        """Drop the entries of orders no longer live (amortised O(1) per ``add``: it runs
        when the heap doubled since). Only stale entries go, which no sweep would act on, so
        the events stay the same whether and when it runs (it is not state)."""
        live = [e for e in self.heap if _live(books, e[2], e[3], e[1]) is not None]
        heapify(live)
        self.heap = live
        self.by_pair = {}
        for expire, seq, symbol, oid in live:
            self.by_pair.setdefault(symbol, {})[oid] = (expire, seq)
        self.compact_at = max(COMPACT_MIN, 2 * len(live))

    def next_due(self, books: dict[str, Book]) -> int | None:
        """The earliest expire time of a live order (stale entries on top are dropped)."""
        heap = self.heap
        while heap:
            expire, seq, symbol, oid = heap[0]
            if _live(books, symbol, oid, seq) is not None:
                return expire
            heappop(heap)
            self._forget(symbol, oid, expire, seq)
        return None

    def due(self, books: dict[str, Book], ts: int) -> bool:
        """Whether an ``OP_EXPIRE`` at ``ts`` would cancel something (or fire a switch)."""
        expire, switch = self.next_due(books), self.next_switch()
        return (expire is not None and expire <= ts) or (switch is not None and switch <= ts)

    def _forget(self, symbol: str, oid: str, expire: int, seq: int) -> None:
        pair = self.by_pair.get(symbol)
        if pair is not None and pair.get(oid) == (expire, seq):
            del pair[oid]
            if not pair:
                del self.by_pair[symbol]

    def pair_switches(self, symbol: str) -> list[list[Any]]:
        """``[[account, deadline], ...]`` of the pair's armed switches (its snapshot part)."""
        return sorted([a, d] for (s, a), d in self.switches.items() if s == symbol)

    def restore_switches(self, symbol: str, entries: Any) -> None:
        """Arm a restored pair's switches (``pair_switches``' list)."""
        for key in [k for k in self.switches if k[0] == symbol]:
            del self.switches[key]
        for account, deadline in entries or ():
            if type(account) is not str or type(deadline) is not int:
                raise ValueError(f"dead-man switch {account!r} {deadline!r} is malformed")
            self.arm(symbol, account, deadline)

    def pair_state(self, book: Book) -> list[list[Any]]:
        """``[[id, expire], ...]`` of the pair's live expiring orders (its snapshot part)."""
        pair = self.by_pair.get(book.symbol)
        if not pair:
            return []
        books = {book.symbol: book}
        return [[oid, expire] for oid, (expire, seq) in sorted(pair.items())
                if _live(books, book.symbol, oid, seq) is not None]  # fmt: skip

    def restore_pair(self, book: Book, entries: Any) -> None:
        """Index a restored pair's expiring orders (``pair_state``'s list: resting or pending,
        so the pending ones are restored first); ValueError when an entry is not ``[live or
        pending order id, int]``."""
        self.by_pair.pop(book.symbol, None)
        for entry in entries or ():
            oid, expire = entry
            order: Order | Pending | None = None
            if type(oid) is str:
                order = book.orders.get(oid) or (book.stops.orders.get(oid) if book.stops else None)
            if order is None or type(expire) is not int:
                raise ValueError(f"expire entry {entry!r} names no live order")
            self.add(expire, order.seq, book.symbol, oid)


def _live(books: dict[str, Book], symbol: str, oid: str, seq: int) -> Order | Pending | None:
    """The live order, or pending stop order, ``oid`` of ``symbol`` accepted at ``seq``."""
    book = books.get(symbol)
    if book is None:
        return None
    order: Order | Pending | None = book.orders.get(oid)
    if order is None and book.stops is not None:
        order = book.stops.orders.get(oid)
    return order if order is not None and order.seq == seq else None


# -- new orders ------------------------------------------------------------------------------


def new_with_opts(eng: Any, cmd: tuple, out: list[Event]) -> None:
    """A 13-field new order: its options checked, then placed: a stop or take-profit order
    (``stops.place``; gtd or day: ``place_timed_stop``), a timed one, or a plain one."""
    budget, opts = cmd[11], cmd[12]
    if budget is not None:
        return eng._reject(cmd[1], cmd[2], "budget is for the account tier", REJ_INVALID, out)
    if type(opts) is not dict or any(type(k) is not str for k in opts):
        return eng._reject(cmd[1], cmd[2], "options must be a map with str keys",
                           REJ_MALFORMED, out)  # fmt: skip
    unknown = sorted(k for k in opts if k not in OPTION_KEYS)
    if unknown:
        return eng._reject(cmd[1], cmd[2], f"unknown option {unknown[0][:MAX_ID_LEN]!r}",
                           REJ_INVALID, out)  # fmt: skip
    tif = cmd[8]
    if REDUCE_ONLY in opts:  # (a perp pair's: ``shardex.engine.positions``)
        return reduce_only_new(eng, cmd, out)
    if "trigger" in opts or cmd[5] in BASE:
        if type(cmd[1]) is str and is_perp(eng, cmd[1]):
            return eng._reject(cmd[1], cmd[2], STOPS_REFUSED, REJ_INVALID, out)
        if "expire" in opts or tif in (GTD, DAY):
            return place_timed_stop(eng, cmd, opts, out)
        return place(eng, cmd, out, eng._new)
    if CAPPED in opts:
        return new_capped(eng, cmd, opts, out)
    if type(tif) is int and tif in (GTD, DAY):
        return new_timed(eng, cmd[:11], opts.get("expire"), out)
    if "expire" in opts:
        return eng._reject(cmd[1], cmd[2], "expire needs tif gtd", REJ_INVALID, out)
    return eng._new(cmd[:11], out)


def new_capped(eng: Any, cmd: tuple, opts: dict, out: list[Event]) -> None:
    """A market order its account shard capped at the price its budget pays for: a limit ioc
    or fok at that cap, ``{"capped": 1}``. The pair's rules judge it as the market order it is
    (no price band, its notional at the reference price: ``admin``), then it matches as the
    limit (so it never pays more than its budget). Anything else marked capped: ``invalid``."""
    symbol, oid = cmd[1], cmd[2]
    if len(opts) != 1 or opts[CAPPED] != 1 or cmd[5] != LIMIT or cmd[8] not in (IOC, FOK):
        return eng._reject(symbol, oid, "capped: a limit ioc or fok order only (capped 1)",
                           REJ_INVALID, out)  # fmt: skip
    book = eng.book(symbol) if type(symbol) is str else None
    gate = book.gate if book is not None else None
    if gate is None or book is None:
        return eng._new(cmd[:11], out)
    if type(cmd[7]) is int and (refused := gate.refuses_new(book, MARKET, None, cmd[7])):
        return eng._reject(symbol, oid, *refused, out)
    book.gate = None  # (checked just above as a market order's: not again as a limit's)
    try:
        return eng._new(cmd[:11], out)
    finally:
        book.gate = gate


def new_other(eng: Any, cmd: tuple, out: list[Event]) -> None:
    """An 11-field new order that failed the fast gate: a day (or gtd) order, or a reject."""
    tif = cmd[8]
    if type(tif) is int and tif in (GTD, DAY):
        return new_timed(eng, cmd, None, out)
    return eng._reject(cmd[1], cmd[2], *eng._why_new_invalid(cmd), out)


def _expire_of(eng: Any, tif: Any, expire: Any) -> tuple[int, None] | tuple[None, tuple]:
    """A gtd or day order's expire time, or why it has none ``(reason, code)``."""
    if tif == GTD:
        if expire is None:
            return None, ("tif gtd needs an expire time", REJ_INVALID)
        if type(expire) is not int or not 0 < expire <= MAX_EXPIRE:
            return None, ("expire must be ms since the epoch (an int > 0)", REJ_MALFORMED)
        if expire <= eng.ts:
            return None, (f"expire {expire} is not after exchange time {eng.ts}", REJ_EXPIRED)
        return expire, None
    if tif != DAY:
        return None, ("expire needs tif gtd", REJ_INVALID)
    if expire is not None:
        return None, ("tif day takes no expire time", REJ_INVALID)
    return day_end(eng.ts), None


def new_timed(eng: Any, cmd: tuple, expire: Any, out: list[Event]) -> None:
    """A gtd or day order: placed as gtc, and indexed by its expire time if it rests."""
    symbol, oid = cmd[1], cmd[2]
    expire, refused = _expire_of(eng, cmd[8], expire)
    if refused is not None:
        return eng._reject(symbol, oid, *refused, out)
    if type(cmd[5]) is int and cmd[5] != LIMIT:
        return eng._reject(symbol, oid, "gtd and day orders must be limit orders",
                           REJ_INVALID, out)  # fmt: skip
    accept = eng.seq + 1
    eng._new(cmd[:8] + (GTC,) + cmd[9:11], out)
    _index(eng, symbol, oid, accept, expire)
    return None


def place_timed_stop(eng: Any, cmd: tuple, opts: dict, out: list[Event]) -> None:
    """A gtd or day stop-limit / take-profit-limit: its expire time judged as a plain gtd or
    day order's, then placed as a gtc one (``stops.place``) and, once pending, indexed by that
    time: the sweep cancels it pending or, triggered, its resting remainder."""
    symbol, oid = cmd[1], cmd[2]
    expire, refused = _expire_of(eng, cmd[8], opts.get("expire"))
    if refused is not None or expire is None:
        return eng._reject(symbol, oid, *(refused or ("an expire time is required",
                                                      REJ_INVALID)), out)  # fmt: skip
    if BASE.get(cmd[5]) != LIMIT:
        return eng._reject(symbol, oid, "gtd and day stop orders must be stop-limit or "
                           "take-profit-limit", REJ_INVALID, out)  # fmt: skip
    accept = eng.seq + 1
    rest = {k: v for k, v in opts.items() if k != "expire"}
    place(eng, (*cmd[:8], GTC, *cmd[9:12], rest), out, eng._new)
    _index(eng, symbol, oid, accept, expire)
    return None


def _index(eng: Any, symbol: Any, oid: Any, accept: int, expire: int) -> None:
    """Index ``oid``'s expire time if it was just accepted (resting or pending) at ``accept``."""
    if type(symbol) is not str or type(oid) is not str:
        return  # (rejected: nothing rests, nothing to index)
    if _live(eng.books, symbol, oid, accept) is not None:
        index: Expiries = eng.expiry
        index.add(expire, accept, symbol, oid)
        if len(index.heap) >= index.compact_at:
            index.compact(eng.books)


# -- cancelling ------------------------------------------------------------------------------


def _cancel(eng: Any, book: Book, order: Order, reason: str, out: list[Event]) -> None:
    qty = order.qty
    unlink_order(book, order)
    eng.seq = seq = eng.seq + 1
    out.append((EV_CANCELLED, seq, book.symbol, order.id, reason, qty))
    book.cancelled += 1
    eng._finish(book, order.id,
                (order.account, STATE_CANCELLED, order.filled, reason, order.seq, seq))  # fmt: skip


def expire_due(eng: Any, cmd: Any, out: list[Event]) -> None:
    """``(OP_EXPIRE, ts)``: cancel every live order with expire time <= ts (never beyond the
    engine's exchange time), in (expire, accept seq, symbol, id) order."""
    if len(cmd) != 2 or type(cmd[1]) is not int:
        return eng._reject("", "", "expire: expected (op, ts)", REJ_MALFORMED, out)
    upto = min(cmd[1], eng.ts)
    index: Expiries = eng.expiry
    heap, books = index.heap, eng.books
    while heap and heap[0][0] <= upto:
        expire, seq, symbol, oid = heappop(heap)
        index._forget(symbol, oid, expire, seq)
        order = _live(books, symbol, oid, seq)
        if isinstance(order, Order):
            _cancel(eng, books[symbol], order, EXPIRED, out)
        elif order is not None:  # a pending stop order
            cancel_pending(eng, books[symbol], order, EXPIRED, out)
    sheap, switches = index.sheap, index.switches
    while sheap and sheap[0][0] <= upto:
        deadline, symbol, account = heappop(sheap)
        if switches.get((symbol, account)) == deadline:
            del switches[(symbol, account)]
            book = books.get(symbol)
            if book is not None:
                _cancel_mine(eng, book, account, DEADMAN, out)
    return None


def cancel_all(eng: Any, cmd: Any, out: list[Event]) -> None:
    """``(OP_CANCEL_ALL, symbol | "", ref, account[, after_ms])``: see the module docstring."""
    if len(cmd) not in (4, 5):
        return eng._reject(_at(cmd, 1), _at(cmd, 2), "cancel_all: expected 4 or 5 fields",
                           REJ_MALFORMED, out)  # fmt: skip
    symbol, ref, account = cmd[1], cmd[2], cmd[3]
    if type(symbol) is not str or type(ref) is not str or len(ref) > MAX_ID_LEN:
        return eng._reject(symbol, ref, "cancel_all: symbol and ref must be strings",
                           REJ_MALFORMED, out)  # fmt: skip
    if type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
        return eng._reject(symbol, ref, f"account must be a string of 1..{MAX_ID_LEN} chars",
                           REJ_MALFORMED, out)  # fmt: skip
    if symbol:
        book = eng.book(symbol)
        if book is None:
            return eng._reject(symbol, ref, *eng.no_book(symbol), out)
        books = [book]
    else:
        books = [eng.books[s] for s in sorted(eng.books)]
    if len(cmd) == 5:
        return _arm(eng, symbol, ref, account, cmd[CANCEL_ALL_AFTER], out)
    if symbol and books[0].gate is not None and books[0].gate.state == HALTED:
        return eng._reject(symbol, ref, f"pair {symbol} is halted", REJ_MARKET_HALTED, out)
    for book in books:
        if book.gate is None or book.gate.state != HALTED:  # (a halt freezes its book)
            _cancel_mine(eng, book, account, CANCEL_ALL, out)
    return None


def _arm(eng: Any, symbol: str, ref: str, account: str, after: Any, out: list[Event]) -> None:
    """A dead-man switch armed, moved or (``after`` 0) disarmed: no event."""
    if type(after) is not int:
        return eng._reject(symbol, ref, "after must be an integer (ms)", REJ_MALFORMED, out)
    if not symbol or not 0 <= after <= MAX_AFTER:
        return eng._reject(symbol, ref, f"a dead-man switch needs a pair and 0..{MAX_AFTER} ms",
                           REJ_INVALID, out)  # fmt: skip
    eng.expiry.arm(symbol, account, eng.ts + after if after else None)
    return None


def _cancel_mine(eng: Any, book: Book, account: str, reason: str, out: list[Event]) -> None:
    """Cancel ``account``'s live orders of ``book`` in accept order, then its pending stop
    orders in arrival order (``stops``: open orders too, with holds on the account tier)."""
    mine = [o for o in book.orders.values() if o.account == account]
    mine.sort(key=_accept_order)
    for order in mine:
        _cancel(eng, book, order, reason, out)
    drop_pending(eng, book, account, reason, out)


def _accept_order(order: Order) -> tuple[int, str]:
    return order.seq, order.id


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None
