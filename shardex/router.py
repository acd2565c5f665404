"""Router process: hashes each request's routing key (the symbol) to a shard and forwards it.

It never decodes a payload: it reads the routing frame, computes ``shard_for`` once per distinct
key (cached), and forwards with a non-blocking send on a ``ROUTER_MANDATORY`` socket. A shard that
is not connected (EHOSTUNREACH) or whose pipe is full (EAGAIN) gives the client an immediate
reject, so one slow or dead shard never stalls the others.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import zmq

from shardex.protocol import (
    ERR_OVERLOADED,
    ERR_UNAVAILABLE,
    MAX_FRAME,
    OP_HELLO,
    encode_reply,
    shard_for,
    unpackb,
)

log = logging.getLogger("shardex.router")


@dataclass
class RouterConfig:
    shards: int
    frontend: str  # bind: clients connect here
    backend: str  # bind: shards connect here
    hwm: int = 10_000  # per-pipe high-water mark toward each shard (messages)


class Router:
    """Routing state: which identity serves which key, and what the shards told us about them."""

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError("need at least one shard")
        self.shards = shards
        self.identities = [f"shard-{i}".encode() for i in range(shards)]
        self._route: dict[bytes, bytes] = {}
        self.topology: dict[int, dict[str, Any]] = {}
        self.last_seen: dict[int, float] = {}
        self.forwarded = [0] * shards
        self.rejected = {ERR_OVERLOADED: 0, ERR_UNAVAILABLE: 0, "malformed": 0}

    def identity_for(self, key: bytes) -> bytes | None:
        ident = self._route.get(key)
        if ident is None:
            if key[:1] == b"#":
                try:
                    i = int(key[1:])
                except ValueError:
                    return None
                if not 0 <= i < self.shards:
                    return None
                return self.identities[i]
            ident = self.identities[shard_for(key, self.shards)]
            if len(self._route) < 100_000:
                self._route[key] = ident
        return ident

    def hello(self, payload: bytes, now: float) -> None:
        try:
            op, info = unpackb(payload)
            i = int(info["shard"])
            n = int(info["shards"])
        except Exception:
            log.warning("ignoring malformed hello from a shard")
            return
        if op != OP_HELLO or n != self.shards or not 0 <= i < self.shards:
            log.error(
                "shard hello with shards=%s index=%s does not match this router "
                "(%d shards): ignoring it",
                n,
                i,
                self.shards,
            )
            return
        if i not in self.topology or self.topology[i].get("pid") != info.get("pid"):
            log.info(
                "shard %d registered (pid %s, direct %s, pub %s)",
                i,
                info.get("pid"),
                info.get("direct"),
                info.get("pub"),
            )
        self.topology[i] = dict(info)
        self.last_seen[i] = now

    def info(self, now: float) -> dict[str, Any]:
        return {
            "router": True,
            "shards": self.shards,
            "pid": os.getpid(),
            "topology": [
                {
                    **self.topology.get(i, {"shard": i}),
                    "seen_s_ago": round(now - self.last_seen[i], 3)
                    if i in self.last_seen
                    else None,
                }
                for i in range(self.shards)
            ],
            "forwarded": self.forwarded,
            "rejected": self.rejected,
        }


def run_router(cfg: RouterConfig) -> None:
    router = Router(cfg.shards)
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    front.setsockopt(zmq.LINGER, 0)
    front.setsockopt(zmq.SNDHWM, 0)  # replies are bounded by requests; never drop one
    front.bind(cfg.frontend)
    back = ctx.socket(zmq.ROUTER)
    back.setsockopt(zmq.LINGER, 0)
    back.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown shard → EHOSTUNREACH, not a silent drop
    back.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted shard takes over its identity
    back.setsockopt(zmq.SNDHWM, cfg.hwm)
    back.setsockopt(zmq.HEARTBEAT_IVL, 500)
    back.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1500)
    back.bind(cfg.backend)

    running = True

    def stop(signum, frame):  # noqa: ARG001
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    unavailable = encode_reply(None, ERR_UNAVAILABLE)
    overloaded = encode_reply(None, ERR_OVERLOADED)
    too_large = encode_reply(None, f"frame too large (max {MAX_FRAME} bytes)")
    bad_key = encode_reply(None, "unknown routing key")
    malformed = encode_reply(None, "malformed message: expected [routing key, request id, payload]")
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    NOBLOCK = zmq.NOBLOCK
    Again = zmq.Again
    identities = router.identities
    index_of = {ident: i for i, ident in enumerate(identities)}
    log.info(
        "router up (pid %d): %d shards, frontend %s, backend %s",
        os.getpid(),
        cfg.shards,
        cfg.frontend,
        cfg.backend,
    )
    while running:
        try:
            ready = dict(poller.poll(200))
        except zmq.ZMQError:
            continue
        if back in ready:
            for _ in range(10_000):
                try:
                    frames = back.recv_multipart(NOBLOCK)
                except Again:
                    break
                # [shard identity, client identity, request id, reply]
                if len(frames) != 4:
                    continue
                if not frames[1]:
                    if frames[2] == b"HELLO":
                        router.hello(frames[3], time.monotonic())
                    continue
                try:
                    front.send_multipart(frames[1:], NOBLOCK)
                except (Again, zmq.ZMQError):
                    pass  # client gone: nothing to deliver to
        if front in ready:
            for _ in range(10_000):
                try:
                    frames = front.recv_multipart(NOBLOCK)
                except Again:
                    break
                client = frames[0]
                if len(frames) != 4:
                    router.rejected["malformed"] += 1
                    req = frames[2] if len(frames) > 2 else b""
                    front.send_multipart([client, req, malformed], NOBLOCK)
                    continue
                key, req, payload = frames[1], frames[2], frames[3]
                if not key:
                    front.send_multipart(
                        [client, req, encode_reply([router.info(time.monotonic())])], NOBLOCK
                    )
                    continue
                if len(payload) > MAX_FRAME:
                    router.rejected["malformed"] += 1
                    front.send_multipart([client, req, too_large], NOBLOCK)
                    continue
                ident = router.identity_for(key)
                if ident is None:
                    front.send_multipart([client, req, bad_key], NOBLOCK)
                    continue
                try:
                    back.send_multipart([ident, client, req, payload], NOBLOCK)
                    router.forwarded[index_of[ident]] += 1
                except Again:
                    router.rejected[ERR_OVERLOADED] += 1
                    front.send_multipart([client, req, overloaded], NOBLOCK)
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    router.rejected[ERR_UNAVAILABLE] += 1
                    front.send_multipart([client, req, unavailable], NOBLOCK)
    front.close(0)
    back.close(0)
    ctx.term()
    log.info("router stopped")
