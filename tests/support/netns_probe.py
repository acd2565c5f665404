"""A probe run on one "host" (network namespace) of the multi-host rehearsal, until SIGTERM,
writing what it saw as JSON to OUT. Times are ``time.monotonic()``: one system-wide clock on
this box, so the rehearsal compares them with its own (partition, heal).

``orders ENDPOINT ROUTE RATE PREFIX OUT``: open-loop new orders (each a new id, sent on
schedule whatever the replies do) through ENDPOINT with routing key ROUTE (``@ACCOUNT``: via
that account's shard); OUT gets every order's send time and the reply time of each one
acknowledged without error.

``status ENDPOINT OUT``: ask engine shard 0's status at ENDPOINT (a replica's direct port, or
the router) every 50 ms; OUT gets (sent, answered, error, the answering node) of each
question. On the cut-off host this is what a client next to a deposed leader sees: it must stop
answering as leader (fencing); through the router it shows when the new leader serves.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import zmq

from shardex.engine.codes import OP_NEW
from shardex.wire.protocol import OP_STATUS, decode_reply, encode_request

SYMBOL = "BTC-USD"


def _socket(endpoint: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return ctx, sock


def _replies(sock: zmq.Socket, wait_ms: int) -> list[tuple[bytes, Any, float, Any]]:
    """(request id, error or None, time, results) of every reply within ``wait_ms``."""
    out = []
    if sock.poll(max(0, wait_ms)):
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            error, results = decode_reply(frames[-1])
            out.append((frames[-2], error, time.monotonic(), results))
    return out


def orders(endpoint: str, route: str, rate: float, prefix: str, stop: threading.Event
           ) -> dict[str, Any]:  # fmt: skip
    """Open-loop orders until ``stop``, then 2 s for replies in flight."""
    ctx, sock = _socket(endpoint)
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    errors: dict[str, int] = {}
    by_req: dict[bytes, str] = {}
    k, t0, drain_until = 0, time.monotonic(), None
    while drain_until is None or time.monotonic() < drain_until:
        if stop.is_set() and drain_until is None:
            drain_until = time.monotonic() + 2.0
        due = t0 + k / rate
        while drain_until is None and due <= time.monotonic():
            k += 1
            oid = f"{prefix}-{k}"
            cmd = (OP_NEW, SYMBOL, oid, "bench", k % 2, 0, 10_000 + k % 5, 1, 0, False, 0)
            req = k.to_bytes(8, "big")
            by_req[req] = oid
            sent[oid] = time.monotonic()
            sock.send_multipart([route.encode(), req, encode_request([cmd])])
            due = t0 + k / rate
        for req, error, at, _ in _replies(sock, int((due - time.monotonic()) * 1000)):
            oid = by_req.get(req)
            if oid is None:
                continue
            if error is None:
                acked[oid] = at
            else:
                why = str(error)[:50]
                errors[why] = errors.get(why, 0) + 1
    sock.close(0)
    ctx.term()
    return {"sent": sent, "acked": acked, "errors": errors}


def status(endpoint: str, stop: threading.Event) -> dict[str, Any]:
    """Engine shard 0's status every 50 ms until ``stop``: [sent, answered, error, node]."""
    ctx, sock = _socket(endpoint)
    asked: dict[bytes, float] = {}
    seen: list[list[Any]] = []
    k = 0
    while not stop.is_set():
        k += 1
        req = k.to_bytes(8, "big")
        asked[req] = time.monotonic()
        try:
            sock.send_multipart([b"#0", req, encode_request([(OP_STATUS,)])], zmq.NOBLOCK)
        except zmq.Again:  # (no connection: nothing queued toward it)
            pass
        until = time.monotonic() + 0.05
        while time.monotonic() < until:
            for r, error, at, res in _replies(sock, int((until - time.monotonic()) * 1000)):
                if r in asked:
                    node = res[0].get("node") if error is None and res else None
                    seen.append([asked[r], at, None if error is None else str(error)[:50],
                                 node])  # fmt: skip
    sock.close(0)
    ctx.term()
    return {"answers": seen, "asked": k}


def main(argv: list[str]) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mode, out = argv[0], argv[-1]
    if mode == "orders":
        result = orders(argv[1], argv[2], float(argv[3]), argv[4], stop)
    elif mode == "status":
        result = status(argv[1], stop)
    else:
        raise SystemExit(f"unknown mode {mode!r}: orders or status")
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1:])
