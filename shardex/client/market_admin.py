"""The SDK's market and account admin answers, decoded (pure: the client's I/O is elsewhere).

``set_market`` sends ``(OP_MARKET_RULE, symbol, changes)`` to the pair's engine shard; its
answer is the engine's events (``EV_MARKET``, then a delisting's cancels) or one ``rejected``
event, or a refusal map (``not_allowed``, ``wrong_shard``...). Here they become one map.
"""

from __future__ import annotations

from typing import Any

from shardex.client.errors import MALFORMED_PREFIX, _bad_reply, _failed
from shardex.engine.codes import EV_CANCELLED, EV_MARKET, EV_REJECTED, reject_name
from shardex.engine.markets import Market
from shardex.wire.errors import result_error
from shardex.wire.layouts import EV_KIND, EV_SEQ, REJECTED_CODE, REJECTED_REASON
from shardex.wire.market_rules import market_event_json, rules_json


def admin_events(what: str, error: Any, results: Any) -> list[tuple]:
    """An engine shard's reply to one admin write (a market rule, a listing) → its events;
    ``ShardexError`` for a refusal of the request (its code kept) or a reply without events."""
    if error is not None:
        raise _failed(what, error)
    if not isinstance(results, list | tuple) or len(results) != 1:
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: expected one result")
    (res,) = results
    if isinstance(res, dict):
        raise _failed(what, result_error(res) or res)
    evs = [tuple(e) for e in res] if isinstance(res, list | tuple) else []
    if not evs or not all(evs):
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: no event")
    return evs


def market_rule_result(error: Any, results: Any, symbol: str, market: Market | None
                       ) -> dict[str, Any]:  # fmt: skip
    """A market rule's reply → ``{"ok": True, symbol, state, band_bps, max_qty, max_notional,
    seq, cancelled}`` (decimal strings; ``cancelled``: the orders a delisting cancelled) or
    ``{"ok": False, "rejected": reason, "code": name}``; ``ShardexError`` for a refusal of the
    request (its code kept) or a reply this client cannot read."""
    what = f"market {symbol}"
    evs = admin_events(what, error, results)
    first = evs[0]
    if first[EV_KIND] == EV_REJECTED:
        return {"ok": False, "rejected": first[REJECTED_REASON],
                "code": reject_name(first[REJECTED_CODE])}  # fmt: skip
    if first[EV_KIND] != EV_MARKET:
        raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: unexpected event {first!r:.100}")
    out = market_event_json(first, market, first[EV_SEQ])
    del out["ev"]
    out["ok"] = True
    out["cancelled"] = sum(1 for e in evs if e[EV_KIND] == EV_CANCELLED)
    return out


def pair_rules(markets: dict[str, Market], replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Every shard's ``OP_MARKETS`` answer → symbol → its rules (decimal strings) and shard;
    a shard that could not answer adds nothing (its pairs show as unknown)."""
    out: dict[str, Any] = {}
    for shard, reply in enumerate(replies):
        perps = reply.get("perps") or {}  # (a perp pair's definition, index and mark)
        for symbol, rules in (reply.get("rules") or {}).items():
            out[symbol] = {**rules_json(markets.get(symbol), rules), "shard": shard,
                           **perps.get(symbol, {"kind": "spot"})}  # fmt: skip
    return dict(sorted(out.items()))
