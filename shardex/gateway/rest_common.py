"""What every private REST route shares: who is asking (a signed request, or a browser session
another middleware authenticated), which account it acts for, reading its input, and the JSON
answers (amounts as decimal strings, errors with a stable code).

Input is refused here, before anything reaches the cluster: a body that is not a JSON object,
a field of the wrong type, an amount that is not a plain ASCII decimal string (never a JSON
number: a float cannot carry money exactly). Every refusal is ``messages.error``'s JSON with
its code, never an exception out of a handler.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from shardex.amounts import plain
from shardex.client import ShardexError
from shardex.gateway import metrics as m
from shardex.gateway.apikeys import ApiKeyRecord, load, load_one
from shardex.gateway.messages import error
from shardex.gateway.signing import SignatureError, Verifier
from shardex.wire.codes import (
    ADMIN_REQUIRED,
    BAD_MESSAGE,
    BY_NAME,
    GATEWAY_UNAVAILABLE,
    IDENTITY,
    INVALID,
    NO_ACCOUNT_TIER,
    NOT_ALLOWED,
    code,
)

MAX_BODY = 4096
SESSION_ALIVE = "shardex_session_alive"  # request[SESSION_ALIVE]: () -> bool, that session lives
SESSION_KEY = "shardex_key"  # request[SESSION_KEY]: the ApiKeyRecord a session middleware set
DECIMAL = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # symbols, ids, accounts, assets as the REST takes them
NO_ACCOUNT_TIER_TEXT = "without account shards"  # (the SDK's ShardexError for it says this)


@dataclass
class Call:
    """One authenticated request as a route handler sees it: its key, its body, its query and
    the ``AsyncClient`` that acts with the key's CURVE key."""

    rec: ApiKeyRecord
    body: bytes
    query: Mapping[str, str]
    client: Any  # an AsyncClient (a fake one in unit tests)
    fills: Any = None  # a ``fills.FillReader`` when the gateway reads Redis

    def obj(self) -> dict[str, Any]:
        return body_object(self.body)

    def params(self, *allowed: str) -> Mapping[str, str]:
        """The query string, refusing a parameter the route does not take (a typo is an
        error, not a silently ignored filter)."""
        extra = sorted(set(self.query) - set(allowed))
        if extra:
            raise Refusal(BAD_MESSAGE, f"unknown parameter {extra[0][:32]!r}")
        return self.query

    def account(self, asked: Any) -> str:
        return account_for(self.rec, asked)


class Refusal(Exception):
    """Input the gateway will not act on; ``response()`` is the JSON answer."""

    def __init__(self, number: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.number, self.message, self.status = number, message, status

    def response(self) -> web.Response:
        return refuse(self.number, self.message, self.status)


def plain_json(v: Any) -> Any:
    """``json.dumps`` default: Decimals as plain decimal strings (never ``1E+2``)."""
    if isinstance(v, Decimal):
        return plain(v)
    if isinstance(v, tuple | set | frozenset):
        return list(v)
    raise TypeError(type(v).__name__)


def reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(obj, default=plain_json), status=status,
                        content_type="application/json")  # fmt: skip


def refuse(number: int, message: str, status: int) -> web.Response:
    body = error(number, message)
    m.ERRORS.labels(body["name"]).inc()
    return reply(body, status)


def cluster_error(exc: ShardexError) -> web.Response:
    """A read the cluster could not answer: its own code when it has one, else unavailable."""
    if NO_ACCOUNT_TIER_TEXT in str(exc):
        return refuse(NO_ACCOUNT_TIER, "this cluster runs without account shards", 501)
    if exc.code == "not_allowed":
        return refuse(NOT_ALLOWED, "this key may not do that", 403)
    number = code(exc.code) if exc.code else GATEWAY_UNAVAILABLE
    return refuse(number, str(exc)[:200] or "the cluster did not answer", 503)


class Auth:
    """The API keys (an unknown key id reads its own record: ``learn``) and the signature
    check."""

    def __init__(self, keys_dir: str | None, now_ms: Callable[[], int] | None = None) -> None:
        self.keys_dir = keys_dir
        self.records: dict[str, ApiKeyRecord] = load(keys_dir) if keys_dir else {}
        self.verifier = Verifier({k: r.key for k, r in self.records.items()})
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))

    def learn(self, key_id: str | None) -> None:
        """A key id not known yet: its record, if the store has it now (a key added while
        the gateway runs is known at its first request; an unknown id costs one failed open).
        Public: every door that checks a key (REST, the WebSocket login, the Binance subset)
        calls it before its own check."""
        if not self.keys_dir or not key_id or key_id in self.records:
            return
        rec = load_one(self.keys_dir, key_id)
        if rec is not None:
            self.records[key_id] = rec
            self.verifier.keys[key_id] = rec.key

    async def check(self, request: web.Request) -> tuple[ApiKeyRecord, bytes]:
        """The request's key and body: a session's key when a session middleware set one
        (no signature then), else the signed headers' (``Refusal`` 401 otherwise)."""
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise Refusal(BAD_MESSAGE, f"body larger than {MAX_BODY} bytes", 413)
        session = request.get(SESSION_KEY)
        if isinstance(session, ApiKeyRecord):
            return session, body
        self.learn(request.headers.get("X-SHARDEX-KEY"))
        try:
            # the request target as sent, as the client signed it (percent-encoding kept)
            key = self.verifier.check(request.headers, request.method, request.raw_path, body,
                                      self.now_ms())  # fmt: skip
        except SignatureError as exc:
            raise Refusal(exc.code, str(exc), 401) from None
        return self.records[key.key_id], body


def account_for(rec: ApiKeyRecord, asked: Any) -> str:
    """The account to act for: the one asked (if the key may), else the key's only one."""
    if asked is None and len(rec.key.accounts) == 1:
        return next(iter(rec.key.accounts))
    if type(asked) is not str or not NAME.fullmatch(asked):
        raise Refusal(INVALID, "account is required (the key has several, or none)")
    if not rec.key.may_act_for(asked):
        raise Refusal(NOT_ALLOWED, "this key may not act for that account", 403)
    return asked


def need_admin(rec: ApiKeyRecord) -> None:
    if rec.key.role != "admin":
        raise Refusal(ADMIN_REQUIRED, "this route needs an admin API key", 403)


def body_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(BAD_MESSAGE, "body is not JSON") from None
    if not isinstance(obj, dict):
        raise Refusal(BAD_MESSAGE, "body is not a JSON object")
    return obj


def text(obj: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    """A name-like field (symbol, id, asset, account): short ASCII without spaces."""
    v = obj.get(name)
    if v is None and not required:
        return None
    if type(v) is not str:
        raise Refusal(BAD_MESSAGE, f"{name} (a string) is required")
    if not NAME.fullmatch(v):
        raise Refusal(INVALID, f"{name}: 1-64 letters, digits or _.:-")
    return v


def amount(obj: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    """A decimal string (``"0.0100"``): money and sizes never travel as JSON numbers."""
    v = obj.get(name)
    if v is None and not required:
        return None
    if type(v) is not str:
        raise Refusal(BAD_MESSAGE, f"{name} must be a decimal string (e.g. \"0.01\")")
    if not DECIMAL.fullmatch(v):
        raise Refusal(INVALID, f"{name} must be a plain decimal string (digits, one point)")
    return v


def integer(raw: Any, name: str, low: int, high: int, default: int | None = None) -> int:
    """A bounded whole number from a query string or a JSON body."""
    if raw is None and default is not None:
        return default
    if type(raw) is str and raw.isascii() and raw.isdigit() and len(raw) <= 12:
        raw = int(raw)
    if type(raw) is not int or not low <= raw <= high:
        raise Refusal(INVALID, f"{name} must be a whole number in {low}..{high}")
    return raw


def result(res: Any) -> web.Response:
    """A command's result: 200 when it ran (accepted, traded, cancelled), 400 when the cluster
    refused it, 503 when its answer never came (``fate`` says whether it ran: ask
    ``GET /v1/order?fate=1`` when it is ``unknown``)."""
    body = {"ok": res.ok, "code": res.code, "id": res.command.get("id"),
            "events": res.events, "error": None if res.error is None else str(res.error),
            "fate": res.fate}  # fmt: skip
    if res.ok:
        return reply(body)
    row = BY_NAME.get(res.code or "")
    settled = res.error is None or (row is not None and (row.final or row.band == IDENTITY))
    return reply(body, 400 if settled else 503)
