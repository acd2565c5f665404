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
from shardex.wire.errors import quote
from shardex.wire.layouts import CMD_OP, NEW_OPTS

MAX_OPTIONS = 4  # entries of an options map


def options_refusal(opts: Any) -> str | None:
    """Why a new order's options map cannot be journaled (None: it can): a map of at most
    ``MAX_OPTIONS`` short string keys to integers or nil. What each key means is the engine's."""
    if type(opts) is not dict or len(opts) > MAX_OPTIONS:
        return f"options must be a map of at most {MAX_OPTIONS} entries, got {quote(opts)}"
    for k, v in opts.items():
        if type(k) is not str or len(k) > MAX_ID_LEN or not (v is None or type(v) is int):
            return f"options: string keys to integers, got {quote(k)}: {quote(v)}"
    return None


def options_ok(opts: Any) -> bool:
    """An options map of the bounded shape ``options_refusal`` allows."""
    return options_refusal(opts) is None


def split_options(cmd: Any) -> tuple[Any, dict[str, Any] | None]:
    """A client's new order with options → (the command without them, the map); any other
    command, or one whose map is not of the bounded shape (the edge then refuses it), is
    returned whole with None."""
    if (type(cmd) is tuple and len(cmd) == NEW_OPTS + 1 and cmd[CMD_OP] == OP_NEW
            and options_ok(cmd[NEW_OPTS])):  # fmt: skip
        return cmd[:NEW_OPTS], cmd[NEW_OPTS]
    return cmd, None
