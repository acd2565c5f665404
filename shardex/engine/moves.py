"""A live move of one pair between engines: the source's hand-off, the target's adoption (pure).

Both are journaled commands of their engine shard, applied by ``Engine.apply`` like any other,
so a replay of either journal (recovery, a standby, the simulator) rebuilds the same state:

* ``(OP_HANDOFF, symbol, to)`` on the source takes the pair's state (``snapshot_pair``: book,
  order ids, trade-id counter, recent results), removes the book and records the pair as moved
  (``moved[symbol] = (to, seq)``) with the state kept in ``handed`` for the mover to carry (a
  mover that died after the hand-off reads it again; nothing is lost). From then on every
  command for the pair is rejected with ``moving`` (no new book is ever made for it here).
* ``(OP_ADOPT, symbol, from, from_seq, state)`` on the target installs that state
  (``restore_pair``: orders keep their ids, accounts, priority and fills; the trade-id counter
  continues) and records ``adopted[symbol] = (from, from_seq)``.

A pair may move again later (back, or elsewhere): an adoption clears a ``moved`` record of
the pair, a hand-off clears an ``adopted`` one. Each emits one event (``EV_MOVED`` /
``EV_ADOPTED``, layouts in ``codes``), or one ``rejected`` event when it cannot apply.
Which shard the engine is, the engine does not know: the shard refuses a hand-off to itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.book import Book
from shardex.engine.codes import (
    EV_ADOPTED,
    EV_MOVED,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_MOVING,
    REJ_UNKNOWN_SYMBOL,
    Event,
)

# ``eng`` is an ``EngineState`` (``state.py`` imports this module: typed loosely, no cycle)
EngineState = Any


def _field(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None


def handoff(eng: EngineState, cmd: Any, out: list[Event]) -> tuple[str, int] | None:
    """Apply ``(OP_HANDOFF, symbol, to)``: append ``EV_MOVED``, or return (reason, code) for
    the caller to reject with (then nothing changed)."""
    symbol, to = _field(cmd, 1), _field(cmd, 2)
    if len(cmd) != 3 or type(to) is not int or to < 0:
        return "handoff: expected (op, symbol, shard >= 0)", REJ_MALFORMED
    if type(symbol) is not str or symbol not in eng.markets:
        return f"handoff: unknown symbol {str(symbol)[:64]}", REJ_UNKNOWN_SYMBOL
    moved = eng.moved.get(symbol)
    if moved is not None:
        return f"pair {symbol} was handed off to shard {moved[0]} at seq {moved[1]}", REJ_MOVING
    eng.book(symbol)  # (a pair that never traded here hands off an empty book)
    state = eng.snapshot_pair(symbol)
    book = eng.books.pop(symbol)
    eng._left += len(book.finished) - book.nprev  # its current-generation entries leave
    eng.seq = seq = eng.seq + 1
    eng.moved[symbol] = (to, seq)
    eng.handed[symbol] = state
    eng.adopted.pop(symbol, None)
    out.append((EV_MOVED, seq, symbol, to, book.trade_id, len(book.orders)))
    return None


def adopt(eng: EngineState, cmd: Any, out: list[Event]) -> tuple[str, int] | None:
    """Apply ``(OP_ADOPT, symbol, from, from_seq, state)``: append ``EV_ADOPTED``, or return
    (reason, code) for the caller to reject with (then nothing changed)."""
    symbol, source, since, state = (_field(cmd, i) for i in range(1, 5))
    if (
        len(cmd) != 5
        or type(source) is not int
        or type(since) is not int
        or source < 0
        or since < 1
        or not isinstance(state, Mapping)
    ):
        return "adopt: expected (op, symbol, shard, seq >= 1, pair state)", REJ_MALFORMED
    if type(symbol) is not str or (symbol not in eng.markets and "market" not in state):
        # (a pair listed at runtime is known here from its state: ``engine.listing``)
        return f"adopt: unknown symbol {str(symbol)[:64]}", REJ_UNKNOWN_SYMBOL
    if eng.adopted.get(symbol) == (source, since):
        return f"pair {symbol} was adopted already (from shard {source} at {since})", REJ_INVALID
    old = eng.books.get(symbol)
    if old is not None and (old.orders or old.trade_id or (old.stops and old.stops.orders)):
        return f"adopt: pair {symbol} already trades here", REJ_INVALID
    try:
        eng.restore_pair(symbol, state)
    except ValueError as exc:
        return f"adopt: {exc}"[:200], REJ_INVALID
    book = eng.books[symbol]
    eng.seq = seq = eng.seq + 1
    eng.adopted[symbol] = (source, since)
    eng.moved.pop(symbol, None)
    eng.handed.pop(symbol, None)
    out.append((EV_ADOPTED, seq, symbol, source, since, book.trade_id, len(book.orders)))
    return None


def pair_book(eng: EngineState, symbol: str, market: Any, state: Mapping[str, Any],
              since: int) -> Any:  # fmt: skip
    """``restore_pair``'s book of ``symbol`` with ``state`` restored (ValueError and the like
    when unusable). An adoption (``since`` < 0) takes the book built ahead of it
    (``eng.prebuilt``, the shard's pre-copy with the hand-off's changed levels applied:
    ``apply_levels``) when it holds as many resting orders as the state: then only the state's
    other parts are read, the resting orders' ~10k checked inserts are left out of the pause.
    A replay has no such book and builds the same one from the journaled state."""
    book = eng.prebuilt.pop(symbol, None) if since < 0 else None
    if book is not None and book.market is market and len(book.orders) == _resting(state):
        book.restore_head(state)
        return book
    book = Book(symbol, market)
    book.restore(state, eng.seq if since < 0 else since)
    return book


def _resting(state: Mapping[str, Any]) -> int:
    try:
        return len(state["bids"]) + len(state["asks"])
    except (KeyError, TypeError):
        return -1


def prebuild(market: Any, symbol: str, bids: Any, asks: Any) -> Any:
    """A book of ``symbol`` holding only these resting orders (``snapshot``'s entries, checked
    as a restore checks them): the start of a pre-copied adoption (``pair_book``)."""
    book = Book(symbol, market)
    book.restore_orders(bids, asks)
    return book


def apply_levels(book: Any, levels: Any) -> None:
    """Replace whole price levels of ``book``: each ``(side, price, entries)`` drops the level's
    resting orders and rests ``entries`` there in order (none: the level is gone). The
    level's place in the side is its price, its queue the entries' order, so a book built
    from an older snapshot with every level that changed since replaced this way rests
    exactly the orders of the newer snapshot, in its priority."""
    for side, price, _ in levels:  # (all dropped first: an order may have changed level)
        level = book.sides[side].levels.pop(-price if side == 0 else price, None)
        if level is not None:
            for o in level.orders:
                if o.qty:
                    del book.orders[o.id]
    for side, _, entries in levels:
        book.restore_orders(entries if side == 0 else (), entries if side == 1 else ())


def moves_snapshot(eng: EngineState) -> dict[str, Any] | None:
    """The engine's move records as plain data, None when it has none (a snapshot without
    moves stays version 4, readable by engines that predate moves)."""
    if not (eng.moved or eng.adopted):
        return None
    return {
        "moved": [[s, to, seq] for s, (to, seq) in sorted(eng.moved.items())],
        "adopted": [[s, src, seq] for s, (src, seq) in sorted(eng.adopted.items())],
        "handed": {s: st for s, st in sorted(eng.handed.items())},
    }


def restore_moves(eng: EngineState, state: Mapping[str, Any] | None) -> None:
    """Install ``moves_snapshot``'s records; ValueError for records that do not fit."""
    if not state:
        return
    try:
        for s, to, seq in state["moved"]:
            if s in eng.books or s not in eng.markets or type(to) is not int:
                raise ValueError(f"moved pair {s!r} still has a book here, or is unknown")
            eng.moved[s] = (to, seq)
        for s, src, seq in state["adopted"]:
            eng.adopted[s] = (src, seq)
        for s, st in state["handed"].items():
            eng.handed[s] = st
    except (KeyError, TypeError) as exc:
        raise ValueError(f"moves: unusable state ({exc})") from None
