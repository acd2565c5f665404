"""A pair move's pre-copy: the target builds the pair's resting orders before the hand-off, the
pause carries only the price levels that changed since (an engine shard's side; no I/O).

The mover (``shardex.tools.mover``), before the hand-off:

1. reads ``(OP_PAIR, symbol, PRECOPY)`` from the source: the pair's resting orders now (seq
   ``S``), as ``precopy_packed`` (a ``shardex.wire.movestate`` blob of ``{"bids", "asks"}``)
   and ``precopy_at``: ``S`` (admin keys only). The source keeps them, grouped by price
   level, in memory;
2. sends them to the target as ``(OP_ADOPT, symbol, from, S, blob, PRECOPY)``: the target
   builds a book holding just those orders (``engine.moves.prebuild``) and keeps it in memory,
   answering ``{"precopied": S}``. Nothing is journaled on either side, nothing changes hands:
   the pair trades on at the source.

Then, in the pause: the hand-off, with ``(OP_PAIR, symbol, DELTA, S)`` right behind it. The
source answers ``state_delta``: the hand-off's state with, in place of its resting orders,
``precopy``: ``S`` and ``levels``: every price level whose queue differs from the pre-copy's,
whole (``[side, price, entries]``; no entries: the level is gone). The target expands it
(``expand``) to the very state the hand-off took (the pre-copy's levels with those replaced,
concatenated in price order, which is how ``Book.snapshot`` lists them) and journals the
adoption with that whole state, as always: replay, standbys and the simulator see the same
command as without a pre-copy. Live, the engine takes the book built ahead with the changed
levels replaced (``engine.moves.apply_levels``, ``engine.prebuilt``) instead of building 10,000
orders again: the pause loses the source's pack of the whole state, the target's decode of it
and its ``restore_pair`` of the resting orders.

Stale or missing pre-copies fall back to the whole state: the source answers ``state_packed``
when it holds no pre-copy at ``S`` (restarted) or when more than half the orders changed; the
target refuses a delta it holds no pre-copy for (``invalid``: restarted, or another pre-copy
since) and the mover then sends the whole state. Both memories are ``ShardCore.precopies``
(keys ``(SOURCE, symbol)`` and ``(TARGET, symbol)``), bounded per side like the pieces of an
adoption (which keep their own dict, so a piece never evicts a pre-copy nor the reverse).
"""

from __future__ import annotations

from itertools import groupby
from operator import itemgetter
from typing import Any

from shardex.engine.moves import apply_levels, prebuild
from shardex.wire.codes import INVALID, MALFORMED
from shardex.wire.errors import read_error
from shardex.wire.layouts import ADOPT_FROM, ADOPT_SEQ, CMD_SYMBOL, MOVE_STATE
from shardex.wire.movestate import pack_state, unpack_state

PRECOPY = "precopy"  # ``(OP_PAIR, symbol, PRECOPY)`` and ``(OP_ADOPT, ..., blob, PRECOPY)``
DELTA = "delta"  # ``(OP_PAIR, symbol, DELTA, S)``: the hand-off's state against pre-copy S
SOURCE, TARGET = "precopy-source", "precopy-target"  # (keys of ``ShardCore.precopies``)
_KEEP = 4  # pre-copies a shard keeps at once, per side (a mover that went away)

Levels = dict[tuple[int, int], tuple]
_PRICE = itemgetter(2)  # (an order entry's price: ``Book.snapshot``)


def levels_of(bids: Any, asks: Any) -> Levels:
    """``Book.snapshot``'s order lists grouped by ``(side, price)``, each level's queue in
    order (the lists are sorted by price, best first, then by time: a level's entries are
    consecutive); ValueError for lists where they are not."""
    out: Levels = {}
    for side, orders in ((0, bids), (1, asks)):
        for price, entries in groupby(orders, _PRICE):
            if (side, price) in out:
                raise ValueError(f"the orders at price {price!r} are not consecutive")
            out[(side, price)] = tuple(entries)
    return out


def changed_levels(before: Levels, after: Levels) -> list[tuple[int, int, tuple]]:
    """The levels of ``after`` whose queue differs from ``before``'s, and those ``after`` no
    longer has (with no entries)."""
    out = [(side, price, q) for (side, price), q in after.items() if before.get((side, price)) != q]
    out += [(side, price, ()) for (side, price) in before if (side, price) not in after]
    return out


def joined(levels: Levels) -> tuple[list, list]:
    """``levels_of``'s inverse: the bids (highest price first) and asks (lowest first)."""
    bids = sorted((k for k in levels if k[0] == 0), key=lambda k: -k[1])
    asks = sorted(k for k in levels if k[0] == 1)
    return [e for k in bids for e in levels[k]], [e for k in asks for e in levels[k]]


def _keep(core: Any, key: tuple[str, str], value: Any) -> None:
    """Keep ``value`` under ``key`` in ``core.precopies``, dropping the oldest of its side
    beyond ``_KEEP``."""
    kept = core.precopies
    kept.pop(key, None)
    mine = [k for k in kept if k[0] == key[0]]
    for old in mine[: max(0, len(mine) - _KEEP + 1)]:
        kept.pop(old, None)
    kept[key] = value


def source_read(core: Any, symbol: str, out: dict[str, Any]) -> None:
    """``(OP_PAIR, symbol, PRECOPY)`` on the pair's owner: its resting orders now into
    ``out`` (``precopy_packed``, ``precopy_at``), kept grouped by level for ``source_delta``."""
    book = core.engine.books.get(symbol)
    if book is None:
        return  # (no book: nothing to copy ahead)
    snap = book.snapshot()
    bids, asks = snap["bids"], snap["asks"]
    at = core.engine.seq
    _keep(core, (SOURCE, symbol), (at, levels_of(bids, asks)))
    out.update(precopy_packed=pack_state({"bids": bids, "asks": asks}), precopy_at=at)


def source_delta(core: Any, symbol: str, at: Any, out: dict[str, Any]) -> None:
    """``(OP_PAIR, symbol, DELTA, at)`` after the hand-off: ``state_delta`` against the
    pre-copy at ``at``, or the whole state (``state_packed``) when none is held or most
    orders changed."""
    state = core.engine.handed[symbol]
    held = core.precopies.get((SOURCE, symbol))
    if held is not None and held[0] == at and type(at) is int:
        after = levels_of(state["bids"], state["asks"])
        levels = changed_levels(held[1], after)
        if 2 * sum(len(q) for _, _, q in levels) <= len(state["bids"]) + len(state["asks"]):
            rest = {k: v for k, v in state.items() if k not in ("bids", "asks")}
            out["state_delta"] = pack_state({**rest, PRECOPY: at, "levels": levels})
            return
    out["state_packed"] = pack_state(state)


def target_stage(core: Any, cmd: tuple) -> dict[str, Any]:
    """``(OP_ADOPT, symbol, from, S, blob, PRECOPY)``: build the pre-copy's book and keep it
    (not journaled); ``{"precopied": S}`` or a refusal."""
    symbol, source, at = cmd[CMD_SYMBOL], cmd[ADOPT_FROM], cmd[ADOPT_SEQ]
    market = core.engine.markets.get(symbol)
    if market is None or core.engine.books.get(symbol) is not None and core.engine.books[
            symbol].orders:  # fmt: skip
        return read_error(INVALID, f"precopy: {symbol} is not a pair this shard may adopt")
    try:
        state = unpack_state(cmd[MOVE_STATE])
        book = prebuild(market, symbol, state["bids"], state["asks"])
        levels = levels_of(state["bids"], state["asks"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return read_error(MALFORMED, f"precopy: {exc}"[:200])
    _keep(core, (TARGET, symbol), (source, at, levels, book))
    return {"precopied": at}


def target_expand(core: Any, cmd: tuple) -> Any:
    """An adoption whose state is a delta (``PRECOPY`` in it): the adoption command with the
    whole state, the book built ahead put where ``restore_pair`` takes it
    (``engine.prebuilt``); a refusal when no pre-copy of that hand-off's source and seq is
    held (the mover then sends the whole state)."""
    symbol, delta = cmd[CMD_SYMBOL], cmd[MOVE_STATE]
    held = core.precopies.get((TARGET, symbol))
    if held is None or (held[0], held[1]) != (cmd[ADOPT_FROM], delta.get(PRECOPY)):
        return read_error(INVALID, f"adopt: no pre-copy of {symbol} at {delta.get(PRECOPY)} "
                          "here; send the whole state")  # fmt: skip
    del core.precopies[(TARGET, symbol)]  # (it serves this adoption only: the book changes now)
    _, _, levels, book = held
    try:
        changes = [(side, price, tuple(q)) for side, price, q in delta["levels"]]
        for side, price, _ in changes:
            if side not in (0, 1) or type(price) is not int:
                raise ValueError(f"level {side!r} {price!r}")
        for side, price, q in changes:
            if q:
                levels[(side, price)] = q
            else:
                levels.pop((side, price), None)
        apply_levels(book, changes)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return read_error(MALFORMED, f"adopt: unusable delta ({exc})"[:200])
    bids, asks = joined(levels)
    # (in ``snapshot_pair``'s key order: the journal holds the same map as without a pre-copy)
    state = {"trade_id": delta.get("trade_id"), "bids": bids, "asks": asks}
    state.update((k, v) for k, v in delta.items() if k not in (PRECOPY, "levels", "trade_id"))
    core.engine.prebuilt[symbol] = book
    return (*cmd[:MOVE_STATE], state, *cmd[MOVE_STATE + 1 :])
