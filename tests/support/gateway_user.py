"""A client of the gateway's private API written from docs/gateway-user.md and
docs/gateway.md alone: an API key made with ``shardex keys add --api``, REST requests and the
WebSocket login signed with the stdlib's HMAC-SHA256, and a ``user`` channel reader."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp

from tests.support.gateway import WsConn


def api_key(data_dir: str, account: str) -> dict[str, Any]:
    """``shardex keys add --account A --api``: the API key record it wrote."""
    proc = subprocess.run([sys.executable, "-m", "shardex.cli", "keys", "add", "--account",
                           account, "--api", "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.split("API key:")[1].split()[0]
    with open(path) as fh:
        return json.load(fh)


def signed(url: str, rec: dict[str, Any], method: str, path: str,
           body: bytes = b"") -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One signed REST request (HMAC-SHA256 of ts + METHOD + path + body)."""
    stamp = str(int(time.time() * 1000))
    mac = hmac.new(rec["secret"].encode(), (stamp + method + path).encode() + body,
                   hashlib.sha256).hexdigest()  # fmt: skip
    req = urllib.request.Request(url + path, data=body or None, method=method, headers={
        "X-SHARDEX-KEY": rec["key_id"], "X-SHARDEX-TIMESTAMP": stamp,
        "X-SHARDEX-SIGNATURE": mac, "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def login(rec: dict[str, Any], cod: bool = False, sig: str | None = None) -> dict[str, Any]:
    """The login message: HMAC-SHA256 of ts + "GET" + "/v1/ws" + "login"."""
    ts = int(time.time() * 1000)
    mac = hmac.new(rec["secret"].encode(), f"{ts}GET/v1/wslogin".encode(),
                   hashlib.sha256).hexdigest()  # fmt: skip
    return {"op": "login", "key": rec["key_id"], "ts": ts, "sig": sig or mac,
            "cancel_on_disconnect": cod}  # fmt: skip


class UserWs(WsConn):
    """Everything the connection gets but heartbeats, into ``got``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.got: list[dict[str, Any]] = []

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                obj = json.loads(msg.data)
                if obj.get("type") != "heartbeat":
                    self.got.append(obj)

    def user(self) -> list[dict[str, Any]]:
        """The user channel's messages (order, fill, balance), in the order received."""
        return [m for m in self.got if m.get("type") in ("order", "fill", "balance")]

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((m for m in self.got if m.get("type") == kind), None)
