"""The gateway's private REST API: signed requests (``signing``) for place, cancel and order
status, sent to the cluster with the CURVE key the API key is bound to (``apikeys``).

``POST /v1/order`` (a JSON body: ``symbol``, ``side``, ``qty``, ``price``, and optionally
``type``, ``tif``, ``post_only``, ``stp``, ``id`` — the client order id that makes a retry safe
— and ``account``, default the key's only account); ``DELETE /v1/order?symbol=S&id=I`` and
``GET /v1/order?symbol=S&id=I`` (``&account=A``). Every refusal is a JSON error with a code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from shardex.client import AsyncClient
from shardex.gateway import metrics as m
from shardex.gateway.apikeys import ApiKeyRecord, load
from shardex.gateway.messages import error
from shardex.gateway.signing import SignatureError, Verifier
from shardex.wire.codes import BAD_MESSAGE, INVALID, NOT_ALLOWED

MAX_BODY = 4096
ORDER_FIELDS = ("type", "tif", "post_only", "stp", "id")
RELOAD_EVERY = 1.0  # seconds: an unknown key id reloads the API keys at most this often
Query = tuple[ApiKeyRecord, str, str, str]  # (key, symbol, id, account)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(obj, default=_plain), status=status,
                        content_type="application/json")  # fmt: skip


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, tuple | set | frozenset):
        return list(v)
    raise TypeError(type(v).__name__)


def _refuse(code: int, message: str, status: int) -> web.Response:
    m.ERRORS.labels(error(code, message)["name"]).inc()
    return _json(error(code, message), status)


class Rest:
    """The signed routes, one ``AsyncClient`` per API key in use."""

    def __init__(self, endpoint: str, keys_dir: str | None, markets: Any,
                 client: Callable[..., AsyncClient] = AsyncClient) -> None:  # fmt: skip
        self.endpoint, self.keys_dir, self.markets = endpoint, keys_dir, markets
        self.records: dict[str, ApiKeyRecord] = load(keys_dir) if keys_dir else {}
        self.verifier = Verifier({k: r.key for k, r in self.records.items()})
        self.clients: dict[str, AsyncClient] = {}
        self.make_client = client
        self._loaded = time.monotonic()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/order", self.place)
        app.router.add_delete("/v1/order", self.cancel)
        app.router.add_get("/v1/order", self.status)

    def _reload(self, key_id: str | None) -> None:
        """A key id not known yet: the API keys again (keys added while the gateway runs)."""
        if not self.keys_dir or key_id in self.records:
            return
        if time.monotonic() - self._loaded < RELOAD_EVERY:
            return
        self._loaded = time.monotonic()
        self.records = load(self.keys_dir)
        self.verifier.keys = {k: r.key for k, r in self.records.items()}

    async def _auth(self, request: web.Request) -> tuple[ApiKeyRecord, bytes] | web.Response:
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _refuse(BAD_MESSAGE, f"body larger than {MAX_BODY} bytes", 413)
        rec = request.get("shardex_key")  # a browser session stands for the key (login.py)
        if rec is not None:
            return rec, body
        self._reload(request.headers.get("X-SHARDEX-KEY"))
        try:
            key = self.verifier.check(request.headers, request.method, request.path_qs, body,
                                      int(time.time() * 1000))  # fmt: skip
        except SignatureError as exc:
            return _refuse(exc.code, str(exc), 401)
        return self.records[key.key_id], body

    def _client(self, rec: ApiKeyRecord) -> AsyncClient:
        c = self.clients.get(rec.key.key_id)
        if c is None:
            c = self.clients[rec.key.key_id] = self.make_client(
                self.endpoint, key=rec.key_file, markets=dict(self.markets), timeout=5.0)
        return c

    @staticmethod
    def _account(rec: ApiKeyRecord, asked: Any) -> str | web.Response:
        """The account to act for: the one asked (if the key may), else the key's only one."""
        if asked is None and len(rec.key.accounts) == 1:
            return next(iter(rec.key.accounts))
        if type(asked) is not str or not asked:
            return _refuse(INVALID, "account is required (the key has several, or none)", 400)
        if not rec.key.may_act_for(asked):
            return _refuse(NOT_ALLOWED, "this key may not act for that account", 403)
        return asked

    async def place(self, request: web.Request) -> web.StreamResponse:
        got = await self._auth(request)
        if isinstance(got, web.Response):
            return got
        rec, body = got
        try:
            obj = json.loads(body)
        except ValueError:
            return _refuse(BAD_MESSAGE, "body is not JSON", 400)
        if not isinstance(obj, dict) or not all(type(obj.get(k)) is str
                                                for k in ("symbol", "side", "qty")):  # fmt: skip
            return _refuse(BAD_MESSAGE, "symbol, side and qty (strings) are required", 400)
        account = self._account(rec, obj.get("account"))
        if isinstance(account, web.Response):
            return account
        kw = {k: obj[k] for k in ORDER_FIELDS if k in obj}
        try:
            res = await self._client(rec).place(obj["symbol"], obj["side"], obj["qty"],
                                                obj.get("price"), account=account, **kw)
        except (ValueError, TypeError) as exc:  # the SDK's own checks of the fields
            return _refuse(INVALID, str(exc)[:200], 400)
        return _result(res)

    async def _query(self, request: web.Request) -> Query | web.Response:
        got = await self._auth(request)
        if isinstance(got, web.Response):
            return got
        rec, _ = got
        q = request.query
        if not q.get("symbol") or not q.get("id"):
            return _refuse(BAD_MESSAGE, "symbol and id are required", 400)
        account = self._account(rec, q.get("account"))
        if isinstance(account, web.Response):
            return account
        return rec, q["symbol"], q["id"], account

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        got = await self._query(request)
        if isinstance(got, web.Response):
            return got
        rec, symbol, oid, account = got
        return _result(await self._client(rec).cancel(symbol, oid, account=account))

    async def status(self, request: web.Request) -> web.StreamResponse:
        got = await self._query(request)
        if isinstance(got, web.Response):
            return got
        rec, symbol, oid, account = got
        return _json(await self._client(rec).order_status(symbol, oid, account=account))

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


def _result(res: Any) -> web.Response:
    """A command's result: 200 when it ran (accepted, traded, cancelled), 400 when refused."""
    body = {"ok": res.ok, "code": res.code, "id": res.command.get("id"),
            "events": res.events, "error": res.error}  # fmt: skip
    return _json(body, 200 if res.ok else 400)
