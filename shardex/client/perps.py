"""The SDK's side of perp index prices and margin (pure): a price → the engine's ``OP_INDEX``
command, an amount → ``OP_MARGIN``, and the engine shards' answers → plain maps
(``AsyncClient.set_index``, ``set_margin``, ``positions``; docs/perps.md). With the account
tier a margin move goes to the account's shard instead (``tier_margin_command``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from shardex.client.errors import MALFORMED_PREFIX, _bad_reply, _failed
from shardex.client.market_admin import admin_events
from shardex.engine.codes import (
    EV_INDEX,
    EV_MARGIN,
    EV_REJECTED,
    OP_INDEX,
    OP_MARGIN,
    Command,
    reject_name,
)
from shardex.engine.markets import Market
from shardex.wire.index_event import index_event_json
from shardex.wire.layouts import EV_KIND, REJECTED_CODE, REJECTED_REASON
from shardex.wire.position_event import position_event_json


def index_ticks(market: Market, price: Any) -> int:
    """A price (decimal string or Decimal, never a float) → the nearest whole tick, half to
    even: an index is an average of other venues' prices, it need not lie on this grid.
    ValueError for anything that is not a positive finite decimal."""
    if isinstance(price, float) or not isinstance(price, str | Decimal):
        raise ValueError(f"index price must be a decimal string, got {type(price).__name__}")
    try:
        value = Decimal(price)
    except InvalidOperation:
        raise ValueError(f"index price {str(price)[:20]!r} is not a decimal") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"index price must be > 0, got {str(price)[:20]}")
    return int((value / market.tick).to_integral_value(ROUND_HALF_EVEN))


def index_command(market: Market, price: Any) -> Command:
    """``(OP_INDEX, symbol, ticks)`` for ``price`` (``index_ticks``)."""
    return (OP_INDEX, market.symbol, index_ticks(market, price))


def _one_event(what: str, error: Any, results: Any, kind: int,
               to_json: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """An admin command's one event: its JSON with ``ok`` (``to_json``) when it is of
    ``kind``, ``{"ok": False, "rejected", "code"}`` when rejected; ``ShardexError`` for a
    refused request or any other event."""
    (ev, *_) = admin_events(what, error, results)
    if ev[EV_KIND] == EV_REJECTED:
        return {"ok": False, "rejected": ev[REJECTED_REASON],
                "code": reject_name(ev[REJECTED_CODE])}  # fmt: skip
    if ev[EV_KIND] != kind:
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: unexpected event {ev!r:.100}")
    out = to_json(ev)
    del out["ev"]
    out["ok"] = True
    return out


def index_result(error: Any, results: Any, symbol: str, market: Market) -> dict[str, Any]:
    """The reply to ``OP_INDEX`` → ``{"ok": True, symbol, index, mark, seq}`` (decimal
    strings) or ``{"ok": False, "rejected", "code"}``; ``ShardexError`` for a refusal of the
    request (``not_allowed``: not a feed key) or a reply this client cannot read."""
    return _one_event(f"index {symbol}", error, results, EV_INDEX,
                      lambda ev: index_event_json(ev, {symbol: market}))


def margin_units(market: Market, amount: Any) -> int:
    """A margin move (a signed decimal string of the settle asset, never a float) → notional
    units of the pair (tick × lot); ValueError when it is not a whole number of them."""
    if isinstance(amount, float) or not isinstance(amount, str | Decimal):
        raise ValueError(f"margin amount must be a decimal string, got {type(amount).__name__}")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"margin amount {str(amount)[:20]!r} is not a decimal") from None
    unit = market.tick * market.lot
    if not value.is_finite() or not value or value % unit:
        raise ValueError(f"margin amount must be a nonzero multiple of {unit}, got "
                         f"{str(amount)[:20]}")  # fmt: skip
    return int(value / unit)


def margin_command(market: Market, account: str, amount: Any) -> Command:
    """``(OP_MARGIN, symbol, account, units)`` for ``amount`` (``margin_units``)."""
    return (OP_MARGIN, market.symbol, account, margin_units(market, amount))


def margin_result(error: Any, results: Any, symbol: str, market: Market) -> dict[str, Any]:
    """The reply to ``OP_MARGIN`` → ``{"ok": True, symbol, account, amount, collateral, seq}``
    or ``{"ok": False, "rejected", "code"}`` (``ShardexError``: the request was refused, e.g.
    ``not_allowed`` for a key that is not an admin's)."""
    return _one_event(f"margin {symbol}", error, results, EV_MARGIN,
                      lambda ev: position_event_json(ev, {symbol: market}))


def tier_margin_command(market: Market, account: str, amount: Any, ref: str) -> Command:
    """With the account tier: ``(OP_MARGIN, symbol, account, amount, ref)`` for the account
    shard, ``amount`` a signed decimal string of the settle asset (``margin_units`` checks
    it is a whole number of the pair's units)."""
    margin_units(market, amount)
    return (OP_MARGIN, market.symbol, account, str(amount), ref)


def tier_margin_result(error: Any, results: Any, symbol: str) -> dict[str, Any]:
    """An account shard's answer to a margin move → ``{"ok": True, symbol, account, asset,
    amount, available, held, forwarded}`` or ``{"ok": False, "rejected", "code"}``
    (``ShardexError``: the request was refused)."""
    if error is not None:
        raise _failed(f"margin {symbol}", error)
    res = results[0] if isinstance(results, tuple | list) and len(results) == 1 else None
    if not isinstance(res, dict):
        raise _bad_reply(f"margin {symbol}: {MALFORMED_PREFIX}: expected a map")
    if "rejected" in res:
        return {"ok": False, "rejected": str(res["rejected"]), "code": res.get("code")}
    return {**res, "ok": True}


def positions_merged(replies: list[Any]) -> list[dict[str, Any]]:
    """Every engine shard's ``OP_POSITIONS`` answer → one list by symbol (a shard that could
    not answer has none; a refusal raises)."""
    found: list[dict[str, Any]] = []
    for raw in replies:
        if isinstance(raw, dict) and "error" in raw:
            raise _bad_reply(f"positions: {raw['error']!r:.100}")
        if isinstance(raw, dict):
            found.extend(p for p in raw.get("positions") or () if isinstance(p, dict))
    return sorted(found, key=lambda p: str(p.get("symbol")))


def margin_outcome(before: Mapping[str, Any], after: Mapping[str, Any], symbol: str,
                   amount: Decimal) -> str | None:  # fmt: skip
    """A margin move's fate from two reads of the account shard's ``margin_moves`` (before
    it was sent, and now): None while a move of the account on ``symbol`` is still in flight;
    then ``"moved"`` when the net the engine confirmed changed by ``amount``, else
    ``"refused"`` (the engine shard refused it: nothing moved). Assumes no other move of the
    account on the pair at the same time (its amount would count too)."""
    now = after.get(symbol) or {"moved": "0", "pending": 0}
    if now["pending"]:
        return None
    was = Decimal((before.get(symbol) or {}).get("moved", "0"))
    return "moved" if Decimal(now["moved"]) - was == amount else "refused"
