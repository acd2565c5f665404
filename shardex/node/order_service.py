"""An account shard's new orders and amends (``AccountHandler``'s hot path): a client's order
checked at the edge, turned into the core's command, journaled and held, or refused with the
engine's reply shape. One function of the handler's (``h``), as ``fee_service`` is."""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import MAX_UNITS
from shardex.accounts.codes import A_AMEND, A_NEW, AE_REJECTED
from shardex.amounts import parse_decimal
from shardex.engine.codes import (
    EV_REJECTED,
    OP_NEW,
    OP_REJECT,
    REJ_MALFORMED,
    REJ_NOT_ALLOWED,
    REJ_OFF_GRID,
    REJ_OUT_OF_RANGE,
)
from shardex.wire.layouts import (
    AE_KIND,
    CMD_ACCOUNT,
    CMD_OP,
    CMD_SYMBOL,
    NEW_BUDGET,
    NEW_OPTS,
    NEW_WIDTH,
    REJECT_CODE,
    REJECT_REASON,
)
from shardex.wire.protocol import edge_command, options_refusal, quote

_EXTRAS = (NEW_BUDGET + 1, NEW_OPTS + 1)  # the widths of a new order with a budget, options


def order(h: Any, cmd: tuple, out: list[tuple]) -> list[tuple]:
    """A new (+ a budget, + options) or amend → hold and forward: ``[]``, or one refusal."""
    budget = opts = None
    if cmd[CMD_OP] == OP_NEW and len(cmd) in _EXTRAS:
        raw, opts = cmd[NEW_BUDGET], cmd[NEW_OPTS] if len(cmd) > NEW_OPTS else None
        cmd = cmd[:NEW_WIDTH]  # (a trigger)
        if opts is not None and (why := options_refusal(opts)):
            return [h._rej(cmd, why, REJ_MALFORMED)]
        pair = h.table.pairs.get(cmd[CMD_SYMBOL]) if type(cmd[CMD_SYMBOL]) is str else None
        if raw is not None:
            amount = parse_decimal(raw)
            budget = h.table.to_units(pair.quote, amount) if pair and amount else None
            if budget is None:
                return [h._rej(cmd, f"budget {quote(raw)} is not an amount", REJ_OFF_GRID)]
            if budget > MAX_UNITS:  # (it would not even fit the journal's 64-bit ints)
                return [h._rej(cmd, f"budget {raw:.40} is out of range", REJ_OUT_OF_RANGE)]
    cmd = edge_command(cmd)
    if cmd[CMD_OP] == OP_REJECT:
        code = cmd[REJECT_CODE] if len(cmd) > REJECT_CODE else REJ_MALFORMED
        return [h._rej(cmd, cmd[REJECT_REASON], code)]
    if h.key is not None and not h.key.may_act_for(account := cmd[CMD_ACCOUNT]):
        return [h._rej(cmd, f"account {account} not allowed for this key", REJ_NOT_ALLOWED)]
    fields = cmd[CMD_SYMBOL:]
    acmd = (A_NEW, *fields, budget) if cmd[CMD_OP] == OP_NEW else (A_AMEND, *fields)
    acmd = acmd if opts is None else (*acmd, opts)
    if h.stamp_due or h.place_due is not None:
        start = h.journal_apply(acmd, out)
    else:  # (``journal_apply`` with nothing due before it, inline: once per order)
        start = len(out)
        applier = h.applier
        h.journal.add(applier.seq, acmd)
        applier.apply(acmd, out)
        h.commands += 1
    ev = out[-1] if len(out) > start else None  # (a refusal is the one event; a hold ends
    if ev is not None and ev[AE_KIND] == AE_REJECTED:  # with its forward: no scan of them)
        h.rejected += 1
        _, seq, _, _, reason, code = ev
        return [(EV_REJECTED, seq, fields[0], fields[1], reason, code)]
    return []
