"""An account shard's side of a perp margin move (socket-free, like ``fee_service``): the
client's ``(OP_MARGIN, symbol, account, amount, ref)`` (``amount`` a signed decimal string of
the pair's settle asset) is checked, journaled as ``A_MARGIN`` and forwarded to the pair's
engine shard (``shardex.accounts.margin``). The reply says what happened here: an amount in is
taken from available and forwarded; an amount out is forwarded, and credited when the engine
shard's settlement says it left the margin."""

from __future__ import annotations

from typing import Any

from shardex.accounts.assets import MAX_UNITS
from shardex.accounts.codes import A_MARGIN, AE_REJECTED, AE_REPEATED
from shardex.amounts import parse_decimal
from shardex.engine.codes import (
    REJ_MALFORMED,
    REJ_NOT_ALLOWED,
    REJ_NOT_PERP,
    REJ_OFF_GRID,
    REJ_OUT_OF_RANGE,
)
from shardex.wire.layouts import AE_KIND, AREJ_CODE, AREJ_REASON
from shardex.wire.protocol import MAX_ID_LEN

MARGIN_WIDTH = 5  # (OP_MARGIN, symbol, account, amount, ref) at an account shard


def signed_units(table: Any, asset: str, raw: str) -> int | None:
    """A signed decimal string → units of ``asset`` (None: not a decimal, or off its grid)."""
    negative = raw.startswith("-")
    amount = parse_decimal(raw[1:] if negative else raw)
    if amount is None or amount.adjusted() > 30:
        return None
    units = table.to_units(asset, amount)
    return None if units is None else (-units if negative else units)


def margin_of(core: Any, account: str) -> dict[str, dict[str, Any]]:
    """``account``'s perp margin as this shard sees it, for its balance read: per pair the
    net amount the engine confirmed moved in − out (``moved``, the settle asset) and how many
    of its moves are still in flight (``pending``: forwarded, not yet answered). A client
    waiting for a move (``shardex margin --wait``) polls this until ``pending`` is 0."""
    table, out, margin = core.table, {}, core.margin
    for symbol, pair in table.pairs.items() if margin else ():  # (spot only: nothing to do)
        moved = margin.get((account, symbol), 0) if pair.perp else 0
        if moved:
            out[symbol] = {"moved": table.fixed(pair.quote, moved), "pending": 0}
    for acct, symbol, _ in core.margin_moves.values() if core.margin_moves else ():
        if acct == account:
            row = out.setdefault(symbol, {"moved": table.fixed(table.pairs[symbol].quote, 0),
                                          "pending": 0})  # fmt: skip
            row["pending"] += 1
    return out


def margin_move(h: Any, cmd: tuple, out: list[tuple]) -> dict[str, Any]:
    """``(OP_MARGIN, symbol, account, amount, ref)`` (the account's trader key, or an admin
    key): ``{"ok": True, account, symbol, asset, amount, available, held, forwarded}`` or
    ``{"rejected", "code"}`` (``repeated`` for a retry of the same move by its ref)."""
    if len(cmd) != MARGIN_WIDTH or not all(type(v) is str for v in cmd[1:]):
        return h._map_rej("margin: expected (op, symbol, account, amount, ref)", REJ_MALFORMED)
    _, symbol, account, raw, ref = cmd
    if not (0 < len(account) <= MAX_ID_LEN and 0 < len(ref) <= MAX_ID_LEN):
        return h._map_rej(f"account and ref must be strings of 1..{MAX_ID_LEN} chars",
                          REJ_MALFORMED)  # fmt: skip
    if h.key is not None and not h.key.may_act_for(account):
        return h._map_rej(f"account {account} not allowed for this key", REJ_NOT_ALLOWED)
    if h.halted is not None:
        return {"rejected": f"halted: {h.halted}", "code": "halted"}
    pair = h.table.pairs.get(symbol)
    if pair is None or not pair.perp:
        return h._map_rej(f"margin: {symbol[:40]!r} is not a perpetual market", REJ_NOT_PERP)
    units = signed_units(h.table, pair.quote, raw[:64])
    if units is None:
        return h._map_rej(f"amount {raw[:40]!r} is not a signed multiple of "
                          f"{h.table.units[pair.quote]}", REJ_OFF_GRID)  # fmt: skip
    if abs(units) > MAX_UNITS:
        return h._map_rej(f"amount {raw[:40]} is out of range", REJ_OUT_OF_RANGE)
    start = h.journal_apply((A_MARGIN, account, symbol, units, ref), out)
    for ev in out[start:]:
        if ev[AE_KIND] == AE_REJECTED:
            return h._map_rej(ev[AREJ_REASON], ev[AREJ_CODE])
    avail, held = h.core.balance(account, pair.quote)
    reply = h._balance_map(
        account,
        pair.quote,
        avail,
        held,
        repeated=any(ev[AE_KIND] == AE_REPEATED for ev in out[start:]),
    )
    reply.update(symbol=symbol, amount=h.table.fmt(pair.quote, units), forwarded=True)
    return reply
