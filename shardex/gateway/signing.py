"""Signed REST requests: HMAC-SHA256 over timestamp, method, path and body, a receive window and
a replay guard (pure: the time is given; keys come from the caller).

The way exchanges do it: the client sends its API key id, the request's timestamp (ms since the
Unix epoch) and ``hex(HMAC-SHA256(secret, timestamp + METHOD + path + body))`` in three headers.
The gateway refuses a request whose timestamp is more than ``window`` ms away from its clock (a
captured request cannot be sent later), and one whose signature it has already accepted within
the window (nor sent twice within it). The secret never travels; comparing signatures takes the
same time whatever they hold.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from shardex.wire.codes import REPLAYED, STALE_REQUEST, UNAUTHORIZED

KEY_HEADER, TS_HEADER, SIG_HEADER = "X-SHARDEX-KEY", "X-SHARDEX-TIMESTAMP", "X-SHARDEX-SIGNATURE"
DEFAULT_WINDOW = 5_000  # ms either side of the gateway's clock
MAX_SEEN = 100_000  # signatures remembered (a window's worth at a high rate; oldest go first)


@dataclass(frozen=True)
class ApiKey:
    """One API key: its id, its secret (bytes) and what it may act for (as a CURVE key:
    ``role`` trader with ``accounts``, or reader, or admin)."""

    key_id: str
    secret: bytes
    role: str
    accounts: frozenset[str] = frozenset()

    def may_act_for(self, account: str) -> bool:
        return self.role == "admin" or (self.role == "trader" and account in self.accounts)


class SignatureError(ValueError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def payload(ts: str, method: str, path: str, body: bytes) -> bytes:
    """What is signed: the timestamp as sent, the method in capitals, the path with its query
    string, the body's bytes as sent (empty for a GET), concatenated."""
    return ts.encode("ascii") + method.upper().encode("ascii") + path.encode("utf-8") + body


def sign(secret: bytes, ts: str, method: str, path: str, body: bytes = b"") -> str:
    """The signature a client sends (hex, lowercase)."""
    return hmac.new(secret, payload(ts, method, path, body), hashlib.sha256).hexdigest()


class Verifier:
    """Checks signed requests against ``keys`` (key id → ``ApiKey``)."""

    def __init__(self, keys: Mapping[str, ApiKey], window: int = DEFAULT_WINDOW) -> None:
        self.keys = keys
        self.window = window
        self.seen: OrderedDict[str, int] = OrderedDict()  # signature → when it stops mattering

    def check(self, headers: Mapping[str, str], method: str, path: str, body: bytes,
              now_ms: int) -> ApiKey:  # fmt: skip
        """The request's key, or ``SignatureError`` with a stable code."""
        self._forget(now_ms)
        key_id, ts, sig = (headers.get(h) for h in (KEY_HEADER, TS_HEADER, SIG_HEADER))
        if not key_id or not ts or not sig:
            raise SignatureError(UNAUTHORIZED, f"{KEY_HEADER}, {TS_HEADER} and {SIG_HEADER} "
                                 "are required")  # fmt: skip
        key = self.keys.get(key_id)
        if key is None:
            raise SignatureError(UNAUTHORIZED, "unknown API key")
        if not (ts.isascii() and ts.isdigit() and len(ts) <= 16):
            raise SignatureError(UNAUTHORIZED, f"{TS_HEADER} must be ms since the epoch")
        if abs(now_ms - int(ts)) > self.window:
            raise SignatureError(STALE_REQUEST, f"timestamp outside the receive window of "
                                 f"{self.window} ms")  # fmt: skip
        want = sign(key.secret, ts, method, path, body)
        if not hmac.compare_digest(want, sig.lower()):
            raise SignatureError(UNAUTHORIZED, "bad signature")
        if want in self.seen:
            raise SignatureError(REPLAYED, "this signed request was already received")
        self.seen[want] = int(ts) + self.window
        if len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)
        return key

    def _forget(self, now_ms: int) -> None:
        """Signatures whose timestamp is out of the window are refused as stale anyway."""
        while self.seen:
            sig, until = next(iter(self.seen.items()))
            if until >= now_ms:
                break
            self.seen.popitem(last=False)
