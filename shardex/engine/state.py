"""The engine apart from its command path: construction, the recent-results index, order
status queries, snapshots and restore, and integrity checks.

``Engine`` (``engine.py``) subclasses ``EngineState`` and adds ``apply`` and the matching hot
path; these parts run per query, per snapshot or per finished order, not per command, so they
live here to keep ``engine.py`` about matching. Same purity rules as the engine: no sockets,
no clock, no I/O. Part of the compiled build (``shardex.engine.SOURCES``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shardex.engine.admin import restore_rules, rules_snapshot
from shardex.engine.book import Book, Finished, IntegrityError
from shardex.engine.codes import (
    DEFAULT_RECENT,
    EV_TRADE,
    GTC,
    LIMIT,
    MAX_ID_LEN,
    OP_NEW,
    RECENT_TRADES,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_MOVING,
    REJ_OUT_OF_RANGE,
    REJ_UNKNOWN_SYMBOL,
    REJECT_NAMES,
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_LIVE,
    STATE_UNKNOWN,
    Event,
)
from shardex.engine.expiry import OWN_REASONS, Expiries, new_with_opts
from shardex.engine.listing import (
    adopt_definition,
    listed_snapshot,
    pair_definition,
    restore_listed,
)
from shardex.engine.markets import Market
from shardex.engine.moves import moves_snapshot, pair_book, restore_moves
from shardex.engine.stops import NEW_FIELDS, check, load, save
from shardex.engine.stops import status as pending_status

# An order status looks its trades up over at most this many events back from its last one
# (about 10 ms of Python at worst), in slices of _CHUNK.
TRADE_SCAN = 1 << 17
_CHUNK = 4096
# ``events(first, last)``: the events of seqs first..last in order, or None when not at hand.
EventSource = Callable[[int, int], "list[Event] | None"]
_CANCEL_REASONS = ("user", "ioc", "fok", "stp", "delist", *OWN_REASONS)


class EngineState:
    """The books, the seq and the recent-results index of one shard, and everything done with
    them outside the command path (see ``Engine`` for the commands)."""

    def __init__(
        self, markets: Mapping[str, Market], seq: int = 0, recent: int = DEFAULT_RECENT
    ) -> None:
        if type(recent) is not int or recent < 0:
            raise ValueError(f"recent must be an int >= 0, got {recent!r}")
        # (a copy: a listing adds to it, ``shardex.engine.listing``; ``listed`` is the record)
        self.markets: dict[str, Market] = dict(markets)
        self.listed: dict[str, list[str]] = {}
        self.books: dict[str, Book] = {}
        self.seq = seq
        # exchange time (ms since the Unix epoch, UTC) of the batch being applied: set only by
        # journaled ``OP_TIME`` commands (``set_time``), never read from a clock; snapshotted
        self.ts = 0
        # gtd/day orders by expire time (``expiry``): part of each pair's snapshot
        self.expiry = Expiries()
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
        # Pairs moved away (symbol → (to shard, seq of the hand-off)) with the state each took
        # (kept for the mover: ``shardex.engine.moves``), and pairs moved in (symbol → (from
        # shard, seq of the hand-off there)). Part of the snapshot.
        self.moved: dict[str, tuple[int, int]] = {}
        self.handed: dict[str, Any] = {}
        self.adopted: dict[str, tuple[int, int]] = {}
        self.prebuilt: dict[str, Book] = {}  # (transient: ``moves.pair_book``)
        # the book of a pair with a trigger book (``shardex.engine.stops``) that traded in the
        # command being applied: its triggers are checked when the command is done (then None)
        self.touched: Any = None

    # ------------------------------------------------------------------ public API

    def set_time(self, ts: Any) -> None:
        """An ``OP_TIME`` command: exchange time moves forward to ``ts`` (an older or
        malformed one changes nothing: time never goes backwards, whatever a record says)."""
        if type(ts) is int and ts > self.ts:
            self.ts = ts

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
                if rec is None:
                    pending = pending_status(book, ident, account)
                    if pending is not None:
                        return pending
                elif rec[0] == account:
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
        if book is None and type(symbol) is str and symbol not in self.moved:
            market = self.markets.get(symbol)
            if market is not None:
                book = self.books[symbol] = Book(symbol, market)
        return book

    def no_book(self, symbol: object) -> tuple[str, int]:
        """Why ``symbol`` has no book here (reason, code): moved away, or no such market."""
        moved = self.moved.get(symbol) if type(symbol) is str else None
        if moved is not None:
            return f"pair {symbol} moved to shard {moved[0]} (at seq {moved[1]})", REJ_MOVING
        return _unknown_symbol(symbol)

    def resting(self) -> int:
        return sum(len(b.orders) for b in self.books.values())

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue identically (msgpack-able plain data).

        Shape (version 4)::

            {"version": 4, "seq": int, "recent": window, "recent_left": int,
             "books": {symbol: pair state}, "ts": exchange time in ms}

        (``ts`` is absent from snapshots written before exchange time existed: read as 0.)

        where a pair state is ``Book.snapshot()`` plus ``"recent"``: that pair's recently
        finished orders as ``(id, account, state, filled, reason, first, last, gen)`` (first,
        last: the seqs of its accepted and last events), ``gen`` 0 for the previous generation
        and 1 for the current one, and ``recent_left`` is how many more finished orders the
        current generation takes; a pair that traded adds ``"last"`` (its last trade price) and
        one with pending stop orders ``"stops"`` (``shardex.engine.stops.save``; the snapshot is
        then version 6, so that an engine that would drop them refuses it). Older versions are
        still read by ``restore``: version 3
        (``(id, account, state, filled, trades, reason, gen)``, orders with a trade list),
        version 2 (``n``, a position in a FIFO, in place of ``gen``) and version 1 (no
        ``version`` key, 6-field orders, no ``recent``); their trade lists are dropped and
        their orders' trade ranges are unknown (status without ``trades``).
        """
        books = {}
        for symbol in sorted(self.books):
            books[symbol] = self.snapshot_pair(symbol)
        state = {
            "version": 4,
            "seq": self.seq,
            "recent": self.recent_limit,
            "recent_left": self._left,
            "books": books,
            "ts": self.ts,
        }
        listed = listed_snapshot(self)
        if listed is not None:  # (pairs listed at runtime: absent when none)
            state["listed"] = listed
        moves = moves_snapshot(self)
        if moves is not None:  # version 5: version 4 plus the pairs' moves
            state["version"] = 5
            state["moves"] = moves
        if any("stops" in pair for pair in books.values()):
            # version 6: pending stop orders, which an engine that predates them would drop
            state["version"] = 6
        return state

    def _install(self, state: Mapping[str, Any]) -> None:
        """Install a whole snapshot into this new engine (the body of ``Engine.restore``): every
        pair, then the recent results, generation for generation when the window matches."""
        seq = self.seq
        self.set_time(state.get("ts", 0))  # (snapshots older than exchange time: 0)
        restore_listed(self, state.get("listed"))
        finished: list[tuple[tuple, Book]] = []
        for symbol, pair in state["books"].items():
            self.restore_pair(symbol, pair, _recent=False, _since=seq)
            book = self.books[symbol]
            try:
                finished.extend((e, book) for e in _finished_entries(book, pair))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"pair {symbol}: unusable state ({exc})") from None
        restore_moves(self, state.get("moves"))
        left = state.get("recent_left")
        exact = state.get("version", 1) >= 3 and state.get("recent") == self.recent_limit
        if exact and self._exact(finished, left):
            return
        # oldest first: version 2 by FIFO position, version 3 by generation (stable sort)
        finished.sort(key=lambda eb: eb[0][7])
        self._restore_recent(finished)

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
        rules = rules_snapshot(book)
        if rules is not None:  # (a pair's state and limits: ``shardex.engine.admin``)
            pair["rules"] = rules
        save(book, pair)
        expiring, switches = self.expiry.pair_state(book), self.expiry.pair_switches(symbol)
        if expiring:  # (absent when none: older readers and older states need no key)
            pair["expire"] = expiring
        if switches:
            pair["deadman"] = switches
        definition = pair_definition(self, symbol)
        if definition is not None:  # (a listed pair: a move carries its definition)
            pair["market"] = definition
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
        if market is None and "market" in state:  # a listed pair, moved here
            market = adopt_definition(self, symbol, state["market"])
        if market is None:
            raise ValueError(f"state has a book for unknown market {symbol!r} (markets file?)")
        old = self.books.get(symbol)
        if old is not None and old.orders:
            raise ValueError(f"pair {symbol} already has live orders here")
        try:  # (an adoption's book may have been built ahead: ``moves.pair_book``)
            book = pair_book(self, symbol, market, state, _since)
            restore_rules(book, state.get("rules"))
            finished = [(e, book) for e in _finished_entries(book, state)] if _recent else []
            load(book, state, self.seq if _since < 0 else -1)
            if _since < 0:
                for o in book.orders.values():
                    o.seq = self.seq
                finished = [((*e[:5], 0, 0, e[7]), b) for e, b in finished]
            book.check_integrity()
            self.expiry.restore_pair(book, state.get("expire"))
            self.expiry.restore_switches(symbol, state.get("deadman"))
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
            check(book)
        for symbol in self.moved:
            if symbol in self.books:
                raise IntegrityError(f"pair {symbol} was handed off but still has a book")
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

    # ------------------------------------------------------------------ recent results, slow path
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

    def _unshaped(self, cmd: Any, out: list[Event]) -> None:
        """A command the fast paths refused by its shape: a new with options (13 fields: the
        plain unpack refused it before anything ran) goes to ``expiry.new_with_opts`` (stop,
        timed or plain); anything else is rejected with the most precise reason there is. Never
        raises."""
        try:
            if type(cmd) is tuple and cmd[0] == OP_NEW and len(cmd) == NEW_FIELDS:
                return new_with_opts(self, cmd, out)
            reason, code = (
                self._why_new_invalid(cmd) if cmd[0] == OP_NEW else ("malformed command",
                                                                     REJ_MALFORMED)
            )  # fmt: skip
        except Exception:
            reason, code = "malformed command", REJ_MALFORMED
        self._reject(_field(cmd, 1), _field(cmd, 2), reason, code, out)  # type: ignore

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
            return self.no_book(symbol)
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
        if not market.min_qty_lots <= qty <= market.max_qty_lots:
            return market.qty_refusal(qty)
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


def snapshot_seq(state: Mapping[str, Any]) -> int:
    """The seq of a snapshot ``Engine.restore`` can read; ValueError for a version this engine
    does not know or a seq that is not a non-negative int."""
    version = state.get("version", 1)
    if version not in (1, 2, 3, 4, 5, 6):
        raise ValueError(f"snapshot version {version!r} is newer than this engine knows")
    seq = state["seq"]
    if type(seq) is not int or seq < 0:
        raise ValueError(f"snapshot seq must be a non-negative int, got {seq!r}")
    return seq


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
