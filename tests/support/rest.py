"""A client of the gateway's signed REST API written from docs/gateway-rest.md: the signature
is computed here with the stdlib (HMAC-SHA256 over timestamp + METHOD + path + body), not with
the gateway's own helper."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any


def headers(key_id: str, secret: str, method: str, path: str, body: bytes = b"",
            ts: int | None = None) -> dict[str, str]:  # fmt: skip
    """The three headers of a request signed at ``ts`` (now by default)."""
    stamp = str(ts if ts is not None else int(time.time() * 1000))
    mac = hmac.new(secret.encode(), (stamp + method + path).encode() + body, hashlib.sha256)
    return {"X-SHARDEX-KEY": key_id, "X-SHARDEX-TIMESTAMP": stamp,
            "X-SHARDEX-SIGNATURE": mac.hexdigest()}  # fmt: skip


def signed(url: str, rec: dict[str, Any], method: str, path: str, obj: Any = None,
           ts: int | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One signed request to ``url + path`` (``obj`` sent as the JSON body); (status, JSON)."""
    body = b"" if obj is None else json.dumps(obj).encode()
    head = headers(rec["key_id"], rec["secret"], method, path, body, ts)
    req = urllib.request.Request(url + path, data=body or None, method=method,
                                 headers={**head, "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
