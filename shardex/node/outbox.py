"""Where a sequenced node's replies wait when a peer's pipe is full: ``ReplyOutbox`` (bounded,
per peer, never a silent drop), ``RouterLink`` (the DEALER toward a router: one flush's replies
as one batch), ``DirectPort`` (an account shard's direct clients), and their metrics."""

from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.wire.protocol import BATCH, MAX_BATCH, encode_batch
from shardex.wire.transport import send_frames

OUTBOX_LIMIT = 10_000  # replies waiting for a full pipe, all peers together
OUTBOX_PEER_LIMIT = 2_000  # replies waiting for one peer
OUTBOX_BYTES = 64 << 20  # their bytes, all peers together
OUTBOX_PEER_BYTES = 16 << 20  # their bytes, one peer


class ReplyOutbox:
    """Replies that could not be sent at once (the peer's pipe is full), per peer, bounded.

    A reply is never discarded in silence: it waits here until the pipe drains, or, past the
    bounds, is counted in ``dropped`` by reason (``shardex_replies_dropped_total``) while the
    order's result stays retrievable with ``OP_ORDER``. ``router`` sockets key by peer identity
    (one slow client must not hold back the others); a DEALER has one peer.
    """

    def __init__(self, sock: Any, router: bool, zmq: Any) -> None:
        self.sock = sock
        self.router = router
        self.queues: dict[bytes, deque[list[bytes]]] = {}
        self.peer_bytes: dict[bytes, int] = {}
        self.size = 0
        self.bytes = 0
        self.dropped: dict[str, int] = {}
        self._again = zmq.Again
        self._error = zmq.ZMQError
        self._noblock = zmq.NOBLOCK

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def send(self, frames: list[bytes]) -> None:
        key = frames[0] if self.router else b""
        q = self.queues.get(key)
        if q is None and self._try(frames):
            return
        n = len(frames[-1])
        peer = self.peer_bytes.get(key, 0)
        if (
            self.size >= OUTBOX_LIMIT
            or self.bytes + n > OUTBOX_BYTES
            or (q is not None and len(q) >= OUTBOX_PEER_LIMIT)
            or peer + n > OUTBOX_PEER_BYTES
        ):
            self._drop("outbox_full")
            return
        if q is None:
            q = self.queues[key] = deque()
        q.append(frames)
        self.size += 1
        self.bytes += n
        self.peer_bytes[key] = peer + n

    def _try(self, frames: list[bytes]) -> bool:
        """Send now; True when done (sent, or dropped because the peer is gone)."""
        try:
            send_frames(self.sock, frames)
            return True
        except self._again:
            return False
        except self._error:  # EHOSTUNREACH: the peer disconnected; nobody to tell
            self._drop("peer_gone")
            return True

    def pump(self) -> None:
        """Send what waits, in order per peer, until each pipe is full again."""
        for key in list(self.queues):
            q = self.queues[key]
            while q and self._try(q[0]):
                n = len(q.popleft()[-1])
                self.size -= 1
                self.bytes -= n
                self.peer_bytes[key] -= n
            if not q:
                del self.queues[key]
                del self.peer_bytes[key]


class RouterLink(ReplyOutbox):
    """The DEALER toward the router: the replies of one flush travel as one batched message
    (``protocol.BATCH``), which the router splits back to its clients; the message then waits
    in the outbox like any reply if the pipe is full."""

    def __init__(self, sock: Any, zmq: Any) -> None:
        super().__init__(sock, False, zmq)
        self.items: list[bytes] = []

    def send(self, frames: list[bytes]) -> None:
        self.items.extend(frames)  # client, request id, reply
        if len(self.items) >= MAX_BATCH * 3:
            self.commit()

    def commit(self) -> None:
        """Send the replies collected since the last commit (at the end of every flush)."""
        if self.items:
            items, self.items = self.items, []
            super().send([b"", BATCH, encode_batch(items)])


def outbox_families(
    boxes: Any, lab: list[str], dropped: tuple[str, str], size: tuple[str, str]
) -> Any:
    """The two metrics of a process's bounded reply outboxes (``ReplyOutbox``/``RouterLink``):
    replies dropped by reason (counted, never silent) and replies waiting for a full pipe.
    Engine and account shards export them under their own names."""
    fam = CounterMetricFamily(*dropped, labels=["shard", "reason"])
    total: dict[str, int] = {"outbox_full": 0, "peer_gone": 0}
    for box in boxes:
        for reason, n in box.dropped.items():
            total[reason] = total.get(reason, 0) + n
    for reason, n in sorted(total.items()):
        fam.add_metric([*lab, reason], n)
    yield fam
    gauge = GaugeMetricFamily(*size, labels=["shard"])
    gauge.add_metric(lab, sum(box.size for box in boxes))
    yield gauge


class DirectPort:
    """Replies on the direct port (a ROUTER), sent like a router link's (``RouterLink.send``):
    a full pipe or a gone client drops the reply (the client times out and asks the fate)."""

    def __init__(self, sock: Any, zmq: Any) -> None:
        self.sock = sock
        self.zmq = zmq
        self.dropped = 0

    def send(self, frames: list[bytes]) -> None:
        try:
            send_frames(self.sock, frames)
        except self.zmq.ZMQError:
            self.dropped += 1  # a gone or slow peer: it asks again
