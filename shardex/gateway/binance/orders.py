"""Shardex orders as Binance order objects, and Binance order parameters as shardex's (pure).

Binance names an order twice: ``orderId`` (a number) and ``clientOrderId``. Shardex has one
id per order, chosen by the client: it is the ``clientOrderId`` (``newClientOrderId`` when
placing; the gateway makes one when it is absent), and ``orderId`` is a 53-bit hash of it
(``symbols.order_id``). ``Memo`` remembers what this gateway placed (original quantity, price,
type, time in force, its orderId) so that later answers are complete; an order it does not
remember (placed elsewhere, or before a restart) is described from the shard's state alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shardex.gateway.binance.errors import (
    INVALID_ORDER_TYPE,
    INVALID_SIDE,
    INVALID_TIF,
    OPTIONAL_PARAMS_BAD_COMBO,
    BinanceError,
    missing,
)
from shardex.gateway.binance.symbols import Pair, decimal, fmt, order_id, places

MEMO_MAX = 100_000
CANCELED_BY_CLIENT = ("user", "deadman", "cancel_all", "admin")  # the account's (or admin's)
# Cancelled by the venue, not by the account: Binance calls those ``EXPIRED`` (its ORDER
# STATUS enum: "canceled ... by the exchange, e.g. orders canceled during liquidation";
# its futures user data stream says ``X: EXPIRED`` with expiry reason 5, "expired when the
# account was liquidated"). A liquidation's cancel of the account's resting orders on the
# perp pair is one (reason ``liquidation``), so is a delisting and a good-till-date expiry.
EXPIRED_BY_EXCHANGE = {"liquidation": "EXPIRED", "delist": "EXPIRED", "expired": "EXPIRED",
                       "ioc": "EXPIRED", "fok": "EXPIRED"}  # fmt: skip
TIFS = {"GTC": "gtc", "IOC": "ioc", "FOK": "fok"}
STPS = {"NONE": "none", "EXPIRE_TAKER": "cancel_taker", "EXPIRE_MAKER": "cancel_maker",
        "EXPIRE_BOTH": "cancel_both"}  # fmt: skip
UNSUPPORTED = ("quoteOrderQty", "stopPrice", "icebergQty", "trailingDelta", "strategyId",
               "strategyType", "pegPriceType", "pegOffsetValue", "pegOffsetType")  # fmt: skip
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:/_-")


@dataclass(frozen=True)
class Placed:
    """What the gateway remembers of an order it placed."""

    symbol: str
    client_id: str
    side: str  # BUY / SELL
    type: str  # LIMIT / MARKET / LIMIT_MAKER
    tif: str  # GTC / IOC / FOK
    qty: Decimal
    price: Decimal | None
    time: int  # ms


class Memo:
    """Orders placed through this gateway, newest kept (``MEMO_MAX``); ``orderId`` → id."""

    def __init__(self, limit: int = MEMO_MAX) -> None:
        self.limit = limit
        self.orders: OrderedDict[tuple[str, str], Placed] = OrderedDict()  # (account, id)
        self.ids: dict[tuple[str, int], str] = {}  # (account, orderId) → client id

    def add(self, account: str, placed: Placed) -> None:
        self.orders[(account, placed.client_id)] = placed
        self.ids[(account, order_id(placed.client_id))] = placed.client_id
        while len(self.orders) > self.limit:
            (acct, cid), _ = self.orders.popitem(last=False)
            self.ids.pop((acct, order_id(cid)), None)

    def get(self, account: str, client_id: str) -> Placed | None:
        return self.orders.get((account, client_id))


def new_order(pair: Pair, p: Mapping[str, str], make_id: str,
              now: int) -> tuple[Placed, dict[str, Any]]:  # fmt: skip
    """A ``POST /api/v3/order``'s parameters → what to remember and the SDK's ``place``
    keywords (``symbol, side, qty, price, type, tif, post_only, stp, id``), or BinanceError."""
    for name in UNSUPPORTED:
        if name in p:
            raise BinanceError(OPTIONAL_PARAMS_BAD_COMBO, f"{name} is not supported here.")
    side, otype = p.get("side", "").upper(), p.get("type", "").upper()
    if side not in ("BUY", "SELL"):
        raise BinanceError(INVALID_SIDE, "Invalid side.") if side else missing("side")
    if otype not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
        raise (BinanceError(INVALID_ORDER_TYPE, "Invalid orderType.") if otype
               else missing("type"))  # fmt: skip
    qty = decimal(p.get("quantity"))
    if qty is None:
        raise missing("quantity")
    price = decimal(p.get("price")) if "price" in p else None
    tif = p.get("timeInForce", "").upper()
    if otype == "LIMIT":
        if price is None:
            raise missing("price")
        if not tif:
            raise missing("timeInForce")
    elif otype == "LIMIT_MAKER":
        if price is None:
            raise missing("price")
        tif = tif or "GTC"
    else:
        if "price" in p:
            raise BinanceError(OPTIONAL_PARAMS_BAD_COMBO, "A MARKET order takes no price.")
        tif = tif or "IOC"
    if tif not in TIFS or (otype == "MARKET" and tif == "GTC"):
        raise BinanceError(INVALID_TIF, "Invalid timeInForce.")
    cid = p.get("newClientOrderId") or make_id
    if len(cid) > 64 or not set(cid) <= ID_CHARS:
        raise missing("newClientOrderId")
    kw: dict[str, Any] = {"symbol": pair.symbol, "side": side.lower(), "qty": str(qty),
                          "price": None if price is None else str(price),
                          "type": "market" if otype == "MARKET" else "limit",
                          "tif": TIFS[tif], "id": cid}  # fmt: skip
    if otype == "LIMIT_MAKER":
        kw["post_only"] = True
    stp = p.get("selfTradePreventionMode")
    if stp is not None:
        if stp.upper() not in STPS:
            raise BinanceError(OPTIONAL_PARAMS_BAD_COMBO, "Invalid selfTradePreventionMode.")
        kw["stp"] = STPS[stp.upper()]
    return Placed(pair.symbol, cid, side, otype, tif, qty, price, now), kw


def _state(status: Mapping[str, Any], placed: Placed | None) -> str:
    state = status.get("state")
    filled = status.get("filled") or Decimal(0)
    if state == "live":
        return "PARTIALLY_FILLED" if filled > 0 else "NEW"
    if state == "filled":
        return "FILLED"
    if state == "cancelled":
        reason = status.get("reason", "")
        if reason in CANCELED_BY_CLIENT:
            return "CANCELED"
        if reason.startswith("stp") or reason.startswith("self"):
            return "EXPIRED_IN_MATCH"
        return EXPIRED_BY_EXCHANGE.get(reason, "EXPIRED")
    return "NEW" if placed else "EXPIRED"


def order_json(pair: Pair, status: Mapping[str, Any], placed: Placed | None, now: int,
               fills: bool = False) -> dict[str, Any]:  # fmt: skip
    """An order's state (``AsyncClient.order_status``) as Binance's order object."""
    n = places(pair.market)
    trades = status.get("trades") or []
    filled = status.get("filled")
    if filled is None:
        filled = sum((q for _, q, _ in trades), Decimal(0))
    quote = sum((p * q for p, q, _ in trades), Decimal(0))
    open_qty = status.get("qty") if status.get("state") == "live" else Decimal(0)
    orig = placed.qty if placed else filled + (open_qty or Decimal(0))
    price = placed.price if placed else status.get("price")
    side = placed.side if placed else str(status.get("side", "")).upper()
    cid = str(status.get("id") or (placed.client_id if placed else ""))
    out: dict[str, Any] = {
        "symbol": pair.name, "orderId": order_id(cid), "orderListId": -1,
        "clientOrderId": cid, "price": fmt(price, n), "origQty": fmt(orig, n),
        "executedQty": fmt(filled, n), "cummulativeQuoteQty": fmt(quote, n),
        "status": _state(status, placed), "timeInForce": placed.tif if placed else "GTC",
        "type": placed.type if placed else "LIMIT", "side": side,
        "stopPrice": fmt(0, n), "icebergQty": fmt(0, n),
        "time": placed.time if placed else now, "updateTime": now,
        "transactTime": placed.time if placed else now,
        "isWorking": status.get("state") == "live", "workingTime": placed.time if placed else now,
        "origQuoteOrderQty": fmt(0, n), "selfTradePreventionMode": "NONE",
    }  # fmt: skip
    if fills:
        out["fills"] = [{"price": fmt(p, n), "qty": fmt(q, n), "commission": fmt(0, n),
                         "commissionAsset": pair.quote, "tradeId": t}
                        for p, q, t in trades]  # fmt: skip
    return out


def open_order_json(pair: Pair, o: Mapping[str, Any], placed: Placed | None,
                    now: int) -> dict[str, Any]:  # fmt: skip
    """One entry of ``AsyncClient.open_orders`` as Binance's order object."""
    open_qty = o["open"]
    orig = placed.qty if placed else open_qty
    status = {"state": "live", "id": o["id"], "side": o["side"], "price": o["price"],
              "qty": open_qty, "filled": max(orig - open_qty, Decimal(0))}  # fmt: skip
    return order_json(pair, status, placed, now)


def trade_json(pair: Pair, fill: Mapping[str, Any]) -> dict[str, Any]:
    """One fill (``shardex.gateway.fills.shaped``) as Binance's ``myTrades`` entry."""
    n = places(pair.market)
    price, qty = Decimal(fill.get("price") or 0), Decimal(fill.get("qty") or 0)
    fee = Decimal(fill.get("fee") or 0)
    return {"symbol": pair.name, "id": fill.get("trade_id"),
            "orderId": order_id(str(fill.get("id") or "")), "orderListId": -1,
            "price": fmt(price, n), "qty": fmt(qty, n), "quoteQty": fmt(price * qty, n),
            "commission": fmt(fee, max(n, -int(fee.as_tuple().exponent))),
            "commissionAsset": fill.get("fee_asset") or pair.quote, "time": fill.get("ts"),
            "isBuyer": fill.get("side") == "buy", "isMaker": fill.get("role") == "maker",
            "isBestMatch": True}  # fmt: skip
