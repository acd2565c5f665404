"""What a WebSocket client may send the gateway, read into a ``Request`` or a JSON error with a
stable code (pure: never raises on input).

``{"op": "subscribe"|"unsubscribe"|"resync", "channel": "book"|"trades"|"ticker" (or a perp
pair's "mark"|"funding"|"liquidations"), "symbol": "BTC-USD", "from_seq": 123, "batch": true,
"id": <echoed>}``; ``{"op": "markets"}``; ``{"op": "ping"}``. ``resync`` is ``subscribe``
again: a fresh book snapshot, or trades (or a perp channel's messages) from ``from_seq``
(exclusive). ``batch`` (trades only): each step's trades in one message.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from shardex.gateway.perpfeed import PERP_CHANNELS
from shardex.wire.codes import BAD_MESSAGE, UNKNOWN_CHANNEL, UNKNOWN_SYMBOL, name_of

MAX_MESSAGE = 4096  # bytes of one client message
CHANNELS = ("book", "trades", "ticker", *PERP_CHANNELS)
SUB_OPS = ("subscribe", "unsubscribe", "resync")
OPS = (*SUB_OPS, "markets", "ping")
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Request:
    op: str
    channel: str | None = None
    symbol: str | None = None
    from_seq: int | None = None
    id: Any = None
    batch: bool = False


class Refused(ValueError):
    """A message the gateway will not act on; ``error()`` is the JSON answer."""

    def __init__(self, code: int, message: str, id: Any = None) -> None:  # noqa: A002
        super().__init__(message)
        self.code, self.message, self.id = code, message, id

    def error(self) -> dict[str, Any]:
        return error(self.code, self.message, self.id)


def error(code: int, message: str, id: Any = None) -> dict[str, Any]:  # noqa: A002
    """The JSON error every refusal of the gateway is: its code, the code's name, a line."""
    out: dict[str, Any] = {"type": "error", "code": code, "name": name_of(code),
                           "message": message}  # fmt: skip
    if id is not None:
        out["id"] = id
    return out


def _echo(v: Any) -> Any:
    """The client's ``id`` echoed only when it is a short string or an int."""
    if (type(v) is str and len(v) <= 64) or (type(v) is int and abs(v) <= MAX_SEQ):
        return v
    return None


def parse(raw: str | bytes, symbols: Container[str]) -> Request:
    """One client message → a ``Request``; ``Refused`` for anything else."""
    if len(raw) > MAX_MESSAGE:
        raise Refused(BAD_MESSAGE, f"message larger than {MAX_MESSAGE} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(BAD_MESSAGE, "not JSON") from None
    if not isinstance(obj, dict):
        raise Refused(BAD_MESSAGE, "not a JSON object")
    rid = _echo(obj.get("id"))
    op = obj.get("op")
    if type(op) is not str:
        raise Refused(BAD_MESSAGE, "op missing or not a string", rid)
    if op not in OPS:
        raise Refused(UNKNOWN_CHANNEL, f"unknown op (expected one of {', '.join(OPS)})", rid)
    if op not in SUB_OPS:
        return Request(op, id=rid)
    channel, symbol, since = obj.get("channel"), obj.get("symbol"), obj.get("from_seq")
    if type(channel) is not str or channel not in CHANNELS:
        raise Refused(UNKNOWN_CHANNEL, f"channel must be one of {', '.join(CHANNELS)}", rid)
    if type(symbol) is not str:
        raise Refused(BAD_MESSAGE, "symbol missing or not a string", rid)
    if symbol not in symbols:
        raise Refused(UNKNOWN_SYMBOL, "unknown symbol", rid)
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_SEQ):
        raise Refused(BAD_MESSAGE, "from_seq must be an integer >= 0", rid)
    if since is not None and channel not in ("trades", *PERP_CHANNELS):
        raise Refused(BAD_MESSAGE, "from_seq is for the trades and the perp channels", rid)
    batch = obj.get("batch", False)
    if type(batch) is not bool:
        raise Refused(BAD_MESSAGE, "batch must be true or false", rid)
    if batch and channel != "trades":
        raise Refused(BAD_MESSAGE, "batch is for the trades channel", rid)
    return Request(op, channel, symbol, since, rid, batch)
