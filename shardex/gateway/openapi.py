"""The OpenAPI 3 description of the gateway's private REST API, served at
``GET /v1/openapi.json``: written once, as data, and the routes are registered from it
(``rest.Rest.routes``: each operation's ``operationId`` names its handler), so the description
and what the gateway serves cannot drift apart. ``tests/unit/test_rest_api.py`` checks it
against the router and validates it (``openapi-spec-validator``)."""

from __future__ import annotations

from typing import Any

DEC = {"type": "string", "pattern": r"^[0-9]{1,30}(\.[0-9]{1,30})?$", "example": "0.0100"}
NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,64}$"}
OUT_DEC = {"type": "string", "nullable": True, "description": "a decimal string"}
ANY = {"$ref": "#/components/schemas/Any"}
SEC = [{"key": [], "timestamp": [], "signature": []}]


def _q(name: str, desc: str, required: bool = False, schema: Any = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": desc,
            "schema": schema or NAME}  # fmt: skip


ACCOUNT = _q("account", "the account to act for (default: the key's only account)")
SYMBOL = _q("symbol", "the pair, e.g. BTC-USD")


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def _body(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = _obj({**props, "account": NAME}, required)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(desc: str, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": desc,
                           "content": {"application/json": {"schema": {"$ref": ref}}}}  # fmt: skip
    return {"200": out, "default": {"$ref": "#/components/responses/Error"}}


def _op(op_id: str, summary: str, ok: dict[str, Any], params: list[Any] | None = None,
        body: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": SEC,
                           "responses": ok}  # fmt: skip
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = body
    return out


RESULT, ALL = "#/components/schemas/Result", "#/components/schemas/CancelAll"
ORDER_FIELDS = {"symbol": NAME, "side": {"type": "string", "enum": ["buy", "sell"]}, "qty": DEC,
                "price": DEC, "type": {"type": "string"}, "tif": {"type": "string"},
                "stp": {"type": "string"}, "post_only": {"type": "boolean"},
                "id": NAME}  # fmt: skip
TRANSFER = _body({"asset": NAME, "amount": DEC, "ref": NAME}, ("account", "asset", "amount"))
FILL = _obj({k: OUT_DEC for k in ("price", "qty", "fee")} | {
    "symbol": {"type": "string"}, "id": {"type": "string"}, "trade_id": {"type": "integer"},
    "side": {"type": "string", "nullable": True}, "fee_asset": {"type": "string"},
    "fee_bps": {"type": "integer", "nullable": True}, "role": {"type": "string"},
    "ts": {"type": "integer", "nullable": True}})  # fmt: skip
OPEN = _obj({k: OUT_DEC for k in ("price", "qty", "open", "filled", "held")} | {
    "symbol": {"type": "string"}, "id": {"type": "string"}, "side": {"type": "string"},
    "asset": {"type": "string"}, "pending_amends": {"type": "integer"}})  # fmt: skip

PATHS: dict[str, dict[str, Any]] = {
    "/v1/order": {
        "post": _op("place", "Place an order", _ok("it ran (see events)", RESULT),
                    body=_body(ORDER_FIELDS, ("symbol", "side", "qty"))),
        "put": _op("amend", "Amend a live order's qty and/or price", _ok("amended", RESULT),
                   body=_body({"symbol": NAME, "id": NAME, "qty": DEC, "price": DEC},
                              ("symbol", "id"))),
        "delete": _op("cancel", "Cancel an order", _ok("cancelled", RESULT),
                      [_q("symbol", "the pair", True), _q("id", "the order id", True), ACCOUNT]),
        "get": _op("status", "An order's state, or with fate=1 a timed-out order's fate",
                   _ok("its state", "#/components/schemas/Any"),
                   [_q("symbol", "the pair", True), _q("id", "the order id", True), ACCOUNT,
                    _q("fate", "1: the fate of a new order whose answer never came",
                       schema={"type": "string", "enum": ["0", "1", "true", "false"]})]),
    },
    "/v1/orders": {"delete": _op("cancel_all", "Cancel every open order (of a pair)",
                                 _ok("what was cancelled", ALL), [SYMBOL, ACCOUNT])},
    "/v1/openOrders": {"get": _op("open_orders", "The account's open orders",
                                  _ok("open orders", "#/components/schemas/OpenOrders"),
                                  [SYMBOL, ACCOUNT])},
    "/v1/fills": {"get": _op("fills", "The account's fills with fees, newest first",
                             _ok("a page of fills", "#/components/schemas/Fills"),
                             [SYMBOL, ACCOUNT, _q("limit", "1..500 (100)", schema={
                                 "type": "integer", "minimum": 1, "maximum": 500}),
                              _q("after", "the next cursor of the previous page", schema={
                                  "type": "string"})])},
    "/v1/balances": {"get": _op("balances", "The account's balances",
                                _ok("balances", "#/components/schemas/Balances"), [ACCOUNT])},
    "/v1/positions": {"get": _op("positions", "The account's perp positions",
                                 _ok("positions", "#/components/schemas/Positions"), [ACCOUNT])},
    "/v1/cancelAfter": {"post": _op(
        "cancel_after", "Dead-man switch: cancel the orders unless called again in time",
        _ok("armed (0: disarmed)", ALL),
        body=_body({"seconds": {"type": "integer", "minimum": 0, "maximum": 86400},
                    "symbol": NAME}, ("seconds",)))},
    "/v1/deposit": {"post": _op("deposit", "Credit an account (admin key)",
                                _ok("credited", RESULT), body=TRANSFER)},
    "/v1/withdraw": {"post": _op("withdraw", "Debit an account (admin key)",
                                 _ok("debited", RESULT), body=TRANSFER)},
    "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This description",
                                 "security": [], "responses": {"200": {
                                     "description": "OpenAPI 3",
                                     "content": {"application/json": {"schema": {
                                         "$ref": "#/components/schemas/Any"}}}}}}},
}  # fmt: skip

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "key": {"type": "apiKey", "in": "header", "name": "X-SHARDEX-KEY"},
        "timestamp": {"type": "apiKey", "in": "header", "name": "X-SHARDEX-TIMESTAMP",
                      "description": "ms since the Unix epoch, within 5 s of the gateway"},
        "signature": {"type": "apiKey", "in": "header", "name": "X-SHARDEX-SIGNATURE",
                      "description": "hex HMAC-SHA256(secret, timestamp + METHOD + path with "
                                     "query + body)"},
    },
    "schemas": {
        "Any": {"type": "object", "additionalProperties": True},
        "Error": _obj({"type": {"type": "string"}, "code": {"type": "integer"},
                       "name": {"type": "string"}, "message": {"type": "string"}},
                      ("code", "name", "message")),
        "Result": _obj({"ok": {"type": "boolean"}, "code": {"type": "string", "nullable": True},
                        "id": {"type": "string", "nullable": True},
                        "events": {"type": "array", "items": ANY},
                        "error": {"type": "string", "nullable": True},
                        "fate": {"type": "string", "nullable": True}}, ("ok", "events")),
        "CancelAll": _obj({"ok": {"type": "boolean"}, "count": {"type": "integer"},
                           "cancelled": {"type": "array", "items": _obj({
                               "symbol": {"type": "string"}, "id": {"type": "string"}})},
                           "pairs": {"type": "array", "items": ANY},
                           "seconds": {"type": "integer"}}, ("ok", "count", "cancelled")),
        "OpenOrders": _obj({"account": {"type": "string"}, "truncated": {"type": "boolean"},
                            "orders": {"type": "array", "items": OPEN}}, ("orders",)),
        "Fills": _obj({"account": {"type": "string"}, "next": {"type": "string", "nullable": True},
                       "fills": {"type": "array", "items": FILL}}, ("fills",)),
        "Balances": _obj({"account": {"type": "string"}, "balances": {
            "type": "object", "additionalProperties": _obj(
                {"free": {"type": "string"}, "held": {"type": "string"}}, ("free", "held"))}},
            ("balances",)),
        "Positions": _obj({"account": {"type": "string"}, "positions": {
            "type": "array", "items": {"type": "object", "additionalProperties": True}}},
            ("positions",)),
    },
    "responses": {"Error": {"description": "refused: a JSON error with a stable code (400 bad "
                                           "input, 401 signature, 403 not allowed, 503 the cluster "
                                           "did not answer)",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Error"}}}}},
}  # fmt: skip


def spec(version: str = "1") -> dict[str, Any]:
    """The whole description (a fresh dict)."""
    return {"openapi": "3.0.3",
            "info": {"title": "shardex gateway: private REST API", "version": version,
                     "description": "Signed requests (docs/gateway-rest.md). Amounts are "
                                    "decimal strings, never JSON numbers."},
            "paths": PATHS, "components": COMPONENTS}  # fmt: skip


def operations() -> list[tuple[str, str, str]]:
    """(METHOD, path, operationId) of every described operation."""
    return [(method.upper(), path, op["operationId"])
            for path, ops in PATHS.items() for method, op in ops.items()]  # fmt: skip
