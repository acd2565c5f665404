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
from time import perf_counter
from typing import Any

import zmq
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.metrics import LATENCY_BUCKETS, Hist, serve
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
    metrics_port: int | None = None


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
        # order→ack as the router sees it: forward time of each in-flight request
        self.inflight: dict[tuple[bytes, bytes], tuple[int, float]] = {}
        self.ack_time = [Hist(LATENCY_BUCKETS) for _ in range(shards)]

    def sent(self, client: bytes, req: bytes, shard: int, now: float) -> None:
        self.forwarded[shard] += 1
        self.inflight[(client, req)] = (shard, now)

    def acked(self, client: bytes, req: bytes, now: float) -> None:
        entry = self.inflight.pop((client, req), None)
        if entry is not None:
            self.ack_time[entry[0]].add(now - entry[1])

    def expire(self, now: float, older_than: float = 30.0) -> None:
        """Forget requests a dead shard will never answer (bounded memory)."""
        stale = [k for k, (_, t) in self.inflight.items() if now - t > older_than]
        for k in stale:
            del self.inflight[k]

    def collect(self):
        now = time.monotonic()
        fam = CounterMetricFamily(
            "shardex_router_forwarded", "Requests forwarded to a shard", labels=["shard"]
        )
        for i, n in enumerate(self.forwarded):
            fam.add_metric([str(i)], n)
        yield fam
        fam = CounterMetricFamily(
            "shardex_router_rejected", "Requests the router rejected", labels=["reason"]
        )
        for reason, n in self.rejected.items():
            fam.add_metric([reason.replace(" ", "_")], n)
        yield fam
        fam = GaugeMetricFamily(
            "shardex_router_shard_up", "1 when the shard said hello within 3 s", labels=["shard"]
        )
        for i in range(self.shards):
            seen = self.last_seen.get(i)
            fam.add_metric([str(i)], 1 if seen is not None and now - seen < 3 else 0)
        yield fam
        for i, h in enumerate(self.ack_time):
            yield h.family(
                "shardex_router_ack_seconds",
                "Order→ack time seen by the router (forward to reply)",
                {"shard": str(i)},
            )

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
    REGISTRY.register(router)
    serve(cfg.metrics_port, "router")
    last_expire = time.monotonic()
    while running:
        if time.monotonic() - last_expire > 10:
            router.expire(perf_counter())
            last_expire = time.monotonic()
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
                router.acked(frames[1], frames[2], perf_counter())
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
                    router.sent(client, req, index_of[ident], perf_counter())
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
