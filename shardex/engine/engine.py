"""The single-writer matching engine: many books, one sequence number, commands in, events out.

Pure on purpose: no sockets, no clock, no files, no randomness. Given the same commands it emits
the same events byte for byte, which is what makes journaling, replay, recovery and moving a pair
to another shard possible.

Commands and events are plain tuples of ints and strings (see ``shardex.engine.codes`` for the
layouts). Tuples rather than objects because the engine handles hundreds of thousands of commands
per second in CPython and every attribute lookup or allocation on the hot path shows up in the
profile. The edge (``shardex.wire.protocol``) turns them into JSON/msgpack with decimal strings.

Every command produces at least one event. Every invalid command produces exactly one
``rejected`` event with a precise reason and a stable ``REJ_*`` code, and changes nothing. No
input raises out of ``apply``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from heapq import heappop
from typing import Any

from shardex.engine.book import Book, Finished, IntegrityError, Order
from shardex.engine.book import rest_order as _rest
from shardex.engine.codes import (
    BUY,
    DEFAULT_RECENT,
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    MAX_ID_LEN,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    OP_REJECT,
    RECENT_TRADES,
    REJ_AMEND_INCREASE,
    REJ_DUPLICATE_ID,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_NOT_LIVE,
    REJ_OUT_OF_RANGE,
    REJ_POST_ONLY_CROSS,
    REJ_UNKNOWN_OP,
    REJ_UNKNOWN_SYMBOL,
    REJ_WRONG_ACCOUNT,
    REJECT_NAMES,
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_LIVE,
    STATE_UNKNOWN,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    STP_NONE,
    Event,
)
from shardex.engine.markets import Market

MAX_REASON_LEN = 200
# An order status looks its trades up over at most this many events back from its last one
# (about 10 ms of Python at worst), in slices of _CHUNK.
TRADE_SCAN = 1 << 17
_CHUNK = 4096
# ``events(first, last)``: the events of seqs first..last in order, or None when not at hand.
EventSource = Callable[[int, int], "list[Event] | None"]
_NO_LIMIT = 1 << 62  # limit key of a market order: crosses every level
# Every valid (side, type, tif, post_only, stp) of a new order: market orders need ioc/fok and no
# post_only; post_only needs gtc.
_VALID_NEW = frozenset(
    (side, otype, tif, post_only, stp)
    for side in (0, 1)
    for otype in (LIMIT, MARKET)
    for tif in (GTC, IOC, FOK)
    for post_only in (False, True)
    for stp in range(4)
    if not (otype == MARKET and (tif == GTC or post_only)) and not (post_only and tif != GTC)
)
_SIDE_NAMES = ("bid", "ask")
_CANCEL_REASONS = ("user", "ioc", "fok", "stp")


class Engine:
    """Owns every book of one shard. Not thread-safe by design: exactly one writer calls it."""

    def __init__(
        self, markets: Mapping[str, Market], seq: int = 0, recent: int = DEFAULT_RECENT
    ) -> None:
        if type(recent) is not int or recent < 0:
            raise ValueError(f"recent must be an int >= 0, got {recent!r}")
        self.markets = markets
        self.books: dict[str, Book] = {}
        self.seq = seq
        # rejects per REJ_* code (metrics; read at scrape time, not part of snapshots)
        self.rejected: list[int] = [0] * len(REJECT_NAMES)
        # The recent-results index answers order status queries and refuses a ``new`` that
        # reuses a recently finished id, so a client retry can never place an order twice
        # within the window. Two generations over all pairs, kept in each book's ``finished``
        # (one dict, oldest first: its first ``nprev`` entries are the previous generation,
        # the rest the current one). A finished order is added to its book's ``finished``;
        # when the current generation holds ``gen_size`` = recent // 2 orders, every book
        # drops its previous generation and the current one becomes previous. So the engine
        # remembers the last recent // 2 + 1 .. recent finished orders (recent 1: the last
        # one; 0: none) at O(1) per finished order, and a new order's duplicate check is one
        # dict probe. The price is a rotation every recent // 2 finishes that deletes the
        # oldest generation's entries in one go (see Book.forget_previous). A record holds
        # the order's seq range, not its trades (see order_status).
        # Part of the snapshot.
        self.recent_limit = recent
        self.gen_size = recent // 2 if recent >= 2 else recent
        self._keep_prev = recent >= 2
        self._left = self.gen_size  # finished orders the current generation still takes

    # ------------------------------------------------------------------ public API

    def apply(self, cmd: Any, out: list[Event]) -> None:
        """Apply one command, appending its events (each with the next seq) to ``out``.

        ``cmd`` is typed Any on purpose: the compiled build checks argument types on entry,
        and anything at all must become a ``rejected`` event here, not a TypeError."""
        try:
            op = cmd[0]
            if op == OP_NEW:
                self._new(cmd, out)
            elif op == OP_CANCEL:
                self._cancel(cmd, out)
            elif op == OP_AMEND:
                self._amend(cmd, out)
            elif op == OP_REJECT:
                self._edge_reject(cmd, out)
            else:
                self._reject(
                    _field(cmd, 1), _field(cmd, 2), f"unknown op {op!r}", REJ_UNKNOWN_OP, out
                )
        except (TypeError, IndexError, KeyError, ValueError, AttributeError):
            # Inputs of a shape the fast paths do not expect (wrong length, unhashable fields).
            # Validation runs before any mutation, so rejecting here leaves the book untouched.
            try:
                reason, code = (
                    self._why_new_invalid(cmd)
                    if cmd[0] == OP_NEW
                    else ("malformed command", REJ_MALFORMED)
                )
            except Exception:
                reason, code = "malformed command", REJ_MALFORMED
            self._reject(_field(cmd, 1), _field(cmd, 2), reason, code, out)

    def apply_many(self, cmds: Iterable[Any]) -> list[Event]:
        """Apply commands in order and return all their events (convenience for replay/tests)."""
        out: list[Event] = []
        apply = self.apply
        for cmd in cmds:
            apply(cmd, out)
        return out

    def order_status(
        self,
        symbol: object,
        account: object,
        oid: object,
        events: EventSource | None = None,
        scan: int = TRADE_SCAN,
    ) -> dict[str, Any]:
        """The fate of one order, as its owner may see it (never raises, whatever the input).

        ``live`` (with side, price, open qty), ``filled`` or ``cancelled`` (with reason) from the
        book or the recent-results index, each with the lots filled; ``unknown`` when the order
        was never accepted here within the window, was rejected, or belongs to another account
        (no leak of other accounts' orders).

        Trades are not kept per order (that per-fill bookkeeping cost the hot path ~15%): the
        engine knows the seq range of the order's events (``trade_range``), and with an
        ``events`` source (``events(first, last)`` → the events of seqs first..last, or None
        when they are not at hand, e.g. the shard's in-memory ring) the answer gains
        ``trades``: the order's most recent ``RECENT_TRADES`` trades as (price ticks, qty
        lots, trade id), oldest first, looked up over at most ``scan`` events back from its
        last one. Without a source, or when the range is unknown (restored from an older
        snapshot), there is no ``trades`` key (the client reads that as "not known").
        """
        sym = symbol if type(symbol) is str and len(symbol) <= MAX_ID_LEN else ""
        ident = oid if type(oid) is str and len(oid) <= MAX_ID_LEN else ""
        book = self.books.get(sym) if sym else None
        if book is not None and ident and type(account) is str:
            order = book.orders.get(ident)
            if order is not None:
                if order.account == account:
                    status = {
                        "state": STATE_LIVE,
                        "symbol": sym,
                        "id": ident,
                        "side": order.side,
                        "price": order.price,
                        "qty": order.qty,
                        "filled": order.filled,
                    }
                    if events is not None:
                        status["trades"] = order_trades(
                            events, sym, ident, order.seq, self.seq, scan
                        )
                    return status
            else:
                rec = book.finished.get(ident)
                if rec is not None and rec[0] == account:
                    _, state, filled, reason, first, last = rec
                    status = {"state": state, "symbol": sym, "id": ident, "filled": filled}
                    if events is not None and last:
                        status["trades"] = order_trades(events, sym, ident, first, last, scan)
                    if reason is not None:
                        status["reason"] = reason
                    return status
        return {"state": STATE_UNKNOWN, "symbol": sym, "id": ident}

    def trade_range(self, symbol: object, oid: object) -> tuple[int, int] | None:
        """Seqs (first, last) between which a live or recently finished order's trades are
        (its accepted event .. its last event, or the engine's seq while it is live); None
        when the order is neither, or the range is unknown (restored from an older snapshot).
        For a caller that looks trades up itself (``order_trades`` does it given a source)."""
        book = self.books.get(symbol) if type(symbol) is str else None
        if book is None or type(oid) is not str:
            return None
        order = book.orders.get(oid)
        if order is not None:
            return order.seq, self.seq
        rec = book.finished.get(oid)
        if rec is None or not rec[5]:
            return None
        return rec[4], rec[5]

    def book(self, symbol: str) -> Book | None:
        """The book of a known symbol (created on first use), or None for an unknown symbol."""
        book = self.books.get(symbol)
        if book is None and type(symbol) is str:
            market = self.markets.get(symbol)
            if market is not None:
                book = self.books[symbol] = Book(symbol, market)
        return book

    def resting(self) -> int:
        return sum(len(b.orders) for b in self.books.values())

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue identically (msgpack-able plain data).

        Shape (version 4)::

            {"version": 4, "seq": int, "recent": window, "recent_left": int,
             "books": {symbol: pair state}}

        where a pair state is ``Book.snapshot()`` plus ``"recent"``: that pair's recently
        finished orders as ``(id, account, state, filled, reason, first, last, gen)`` (first,
        last: the seqs of its accepted and last events), ``gen`` 0 for the previous generation
        and 1 for the current one, and ``recent_left`` is how many more finished orders the
        current generation takes. Older versions are still read by ``restore``: version 3
        (``(id, account, state, filled, trades, reason, gen)``, orders with a trade list),
        version 2 (``n``, a position in a FIFO, in place of ``gen``) and version 1 (no
        ``version`` key, 6-field orders, no ``recent``); their trade lists are dropped and
        their orders' trade ranges are unknown (status without ``trades``).
        """
        books = {}
        for symbol in sorted(self.books):
            books[symbol] = self.snapshot_pair(symbol)
        return {
            "version": 4,
            "seq": self.seq,
            "recent": self.recent_limit,
            "recent_left": self._left,
            "books": books,
        }

    @classmethod
    def restore(
        cls,
        state: Mapping[str, Any],
        markets: Mapping[str, Market],
        recent: int = DEFAULT_RECENT,
    ) -> Engine:
        """An engine that continues exactly where the one that made ``state`` stood.

        Reads versions 1 to 4 of ``snapshot``. Raises ValueError (naming the pair) when
        the state cannot be used with ``markets``, e.g. a book of a market this engine does
        not know. A version 3 or 4 state of the same window is restored generation for
        generation; otherwise (version 2, or another window) the finished orders are recorded again,
        oldest first, as if they finished in that order.
        """
        version = state.get("version", 1)
        if version not in (1, 2, 3, 4):
            raise ValueError(f"snapshot version {version!r} is newer than this engine knows")
        seq = state["seq"]
        if type(seq) is not int or seq < 0:
            raise ValueError(f"snapshot seq must be a non-negative int, got {seq!r}")
        engine = cls(markets, seq=seq, recent=recent)
        finished: list[tuple[tuple, Book]] = []
        for symbol, pair in state["books"].items():
            engine.restore_pair(symbol, pair, _recent=False, _since=seq)
            book = engine.books[symbol]
            try:
                finished.extend((e, book) for e in _finished_entries(book, pair))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"pair {symbol}: unusable state ({exc})") from None
        left = state.get("recent_left")
        if version >= 3 and state.get("recent") == recent and engine._exact(finished, left):
            return engine
        # oldest first: version 2 by FIFO position, version 3 by generation (stable sort)
        finished.sort(key=lambda eb: eb[0][7])
        engine._restore_recent(finished)
        return engine

    def _exact(self, finished: list[tuple[tuple, Book]], left: Any) -> bool:
        """Install version-3 generations as they were; False (nothing changed) if they do not
        fit this engine's window."""
        cur = sum(1 for e, _ in finished if e[7] == 1)
        prev = len(finished) - cur
        gen = self.gen_size
        if (
            type(left) is not int
            or any(e[7] not in (0, 1) for e, _ in finished)
            or cur + left != gen
            or left < 0
            or prev > (gen if self._keep_prev else 0)
        ):
            return False
        finished = sorted(finished, key=lambda eb: eb[0][7])  # previous generation first
        for (oid, account, state, filled, reason, first, last, g), book in finished:
            book.finished[oid] = (account, state, filled, reason, first, last)
            if not g:
                book.nprev += 1
        self._left = left
        return True

    def snapshot_pair(self, symbol: str) -> dict[str, Any]:
        """One pair's state with its recent-results entries; KeyError for a pair with no book."""
        book = self.books[symbol]
        pair = book.snapshot()
        n = book.nprev
        pair["recent"] = [
            (oid, *rec, 0 if i < n else 1) for i, (oid, rec) in enumerate(book.finished.items())
        ]
        return pair

    def restore_pair(
        self, symbol: str, state: Mapping[str, Any], _recent: bool = True, _since: int = -1
    ) -> None:
        """Install one pair's state (from ``snapshot_pair``) into this engine.

        The pair must be a known market with no live orders here; any recent results this
        engine had for it are replaced by the state's (recorded again, oldest first, as the
        latest to finish here). The seq is not touched: the engine's seq is its own, the
        pair's trade ids travel with it. Orders of an older layout get this engine's seq as
        their accept seq; finished orders keep their seq ranges only when the pair stays on
        this engine's seq line (``restore``): moved to another engine they would point into
        another event stream, so there they are unknown (status without ``trades``).
        """
        market = self.markets.get(symbol) if type(symbol) is str else None
        if market is None:
            raise ValueError(f"state has a book for unknown market {symbol!r} (markets file?)")
        old = self.books.get(symbol)
        if old is not None and old.orders:
            raise ValueError(f"pair {symbol} already has live orders here")
        book = Book(symbol, market)
        try:
            book.restore(state, self.seq if _since < 0 else _since)
            finished = [(e, book) for e in _finished_entries(book, state)] if _recent else []
            if _since < 0:
                for o in book.orders.values():
                    o.seq = self.seq
                finished = [((*e[:5], 0, 0, e[7]), b) for e, b in finished]
            book.check_integrity()
        except (KeyError, TypeError, IndexError, ValueError, IntegrityError) as exc:
            raise ValueError(f"pair {symbol}: unusable state ({exc})") from None
        if old is not None:
            # its current-generation entries leave with it
            self._left += len(old.finished) - old.nprev
        self.books[symbol] = book
        finished.sort(key=lambda eb: eb[0][7])
        self._restore_recent(finished)

    def _restore_recent(self, finished: list[tuple[tuple, Book]]) -> None:
        for (oid, account, state, filled, reason, first, last, _), book in finished:
            self._finish(book, oid, (account, state, filled, reason, first, last))

    def check_integrity(self) -> None:
        """Raise IntegrityError unless every book is internally consistent (see Book)."""
        if type(self.seq) is not int or self.seq < 0:
            raise IntegrityError(f"engine seq {self.seq!r}")
        for symbol, book in self.books.items():
            if book.symbol != symbol:
                raise IntegrityError(f"book of {book.symbol} stored under {symbol}")
            if self.markets.get(symbol) is not book.market:
                raise IntegrityError(f"book {symbol}: market differs from the engine's table")
            book.check_integrity()
        gen, left = self.gen_size, self._left
        prev = sum(b.nprev for b in self.books.values())
        cur = sum(len(b.finished) for b in self.books.values()) - prev
        if not 0 <= left <= gen or cur != gen - left:
            raise IntegrityError(f"current generation holds {cur}, size {gen}, {left} left")
        if prev > (gen if self._keep_prev else 0):
            raise IntegrityError(f"previous generation holds {prev}, window {self.recent_limit}")
        seq = self.seq
        for symbol, book in self.books.items():
            for oid, o in book.orders.items():
                if o.seq > seq:
                    raise IntegrityError(f"{symbol}: order {oid!r} accepted at {o.seq} > {seq}")
            for oid, rec in book.finished.items():
                if rec[5] > seq:
                    raise IntegrityError(f"{symbol}: order {oid!r} finished at {rec[5]} > {seq}")

    # ------------------------------------------------------------------ commands

    def _new(self, cmd: Any, out: list[Event]) -> None:
        # One cheap gate for the common, valid case; precise reasons come from the slow path.
        _, symbol, oid, account, side, otype, price, qty, tif, post_only, stp = cmd
        book = self.books.get(symbol)
        if book is None:
            book = self.book(symbol)  # the first command of a known symbol creates its book
        if (
            book is None
            or type(oid) is not str
            or type(account) is not str
            or type(qty) is not int
            or type(side) is not int
            or type(otype) is not int
            or type(tif) is not int
            or type(stp) is not int
            or type(post_only) is not bool
            or (side, otype, tif, post_only, stp) not in _VALID_NEW
            or not 0 < len(oid) <= MAX_ID_LEN
            or not 0 < len(account) <= MAX_ID_LEN
            or not 0 < qty <= book.market.max_qty_lots
            or (
                type(price) is not int or not 0 < price <= book.market.max_price_ticks
                if otype == LIMIT
                else price is not None
            )
        ):
            return self._reject(symbol, oid, *self._why_new_invalid(cmd), out)
        market = book.market
        limit_key = _NO_LIMIT if otype else (price if side == BUY else -price)
        if oid in book.orders:
            return self._reject(
                symbol, oid, "duplicate id: a live order has it", REJ_DUPLICATE_ID, out
            )
        if oid in book.finished:
            return self._reject(
                symbol, oid, f"duplicate id {oid} (recently finished)", REJ_DUPLICATE_ID, out
            )

        opp = book.sides[side ^ 1]
        if post_only:
            key = _top(opp)
            if key is not None and key <= limit_key:
                best = opp.levels[key].price
                return self._reject(
                    symbol,
                    oid,
                    f"post_only order would cross best {_SIDE_NAMES[side ^ 1]} "
                    f"{market.price_str(best)}",
                    REJ_POST_ONLY_CROSS,
                    out,
                )
        seq = self.seq + 1
        out.append((EV_ACCEPTED, seq, symbol, oid))
        self.seq = seq
        book.accepted += 1
        if tif == FOK and _fillable(opp, limit_key, qty, account, stp) < qty:
            self.seq = last = seq + 1
            out.append((EV_CANCELLED, last, symbol, oid, "fok", qty))
            book.cancelled += 1
            self._finish(book, oid, (account, STATE_CANCELLED, 0, "fok", seq, last))
            return None
        heap = opp.heap
        if heap and heap[0] <= limit_key:  # may be a stale key; _match sorts that out
            left = _match(self, book, side, limit_key, qty, oid, account, stp, out)
            if left > 0:
                if tif == GTC:
                    o = Order(oid, account, side, price, left, stp, post_only, seq, qty - left)
                    _rest(book, o)
                    return None
                self.seq = last = self.seq + 1
                out.append((EV_CANCELLED, last, symbol, oid, "ioc", left))
                book.cancelled += 1
                rec: Finished = (account, STATE_CANCELLED, qty - left, "ioc", seq, last)
            elif left == 0:
                rec = (account, STATE_FILLED, qty, None, seq, self.seq)
            else:  # stopped by STP (left = -1 - open qty it cancelled)
                rec = (account, STATE_CANCELLED, qty + 1 + left, "stp", seq, self.seq)
        elif tif == GTC:
            _rest(book, Order(oid, account, side, price, qty, stp, post_only, seq))
            return None
        else:  # IOC with nothing to cross: the cancel event, then the order is finished
            self.seq = last = seq + 1
            out.append((EV_CANCELLED, last, symbol, oid, "ioc", qty))
            book.cancelled += 1
            rec = (account, STATE_CANCELLED, 0, "ioc", seq, last)
        if self._left:  # inlined _finish
            self._left -= 1
            book.finished[oid] = rec
        else:
            self._store(book, oid, rec)
        return None

    def _finish(self, book: Book, oid: str, rec: Finished) -> None:
        """Record a finished order in the recent-results index (see ``__init__``).

        ``rec`` is ``(account, state, filled lots, cancel reason or None, seq of its accepted
        event, seq of its last event)``, kept under the order's id in its book's ``done``:
        nothing per fill, and no trade list (``order_status`` finds the trades between the two
        seqs). The fast path (current generation not full) is inlined in ``_new``, ``_cancel``
        and ``_match``; keep them in step.
        """
        if self._left:
            self._left -= 1
            book.finished[oid] = rec
        else:
            self._store(book, oid, rec)

    def _store(self, book: Book, oid: str, rec: tuple) -> None:
        """Record ``rec`` when the current generation is full: rotate, then record (window 0:
        nothing is kept)."""
        gen = self.gen_size
        if not gen:
            return
        keep = self._keep_prev
        for b in self.books.values():
            b.forget_previous(keep)
        book.finished[oid] = rec
        self._left = gen - 1

    def _why_new_invalid(self, cmd: Any) -> tuple[str, int]:
        """The precise reason and code a ``new`` failed the fast validity gate (slow path only).

        A field of the wrong type is ``malformed``; a field of the right type with a value or
        combination that is not allowed is ``invalid`` (see the codes in ``codes.py``).
        """
        if len(cmd) != 11:
            return "new: expected 11 fields", REJ_MALFORMED
        _, symbol, oid, account, side, otype, price, qty, tif, post_only, stp = cmd
        book = self.book(symbol) if type(symbol) is str else None
        if book is None:
            return _unknown_symbol(symbol)
        if type(oid) is not str or not 0 < len(oid) <= MAX_ID_LEN:
            return f"id must be a string of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
        if type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
            return f"account must be a string of 1..{MAX_ID_LEN} chars", REJ_MALFORMED
        for what, value, top in (("side", side, 1), ("type", otype, 1), ("tif", tif, 2)):
            if type(value) is not int or not 0 <= value <= top:
                return f"unknown {what} {value!r}", _int_code(value)
        if type(stp) is not int or not 0 <= stp <= 3:
            return f"unknown stp {stp!r}", _int_code(stp)
        if type(post_only) is not bool:
            return "post_only must be a boolean", REJ_MALFORMED
        market = book.market
        if type(qty) is not int:
            return "qty must be an integer number of lots", REJ_MALFORMED
        if not 0 < qty <= market.max_qty_lots:
            return _range_reason("qty", qty, market), REJ_OUT_OF_RANGE
        if otype == LIMIT:
            if type(price) is not int:
                code = REJ_INVALID if price is None else REJ_MALFORMED
                return "limit order needs an integer price in ticks", code
            if not 0 < price <= market.max_price_ticks:
                return _range_reason("price", price, market), REJ_OUT_OF_RANGE
        else:
            if price is not None:
                return "market order must not have a price", REJ_INVALID
            if post_only:
                return "post_only market order is not allowed", REJ_INVALID
            if tif == GTC:
                return "market order tif must be ioc or fok", REJ_INVALID
        if post_only and tif != GTC:
            return f"post_only requires tif gtc (got {('gtc', 'ioc', 'fok')[tif]})", REJ_INVALID
        return "malformed command", REJ_MALFORMED

    def _cancel(self, cmd: Any, out: list[Event]) -> None:
        if len(cmd) != 4:
            return self._reject(
                _field(cmd, 1), _field(cmd, 2), "cancel: expected 4 fields", REJ_MALFORMED, out
            )
        _, symbol, oid, account = cmd
        order = self._live_order(symbol, oid, account, out)
        if order is None:
            return None
        book = self.books[symbol]
        qty = order.qty
        _unlink(book, order)
        self.seq = seq = self.seq + 1
        out.append((EV_CANCELLED, seq, symbol, oid, "user", qty))
        book.cancelled += 1
        rec = (order.account, STATE_CANCELLED, order.filled, "user", order.seq, seq)
        if self._left:  # inlined _finish
            self._left -= 1
            book.finished[oid] = rec
        else:
            self._store(book, oid, rec)
        return None

    def _amend(self, cmd: Any, out: list[Event]) -> None:
        if len(cmd) != 6:
            return self._reject(
                _field(cmd, 1), _field(cmd, 2), "amend: expected 6 fields", REJ_MALFORMED, out
            )
        _, symbol, oid, account, qty, price = cmd
        order = self._live_order(symbol, oid, account, out)
        if order is None:
            return None
        book = self.books[symbol]
        market = book.market
        if qty is None and price is None:
            return self._reject(symbol, oid, "amend needs qty and/or price", REJ_INVALID, out)
        if qty is not None:
            if type(qty) is not int:
                return self._reject(
                    symbol, oid, "qty must be an integer number of lots", REJ_MALFORMED, out
                )
            if qty <= 0:
                return self._reject(
                    symbol, oid, "qty must be > 0 (cancel to remove)", REJ_OUT_OF_RANGE, out
                )
            if qty > order.qty:
                return self._reject(
                    symbol,
                    oid,
                    f"amend cannot increase qty (open {market.qty_str(order.qty)}, "
                    f"asked {market.qty_str(qty)})",
                    REJ_AMEND_INCREASE,
                    out,
                )
        else:
            qty = order.qty
        if price is not None:
            if type(price) is not int:
                return self._reject(
                    symbol, oid, "price must be an integer number of ticks", REJ_MALFORMED, out
                )
            if not 0 < price <= market.max_price_ticks:
                return self._reject(
                    symbol, oid, _range_reason("price", price, market), REJ_OUT_OF_RANGE, out
                )
        side = order.side
        if price is None or price == order.price:
            # Same price: only the open quantity shrinks, so time priority is kept.
            diff = order.qty - qty
            if diff:
                key = -order.price if side == BUY else order.price
                book.sides[side].levels[key].total -= diff
                order.qty = qty
            self.seq = seq = self.seq + 1
            out.append((EV_AMENDED, seq, symbol, oid, qty, order.price))
            return None
        # New price: the order loses its place, and may trade at once as a taker.
        limit_key = price if side == BUY else -price
        opp = book.sides[side ^ 1]
        if order.post_only:
            key = _top(opp)
            if key is not None and key <= limit_key:
                return self._reject(
                    symbol,
                    oid,
                    f"post_only order would cross best {_SIDE_NAMES[side ^ 1]} "
                    f"{market.price_str(opp.levels[key].price)}",
                    REJ_POST_ONLY_CROSS,
                    out,
                )
        _unlink(book, order)
        self.seq = seq = self.seq + 1
        out.append((EV_AMENDED, seq, symbol, oid, qty, price))
        left = _match(self, book, side, limit_key, qty, oid, account, order.stp, out)
        filled = order.filled + (qty - left if left >= 0 else qty + 1 + left)
        first = order.seq  # the order keeps its identity: its trades before the amend count
        if left > 0:
            _rest(
                book,
                Order(oid, account, side, price, left, order.stp, order.post_only, first, filled),
            )
        elif left == 0:
            self._finish(book, oid, (account, STATE_FILLED, filled, None, first, self.seq))
        else:
            self._finish(book, oid, (account, STATE_CANCELLED, filled, "stp", first, self.seq))
        return None

    def _edge_reject(self, cmd: Any, out: list[Event]) -> None:
        """A command the edge could not decode; it still gets a seq so replay stays identical.

        The code is the command's 5th field when that is a known code; a 4-field command (a
        journal written before codes existed) or an unknown code gives ``REJ_MALFORMED``.
        """
        reason = _field(cmd, 3)
        reason = reason if type(reason) is str and reason else "rejected"
        code = _field(cmd, 4)
        if type(code) is not int or not 0 <= code < len(REJECT_NAMES):
            code = REJ_MALFORMED
        self._reject(_field(cmd, 1), _field(cmd, 2), reason, code, out)

    # ------------------------------------------------------------------ helpers

    def _live_order(self, symbol: object, oid: object, account: object, out: list[Event]):
        if type(symbol) is not str:  # checked here: the compiled build would raise instead
            return self._reject(symbol, oid, *_unknown_symbol(symbol), out)
        book = self.books.get(symbol)
        if book is None:
            book = self.book(symbol)
            if book is None:
                return self._reject(symbol, oid, *_unknown_symbol(symbol), out)
        if type(oid) is not str:
            return self._reject(symbol, oid, "id must be a string", REJ_MALFORMED, out)
        order = book.orders.get(oid)
        if order is None:
            return self._reject(
                symbol, oid, "order is not live (unknown or finished)", REJ_NOT_LIVE, out
            )
        if account != order.account:
            return self._reject(
                symbol, oid, "order belongs to another account", REJ_WRONG_ACCOUNT, out
            )
        return order

    def _reject(
        self, symbol: object, oid: object, reason: str, code: int, out: list[Event]
    ) -> None:
        if len(reason) > MAX_REASON_LEN:  # reasons may quote client input: keep them small
            reason = reason[:MAX_REASON_LEN]
        self.rejected[code] += 1
        self.seq = seq = self.seq + 1
        out.append(
            (
                EV_REJECTED,
                seq,
                symbol if type(symbol) is str else "",
                oid if type(oid) is str else "",
                reason,
                code,
            )
        )
        return None


# ---------------------------------------------------------------------- module-level hot path


def _match(
    eng: Engine,
    book: Book,
    side: int,
    limit_key: int,
    qty: int,
    oid: str,
    account: str,
    stp: int,
    out: list[Event],
) -> int:
    """Cross ``qty`` against the opposite side up to ``limit_key``; return what is left.

    A maker that trades partly adds to its ``filled``; a maker that finishes (filled, or
    cancelled by STP) is recorded in the recent-results index here; no trade lists. Returns
    the open remainder (> 0: caller rests or IOC-cancels it), 0 when fully filled, or
    ``-1 - q`` when self-trade prevention stopped the taker with ``q`` lots open (its cancel
    event is emitted here; the caller records the finished taker).
    """
    opp = book.sides[side ^ 1]
    levels = opp.levels
    heap = opp.heap
    symbol = book.symbol
    seq = eng.seq
    append = out.append
    orders = book.orders
    trade_id = book.trade_id
    while qty:
        while heap:
            key = heap[0]
            if key in levels:
                break
            heappop(heap)
        else:
            break
        if key > limit_key:
            break
        level = levels[key]
        dq = level.orders
        price = level.price
        while dq:
            maker = dq[0]
            mq = maker.qty
            if not mq:
                dq.popleft()
                continue
            if stp and maker.account == account:
                if stp != STP_CANCEL_TAKER:  # cancel_maker / cancel_both: maker goes
                    dq.popleft()
                    level.total -= mq
                    level.live -= 1
                    maker.qty = 0
                    del orders[maker.id]
                    seq += 1
                    append((EV_CANCELLED, seq, symbol, maker.id, "stp", mq))
                    book.cancelled += 1
                    eng._finish(
                        book,
                        maker.id,
                        (maker.account, STATE_CANCELLED, maker.filled, "stp", maker.seq, seq),
                    )
                if stp != STP_CANCEL_MAKER:  # cancel_taker / cancel_both: taker goes
                    seq += 1
                    append((EV_CANCELLED, seq, symbol, oid, "stp", qty))
                    book.cancelled += 1
                    qty = -1 - qty
                    break
                continue
            trade_id += 1
            seq += 1
            if mq > qty:
                maker.qty = mq - qty
                level.total -= qty
                append((EV_TRADE, seq, symbol, price, qty, oid, maker.id, side, trade_id))
                maker.filled += qty
                qty = 0
                break
            dq.popleft()
            level.total -= mq
            level.live -= 1
            maker.qty = 0
            mid = maker.id
            del orders[mid]
            append((EV_TRADE, seq, symbol, price, mq, oid, mid, side, trade_id))
            rec = (maker.account, STATE_FILLED, maker.filled + mq, None, maker.seq, seq)
            if eng._left:  # inlined _finish
                eng._left -= 1
                book.finished[mid] = rec
            else:
                eng._store(book, mid, rec)
            qty -= mq
            if not qty:
                break
        if not level.live:
            del levels[key]
            heappop(heap)
        if qty < 0:
            break
    eng.seq = seq
    book.trade_id = trade_id
    return qty


def _unlink(book: Book, order: Order) -> None:
    """Take a live order out of the book in O(1): lazy removal from its level's deque."""
    side = order.side
    s = book.sides[side]
    key = -order.price if side == BUY else order.price
    level = s.levels[key]
    level.total -= order.qty
    level.live -= 1
    order.qty = 0
    del book.orders[order.id]
    if not level.live:
        del s.levels[key]
    elif len(level.orders) > 2 * level.live + 16:
        level.orders = deque([o for o in level.orders if o.qty])


def _top(side) -> int | None:
    heap, levels = side.heap, side.levels
    while heap:
        key = heap[0]
        if key in levels:
            return key
        heappop(heap)
    return None


def _fillable(opp, limit_key: int, want: int, account: str, stp: int) -> int:
    """How much a taker could fill up to ``limit_key``, exactly as ``_match`` would (for FOK).

    Stops counting as soon as ``want`` is reached, so a FOK costs no more than the match it
    precedes. With STP, same-account makers are skipped (cancel_maker) or end the walk
    (cancel_taker/cancel_both), mirroring what matching would do.
    """
    got = 0
    for key in opp.iter_keys():
        if key > limit_key:
            break
        level = opp.levels[key]
        if stp == STP_NONE:
            got += level.total
        else:
            for o in level.orders:
                if not o.qty:
                    continue
                if o.account == account:
                    if stp == STP_CANCEL_MAKER:
                        continue
                    return got
                got += o.qty
                if got >= want:
                    return got
        if got >= want:
            return got
    return got


def _finished_entries(book: Book, pair: Mapping[str, Any]) -> list[tuple]:
    """A pair state's recent results, validated against ``book``, as version-4 tuples
    ``(id, account, state, filled, reason, first, last, gen)``. Version 3 and 2 entries
    ``(id, account, state, filled, trades, reason, gen or n)`` get an unknown range (0, 0);
    version 1 has none."""
    symbol = book.symbol
    seen: set[str] = set()
    out = []
    for entry in pair.get("recent", ()):
        if len(entry) == 8:
            oid, account, state, filled, reason, first, last, n = entry
        else:
            oid, account, state, filled, _trades, reason, n = entry
            first = last = 0
        ok_reason = reason is None if state == STATE_FILLED else reason in _CANCEL_REASONS
        if (
            type(oid) is not str
            or type(account) is not str
            or state not in (STATE_FILLED, STATE_CANCELLED)
            or not ok_reason
            or type(filled) is not int
            or filled < 0
            or type(n) is not int
            or type(first) is not int
            or type(last) is not int
            or not 0 <= first <= last
        ):
            raise ValueError(f"pair {symbol}: bad recent result {tuple(entry)!r:.200}")
        if oid in seen or oid in book.orders:
            raise ValueError(f"pair {symbol}: order {oid!r} finished twice, or finished and live")
        seen.add(oid)
        out.append((oid, account, state, filled, reason, first, last, n))
    return out


def order_trades(
    events: EventSource, symbol: str, oid: str, first: int, last: int, scan: int = TRADE_SCAN
) -> list[tuple[int, int, int]]:
    """The most recent ``RECENT_TRADES`` trades of order ``oid`` of ``symbol`` as (price
    ticks, qty lots, trade id), oldest first, from the events of seqs ``first``..``last``.

    Walks back from ``last`` in chunks, over at most ``scan`` events, and stops early once it
    has ``RECENT_TRADES``, or at the source's oldest event (where ``events`` returns None for
    a slice, the slice is halved until it fits or is one event). An id is
    unique in its book over that range (a new order cannot reuse the id of a live or recently
    finished order), so matching taker or maker id and symbol finds exactly its trades.
    """
    found: list[tuple[int, int, int]] = []
    lo = max(first, last - scan + 1, 1)
    hi = last
    size = _CHUNK
    while hi >= lo and len(found) < RECENT_TRADES:
        start = max(lo, hi - size + 1)
        try:
            chunk = events(start, hi)
        except Exception:  # a source that fails is a source with nothing at hand
            chunk = None
        if not chunk:
            # the source's oldest event may lie inside this slice: halve it to get up to there
            if start == hi:
                break
            size = (hi - start + 1) // 2
            continue
        for e in reversed(chunk):
            if e[0] == EV_TRADE and (e[5] == oid or e[6] == oid) and e[2] == symbol:
                found.append((e[3], e[4], e[8]))
                if len(found) == RECENT_TRADES:
                    break
        hi = start - 1
    found.reverse()
    return found


def _field(cmd: object, i: int) -> object:
    try:
        return cmd[i]  # type: ignore[index]
    except Exception:
        return None


def _unknown_symbol(symbol: object) -> tuple[str, int]:
    if type(symbol) is not str:
        return "symbol must be a string", REJ_MALFORMED
    return f"unknown symbol {symbol}", REJ_UNKNOWN_SYMBOL


def _int_code(value: object) -> int:
    """An enum field out of range is ``invalid``; one of another type is ``malformed``."""
    return REJ_INVALID if type(value) is int else REJ_MALFORMED


def _range_reason(what: str, value: int, market: Market) -> str:
    if value <= 0:
        return f"{what} must be > 0"
    if what == "price":
        return f"price above max {market.max_price}"
    return f"qty above max {market.max_qty}"
