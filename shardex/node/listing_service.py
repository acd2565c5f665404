"""An account shard's side of listing a pair at runtime (socket-free, like ``restrict_service``):
``(OP_LIST_PAIR, symbol, [tick, lot, max_price, max_qty], [maker_bps, taker_bps])`` from an
admin, journaled as ``A_LIST`` so replay and standbys agree (``shardex.accounts.listing``).

Every account shard gets the same command (``shardex market add`` sends it to each before the
engine shard's ``OP_LIST``): each applies the same unit rule to the same table, so they all
accept it or all refuse it, and a repeated listing is a no-op that succeeds.
"""

from __future__ import annotations

from typing import Any

from shardex.accounts.codes import A_LIST, AE_LISTED, AE_REJECTED
from shardex.engine.codes import REJ_MALFORMED, REJ_NOT_ALLOWED
from shardex.wire.layouts import AE_KIND, AREJ_CODE, AREJ_REASON
from shardex.wire.protocol import OP_LIST_PAIR

# (AE_LISTED, seq, symbol, base, quote, base unit, quote unit, [maker, taker])
_UNITS = slice(3, 7)


def list_pair(h: Any, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
    """``(OP_LIST_PAIR, symbol, definition, fee)`` (admin keys only): ``{"ok", symbol, base,
    quote, base_unit, quote_unit, seq}`` or ``{"rejected", code}``; the core checks the shape
    before anything changes (a refused listing is journaled as a ``rejected`` event)."""
    if len(cmd) != 4 or type(cmd[1]) is not str or len(cmd[1]) > 32:
        return h._map_rej("list: expected (op, symbol, definition, [maker, taker])", REJ_MALFORMED)
    if h.key is not None and h.key.role != "admin":
        return h._map_rej("listing a pair needs an admin key", REJ_NOT_ALLOWED)
    start = h.journal_apply((A_LIST, *cmd[1:]), out)
    for ev in out[start:]:
        if ev[AE_KIND] == AE_REJECTED:
            return h._map_rej(ev[AREJ_REASON], ev[AREJ_CODE])
        if ev[AE_KIND] == AE_LISTED:
            base, quote, base_unit, quote_unit = ev[_UNITS]
            return {"ok": True, "symbol": cmd[1], "base": base, "quote": quote,
                    "base_unit": base_unit, "quote_unit": quote_unit, "seq": ev[1]}  # fmt: skip
    return h._map_rej("list had no effect", REJ_MALFORMED)  # unreachable


LISTING_ADMIN = {OP_LIST_PAIR: list_pair}
