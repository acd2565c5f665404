"""An engine shard's side of a live pair move: the mover's commands and its read (no I/O).

The mover (``shardex move``) sends an engine shard, as an admin:

* ``(OP_HANDOFF, symbol, to)`` to the source: journaled and applied (``shardex.engine.moves``);
  from its seq on, the source answers every command and read of the pair with ``moving``
  (``data.shard``: the target). Sent again after it ran, it changes nothing and answers the
  same ``moved`` event: every step of a move may be re-run.
* ``(OP_ADOPT, symbol, from, from_seq, state)`` to the target: journaled and applied; sent again
  after it ran, it changes nothing and answers ``[]``. The state may be the changes since a
  pre-copy, and ``(OP_ADOPT, symbol, from, S, blob, "precopy")`` is the pre-copy itself, kept
  and not journaled (``shardex.node.precopy``, as are the reads ``(OP_PAIR, symbol,
  "precopy")`` and ``(OP_PAIR, symbol, "delta", S)``).
* ``(OP_PLACE, map)``: the newer placement map (the mover's last step), not journaled (with
  the account tier it is, for the check of forwards: ``ShardCore.journal_place``).
* ``(OP_PAIR, symbol[, True])``, a read: where the pair stands here (``where``: ``here``,
  ``elsewhere``, or ``moved`` with ``to``, ``at``, and with ``True`` the ``state`` the
  hand-off took; a pair adopted here adds ``source`` and ``source_at``), its resting orders,
  the placement map the shard routes by and its seq.

Both writes are refused with ``not_allowed`` for a key that is not an admin's (in insecure mode
there are no keys); a hand-off to the shard itself, or to a shard outside the placement map the
shard routes by, is ``invalid`` (nothing is journaled: a hand-off to a shard that does not run
would leave the pair ``moving`` for good).
"""

from __future__ import annotations

import math
from typing import Any

from shardex.engine.codes import EV_ADOPTED, EV_MOVED, OP_ADOPT, OP_HANDOFF, Event
from shardex.engine.listing import SYMBOL_RE
from shardex.node.precopy import (
    DELTA,
    PRECOPY,
    source_delta,
    source_read,
    target_expand,
    target_stage,
)
from shardex.placement.core import PlacementMap
from shardex.wire.codes import INVALID, MALFORMED, MOVING, NOT_ALLOWED
from shardex.wire.errors import read_error
from shardex.wire.layouts import (
    ADOPT_FROM,
    ADOPT_SEQ,
    CMD_OP,
    CMD_SYMBOL,
    EV_KIND,
    HANDOFF_TO,
    MOVE_STATE,
)
from shardex.wire.link import encode_hello
from shardex.wire.movestate import MAX_STATE, PACKED, pack_state, unpack_state
from shardex.wire.protocol import OP_PAIR, OP_PLACE, markets_to_wire  # noqa: F401 - (OP_PAIR: its read)

MOVE_OPS = frozenset((OP_HANDOFF, OP_ADOPT, OP_PLACE))


def move_write(core: Any, cmd: tuple, out: list[Event]) -> Any:
    """Run one mover's write on ``core`` (a ``ShardCore``): its events, or a refusal map."""
    key = core.key
    if key is not None and key.role != "admin":
        return read_error(NOT_ALLOWED, "moves: admin keys only")
    if cmd[CMD_OP] == OP_PLACE:
        return place(core, cmd)
    engine = core.engine
    stats = core.stats.moves
    symbol = cmd[CMD_SYMBOL]
    if type(symbol) is not str or len(cmd) < 3:
        return read_error(MALFORMED, "move: expected (op, symbol, shard, ...)")
    if cmd[CMD_OP] == OP_HANDOFF:
        to = cmd[HANDOFF_TO]
        if to == core.index:
            return read_error(INVALID, f"handoff of {symbol} to shard {to}: that is this shard")
        pmap = core.placement  # (the mover records the move in a map over the target before
        if type(to) is not int or not 0 <= to < pmap.shards:  # the hand-off: a grow is in it)
            last = pmap.shards - 1
            return read_error(INVALID, f"handoff of {symbol} to shard {str(to)[:16]}: the "
                              f"placement map v{pmap.version} has shards 0..{last}")  # fmt: skip
        moved = engine.moved.get(symbol)
        if moved is not None and moved[0] == to:
            stats.step("handoff", "repeat")
            return [moved_event(engine, symbol)]  # ran already: the same answer, nothing new
    elif len(cmd) > ADOPT_SEQ and engine.adopted.get(symbol) == (cmd[ADOPT_FROM], cmd[ADOPT_SEQ]):
        stats.step("adopt", "repeat")
        return []  # adopted already
    elif len(cmd) > MOVE_STATE and type(cmd[MOVE_STATE]) is bytes:  # (the mover's blob)
        if len(cmd) == MOVE_STATE + 2 and cmd[-1] == PRECOPY:  # (a pre-copy: kept, not applied)
            return target_stage(core, cmd)
        if len(cmd) == PIECE_LEN:  # one piece of a blob too large for one request
            cmd = _piece(core, cmd)
            if type(cmd) is not tuple:
                return cmd  # (staged, or refused)
        try:  # journaled decoded: the journal, replay and standbys see the one command form
            cmd = (*cmd[:MOVE_STATE], unpack_state(cmd[MOVE_STATE]), *cmd[MOVE_STATE + 1:])
        except ValueError as exc:
            return read_error(MALFORMED, f"adopt: {exc}")
        if isinstance(cmd[MOVE_STATE], dict) and PRECOPY in cmd[MOVE_STATE]:
            cmd = target_expand(core, cmd)  # (the changes since a pre-copy: the whole state)
            if type(cmd) is not tuple:
                return cmd
    start = len(out)
    seq = engine.seq
    try:
        engine.apply(cmd, out)
    finally:  # (a book built ahead serves this adoption only, applied or refused)
        engine.prebuilt.pop(symbol, None)
    core.journal.add(seq, cmd)
    core.forget_owner(symbol)
    _count(core, cmd, out[start:])
    return out[start:]


PIECE_LEN = 7  # (OP_ADOPT, symbol, from, at, piece, offset, total)
_STAGED_MAX = 4  # pairs whose pieces a shard keeps at once (a mover that went away)


def _piece(core: Any, cmd: tuple) -> Any:
    """Keep one piece of an adoption's blob (``shardex.wire.movestate``): the whole adoption
    command once the last piece is in, else ``{"staged": bytes so far}`` or a refusal. Pieces
    come in order from offset 0; anything else starts over (the mover re-sends from 0)."""
    symbol, offset, total = cmd[CMD_SYMBOL], cmd[PIECE_LEN - 2], cmd[PIECE_LEN - 1]
    if type(offset) is not int or type(total) is not int or not 0 <= offset < total <= MAX_STATE:
        return read_error(MALFORMED, "adopt: a piece needs 0 <= offset < total <= MAX_STATE")
    key = (cmd[ADOPT_FROM], cmd[ADOPT_SEQ], total)
    held = core.staged.get(symbol)
    if offset == 0:
        if len(core.staged) >= _STAGED_MAX and symbol not in core.staged:
            core.staged.pop(next(iter(core.staged)))
        held = core.staged[symbol] = (key, bytearray())
    if held is None or held[0] != key or len(held[1]) != offset:
        core.staged.pop(symbol, None)
        return read_error(INVALID, f"adopt: piece at {offset} out of order; send from 0")
    buf = held[1]
    buf += cmd[MOVE_STATE]
    if len(buf) > total:
        core.staged.pop(symbol, None)
        return read_error(MALFORMED, "adopt: pieces longer than their total")
    if len(buf) < total:
        return {"staged": len(buf)}
    core.staged.pop(symbol, None)
    return (*cmd[:MOVE_STATE], bytes(buf))


def _count(core: Any, cmd: tuple, events: list[Event]) -> None:
    """The metrics of one journaled hand-off or adoption (``shardex.move_metrics``)."""
    stats = core.stats.moves
    step = "handoff" if cmd[CMD_OP] == OP_HANDOFF else "adopt"
    kind = events[0][EV_KIND] if len(events) == 1 else None
    if kind not in (EV_MOVED, EV_ADOPTED):
        stats.step(step, "refused")
        return
    stats.step(step, "done")
    if kind == EV_MOVED:
        stats.handed(cmd[CMD_SYMBOL], cmd[HANDOFF_TO], core._perf())


def place(core: Any, cmd: tuple) -> dict[str, Any]:
    """``(OP_PLACE, map)``: route by ``map`` from now on if it is newer than the shard's (the
    mover's last step; the shard's HELLO then carries it to the routers at once). Not
    journaled as routing (the map's durable copy is the placement store's); with the account
    tier journaled for the check of forwards. Answers the version held."""
    try:
        new = PlacementMap.from_wire(cmd[1] if len(cmd) == 2 else None)
    except (ValueError, TypeError) as exc:
        return read_error(MALFORMED, f"place: {exc}"[:200])
    if new.shards != core.shards and not core.index < new.shards:
        # (the count follows the map: shardex reshard starts and stops shard processes; with
        # the account tier the map is journaled, so a replay judges forwards by the same one)
        return read_error(INVALID, f"place: a map of {new.shards} shards, not {core.shards}")
    before = core.placement.version
    core.set_placement(new)
    core.journal_place(new)  # (with the account tier: the forward check's map, journaled)
    if core.placement.version != before:
        core.stats.moves.published(core.placement.owner, core.placement.moving, core._perf())
        if core.on_placement is not None:
            core.on_placement()
    return {"placement": core.placement.version}


def moved_event(engine: Any, symbol: str) -> Event:
    """The ``EV_MOVED`` event the hand-off of ``symbol`` emitted (from the records it left)."""
    to, seq = engine.moved[symbol]
    state = engine.handed.get(symbol) or {}
    orders = len(state.get("bids", ())) + len(state.get("asks", ()))
    return (EV_MOVED, seq, symbol, to, state.get("trade_id", 0), orders)


def pair_read(core: Any, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
    """``(OP_PAIR, symbol)``: where ``symbol`` stands on this shard, for the mover."""
    key = core.key
    if key is not None and key.role not in ("admin", "reader"):
        return read_error(NOT_ALLOWED, "pair: not allowed for this key")
    if key is not None and key.role != "admin" and PRECOPY in cmd[2:3]:
        # (a copy replaces the mover's: a reader must not make the shard snapshot, or the
        # mover's delta fall back to the whole state)
        return read_error(NOT_ALLOWED, "pair: pre-copies are the mover's (admin keys only)")
    symbol = cmd[CMD_SYMBOL] if len(cmd) in (2, 3, 4) else None
    if type(symbol) is not str or not (symbol in core.markets or SYMBOL_RE.fullmatch(symbol)):
        # (a pair listed at runtime is known on its shard only: elsewhere it is a symbol)
        return read_error(MALFORMED, "pair: expected (op, symbol[, with state])")
    engine = core.engine
    out: dict[str, Any] = {"symbol": symbol, "shard": core.index, "seq": engine.seq}
    moved = engine.moved.get(symbol)
    if moved is not None:
        out.update(where="moved", to=moved[0], at=moved[1])
        if len(cmd) == 3 and cmd[2] is True:  # the state the hand-off took (the mover's)
            out["state"] = engine.handed.get(symbol)
        elif len(cmd) == 3 and cmd[2] == PACKED and symbol in engine.handed:  # (compressed)
            out["state_packed"] = pack_state(engine.handed[symbol])
        elif len(cmd) == 4 and cmd[2] == DELTA and symbol in engine.handed:
            source_delta(core, symbol, cmd[3], out)  # (against a pre-copy: ``node.precopy``)
    else:
        out["where"] = "here" if core.owner(symbol) == core.index else "elsewhere"
        if out["where"] == "here" and len(cmd) == 3 and cmd[2] == PRECOPY:
            source_read(core, symbol, out)
    if symbol in engine.adopted:  # (a pair moved here: from where, and the hand-off's seq)
        src, at = engine.adopted[symbol]
        out.update(source=src, source_at=at)
    book = engine.books.get(symbol)
    out["orders"] = len(book.orders) if book is not None else 0
    out["placement"] = core.placement.to_wire()  # (the map this shard routes by)
    return out


def moved_refusal(core: Any, symbol: str) -> dict[str, Any] | None:
    """A read's refusal for a pair this shard handed off (``moving``, data: shard), or None."""
    moved = core.engine.moved.get(symbol)
    if moved is None:
        return None
    core.stats.moves.reads_refused += 1
    return read_error(MOVING, f"pair {symbol} moved to shard {moved[0]}", shard=moved[0])


def rehello(node: Any) -> None:
    """Engine shard ``node``'s core routes by a newer placement map, or serves a newly listed
    pair: its HELLO carries that map and its market table from now on, and goes to the routers
    at its next turn (they take the newer map; clients learn the table from their topology)."""
    node.hello_info["placement"] = node.core.placement.to_wire()
    node.hello_info["markets"] = markets_to_wire(node.core.markets)
    node.hello_msg = encode_hello(node.hello_info)
    node.last_hello = -math.inf
