"""An account shard's admin writes about one account (socket-free, like ``fee_service``):
``(OP_RESTRICT, account, restricted)``, journaled as ``A_RESTRICT`` so replay and standbys
agree (``shardex.accounts.restrict``), next to ``(OP_FEE_GROUP, account, group)``."""

from __future__ import annotations

from typing import Any

from shardex.accounts.codes import A_RESTRICT, AE_REJECTED, AE_RESTRICTED
from shardex.engine.codes import OP_MARGIN, REJ_MALFORMED, REJ_NOT_ALLOWED
from shardex.node.account_margin import margin_move
from shardex.node.fee_service import fee_group
from shardex.node.listing_service import LISTING_ADMIN
from shardex.wire.layouts import AE_KIND, AREJ_CODE, AREJ_REASON
from shardex.wire.protocol import MAX_ID_LEN, OP_FEE_GROUP, OP_RESTRICT


def restrict(h: Any, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
    """``(OP_RESTRICT, account, restricted)`` (admin keys only): ``{"ok", account,
    restricted}`` or ``{"rejected", code}``; bounded before anything is journaled."""
    if len(cmd) != 3 or type(cmd[1]) is not str or type(cmd[2]) is not bool:
        return h._map_rej("restrict: expected (op, account, restricted: bool)", REJ_MALFORMED)
    _, account, restricted = cmd
    if h.key is not None and h.key.role != "admin":
        return h._map_rej("restricting an account needs an admin key", REJ_NOT_ALLOWED)
    if not 0 < len(account) <= MAX_ID_LEN:
        return h._map_rej(f"account of 1..{MAX_ID_LEN} chars", REJ_MALFORMED)
    start = h.journal_apply((A_RESTRICT, account, restricted), out)
    for ev in out[start:]:
        if ev[AE_KIND] == AE_REJECTED:
            return h._map_rej(ev[AREJ_REASON], ev[AREJ_CODE])
        if ev[AE_KIND] == AE_RESTRICTED:
            return {"ok": True, "account": account, "restricted": restricted}
    return h._map_rej("restrict had no effect", REJ_MALFORMED)  # unreachable


# the admin's writes on an account shard, by op (``AccountHandler``'s dispatch): one account's
# fee group or restriction, and a pair's listing (``listing_service``)
# (and a perp margin move: the account's own key's or an admin's, ``account_margin``)
ACCOUNT_ADMIN = {
    OP_FEE_GROUP: fee_group,
    OP_RESTRICT: restrict,
    **LISTING_ADMIN,
    OP_MARGIN: margin_move,
}
