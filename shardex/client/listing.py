"""The SDK's side of listing a pair at runtime (pure: the client's I/O is elsewhere).

``list_market`` sends ``(OP_LIST_PAIR, symbol, definition, fee)`` to every account shard
first (each must be able to hold the pair's assets: the unit rule, ``shardex.accounts.listing``)
and then ``(OP_LIST, symbol, definition)`` to the pair's engine shard (the router routes it by
the symbol, like any command of the pair). A repeated listing is a no-op that succeeds, so a
listing cut short (a shard down) is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.accounts.assets import DEFAULT_FEE
from shardex.client.errors import MALFORMED_PREFIX, _bad_reply, _failed
from shardex.client.market_admin import admin_events
from shardex.engine.codes import EV_LISTED, EV_REJECTED, reject_name
from shardex.engine.listing import definition_of, parse_definition
from shardex.engine.markets import Market
from shardex.wire.layouts import EV_KIND, EV_SEQ, REJECTED_CODE, REJECTED_REASON

DEFAULTS = {"max_price": "1000000", "max_qty": "1000000000"}  # (the markets file's defaults)


def definition(symbol: str, spec: Mapping[str, Any]) -> tuple[Market, list[str]]:
    """``{tick, lot[, max_price, max_qty]}`` (decimal strings or Decimals, never floats) →
    the ``Market`` and its wire definition; ValueError with the reason otherwise."""
    unknown = set(spec) - {"tick", "lot", "max_price", "max_qty"}
    if unknown:
        raise ValueError(f"listing {symbol}: unknown keys {sorted(unknown)}")
    raw = []
    for key in ("tick", "lot", "max_price", "max_qty"):
        value = spec.get(key, DEFAULTS.get(key))
        if value is None:
            raise ValueError(f"listing {symbol}: {key} is required")
        if isinstance(value, float):
            raise ValueError(f"listing {symbol}: {key} must be a decimal string, not a float")
        try:
            raw.append(str(Decimal(str(value))))
        except InvalidOperation:
            raise ValueError(
                f"listing {symbol}: {key} {str(value)[:20]!r} is not a decimal"
            ) from None
    market = parse_definition(symbol, raw)
    if not isinstance(market, Market):
        raise ValueError(market[0])
    return market, definition_of(market)


def fee_of(fee: Any) -> list[int]:
    """``(maker_bps, taker_bps)`` or None (the default fee) → the wire's ``[maker, taker]``."""
    if fee is None:
        return [DEFAULT_FEE.maker_bps, DEFAULT_FEE.taker_bps]
    if not isinstance(fee, list | tuple) or len(fee) != 2 or not all(type(x) is int for x in fee):
        raise ValueError("fee must be (maker_bps, taker_bps) ints")
    return [fee[0], fee[1]]


def account_result(raw: Any, shard: int) -> dict[str, Any] | None:
    """One account shard's answer to ``OP_LIST_PAIR``: None when it listed the pair, else the
    listing's refusal ``{"ok": False, "rejected", "code", "shard"}``."""
    if isinstance(raw, dict) and raw.get("ok") is True:
        return None
    if isinstance(raw, dict) and "rejected" in raw:
        return {"ok": False, "rejected": raw["rejected"], "code": raw.get("code"), "shard": shard}
    if isinstance(raw, dict) and "error" in raw:
        raise _failed(f"listing on account shard {shard}", raw["error"])
    raise _bad_reply(f"listing on account shard {shard}: {MALFORMED_PREFIX}: {raw!r:.100}")


def listing_result(error: Any, results: Any, symbol: str) -> dict[str, Any]:
    """The engine shard's reply to ``OP_LIST`` → ``{"ok": True, symbol, tick, lot, max_price,
    max_qty, seq}`` or ``{"ok": False, "rejected", "code"}``; ``ShardexError`` for a refusal of
    the request (``not_allowed``, ``wrong_shard``...) or a reply this client cannot read."""
    what = f"listing {symbol}"
    evs = admin_events(what, error, results)
    if len(evs) != 1:
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: expected one event")
    ev = evs[0]
    if ev[EV_KIND] == EV_REJECTED:
        return {
            "ok": False,
            "rejected": ev[REJECTED_REASON],
            "code": reject_name(ev[REJECTED_CODE]),
        }
    if ev[EV_KIND] != EV_LISTED or len(ev) != 7:
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: unexpected event {ev!r:.100}")
    tick, lot, max_price, max_qty = ev[3:]
    return {"ok": True, "symbol": symbol, "tick": tick, "lot": lot, "max_price": max_price,
            "max_qty": max_qty, "seq": ev[EV_SEQ]}  # fmt: skip
