"""The private REST routes about orders: place, amend, cancel, cancel-all, an order's state or
fate, the open orders and the dead-man switch. Each handler takes an authenticated ``Call``
and sends through the key's ``AsyncClient``; input is checked first (``rest_common``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from shardex.gateway.rest_common import (
    Call,
    Refusal,
    amount,
    integer,
    reply,
    result,
    text,
)
from shardex.wire.codes import BAD_MESSAGE, INVALID

SIDES = ("buy", "sell")
WORDS = ("type", "tif", "stp")  # optional order fields that are short words
MAX_CANCEL_AFTER = 86_400  # seconds
MAX_FILLED_READS = 200  # open orders whose filled quantity is read from their engine shard


def _word(obj: dict[str, Any], name: str) -> str | None:
    v = obj.get(name)
    if v is None:
        return None
    if type(v) is not str or not (0 < len(v) <= 24 and v.isascii()):
        raise Refusal(BAD_MESSAGE, f"{name} must be a short string")
    return v


async def place(call: Call) -> web.Response:
    """``POST /v1/order``: a new order (``id``, the client order id, makes a retry safe)."""
    obj = call.obj()
    symbol, qty = text(obj, "symbol"), amount(obj, "qty")
    side = obj.get("side")
    if side not in SIDES:
        raise Refusal(BAD_MESSAGE, "side must be \"buy\" or \"sell\"")
    price = amount(obj, "price", required=False)
    kw: dict[str, Any] = {k: _word(obj, k) for k in WORDS if obj.get(k) is not None}
    if "id" in obj:
        kw["id"] = text(obj, "id")
    if "post_only" in obj:
        if type(obj["post_only"]) is not bool:
            raise Refusal(BAD_MESSAGE, "post_only must be true or false")
        kw["post_only"] = obj["post_only"]
    account = call.account(obj.get("account"))
    return result(await call.client.place(symbol, side, qty, price, account=account, **kw))


async def amend(call: Call) -> web.Response:
    """``PUT /v1/order``: a live order's new quantity and/or price (its id stays)."""
    obj = call.obj()
    symbol, oid = text(obj, "symbol"), text(obj, "id")
    qty, price = amount(obj, "qty", required=False), amount(obj, "price", required=False)
    if qty is None and price is None:
        raise Refusal(BAD_MESSAGE, "qty and/or price is required")
    account = call.account(obj.get("account"))
    res = await call.client.amend(symbol, oid, qty=qty, price=price, account=account)
    return result(res)


def _order_query(call: Call, *more: str) -> tuple[str, str, str]:
    q = call.params("symbol", "id", "account", *more)
    symbol, oid = text(q, "symbol"), text(q, "id")
    return symbol or "", oid or "", call.account(q.get("account"))


async def cancel(call: Call) -> web.Response:
    """``DELETE /v1/order?symbol=S&id=I``: cancel one of the key's orders."""
    symbol, oid, account = _order_query(call)
    return result(await call.client.cancel(symbol, oid, account=account))


async def status(call: Call) -> web.Response:
    """``GET /v1/order?symbol=S&id=I``: the order's state; ``&fate=1``: whether a new order
    whose answer never came ran (``executed`` / ``not executed`` / ``unknown``)."""
    symbol, oid, account = _order_query(call, "fate")
    fate = call.query.get("fate")
    if fate not in (None, "0", "1", "true", "false"):
        raise Refusal(INVALID, "fate must be 1 or 0")
    if fate in ("1", "true"):
        verdict, state = await call.client.fate(symbol, oid, account=account)
        return reply({"symbol": symbol, "id": oid, "fate": verdict, "status": state})
    return reply(await call.client.order_status(symbol, oid, account=account))


def _all(res: Any, **more: Any) -> web.Response:
    """A cancel-all (or dead-man) answer: what was cancelled, and each pair's outcome."""
    pairs = [{"symbol": r.command.get("symbol"), "ok": r.ok, "code": r.code,
              "error": None if r.error is None else str(r.error)} for r in res.results]  # fmt: skip
    cancelled = [{"symbol": s, "id": i} for s, i in res.cancelled]
    body = {"ok": res.ok, "count": len(cancelled), "cancelled": cancelled, "pairs": pairs,
            **more}
    return reply(body, 200 if res.ok else 503)


async def cancel_all(call: Call) -> web.Response:
    """``DELETE /v1/orders[?symbol=S]``: cancel every live order of the account (in S)."""
    q = call.params("symbol", "account")
    symbol = text(q, "symbol", required=False)
    account = call.account(q.get("account"))
    return _all(await call.client.cancel_all(symbol, account=account))


async def cancel_after(call: Call) -> web.Response:
    """``POST /v1/cancelAfter {"seconds": n}``: the dead-man switch: unless called again
    within n seconds, the account's orders (of ``symbol``, else of every pair) are cancelled;
    0 disarms it."""
    obj = call.obj()
    seconds = integer(obj.get("seconds"), "seconds", 0, MAX_CANCEL_AFTER)
    symbol = text(obj, "symbol", required=False)
    account = call.account(obj.get("account"))
    res = await call.client.cancel_after(seconds * 1000, symbol, account=account)
    return _all(res, seconds=seconds)


async def open_orders(call: Call) -> web.Response:
    """``GET /v1/openOrders[?symbol=S]``: the account's live orders with what each holds and,
    from its engine shard, how much of it has filled."""
    q = call.params("symbol", "account")
    symbol = text(q, "symbol", required=False)
    account = call.account(q.get("account"))
    rows = await call.client.open_orders(account)
    truncated = any(r.get("truncated") for r in rows)
    rows = [r for r in rows if not r.get("truncated")
            and (symbol is None or r.get("symbol") == symbol)]  # fmt: skip
    states = await asyncio.gather(*(_state(call, r, account) for r in rows[:MAX_FILLED_READS]))
    out = []
    for i, r in enumerate(rows):
        st = states[i] if i < len(states) else None
        filled = st.get("filled") if st else None
        out.append({"symbol": r["symbol"], "id": r["id"], "side": r["side"], "price": r["price"],
                    "qty": r["open"] + filled if filled is not None else None, "open": r["open"],
                    "filled": filled, "held": r["held"], "asset": r["asset"],
                    "pending_amends": r.get("pending_amends", 0)})  # fmt: skip
    return reply({"account": account, "orders": out, "truncated": truncated})


async def _state(call: Call, row: dict[str, Any], account: str) -> dict[str, Any] | None:
    """An open order's engine state (None when its shard does not answer now)."""
    try:
        return await call.client.order_status(row["symbol"], row["id"], account=account)
    except Exception:  # noqa: BLE001 - one order's shard away: its filled is unknown
        return None
