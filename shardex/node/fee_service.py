"""An account shard's fee requests (socket-free, like ``account_service``): the read of an
account's fee rates (``OP_FEES``) and the admin command that puts an account in a fee group
(``OP_FEE_GROUP``, journaled as ``A_FEE_GROUP`` so replay and standbys agree)."""

from __future__ import annotations

from typing import Any

from shardex.accounts.codes import A_FEE_GROUP, AE_FEE_GROUP, AE_REJECTED
from shardex.accounts.fees import MAX_TIER_NAME
from shardex.engine.codes import REJ_MALFORMED, REJ_NOT_ALLOWED
from shardex.wire.codes import MALFORMED
from shardex.wire.errors import read_error
from shardex.wire.layouts import AE_KIND, AREJ_CODE, AREJ_REASON
from shardex.wire.protocol import MAX_ID_LEN


def fee_read(h: Any, cmd: tuple) -> dict[str, Any]:
    """``(OP_FEES, account)``: the account's group, tier, 30-day volume per asset and the
    maker/taker bps an order of it placed now gets on every market (the account's own key, or
    an admin/reader key)."""
    account = cmd[1] if len(cmd) == 2 else None
    if type(account) is not str or not 0 < len(account) <= MAX_ID_LEN:
        return read_error(MALFORMED, f"fees: expected (op, account of 1..{MAX_ID_LEN} chars)")
    refused = h._may_read_account(account)
    if refused is not None:
        return refused
    info = h.core.fee_info(account)
    fmt = h.table.fixed
    return {
        "account": account,
        "shard": h.core.shard,
        "group": info["group"],
        "tier": info["tier"],
        "volume": {a: fmt(a, v) for a, v in sorted(info["volume"].items())},
        "rates": {s: {"maker_bps": m, "taker_bps": t} for s, (m, t) in info["rates"].items()},
        "tiers": [{"name": n, "volume_asset": a, "volume_min": fmt(a, v) if a else None}
                  for n, a, v in info["tiers"]],  # fmt: skip
        "seq": h.core.seq,
    }


def fee_group(h: Any, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
    """``(OP_FEE_GROUP, account, group)`` (admin keys only): ``{"ok", account, group, tier}``
    or ``{"rejected", code}``; bounded before anything is journaled."""
    if len(cmd) != 3 or not all(type(v) is str for v in cmd[1:]):
        return h._map_rej("fee_group: expected (op, account, group)", REJ_MALFORMED)
    _, account, group = cmd
    if h.key is not None and h.key.role != "admin":
        return h._map_rej("setting a fee group needs an admin key", REJ_NOT_ALLOWED)
    if not 0 < len(account) <= MAX_ID_LEN or len(group) > MAX_TIER_NAME:
        return h._map_rej(f"account of 1..{MAX_ID_LEN} chars and a group of at most "
                          f"{MAX_TIER_NAME}", REJ_MALFORMED)  # fmt: skip
    start = h.journal_apply((A_FEE_GROUP, account, group), out)
    for ev in out[start:]:
        if ev[AE_KIND] == AE_REJECTED:
            return h._map_rej(ev[AREJ_REASON], ev[AREJ_CODE])
        if ev[AE_KIND] == AE_FEE_GROUP:
            _, _, _, group, tier = ev
            return {"ok": True, "account": account, "group": group, "tier": tier}
    return h._map_rej("fee_group had no effect", REJ_MALFORMED)  # unreachable
