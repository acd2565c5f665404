"""An engine shard's read of one account's perp positions, ``(OP_POSITIONS, account)`` (no
I/O): every perp pair this shard serves where the account has a position or margin, as
``shardex.engine.positions.position_read`` shows it (decimal strings at the mark). A trader
key reads its own accounts only. ``(OP_POSITIONS,)`` without an account is the audit's read
(admin and reader keys): each perp pair's totals in integer units (``pair_totals``)."""

from __future__ import annotations

from typing import Any

from shardex.engine.positions import pair_totals, positions_of
from shardex.wire.codes import MALFORMED, NOT_ALLOWED
from shardex.wire.errors import read_error

_MAX_ACCOUNT = 64


def positions_read(core: Any, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
    """``{"account", "positions": [...], "shard", "seq"}``, for ``(OP_POSITIONS,)``
    ``{"pairs": {symbol: pair_totals}, "shard", "seq"}``, or a refusal map."""
    engine = core.engine
    if len(cmd) == 1:
        if core.key is not None and core.key.role not in ("admin", "reader"):
            return read_error(NOT_ALLOWED, "positions of every account: admin or reader keys")
        pairs = {s: pair_totals(b.positions) for s, b in sorted(engine.books.items())
                 if b.positions is not None and core.owner(s) == core.index}  # fmt: skip
        return {"pairs": pairs, "shard": core.index, "seq": engine.seq}
    account = cmd[1] if len(cmd) == 2 else None
    if type(account) is not str or not 0 < len(account) <= _MAX_ACCOUNT:
        return read_error(MALFORMED, "positions: expected (op, account)")
    key = core.key
    if key is not None and key.role != "admin" and not key.may_act_for(account):
        return read_error(NOT_ALLOWED, f"positions of {account}: not allowed for this key")
    books = {s: b for s, b in engine.books.items() if core.owner(s) == core.index}
    return {"account": account, "positions": positions_of(books, account),
            "shard": core.index, "seq": engine.seq}  # fmt: skip
