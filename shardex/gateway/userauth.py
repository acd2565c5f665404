"""What a client sends for the private ``user`` channel, and its login check (pure: the time
is given, the keys are the REST API's ``Verifier``).

``{"op": "login", "key": KEY_ID, "ts": MS, "sig": HEX, "cancel_on_disconnect": false}``: the
signature is the REST API's (``signing.sign``) over ``ts + "GET" + "/v1/ws" + "login"`` (as if
the login were a signed ``GET /v1/ws`` whose body is the word ``login``), so the same receive
window and replay check apply, and a captured login cannot be sent again.
``{"op": "subscribe"|"resync"|"unsubscribe", "channel": "user", "since": {"e0": 41, ...}}``:
``since`` (optional) resumes after the given entry of each named stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shardex.gateway.messages import MAX_MESSAGE, MAX_SEQ, Refused, _echo
from shardex.gateway.signing import KEY_HEADER, SIG_HEADER, TS_HEADER, ApiKey, SignatureError
from shardex.gateway.userfeed import long, short
from shardex.wire.codes import BAD_MESSAGE

LOGIN_METHOD, LOGIN_PATH, LOGIN_BODY = "GET", "/v1/ws", b"login"
MAX_SINCE = 64  # streams a resume may name


class LoginRefused(Refused):
    """A login or user-channel message refused (a JSON error with a stable code)."""


@dataclass(frozen=True)
class UserRequest:
    op: str
    id: Any = None
    key: str = ""
    ts: str = ""
    sig: str = ""
    cod: bool = False
    since: Mapping[str, int] | None = field(default=None)


def parse_user(raw: str | bytes) -> UserRequest | None:
    """A ``login`` or a ``user``-channel message → ``UserRequest``; None for any other
    message (the public channels' parser answers it, errors included)."""
    if len(raw) > MAX_MESSAGE:
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    rid, op = _echo(obj.get("id")), obj.get("op")
    if op == "login":
        return _login(obj, rid)
    if obj.get("channel") != "user" or op not in ("subscribe", "resync", "unsubscribe"):
        return None
    since = obj.get("since")
    if since is None:
        return UserRequest(str(op), rid)
    if not isinstance(since, dict) or len(since) > MAX_SINCE:
        raise LoginRefused(BAD_MESSAGE, "since must be an object of at most "
                           f"{MAX_SINCE} streams", rid)  # fmt: skip
    for src, seq in since.items():
        if long(src) is None or type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise LoginRefused(BAD_MESSAGE, "since maps a stream (o0, e0, b0...) to a seq "
                               "(an integer >= 0)", rid)  # fmt: skip
    return UserRequest(str(op), rid, since={short(long(s) or ""): v for s, v in since.items()})


def _login(obj: dict[str, Any], rid: Any) -> UserRequest:
    key, ts, sig, cod = (obj.get(k) for k in ("key", "ts", "sig", "cancel_on_disconnect"))
    if type(ts) is int and 0 <= ts <= MAX_SEQ:
        ts = str(ts)
    if not all(type(v) is str and 0 < len(v) <= 128 for v in (key, ts, sig)):
        raise LoginRefused(BAD_MESSAGE, "login needs key, ts (ms since the epoch) and sig "
                           "(strings; ts may be an integer)", rid)  # fmt: skip
    if cod is not None and type(cod) is not bool:
        raise LoginRefused(BAD_MESSAGE, "cancel_on_disconnect must be true or false", rid)
    return UserRequest("login", rid, key, ts, sig, bool(cod))  # type: ignore[arg-type]


def verify_login(verifier: Any, req: UserRequest, now_ms: int) -> ApiKey:
    """The login's key, or ``LoginRefused`` with the REST API's codes (126 unauthorized,
    127 stale_request, 128 replayed)."""
    headers = {KEY_HEADER: req.key, TS_HEADER: req.ts, SIG_HEADER: req.sig}
    try:
        return verifier.check(headers, LOGIN_METHOD, LOGIN_PATH, LOGIN_BODY, now_ms)
    except SignatureError as exc:
        raise LoginRefused(exc.code, str(exc), req.id) from None
