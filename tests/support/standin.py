"""A stand-in shard for client tests (``StandIn``: a ROUTER thread) and a shard-like handler."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import zmq

from shardex.engine import Engine, Market
from shardex.wire.protocol import (
    OP_MARKETS,
    OP_ORDER,
    decode_request,
    encode_reply,
)


class StandIn:
    """A real ROUTER on a free loopback port, answering in a thread with ``handler``.

    ``handler(key, cmds)`` returns reply bytes, or None to leave the request unanswered."""

    def __init__(self, handler: Callable[[bytes, Any], bytes | None]) -> None:
        self.handler = handler
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests: list[tuple[bytes, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, key, req, payload = self.sock.recv_multipart()
            cmds, _ = decode_request(payload)
            self.requests.append((key, cmds))
            reply = self.handler(key, cmds)
            if reply is not None:
                self.sock.send_multipart([ident, req, reply])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_like(
    markets: dict[str, Market],
    topo: list[dict[str, Any]] | None = None,
    silent: Callable[[tuple], bool] = lambda cmd: False,
    order_state: Callable[[tuple], dict | None] | None = None,
    markets_reply: Any = None,
) -> Callable[[bytes, Any], bytes | None]:
    """A handler: topology on key b"", writes applied to a real Engine, OP_ORDER/OP_MARKETS
    answered by the given functions; a frame holding a ``silent`` command gets no reply."""
    engine = Engine(markets)
    topo = topo if topo is not None else [{"shard": 0, "pid": 1}]

    def handle(key: bytes, cmds: Any) -> bytes | None:
        if key == b"":
            return encode_reply([{"router": True, "shards": len(topo), "topology": topo}])
        if any(silent(c) for c in cmds):
            return None
        results: list[Any] = []
        for c in cmds:
            if c[0] == OP_ORDER:
                state = order_state(c) if order_state else None
                if state is None:
                    return None
                results.append(state)
            elif c[0] == OP_MARKETS:
                if markets_reply is None:
                    return None
                results.append(markets_reply)
            else:
                out: list = []
                engine.apply(c, out)
                results.append(out)
        return encode_reply(results)

    return handle
