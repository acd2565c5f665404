"""Router process: hashes each request's routing key (the symbol) to a shard and forwards it.

It never decodes a payload: it reads the routing frame, computes ``shard_for`` once per distinct
key (cached), and forwards with a non-blocking send on a ``ROUTER_MANDATORY`` socket. A shard that
is not connected (EHOSTUNREACH) or whose pipe is full (EAGAIN) gives the client an immediate
reject, so one slow or dead shard never stalls the others.

Smart batching: the requests one wake-up reads for the same shard travel as one message
(``protocol.BATCH``), and the shard answers them in one message that is split back here. Under
load this pays the per-message cost (syscalls, frames, loop turns) once per batch on both sides of
the link; at low load a wake-up holds one request and nothing waits for a batch to fill.

This module is the process (``RouterNode``: sockets and the poll loop); the decisions are the
socket-free ``Router`` of ``router_core.py`` (re-exported here), its reports ``router_report.py``.
"""

from __future__ import annotations

import errno
import logging
import os

import zmq
from prometheus_client import REGISTRY

from shardex.auth import KeyStore, ZapHandler
from shardex.health import router_probe
from shardex.metrics import serve
from shardex.net import ZMQ, Transport
from shardex.net.recv import requests
from shardex.net.roles import router_back, router_front
from shardex.node.router_core import (  # noqa: F401 - the replies stay importable from here
    _BAD_KEY,
    _MALFORMED,
    _OVERLOADED,
    _TOO_LARGE,
    _UNAVAILABLE,
    _UNKNOWN_KEY,
    RECOVERING_TTL_S,
    Router,
    RouterConfig,
)
from shardex.node.runtime import tune_gc
from shardex.wire.protocol import BATCH, encode_batch
from shardex.wire.transport import StopFlag, send_frames

# Client requests read per wake-up before the shards' replies are read again: a turn of
# ~256 × 30–40 µs (CURVE, admission, a shed reply) keeps a reply's wait in the backend socket
# to ~10 ms; 10,000 held replies for a whole turn, up to a second at 3× overload on a loaded box
# (docs/overload.md: the router's forward→reply p99, with the rate-derived in-flight cap).
READ_LIMIT = 256

# the core's names stay importable from here
__all__ = ["RECOVERING_TTL_S", "Router", "RouterConfig", "RouterNode", "run_router"]

log = logging.getLogger("shardex.router")

POLL_WAITED_S = 0.0005  # a poll that took longer waited for its sockets: none was ready


class RouterNode:
    """The router process: two ROUTER sockets and a poll loop that moves frames as ``Router``
    decides. Every send is non-blocking and every failure becomes a counted reject or drop."""

    def __init__(self, cfg: RouterConfig, net: Transport = ZMQ) -> None:
        """``net``: the transport (``shardex.net``; the in-memory twin in one-process runs)."""
        self.cfg = cfg
        self.net = net
        # where it reads the time (``shardex.clock``), bound once: the turn's ``monotonic``
        # and the per-message ``perf_counter`` (the time module's own functions on REAL)
        clock = self.clock = net.clock
        self.mono, self.perf = clock.monotonic, clock.perf_counter
        self.stop = StopFlag()  # set by SIGINT/SIGTERM once run_* installs it
        self.ctx = net.Context()
        self.zap: ZapHandler | None = None
        server = None
        if cfg.keys_dir:
            store = KeyStore(cfg.keys_dir)
            store.init()
            server = store.server()
            self.zap = ZapHandler(self.ctx, store.registry())  # bound before any CURVE socket
        self.router = Router(cfg.shards, cfg, self.zap.registry if self.zap else None, clock)
        # Bound at once (a port that is not listening yet can be taken by a client's own
        # connect: Linux may pick the very port as its ephemeral source, a self-connection), but
        # read only once the shards have registered (``open_front``).
        self.front = router_front(self.ctx, net, cfg.frontend, server, cfg.client_hwm)
        self.front_open = False
        back = self.back = router_back(self.ctx, net, cfg.backend, server, cfg.hwm)
        self.poller = net.Poller()
        self.poller.register(back, zmq.POLLIN)
        if self.zap is not None:
            self.poller.register(self.zap.sock, zmq.POLLIN)
        self.front_empty = True  # the last read of the client socket emptied it

    def open_front(self, now: float, started: float) -> None:
        """Read clients only once every shard has registered (or after ``open_after`` s).

        A router that read clients at once would answer ``shard unavailable`` until the shards'
        next hello: with several routers, a restarted one would fail requests that its peers
        could serve. Until then requests wait in the socket (bounded by its RCVHWM): a delay
        of at most a hello interval, not a failure.
        """
        router = self.router
        if all(r is not None for r in router.route_ids) and len(router.topology) == router.slots:
            why = "every shard registered"
        elif now - started >= self.cfg.open_after:
            why = f"not every shard registered within {self.cfg.open_after:.0f}s"
        else:
            return
        self.poller.register(self.front, zmq.POLLIN)
        self.front_open = True
        log.info("taking clients on %s (%s)", self.cfg.frontend, why)

    def to_client(self, frames: list[bytes]) -> None:
        try:
            send_frames(self.front, frames)
        except zmq.Again:
            self.router.reply_dropped(gone=False)
        except zmq.ZMQError:
            self.router.reply_dropped(gone=True)

    def from_shards(self) -> None:
        router, back, perf, secure = self.router, self.back, self.perf, self.zap is not None
        for frames, user in requests(back, secure, 10_000):
            for reply in router.from_shard(frames, perf(), user):
                self.to_client(reply)

    def from_clients(self) -> None:
        """Read what clients sent (bounded per wake-up), answer rejects at once, and send each
        shard its admitted requests as one batch (earlier if a batch reaches its size cap)."""
        router, front, perf, secure = self.router, self.front, self.perf, self.zap is not None
        self.front_empty = False
        read = 0
        for frames, user in requests(front, secure, READ_LIMIT):
            read += 1
            shard, reply = router.from_client(frames, perf(), user)
            if reply is not None:
                self.to_client(reply)
            elif router.batch_full(shard):
                self.send_batch(shard)
        if read < READ_LIMIT:  # the drain ended on an empty socket
            self.front_empty = True
            router.drained_at = perf()  # (empty now: what comes next waits from here)
        for shard in router.ready:
            self.send_batch(shard)
        router.ready.clear()

    def send_batch(self, shard: int) -> None:
        ident, items = self.router.take_batch(shard)
        if not items:
            return
        if ident is not None:
            try:
                send_frames(self.back, [ident, BATCH, encode_batch(items)])
                return
            except zmq.Again:
                unreachable = False
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    log.warning("backend send failed: %s", exc)
                unreachable = True
        else:
            unreachable = True
        for reply in self.router.batch_failed(shard, items, unreachable):
            self.to_client(reply)

    def run(self) -> None:
        self.start()
        try:
            while not self.stop:
                self.turn()
        finally:
            self.close()

    def start(self) -> None:
        """Metrics, GC settings, the "up" line: once, before the first turn."""
        cfg = self.cfg
        log.info(
            "router up (pid %d): %d shards, frontend %s, backend %s",
            os.getpid(),
            cfg.shards,
            cfg.frontend,
            cfg.backend,
        )
        if not self.net.in_process:  # (process-wide: not for a node sharing its process)
            REGISTRY.register(self.router)
            serve(cfg.metrics_port, "router", router_probe(self.router))
            tune_gc()
        self.last_expire = self.last_reload = self.started = self.mono()

    def turn(self) -> None:
        """One wake-up: open the front when due, expire, poll, move what is ready."""
        mono = self.mono
        now = mono()
        if not self.front_open:
            self.open_front(now, self.started)
        if mono() - self.last_expire > 1.0:
            n = self.router.expire(self.perf())
            if n:
                log.warning("forgot %d requests no shard answered within %.0fs", n,
                            self.cfg.inflight_timeout)  # fmt: skip
            self.last_expire = mono()
        polled = self.perf()
        try:
            ready = dict(self.poller.poll(200 if self.front_open else 20))
        except zmq.ZMQError:
            return
        if self.front not in ready or self.front_empty and self.perf() - polled > POLL_WAITED_S:
            # the client socket was empty when this poll began (found empty by it, or the
            # poll had to wait for it): what it holds now came since
            self.router.drained_at = polled
        if self.zap is not None:
            if self.zap.sock in ready:
                self.zap.serve()
            if now - self.last_reload >= 1.0:
                self.zap.registry.reload()  # keys added/revoked without a restart
                self.last_reload = now
        if self.back in ready:
            self.from_shards()
        if self.front in ready:
            self.from_clients()

    def close(self) -> None:
        self.front.close(0)
        self.back.close(0)
        if self.zap is not None:
            self.zap.close()
        self.ctx.term()
        log.info("router stopped")


def run_router(cfg: RouterConfig) -> None:
    """The router's process: returns on SIGTERM/SIGINT."""
    node = RouterNode(cfg)
    node.stop = StopFlag.install()
    node.run()
