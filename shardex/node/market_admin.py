"""An engine shard's side of the admin's writes: a pair's rules (``shardex.engine.admin``) and
the mover's commands (``shardex.node.moves``), one dispatch for both (no I/O).

``(OP_MARKET_RULE, symbol, changes)``, a listing ``(OP_LIST, symbol, definition)``
(``shardex.engine.listing``) and a perp pair's margin move ``(OP_MARGIN, symbol, account,
amount)`` (``shardex.engine.positions``) are refused with ``not_allowed`` for a key that is
not an admin's, and a perp pair's index ``(OP_INDEX, symbol, ticks)`` for a key that is not a
``feed`` key's (in insecure mode there are no keys); with ``wrong_shard`` (``data.shard``:
the owner) on a shard that does not own the pair, and ``moving`` for a pair handed off;
an ``OP_MARGIN`` with ``not_allowed`` when the account tier is on (margin then moves through
the account shard, ``shardex.accounts.margin``); otherwise each is applied and journaled like
any command, and answers its events
(``EV_MARKET``, then a delisting's cancels; ``EV_INDEX``; ``EV_MARGIN``) or the engine's
``rejected`` event. With the account tier the engine is a ``SettledEngine``: a delisting's
cancels are settled to the account shards like any cancel, so every hold is released there.
"""

from __future__ import annotations

from typing import Any

from shardex.engine.admin import rules_of
from shardex.engine.codes import OP_INDEX, OP_LIST, OP_MARGIN, OP_MARKET_RULE, Event
from shardex.engine.perps import perp_read
from shardex.node.moves import MOVE_OPS, move_write, moved_refusal
from shardex.wire.codes import MALFORMED, NOT_ALLOWED, WRONG_SHARD
from shardex.wire.errors import read_error
from shardex.wire.layouts import CMD_OP, CMD_SYMBOL

ADMIN_OPS = MOVE_OPS | {OP_MARKET_RULE, OP_LIST, OP_INDEX, OP_MARGIN}
_WIDTH = {OP_MARKET_RULE: 3, OP_LIST: 3, OP_INDEX: 3, OP_MARGIN: 4}  # (each op's fields)


def is_admin_write(cmd: Any) -> bool:
    """True if ``cmd`` is one of the admin's writes (a move's step or a pair's rules)."""
    if type(cmd) is not tuple or len(cmd) < 2:
        return False
    op = cmd[CMD_OP]
    return type(op) is int and op in ADMIN_OPS


def admin_write(core: Any, cmd: tuple, out: list[Event]) -> Any:
    """Run one admin write on ``core`` (a ``ShardCore``): its events, or a refusal map."""
    op = cmd[CMD_OP]
    if op not in _WIDTH:
        return move_write(core, cmd, out)
    key = core.key
    if op == OP_INDEX:  # (a perp pair's index price: ``feed`` keys only, not even the admin's)
        if key is not None and key.role != "feed":
            return read_error(NOT_ALLOWED, "index prices: feed keys only")
    elif key is not None and key.role != "admin":
        return read_error(NOT_ALLOWED, "market rules and listings: admin keys only")
    if op == OP_MARGIN and getattr(core.engine, "feed", None) is not None:
        # (with the account tier the money comes from an account's balance: its shard moves
        # it, ``shardex.accounts.margin``; a direct one would make money it cannot see)
        return read_error(NOT_ALLOWED, "margin moves go through the account shard when the "
                          "account tier is on")  # fmt: skip
    symbol = cmd[CMD_SYMBOL]
    if type(symbol) is not str or len(cmd) != _WIDTH[op]:
        return read_error(MALFORMED, "market rule: expected (op, symbol, changes)")
    # a listing goes to the shard the placement map gives the new symbol
    if (op == OP_LIST or symbol in core.markets) and core.owner(symbol) != core.index:
        moved = moved_refusal(core, symbol)
        if moved is not None:
            return moved
        owner = core.owner(symbol)
        return read_error(WRONG_SHARD, f"symbol {symbol} is on shard {owner}", shard=owner,
                          version=core.placement.version)  # fmt: skip
    start = len(out)
    seq = core.engine.seq
    core.engine.apply(cmd, out)
    core.journal.add(seq, cmd)
    if op == OP_LIST and core.on_placement is not None:
        core.on_placement()  # (the routers learn the new table from the next HELLO)
    return out[start:]


def pair_rules(engine: Any, owned: Any) -> dict[str, dict[str, Any]]:
    """Each pair ``owned(symbol)`` says this shard serves → its rules (``Rules.to_wire``)."""
    return {s: rules_of(engine.books.get(s)).to_wire() for s in sorted(engine.markets) if owned(s)}


def pair_perps(engine: Any, owned: Any) -> dict[str, dict[str, Any]]:
    """Each perp pair this shard serves → its definition, index and mark (``perp_read``)."""
    out = {}
    for s in sorted(engine.markets):
        perp = perp_read(engine, s) if owned(s) else None
        if perp is not None:
            out[s] = perp
    return out
