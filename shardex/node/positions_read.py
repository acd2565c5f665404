"""An engine shard's read of one account's perp positions, ``(OP_POSITIONS, account)`` (no
I/O): every perp pair this shard serves where the account has a position or margin, as
``shardex.engine.positions.position_read`` shows it (decimal strings at the mark). A trader
key reads its own accounts only. ``(OP_POSITIONS,)`` without an account is the audit's read
(admin and reader keys): each perp pair's totals in integer units (``pair_totals``)."""

from __future__ import annotations

from typing import Any

from shardex.engine.positions import COLLATERAL, COST, FUNDING, REALIZED, SIZE, positions_of
from shardex.wire.codes import MALFORMED, NOT_ALLOWED
from shardex.wire.errors import read_error

_MAX_ACCOUNT = 64


def pair_totals(pos: Any) -> dict[str, int]:
    """One perp pair's sums over its accounts (units of tick × lot) for ``shardex audit``:
    ``collateral``, ``size`` (lots), ``pnl`` (Σ realized − cost: the cash flow of every fill,
    zero-sum), ``funding``, and the pair's ``fund``, ``remainder`` and ``uncovered``; the
    identities they keep are ``shardex.engine.positions.pair_violations``'."""
    rows = pos.accounts.values()
    return {"collateral": sum(r[COLLATERAL] for r in rows), "size": sum(r[SIZE] for r in rows),
            "pnl": sum(r[REALIZED] - r[COST] for r in rows),
            "funding": sum(r[FUNDING] for r in rows), "fund": pos.fund,
            "remainder": pos.remainder, "uncovered": pos.uncovered}  # fmt: skip


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
