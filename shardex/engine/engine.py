"""The single-writer matching engine: many books, one sequence number, commands in, events out.

Pure on purpose (no sockets, clock, files or randomness): the same commands give the same
events byte for byte, which makes journaling, replay, recovery and moving a pair possible.

Commands and events are plain tuples of ints and strings (layouts: ``shardex.engine.codes``):
tuples, not objects, because the engine handles hundreds of thousands of commands per second
in CPython, where every attribute lookup or allocation on the hot path shows in the profile.
The edge (``shardex.wire.protocol``) turns them into JSON/msgpack with decimal strings.

Every client command produces at least one event (but a cancel-all with nothing open, and like
the leader's ``OP_TIME``, its ``OP_EXPIRE`` with nothing due). Every invalid command produces
exactly one ``rejected`` event with a precise reason and a stable ``REJ_*`` code, and changes
nothing. No input raises out of ``apply``. (Perp index prices: ``perps.py``.)

The command path only (queries, snapshots, recent results: ``EngineState``, ``state.py``; a
pair's rules: ``admin.py``). ``_match``, ``Engine._new`` and ``Engine._amend`` stay over the
60-line limit on purpose (``tests/unit/test_sizes.py`` names them): cut under it, the engine
took 6.5-7.1% more time per command (``bench/engine.py --against``, 2026-12-07).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from heapq import heappop
from typing import Any

from shardex.engine.admin import amend_refusal, cancel_refusal, new_refusal, set_rules
from shardex.engine.book import Book, Finished, Order
from shardex.engine.book import rest_order as _rest
from shardex.engine.book import unlink_order as _unlink
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
    OP_ADOPT,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_HANDOFF,
    OP_LIST,
    OP_MARKET_RULE,
    OP_NEW,
    OP_REJECT,
    OP_TIME,
    REJ_AMEND_INCREASE,
    REJ_DUPLICATE_ID,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_NOT_LIVE,
    REJ_OUT_OF_RANGE,
    REJ_POST_ONLY_CROSS,
    REJ_UNKNOWN_OP,
    REJ_WRONG_ACCOUNT,
    REJECT_NAMES,
    STATE_CANCELLED,
    STATE_FILLED,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    STP_NONE,
    Event,
)
from shardex.engine.expiry import cancel_all, expire_due, new_other
from shardex.engine.liquidation import PERP_OPS
from shardex.engine.listing import list_pair
from shardex.engine.markets import Market
from shardex.engine.moves import adopt, handoff
from shardex.engine.positions import amend_refusal as margin_amend
from shardex.engine.positions import on_match, perp_new
from shardex.engine.state import (  # noqa: F401 - TRADE_SCAN, EventSource, order_trades: old paths
    TRADE_SCAN,
    EngineState,
    EventSource,
    _field,
    _range_reason,
    _unknown_symbol,
    order_trades,
    snapshot_seq,
)
from shardex.engine.stops import fire, pending_of, touch

MAX_REASON_LEN = 200
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
_ADMIN = {OP_HANDOFF: handoff, OP_ADOPT: adopt, OP_MARKET_RULE: set_rules, OP_LIST: list_pair,
          **PERP_OPS}  # (perp pairs: ``engine.perps``, ``engine.positions``, ``engine.funding``)


class Engine(EngineState):
    """Owns every book of one shard. Not thread-safe by design: exactly one writer calls it.

    The command path lives here; construction, queries, snapshots and the recent-results
    index are inherited from ``EngineState`` (``state.py``)."""

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
            elif op == OP_TIME:
                self.set_time(cmd[1])
            elif op == OP_EXPIRE:
                expire_due(self, cmd, out)
            elif op == OP_CANCEL_ALL:
                cancel_all(self, cmd, out)
            elif op in _ADMIN:  # (a pair's move, a pair's rules)
                refused = _ADMIN[op](self, cmd, out)
                if refused is not None:
                    self._reject(_field(cmd, 1), "", refused[0], refused[1], out)
            else:
                self._reject(
                    _field(cmd, 1), _field(cmd, 2), f"unknown op {op!r}", REJ_UNKNOWN_OP, out
                )
        except (TypeError, IndexError, KeyError, ValueError, AttributeError):
            # Inputs of a shape the fast paths do not expect (wrong length, unhashable fields),
            # and news with options (by design: the plain path pays nothing for them).
            # Validation runs before any mutation, so rejecting here leaves the book untouched.
            self._unshaped(cmd, out)
        if self.touched is not None:  # a pair with pending stop orders traded: reached any?
            fire(self, out, _match, _fillable)

    def apply_many(self, cmds: Iterable[Any]) -> list[Event]:
        """Apply commands in order and return all their events (convenience for replay/tests)."""
        out: list[Event] = []
        apply = self.apply
        for cmd in cmds:
            apply(cmd, out)
        return out

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
        engine = cls(markets, seq=snapshot_seq(state), recent=recent)
        engine._install(state)
        return engine

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
            or not book.market.min_qty_lots <= qty <= book.market.max_qty_lots
            or (
                type(price) is not int or not 0 < price <= book.market.max_price_ticks
                if otype == LIMIT
                else price is not None
            )
        ):
            return new_other(self, cmd, out)  # a day/gtd order (``expiry``), or a reject
        market = book.market
        if book.gate is not None and (refused := new_refusal(book, book.gate, otype, price, qty)):
            return self._reject(symbol, oid, refused[0], refused[1], out)  # (a pair's rules)
        if book.positions is not None and book.positions.armed:  # (a perp pair: margin first)
            return perp_new(self, book, cmd, out)
        limit_key = _NO_LIMIT if otype else (price if side == BUY else -price)
        if oid in book.orders:
            return self._reject(symbol, oid, "duplicate id: a live order has it",
                                REJ_DUPLICATE_ID, out)  # fmt: skip
        if oid in book.finished:
            return self._reject(symbol, oid, f"duplicate id {oid} (recently finished)",
                                REJ_DUPLICATE_ID, out)  # fmt: skip
        if book.stops and oid in book.stops.orders:
            reason = "duplicate id: a pending order has it"
            return self._reject(symbol, oid, reason, REJ_DUPLICATE_ID, out)

        opp = book.sides[side ^ 1]
        if post_only:
            key = _top(opp)
            if key is not None and key <= limit_key:
                best = opp.levels[key].price
                return self._reject(symbol, oid, "post_only order would cross best "
                                    f"{_SIDE_NAMES[side ^ 1]} {market.price_str(best)}",
                                    REJ_POST_ONLY_CROSS, out)  # fmt: skip
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
        if book.gate is not None and (refused := cancel_refusal(book, book.gate)):
            return self._reject(symbol, oid, refused[0], refused[1], out)
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
        order = self._live_order(symbol, oid, account, out, True)
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
        if book.gate is not None and (
            refused := amend_refusal(book, book.gate, qty, order.price, price)
        ):
            return self._reject(symbol, oid, refused[0], refused[1], out)
        if book.positions is not None and (refused := margin_amend(book, order, qty, price)):
            return self._reject(symbol, oid, refused[0], refused[1], out)
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
                best = opp.levels[key].price
                return self._reject(symbol, oid, "post_only order would cross best "
                                    f"{_SIDE_NAMES[side ^ 1]} {market.price_str(best)}",
                                    REJ_POST_ONLY_CROSS, out)  # fmt: skip
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

    def _live_order(self, symbol: object, oid: object, account: object, out: list[Event],
                    amend: bool = False):  # fmt: skip
        if type(symbol) is not str:  # checked here: the compiled build would raise instead
            return self._reject(symbol, oid, *_unknown_symbol(symbol), out)
        book = self.books.get(symbol)
        if book is None:
            book = self.book(symbol)
            if book is None:
                return self._reject(symbol, oid, *self.no_book(symbol), out)
        if type(oid) is not str:
            return self._reject(symbol, oid, "id must be a string", REJ_MALFORMED, out)
        order = book.orders.get(oid)
        if order is None:
            pending = pending_of(book, oid)
            if pending is not None:  # an untriggered stop: cancelled, or the amend refused
                return touch(self, book, pending, account, amend, out)
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
    trade_id = first_id = book.trade_id
    traded_at = 0  # the price of this match's last trade (the pair's last price after it)
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
            traded_at = price
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
    if trade_id != first_id:  # traded: the last price (stops' triggers, the band's reference)
        book.trade_id = trade_id
        book.last = traded_at
        if book.stops is not None:  # (its triggers are checked once the command is done)
            eng.touched = book
        if book.positions is not None:  # (a perp pair: both sides' positions move)
            on_match(eng, book, out, trade_id - first_id, account, side)
    return qty


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
