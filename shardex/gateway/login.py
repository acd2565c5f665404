"""The web page's login: a signed ``POST /v1/session`` makes a browser session, and a
middleware lets that session stand for the API key on the private routes.

``POST /v1/session`` is verified exactly like a signed REST request (``signing``: the same
headers, receive window and replay guard), so the secret the user types stays in the page,
which signs with WebCrypto. The answer sets the session cookie (HttpOnly, SameSite=Strict,
Secure over https) and carries the CSRF token; ``GET /v1/session`` gives the token again to a
page reloaded with its cookie; ``DELETE /v1/session`` logs out.

The middleware sets ``request["shardex_key"]`` (the ``ApiKeyRecord``) for a request with a
live session cookie and its CSRF token in ``X-SHARDEX-CSRF`` -- and for a WebSocket upgrade of
the same origin (a browser cannot add headers to one; SameSite=Strict and the Origin check
keep other sites out). The private routes take that instead of a signature. A session cookie
on a request that changes state without the token is refused (``bad_csrf``, 403); a dead
session with the token (or changing state) is refused (``no_session``, 401), so the page knows
to log in again.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from shardex.gateway.apikeys import ApiKeyRecord
from shardex.gateway.rest import Rest
from shardex.gateway.rest_common import SESSION_ALIVE, SESSION_KEY, Refusal, refuse, reply
from shardex.gateway.sessions import Session, SessionStore, csrf_ok
from shardex.wire.codes import BAD_CSRF, NO_SESSION

COOKIE = "shardex_session"
CSRF_HEADER = "X-SHARDEX-CSRF"
LOGIN_PATH = "/v1/session"
# the key is a plain string on purpose (the REST and WebSocket handlers read it by name), which
# aiohttp would warn about on every request
warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module=r"shardex\.gateway\.login")
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(request: web.Request) -> bool:
    """A browser's WebSocket upgrade names the page's origin; its host and port must be this
    gateway's (the scheme may differ behind a TLS proxy). No Origin: not a browser, which is
    not who a cookie could be borrowed from."""
    origin = request.headers.get(hdrs.ORIGIN)
    return origin is None or urlsplit(origin).netloc == request.host


def over_https(request: web.Request) -> bool:
    """The page was served over https, here or by a TLS proxy in front (a client that lies
    about it only makes its own cookie https-only)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


class Login:
    """The session routes and the middleware, around ``rest``'s API keys and verifier."""

    def __init__(self, rest: Rest, store: SessionStore | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 token: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> None:  # fmt: skip
        self.rest = rest
        self.store = store if store is not None else SessionStore()
        self.clock, self.token = clock, token

    def install(self, app: web.Application) -> None:
        app.router.add_post(LOGIN_PATH, self.login)
        app.router.add_get(LOGIN_PATH, self.whoami)
        app.router.add_delete(LOGIN_PATH, self.logout)
        app.middlewares.append(self.middleware)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        got = self.verdict(request)
        if isinstance(got, web.Response):
            return got
        if got is not None:
            request[SESSION_KEY] = got
            # (a WebSocket outlives its upgrade: it asks whether its session still lives)
            request[SESSION_ALIVE] = partial(self.alive, request.cookies.get(COOKIE, ""))
        return await handler(request)

    def alive(self, cookie: str) -> bool:
        """The session of ``cookie`` still lives (not logged out, not expired, its API key
        not revoked); asking does not extend it."""
        sess = self.store.alive(cookie, self.clock())
        return sess is not None and sess.key_id in self.rest.records

    def verdict(self, request: web.Request) -> ApiKeyRecord | web.Response | None:
        """The key a session stands for, a refusal, or None (no session: go on unsigned)."""
        cookie = request.cookies.get(COOKIE)
        if not cookie or (request.path == LOGIN_PATH and request.method != "DELETE"):
            return None
        sent = request.headers.get(CSRF_HEADER)
        sess = self.store.get(cookie, self.clock())
        rec = self.rest.records.get(sess.key_id) if sess is not None else None
        if sess is None or rec is None:
            self.store.drop(cookie)  # (a session whose API key is gone goes too)
            if sent is not None or request.method not in SAFE:
                return refuse(NO_SESSION, "no such session (expired, or logged out): log in "
                              "again", 401)  # fmt: skip
            return None
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            if same_origin(request):
                return rec
            return refuse(BAD_CSRF, "a WebSocket with the session cookie from another "
                          "origin", 403)  # fmt: skip
        if sent is None and request.method in SAFE:
            return None
        if not csrf_ok(sess, sent):
            return refuse(BAD_CSRF, f"{CSRF_HEADER} is missing or not this session's", 403)
        return rec

    async def login(self, request: web.Request) -> web.StreamResponse:
        """A signed login (checked as any signed REST request: window, replay) → a session."""
        try:
            rec, _ = await self.rest.auth.check(request)
        except Refusal as exc:
            return exc.response()
        cookie, csrf = self.token(), self.token()
        old = request.cookies.get(COOKIE)
        if old:
            self.store.drop(old)
        sess = self.store.create(rec.key.key_id, cookie, csrf, self.clock())
        resp = reply(self.info(rec, sess))
        resp.set_cookie(COOKIE, cookie, path="/", httponly=True, samesite="Strict",
                        secure=over_https(request), max_age=int(self.store.max_age))  # fmt: skip
        return resp

    async def whoami(self, request: web.Request) -> web.StreamResponse:
        """The session of this cookie (and its CSRF token, for a reloaded page)."""
        cookie = request.cookies.get(COOKIE)
        sess = self.store.get(cookie, self.clock()) if cookie else None
        rec = self.rest.records.get(sess.key_id) if sess is not None else None
        if sess is None or rec is None:
            return refuse(NO_SESSION, "not logged in", 401)
        return reply(self.info(rec, sess))

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """Forget the session (the middleware checked its CSRF token); no session: done too."""
        cookie = request.cookies.get(COOKIE)
        dropped = self.store.drop(cookie) if cookie else False
        resp = reply({"ok": True, "ended": dropped})
        resp.del_cookie(COOKIE, path="/")
        return resp

    def info(self, rec: ApiKeyRecord, sess: Session) -> dict[str, Any]:
        return {"key_id": rec.key.key_id, "role": rec.key.role,
                "accounts": sorted(rec.key.accounts), "csrf": sess.csrf,
                "expires_in": int(self.store.remaining(sess, self.clock()))}  # fmt: skip
