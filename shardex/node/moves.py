"""An engine shard's side of a live pair move: the mover's commands and its read (no I/O).

The mover (``shardex move``) sends an engine shard, as an admin:

* ``(OP_HANDOFF, symbol, to)`` to the source: journaled and applied (``shardex.engine.moves``);
  from its seq on, the source answers every command and read of the pair with ``moving``
  (``data.shard``: the target). Sent again after it ran, it changes nothing and answers the
  same ``moved`` event: every step of a move may be re-run.
* ``(OP_ADOPT, symbol, from, from_seq, state)`` to the target: journaled and applied; sent again
  after it ran, it changes nothing and answers ``[]``.
* ``(OP_PLACE, map)``: the newer placement map (the mover's last step), not journaled (with
  the account tier it is, for the check of forwards: ``ShardCore.journal_place``).
* ``(OP_PAIR, symbol[, True])``, a read: where the pair stands here (``where``: ``here``,
  ``elsewhere``, or ``moved`` with ``to``, ``at``, and with ``True`` the ``state`` the
  hand-off took; a pair adopted here adds ``source`` and ``source_at``), its resting orders,
  the placement map the shard routes by and its seq.

Both writes are refused with ``not_allowed`` for a key that is not an admin's (in insecure mode
there are no keys); a hand-off to the shard itself is ``invalid`` (nothing is journaled).
"""

from __future__ import annotations

import math
from typing import Any

from shardex.engine.codes import EV_MOVED, OP_ADOPT, OP_HANDOFF, Event
from shardex.placement.core import PlacementMap
from shardex.wire.codes import INVALID, MALFORMED, MOVING, NOT_ALLOWED
from shardex.wire.errors import read_error
from shardex.wire.layouts import ADOPT_FROM, ADOPT_SEQ, CMD_OP, CMD_SYMBOL, HANDOFF_TO
from shardex.wire.link import encode_hello
from shardex.wire.protocol import OP_PAIR, OP_PLACE, markets_to_wire  # noqa: F401 - (OP_PAIR: its read)

MOVE_OPS = frozenset((OP_HANDOFF, OP_ADOPT, OP_PLACE))


def is_move(cmd: Any) -> bool:
    """True if ``cmd`` is one of the mover's writes."""
    if type(cmd) is not tuple or len(cmd) < 2:
        return False
    op = cmd[CMD_OP]
    return type(op) is int and op in MOVE_OPS


def move_write(core: Any, cmd: tuple, out: list[Event]) -> Any:
    """Run one mover's write on ``core`` (a ``ShardCore``): its events, or a refusal map."""
    key = core.key
    if key is not None and key.role != "admin":
        return read_error(NOT_ALLOWED, "moves: admin keys only")
    if cmd[CMD_OP] == OP_PLACE:
        return place(core, cmd)
    engine = core.engine
    symbol = cmd[CMD_SYMBOL]
    if type(symbol) is not str or len(cmd) < 3:
        return read_error(MALFORMED, "move: expected (op, symbol, shard, ...)")
    if cmd[CMD_OP] == OP_HANDOFF:
        to = cmd[HANDOFF_TO]
        if to == core.index:
            return read_error(INVALID, f"handoff of {symbol} to shard {to}: that is this shard")
        moved = engine.moved.get(symbol)
        if moved is not None and moved[0] == to:
            return [moved_event(engine, symbol)]  # ran already: the same answer, nothing new
    elif len(cmd) > ADOPT_SEQ and engine.adopted.get(symbol) == (cmd[ADOPT_FROM], cmd[ADOPT_SEQ]):
        return []  # adopted already
    start = len(out)
    seq = engine.seq
    engine.apply(cmd, out)
    core.journal.add(seq, cmd)
    core.forget_owner(symbol)
    return out[start:]


def place(core: Any, cmd: tuple) -> dict[str, Any]:
    """``(OP_PLACE, map)``: route by ``map`` from now on if it is newer than the shard's (the
    mover's last step; the shard's HELLO then carries it to the routers at once). Not
    journaled as routing (the map's durable copy is the placement store's); with the account
    tier journaled for the check of forwards. Answers the version held."""
    try:
        new = PlacementMap.from_wire(cmd[1] if len(cmd) == 2 else None)
    except (ValueError, TypeError) as exc:
        return read_error(MALFORMED, f"place: {exc}"[:200])
    if new.shards != core.shards:
        return read_error(INVALID, f"place: a map of {new.shards} shards, not {core.shards}")
    before = core.placement.version
    core.set_placement(new)
    core.journal_place(new)  # (with the account tier: the forward check's map, journaled)
    if core.placement.version != before and core.on_placement is not None:
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
    symbol = cmd[CMD_SYMBOL] if len(cmd) in (2, 3) else None
    if type(symbol) is not str or symbol not in core.markets:
        return read_error(MALFORMED, "pair: expected (op, known symbol[, with state])")
    engine = core.engine
    out: dict[str, Any] = {"symbol": symbol, "shard": core.index, "seq": engine.seq}
    moved = engine.moved.get(symbol)
    if moved is not None:
        out.update(where="moved", to=moved[0], at=moved[1])
        if len(cmd) == 3 and cmd[2] is True:  # the state the hand-off took (the mover's)
            out["state"] = engine.handed.get(symbol)
    else:
        out["where"] = "here" if core.owner(symbol) == core.index else "elsewhere"
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
    return read_error(MOVING, f"pair {symbol} moved to shard {moved[0]}", shard=moved[0])


def rehello(node: Any) -> None:
    """Engine shard ``node``'s core routes by a newer placement map, or serves a newly listed
    pair: its HELLO carries that map and its market table from now on, and goes to the routers
    at its next turn (they take the newer map; clients learn the table from their topology)."""
    node.hello_info["placement"] = node.core.placement.to_wire()
    node.hello_info["markets"] = markets_to_wire(node.core.markets)
    node.hello_msg = encode_hello(node.hello_info)
    node.last_hello = -math.inf
