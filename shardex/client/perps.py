"""The SDK's side of perp index prices (pure): a price → the engine's ``OP_INDEX`` command,
and the engine shard's answer → one map (``AsyncClient.set_index``; docs/perps.md)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from shardex.client.errors import MALFORMED_PREFIX, _bad_reply
from shardex.client.market_admin import admin_events
from shardex.engine.codes import EV_INDEX, EV_REJECTED, OP_INDEX, Command, reject_name
from shardex.engine.markets import Market
from shardex.wire.index_event import index_event_json
from shardex.wire.layouts import EV_KIND, REJECTED_CODE, REJECTED_REASON


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


def index_result(error: Any, results: Any, symbol: str, market: Market) -> dict[str, Any]:
    """The reply to ``OP_INDEX`` → ``{"ok": True, symbol, index, mark, seq}`` (decimal
    strings) or ``{"ok": False, "rejected", "code"}``; ``ShardexError`` for a refusal of the
    request (``not_allowed``: not a feed key) or a reply this client cannot read."""
    what = f"index {symbol}"
    (ev, *_) = admin_events(what, error, results)
    if ev[EV_KIND] == EV_REJECTED:
        return {"ok": False, "rejected": ev[REJECTED_REASON],
                "code": reject_name(ev[REJECTED_CODE])}  # fmt: skip
    if ev[EV_KIND] != EV_INDEX:
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: unexpected event {ev!r:.100}")
    out = index_event_json(ev, {symbol: market})
    del out["ev"]
    out["ok"] = True
    return out
