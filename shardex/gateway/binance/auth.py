"""Binance-style signed requests, verified against shardex's API keys (pure: the time is given).

A ``SIGNED`` Binance request carries the API key id in the ``X-MBX-APIKEY`` header and, among
its parameters (query string and/or form body), ``timestamp`` (ms since the Unix epoch),
optionally ``recvWindow`` (ms, default 5,000, at most 60,000) and ``signature``: the hex
HMAC-SHA256, keyed with the secret, of *totalParams*: the query string followed by the body,
exactly as sent, without the ``signature`` parameter. The request is refused when its
timestamp is more than ``recvWindow`` ms behind the gateway's clock or more than 1 s ahead
(Binance's rule). A signature already accepted within its window is refused for a write
(``POST``/``PUT``/``DELETE``: a captured order cannot be sent twice); a read may repeat, as at
Binance (two identical reads in the same millisecond are legitimate).

The keys are the gateway's (``shardex keys add --api``): the key id is the ``X-MBX-APIKEY``,
the secret signs. Same secrets, same replay idea as ``shardex.gateway.signing``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import parse_qsl

from shardex.gateway.binance.errors import (
    BAD_API_KEY_FMT,
    BAD_RECV_WINDOW,
    INVALID_SIGNATURE,
    INVALID_TIMESTAMP,
    REJECTED_MBX_KEY,
    BinanceError,
    missing,
)
from shardex.gateway.signing import MAX_SEEN, ApiKey

KEY_HEADER = "X-MBX-APIKEY"
DEFAULT_RECV_WINDOW = 5_000
MAX_RECV_WINDOW = 60_000
AHEAD_MS = 1_000  # a timestamp may be this far ahead of the gateway's clock
WRITES = ("POST", "PUT", "DELETE")


def split_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` (a query string or form body) without its ``signature=`` part, and that
    signature (None when absent); the rest is kept byte for byte."""
    kept, sig = [], None
    for part in raw.split("&") if raw else ():
        if part.startswith("signature="):
            sig = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), sig


def params(query: str, body: str) -> dict[str, str]:
    """Every parameter of a request: the query string's, then the body's (first one wins)."""
    out: dict[str, str] = {}
    for raw in (query, body):
        for k, v in parse_qsl(raw, keep_blank_values=True):
            out.setdefault(k, v)
    return out


def signature(secret: bytes, total: str) -> str:
    """The signature a client sends for ``total`` (query string + body, no ``signature``)."""
    return hmac.new(secret, total.encode("utf-8"), hashlib.sha256).hexdigest()


class BinanceVerifier:
    """Checks Binance-signed requests against ``keys`` (key id → ``ApiKey``)."""

    def __init__(self, keys: Mapping[str, ApiKey]) -> None:
        self.keys = keys
        self.seen: OrderedDict[str, int] = OrderedDict()  # signature → when it stops mattering

    def check(self, headers: Mapping[str, str], method: str, query: str, body: str,
              now_ms: int) -> tuple[ApiKey, dict[str, str]]:  # fmt: skip
        """The request's key and parameters (``signature`` left out), or ``BinanceError``."""
        key_id = headers.get(KEY_HEADER)
        if not key_id:
            raise BinanceError(BAD_API_KEY_FMT, "API-key format invalid.")
        key = self.keys.get(key_id)
        if key is None:
            raise BinanceError(REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for "
                               "action.")  # fmt: skip
        q, qsig = split_signature(query)
        b, bsig = split_signature(body)
        sig = qsig or bsig
        got = params(q, b)
        ts, window = got.get("timestamp", ""), got.get("recvWindow", str(DEFAULT_RECV_WINDOW))
        if not (ts.isascii() and ts.isdigit() and len(ts) <= 16):
            raise missing("timestamp")
        if not (window.isascii() and window.isdigit() and len(window) <= 6):
            raise missing("recvWindow")
        if int(window) > MAX_RECV_WINDOW:
            raise BinanceError(BAD_RECV_WINDOW, f"recvWindow must be less than "
                               f"{MAX_RECV_WINDOW}.")  # fmt: skip
        if int(ts) - now_ms > AHEAD_MS:
            raise BinanceError(INVALID_TIMESTAMP, f"Timestamp for this request was "
                               f"{AHEAD_MS}ms ahead of the server's time.")  # fmt: skip
        if now_ms - int(ts) > int(window):
            raise BinanceError(INVALID_TIMESTAMP, "Timestamp for this request is outside of "
                               "the recvWindow.")  # fmt: skip
        if not sig:
            raise missing("signature")
        want = signature(key.secret, q + b)
        if not hmac.compare_digest(want, sig.lower()):
            raise BinanceError(INVALID_SIGNATURE, "Signature for this request is not valid.")
        if method.upper() in WRITES:
            self._remember(want, int(ts) + int(window), now_ms)
        return key, got

    def _remember(self, sig: str, until: int, now_ms: int) -> None:
        while self.seen:
            old, t = next(iter(self.seen.items()))
            if t >= now_ms:
                break
            self.seen.popitem(last=False)
        if sig in self.seen:
            raise BinanceError(INVALID_SIGNATURE, "Signature for this request was already "
                               "used (a replayed request).")  # fmt: skip
        self.seen[sig] = until
        if len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)
