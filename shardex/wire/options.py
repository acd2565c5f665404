"""A new order's options map (``OP_NEW``'s 13th field, ``layouts.NEW_OPTS``) at the edge.

A plain new order has 11 fields (12 on the client -> account shard path: the market-buy
budget). One that needs more carries the budget (or None) and then a map with str keys, e.g.
``{"expire": ms}`` for a good-till-date order (``shardex.engine.expiry``). The edge only bounds
its shape (few keys, short str keys, scalar values): what the keys mean, and refusing unknown
ones, is the engine's.
"""

from __future__ import annotations

from typing import Any

from shardex.engine.codes import MAX_ID_LEN, OP_NEW
from shardex.wire.layouts import CMD_OP, NEW_OPTS

MAX_OPTIONS = 8  # keys of an options map
_SCALAR = frozenset((int, str, bool, float, type(None)))


def options_ok(opts: Any) -> bool:
    """An options map of a bounded shape: a dict of at most ``MAX_OPTIONS`` str keys of at most
    ``MAX_ID_LEN`` chars, with scalar values (strs as short)."""
    return (type(opts) is dict and len(opts) <= MAX_OPTIONS
            and all(type(k) is str and len(k) <= MAX_ID_LEN and type(v) in _SCALAR
                    and not (type(v) is str and len(v) > MAX_ID_LEN)
                    for k, v in opts.items()))  # fmt: skip


def split_options(cmd: Any) -> tuple[Any, dict[str, Any] | None]:
    """A client's new order with options → (the command without them, the map); any other
    command, or one whose map is not of the bounded shape (the edge then refuses it), is
    returned whole with None."""
    if (type(cmd) is tuple and len(cmd) == NEW_OPTS + 1 and cmd[CMD_OP] == OP_NEW
            and options_ok(cmd[NEW_OPTS])):  # fmt: skip
        return cmd[:NEW_OPTS], cmd[NEW_OPTS]
    return cmd, None
