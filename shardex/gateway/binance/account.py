"""Binance's signed REST routes: ``POST``/``DELETE``/``GET /api/v3/order``,
``GET``/``DELETE /api/v3/openOrders`` and ``GET /api/v3/account``, for the API keys of
``shardex keys add --api`` (``auth``), sent to the cluster through the gateway's REST
internals (one SDK client per key, with the CURVE key it is bound to: the cluster still checks
that a key acts only for its accounts).

The account: the key's only one; a key bound to several names it with the extra parameter
``account`` (not Binance's).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from shardex.accounts.ledger import account_shard_for
from shardex.client import AsyncClient
from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.binance.auth import BinanceVerifier
from shardex.gateway.binance.errors import (
    BAD_PARAM,
    DISCONNECTED,
    NO_SUCH_ORDER,
    REJECTED_MBX_KEY,
    BinanceError,
    cancel_error,
    missing,
    order_error,
)
from shardex.gateway.binance.market import pair_of, route
from shardex.gateway.binance.orders import (
    Memo,
    new_order,
    open_order_json,
    order_json,
    trade_json,
)
from shardex.gateway.binance.symbols import SymbolMap, amount, order_id
from shardex.gateway.rest import Rest
from shardex.gateway.signing import ApiKey

MAX_BODY = 4096
Signed = tuple[ApiKeyRecord, str, dict[str, str]]  # (key, account, parameters)


class _Keys(Mapping[str, ApiKey]):
    """The gateway's API keys as the verifier sees them (reloaded by ``Rest``)."""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest

    def __getitem__(self, key_id: str) -> ApiKey:
        return self.rest.records[key_id].key

    def __iter__(self) -> Any:
        return iter(self.rest.records)

    def __len__(self) -> int:
        return len(self.rest.records)


def _now() -> int:
    return int(time.time() * 1000)


class AccountRoutes:
    """The signed routes; ``memo`` remembers what this gateway placed."""

    def __init__(self, names: SymbolMap, rest: Rest) -> None:
        self.names, self.rest = names, rest
        self.verifier = BinanceVerifier(_Keys(rest))
        self.memo = Memo()

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v3/order", route(self.place))
        r.add_delete("/api/v3/order", route(self.cancel))
        r.add_get("/api/v3/order", route(self.query))
        r.add_get("/api/v3/openOrders", route(self.open_orders))
        r.add_delete("/api/v3/openOrders", route(self.cancel_all))
        r.add_get("/api/v3/account", route(self.account))
        r.add_get("/api/v3/myTrades", route(self.my_trades))

    async def _signed(self, request: web.Request) -> Signed:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise BinanceError(-1101, f"The request body is larger than {MAX_BODY} bytes.")
        try:
            body = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BinanceError(-1100, "Illegal characters found in the request body.") from None
        query = request.raw_path.partition("?")[2]
        self.rest.auth.learn(request.headers.get("X-MBX-APIKEY"))
        key, params = self.verifier.check(request.headers, request.method, query, body, _now())
        rec = self.rest.records[key.key_id]
        asked = params.get("account")
        if asked is None and len(key.accounts) == 1:
            return rec, next(iter(key.accounts)), params
        if not asked:
            raise missing("account")
        if not key.may_act_for(asked):
            raise BinanceError(REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for "
                               "action.")  # fmt: skip
        return rec, asked, params

    def _client(self, rec: ApiKeyRecord) -> AsyncClient:
        return self.rest.client_for(rec)

    async def place(self, request: web.Request) -> Any:
        rec, account, p = await self._signed(request)
        pair = pair_of(self.names, p.get("symbol"))
        placed, kw = new_order(pair, p, "gw" + secrets.token_hex(10), _now())
        c = self._client(rec)
        symbol, side, qty, price = kw.pop("symbol"), kw.pop("side"), kw.pop("qty"), kw.pop("price")
        res = await c.place(symbol, side, qty, price, account=account, **kw)
        if res.rejected:
            raise order_error(res.code, res.reason)
        self.memo.add(account, placed)
        kind = p.get("newOrderRespType", "FULL").upper()
        if kind == "ACK":
            return {"symbol": pair.name, "orderId": order_id(placed.client_id),
                    "orderListId": -1, "clientOrderId": placed.client_id,
                    "transactTime": placed.time}  # fmt: skip
        status = await c.order_status(symbol, placed.client_id, account=account)
        return order_json(pair, status, placed, _now(), fills=kind == "FULL")

    async def _which(self, c: AsyncClient, account: str, p: Mapping[str, str]) -> str:
        """The client order id a request names (``origClientOrderId`` or ``orderId``)."""
        if p.get("origClientOrderId"):
            return p["origClientOrderId"]
        raw = p.get("orderId", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
            raise missing("orderId")
        oid = int(raw)
        known = self.memo.ids.get((account, oid))
        if known is not None:
            return known
        for o in await c.open_orders(account):  # (an order this gateway did not place)
            if "id" in o and order_id(o["id"]) == oid:
                return str(o["id"])
        raise BinanceError(NO_SUCH_ORDER, "Order does not exist.")

    async def cancel(self, request: web.Request) -> Any:
        rec, account, p = await self._signed(request)
        pair = pair_of(self.names, p.get("symbol"))
        c = self._client(rec)
        try:
            cid = await self._which(c, account, p)
        except BinanceError as exc:
            if exc.code != NO_SUCH_ORDER:
                raise
            raise cancel_error("not_live", "no such open order") from None
        res = await c.cancel(pair.symbol, cid, account=account)
        if res.rejected:
            raise cancel_error(res.code, res.reason)
        status = await c.order_status(pair.symbol, cid, account=account)
        out = order_json(pair, status, self.memo.get(account, cid), _now())
        out["origClientOrderId"] = cid
        return out

    async def query(self, request: web.Request) -> Any:
        rec, account, p = await self._signed(request)
        pair = pair_of(self.names, p.get("symbol"))
        c = self._client(rec)
        cid = await self._which(c, account, p)
        status = await c.order_status(pair.symbol, cid, account=account)
        if status.get("state") == "unknown":
            raise BinanceError(NO_SUCH_ORDER, "Order does not exist.")
        return order_json(pair, status, self.memo.get(account, cid), _now())

    async def open_orders(self, request: web.Request) -> Any:
        rec, account, p = await self._signed(request)
        only = pair_of(self.names, p["symbol"]).symbol if "symbol" in p else None
        out = []
        for o in await self._client(rec).open_orders(account):
            name = self.names.name_of(str(o.get("symbol", "")))
            if "id" not in o or name is None or (only and o["symbol"] != only):
                continue
            out.append(open_order_json(self.names.pairs[name], o,
                                       self.memo.get(account, o["id"]), _now()))  # fmt: skip
        return out

    async def cancel_all(self, request: web.Request) -> Any:
        rec, account, p = await self._signed(request)
        pair = pair_of(self.names, p.get("symbol"))
        done = await self._client(rec).cancel_all(pair.symbol, account=account)
        if not done.ok:
            bad = next(r for r in done.results if not r.ok)
            raise cancel_error(bad.code, bad.reason)
        out = []
        for _, cid in done.cancelled:
            placed = self.memo.get(account, cid)
            status = {"state": "cancelled", "reason": "user", "id": cid}
            item = order_json(pair, status, placed, _now())
            out.append({**item, "origClientOrderId": cid})
        return out

    async def account(self, request: web.Request) -> Any:
        rec, account, _ = await self._signed(request)
        balances = await self._client(rec).balance(account)
        return {"makerCommission": 0, "takerCommission": 0, "buyerCommission": 0,
                "sellerCommission": 0, "canTrade": True, "canWithdraw": False,
                "canDeposit": False, "brokered": False, "requireSelfTradePrevention": False,
                "preventSor": False, "updateTime": _now(), "accountType": "SPOT",
                "balances": [{"asset": a, "free": amount(free), "locked": amount(held)}
                             for a, (free, held) in sorted(balances.items())],
                "permissions": ["SPOT"], "uid": order_id(account)}  # fmt: skip

    async def my_trades(self, request: web.Request) -> Any:
        """The account's fills of ``symbol`` (newest ``limit``, oldest first), with their fees:
        the account shard's fill events (gwrest's ``FillReader``)."""
        rec, account, p = await self._signed(request)
        pair = pair_of(self.names, p.get("symbol"))
        raw = p.get("limit", "500")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4):
            raise BinanceError(BAD_PARAM, "Illegal characters found in parameter 'limit'.")
        c = self._client(rec)
        await c.topology()
        if self.rest.fills is None or not c.accounts:
            raise BinanceError(DISCONNECTED, "No fills here: the cluster has no account tier "
                               "or the gateway reads no Redis.")  # fmt: skip
        rows, _ = await self.rest.fills.page(account_shard_for(account, c.accounts), account,
                                             pair.symbol, max(1, min(1000, int(raw))), None)
        return [trade_json(pair, f) for f in reversed(rows)]
