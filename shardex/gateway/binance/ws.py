"""The Binance WebSocket endpoint: ``/ws/<stream>[/<stream>...]``, ``/ws`` (then
``SUBSCRIBE``), and ``/stream?streams=a/b`` (combined: each event wrapped with its stream's
name). Requests: ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE"|"LIST_SUBSCRIPTIONS", "params": [...],
"id": n}``, answered ``{"result": ..., "id": n}`` or ``{"error": {"code", "msg"}, "id": n}``
with Binance's WebSocket error codes (1 a value of the wrong type, 2 an invalid request,
3 invalid JSON)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import WSMsgType, web

from shardex.aio import within
from shardex.gateway import metrics as m
from shardex.gateway.binance.streams import MAX_STREAMS, Client, Streams, parse_stream
from shardex.gateway.hub import Conn
from shardex.gateway.outbox import QUEUE_FRAMES, Outbox

SNDBUF = 64 * 1024
MAX_REQUEST = 4096


def ws_error(code: int, msg: str, rid: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


class BinanceSockets:
    """The WebSocket handler around ``Streams``."""

    def __init__(self, streams: Streams, queue: int = QUEUE_FRAMES) -> None:
        self.streams, self.queue = streams, queue

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.handle)
        app.router.add_get("/ws/{streams:.+}", self.handle)
        app.router.add_get("/stream", self.handle)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        combined = request.path == "/stream"
        raw = request.query.get("streams", "") if combined else request.match_info.get(
            "streams", "")
        ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=65536)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        await ws.prepare(request)

        async def close() -> None:
            try:
                await within(ws.close(code=1008, message=b"slow_client"), 1.0)
            except (TimeoutError, ConnectionError, RuntimeError):
                pass
            if request.transport is not None:
                request.transport.abort()

        client = Client(Conn(Outbox(self.queue), close), combined)
        m.CONNECTS.inc()
        m.BINANCE_CONNECTIONS.inc()
        writer = asyncio.get_running_loop().create_task(self.write(ws, client.conn))
        try:
            names = [n for n in raw.split("/") if n] if raw else []
            if names:
                await self.subscribe(client, names, None, answer=False)
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self.request(client, msg.data)
        finally:
            writer.cancel()
            self.streams.drop(client)
            m.BINANCE_CONNECTIONS.dec()
        return ws

    @staticmethod
    async def write(ws: web.WebSocketResponse, conn: Conn) -> None:
        """Send the client's queue in order; the only writer of this socket."""
        try:
            while not ws.closed:
                frame = conn.outbox.take()
                if frame is None:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                await ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            pass

    async def request(self, client: Client, raw: str | bytes) -> None:
        """One client request: done and answered, or an error; never raises."""
        if len(raw) > MAX_REQUEST:
            return client.conn.control(ws_error(2, "Invalid request: too long"))
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return client.conn.control(ws_error(3, "Invalid JSON"))
        if not isinstance(obj, dict):
            return client.conn.control(ws_error(2, "Invalid request: not an object"))
        rid, method, params = obj.get("id"), obj.get("method"), obj.get("params", [])
        if rid is not None and not (type(rid) in (int, str) and len(str(rid)) <= 64):
            return client.conn.control(ws_error(1, "Invalid value type: id"))
        if method == "LIST_SUBSCRIPTIONS":
            return client.conn.control({"result": sorted(client.streams), "id": rid})
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return client.conn.control(ws_error(2, "Invalid request: unknown method", rid))
        if not isinstance(params, list) or not all(type(p) is str for p in params):
            return client.conn.control(ws_error(1, "Invalid value type: params", rid))
        if method == "UNSUBSCRIBE":
            for name in params:
                self.streams.remove(client, name)
            return client.conn.control({"result": None, "id": rid})
        await self.subscribe(client, params, rid)

    async def subscribe(self, client: Client, names: list[str], rid: Any,
                        answer: bool = True) -> None:  # fmt: skip
        if len(set(client.streams) | set(names)) > MAX_STREAMS:
            return client.conn.control(ws_error(2, f"Invalid request: at most {MAX_STREAMS} "
                                                   "streams per connection", rid))  # fmt: skip
        for name in names:
            got = parse_stream(name, self.streams.names)
            if got is None:
                return client.conn.control(ws_error(2, f"Invalid request: unknown stream "
                                                       f"{name[:64]!r}", rid))  # fmt: skip
        for name in names:
            kind, symbol, _ = parse_stream(name, self.streams.names)  # type: ignore[misc]
            if not await self.streams.add(client, kind, symbol, name):
                return client.conn.control(ws_error(2, "Invalid request: the book cannot be "
                                                       "read now, try again", rid))  # fmt: skip
        if answer:
            client.conn.control({"result": None, "id": rid})

