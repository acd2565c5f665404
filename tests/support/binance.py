"""python-binance (a widely used client library nobody here wrote) pointed at a gateway: only
its base URLs are changed (``API_URL`` and the socket manager's ``STREAM_URL``, as its docs
do for Binance's testnet)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from binance import AsyncClient as BinanceAsync
from binance import BinanceSocketManager
from binance.client import Client as BinanceClient


def api_key(data_dir: str, account: str) -> dict[str, Any]:
    """``shardex keys add --account A --api``: the API key record it wrote."""
    proc = subprocess.run([sys.executable, "-m", "shardex.cli", "keys", "add", "--account",
                           account, "--api", "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.split("API key:")[1].split()[0]
    with open(path) as fh:
        return json.load(fh)


def sync_client(url: str, rec: dict[str, Any] | None = None, secret: str | None = None,
                ) -> BinanceClient:  # fmt: skip
    """python-binance's ``Client`` on the gateway at ``url`` (http://host:port)."""
    c = BinanceClient(rec["key_id"] if rec else None,
                      secret or (rec["secret"] if rec else None), ping=False)  # fmt: skip
    c.API_URL = url + "/api"
    return c


def async_client(url: str) -> tuple[BinanceAsync, BinanceSocketManager]:
    """python-binance's ``AsyncClient`` and ``BinanceSocketManager`` on the gateway."""
    c = BinanceAsync()
    c.API_URL = url + "/api"
    bm = BinanceSocketManager(c)
    bm.STREAM_URL = url.replace("http://", "ws://") + "/"
    return c, bm
