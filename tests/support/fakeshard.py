"""A stand-in shard for bridge tests: real ZeroMQ sockets on loopback, the real wire protocol.

It plays the router (topology answer on the frontend) and one or more shards (a direct ROUTER that
answers ``OP_STATUS``/``OP_EVENTS`` as ``shard.py`` does, and a PUB of events), all from one
background thread. The test drives it through thread-safe methods: ``publish`` (events reach
the PUB, or are "dropped" as a full PUB would), ``publish_raw`` (any frames), and knobs for
repair answers (delayed, withheld, garbage). Sockets are only touched by the thread.

With ``keys_dir`` every socket is a CURVE server of that key store, as in a secure cluster: the
frontend and direct ports in the ``clients`` domain, the PUBs in ``events``, each connection
checked by the real ``ZapHandler`` against the store's registry (served by the same thread).
"""

from __future__ import annotations

import heapq
import os
import queue
import threading
import time
from typing import Any

import zmq

from shardex.auth import DOMAIN_CLIENTS, DOMAIN_EVENTS, KeyStore, ZapHandler, server_socket
from shardex.engine.codes import EV_ACCEPTED, EV_TRADE
from shardex.layout import Layout
from shardex.wire import codes
from shardex.wire.errors import error as coded
from shardex.wire.errors import read_error
from shardex.wire.protocol import (
    MAX_EVENTS_REPLY,
    OP_EVENTS,
    OP_STATUS,
    decode_request,
    encode_events,
    encode_reply,
)
from tests.support.ports import free_layout


def trade(seq: int, symbol: str = "BTC-USD") -> tuple:
    """A valid trade event (engine tuple) whose fields derive from ``seq``."""
    return (EV_TRADE, seq, symbol, 3_000_000 + seq % 50, 10 + seq % 7, f"t{seq}", f"m{seq}",
            seq & 1, seq)  # fmt: skip


def accepted(seq: int, symbol: str = "BTC-USD") -> tuple:
    return (EV_ACCEPTED, seq, symbol, f"o{seq}")


class FakeShards:
    """Router topology + ``shards`` stand-in shards, served by one thread until ``stop``."""

    def __init__(self, shards: int = 1, keys_dir: str | None = None) -> None:
        self.layout: Layout = free_layout(shards)
        self.n = shards
        self.keys_dir = keys_dir
        if keys_dir is not None:
            KeyStore(keys_dir).init()
        self.events: list[list[tuple]] = [[] for _ in range(shards)]  # published or not
        self.repair_delay = 0.0  # seconds before an OP_EVENTS reply leaves
        self.answer_repairs = True  # False: OP_EVENTS requests are never answered
        self.garbage_repairs = 0  # this many OP_EVENTS replies carry garbage events first
        self.deny: str | None = None  # answer every request with this error (a refusing shard)
        # answer OP_EVENTS with this per-command error, as a shard does for a key without the
        # right role ("events: not allowed for this key")
        self.deny_events: str | None = None
        self.repairs_asked = 0
        self.repairs_answered = 0
        self.status_asked = 0
        # subscriptions received on each shard's PUB (an XPUB: a test waits for the bridge's
        # SUB to be subscribed instead of sleeping until it probably is)
        self.subscribed = [0] * shards
        self._todo: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake shard did not start")

    # -- test side ----------------------------------------------------------------------------

    def seq(self, shard: int = 0) -> int:
        with self._lock:
            return len(self.events[shard])

    def publish(self, make, count: int, shard: int = 0, drop: bool = False) -> list[tuple]:
        """Append ``count`` events ``make(seq)``; PUB them in one message unless ``drop``."""
        with self._lock:
            start = len(self.events[shard])
            evs = [make(s) for s in range(start + 1, start + count + 1)]
            self.events[shard].extend(evs)
        if not drop:
            self._todo.put((shard, [b"BTC-USD", encode_events(shard, evs)]))
        return evs

    def publish_raw(self, *frames: bytes, shard: int = 0) -> None:
        """Send any frames on shard ``shard``'s PUB (garbage, foreign versions...)."""
        self._todo.put((shard, list(frames)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._error is not None:
            raise self._error

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def _serve(self) -> None:
        ctx = zmq.Context()
        lay = self.layout
        zap = server = None
        if self.keys_dir is not None:
            store = KeyStore(self.keys_dir)
            server = store.server()
            zap = ZapHandler(ctx, store.registry())  # bound before any CURVE socket

        def secure(sock: Any, domain: str) -> Any:
            if server is not None:
                server_socket(sock, server, domain)
            return sock

        front = secure(ctx.socket(zmq.ROUTER), DOMAIN_CLIENTS)
        front.bind(lay.frontend)
        directs, pubs = [], []
        for i in range(self.n):
            d = secure(ctx.socket(zmq.ROUTER), DOMAIN_CLIENTS)
            d.bind(lay.direct(i))
            p = secure(ctx.socket(zmq.XPUB), DOMAIN_EVENTS)
            p.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only a topic's first
            p.setsockopt(zmq.SNDHWM, 0)
            p.bind(lay.pub(i))
            directs.append(d)
            pubs.append(p)
        topo = {
            "router": True,
            "shards": self.n,
            "pid": os.getpid(),
            "topology": [
                {
                    "shard": i,
                    "shards": self.n,
                    "pid": os.getpid(),
                    "direct": lay.direct(i),
                    "pub": lay.pub(i),
                }  # fmt: skip
                for i in range(self.n)
            ],
        }
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        for d in directs:
            poller.register(d, zmq.POLLIN)
        for p in pubs:
            poller.register(p, zmq.POLLIN)
        if zap is not None:
            poller.register(zap.sock, zmq.POLLIN)
        later: list[tuple[float, int, Any, list[bytes]]] = []  # delayed replies (due, n, sock, fr)
        n = 0
        self._ready.set()
        try:
            while not self._stop.is_set():
                while True:
                    try:
                        item = self._todo.get_nowait()
                    except queue.Empty:
                        break
                    pubs[item[0]].send_multipart(item[1])
                now = time.monotonic()
                while later and later[0][0] <= now:
                    _, _, sock, frames = heapq.heappop(later)
                    sock.send_multipart(frames)
                for sock, _ in poller.poll(5):
                    if zap is not None and sock is zap.sock:
                        zap.serve()
                        continue
                    frames = sock.recv_multipart()
                    if sock in pubs:
                        if frames[0][:1] == b"\x01":  # a subscription (b"\x00": one ended)
                            self.subscribed[pubs.index(sock)] += 1
                        continue
                    if sock is front:
                        sock.send_multipart([frames[0], frames[2], encode_reply([topo])])
                        continue
                    shard = directs.index(sock)
                    reply, delay = self._answer(shard, frames[-1])
                    if reply is None:
                        continue
                    out = [frames[0], frames[2], reply]
                    if delay > 0:
                        n += 1
                        heapq.heappush(later, (now + delay, n, sock, out))
                    else:
                        sock.send_multipart(out)
        finally:
            for s in (front, *directs, *pubs):
                s.close(0)
            if zap is not None:
                zap.close()
            ctx.term()

    def _answer(self, shard: int, payload: bytes) -> tuple[bytes | None, float]:
        cmds, error = decode_request(payload)
        if error is not None or not cmds:
            return encode_reply(None, error or coded(codes.MALFORMED_REQUEST, "empty")), 0.0
        cmd = cmds[0]
        if self.deny is not None:
            if cmd[0] == OP_STATUS:
                self.status_asked += 1
            return encode_reply(None, coded(codes.UNKNOWN_KEY, self.deny)), 0.0
        with self._lock:
            evs = self.events[shard]
            seq = len(evs)
            if cmd[0] == OP_STATUS:
                self.status_asked += 1
                return encode_reply([{"shard": shard, "seq": seq}]), 0.0
            if cmd[0] != OP_EVENTS:
                return encode_reply(None, coded(codes.MALFORMED_REQUEST, "unsupported")), 0.0
            self.repairs_asked += 1
            if self.deny_events is not None:
                refusal = read_error(codes.NOT_ALLOWED, self.deny_events)
                return encode_reply([{**refusal, "seq": seq}]), 0.0
            if not self.answer_repairs:
                return None, 0.0
            if self.garbage_repairs > 0:
                self.garbage_repairs -= 1
                junk = [(1, "x"), None, (EV_TRADE, float("nan"), "BTC-USD"), (EV_TRADE, 1 << 63),
                        (EV_TRADE, cmd[1], "NOPE-USD", 1, 1, "t", "m", 0, 1), "junk"]  # fmt: skip
                return encode_reply([{"events": junk, "seq": seq}]), 0.0
            first, last = cmd[1], min(cmd[2], cmd[1] + MAX_EVENTS_REPLY - 1, seq)
            self.repairs_answered += 1
            return encode_reply([{"events": evs[first - 1 : last], "seq": seq}]), self.repair_delay
