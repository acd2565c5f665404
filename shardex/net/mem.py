"""The in-memory twin of the ZeroMQ transport: the same socket roles, in one process, with no
kernel, no port and no thread.

What it models, because the node loops depend on it (and the rest it leaves out on purpose):

* **Pipes** between a connecting and a binding socket, in order, each bounded by the sender's
  SNDHWM plus the receiver's RCVHWM (0: unbounded), like libzmq's two half-queues. A connect
  before the bind (or after the peer closed) keeps its pipe *detached* until something binds
  the endpoint: a DEALER without ``IMMEDIATE`` queues into it (up to its SNDHWM), one with
  ``IMMEDIATE`` sends only to attached pipes, as libzmq does.
* **DEALER** sends round-robin over its eligible pipes and raises ``zmq.Again`` when none can
  take the message; **ROUTER** prefixes what it receives with the peer's routing id (its
  ``IDENTITY`` or a generated one), sends by the first frame, and either drops what it cannot
  deliver or, with ``ROUTER_MANDATORY``, raises ``EHOSTUNREACH`` (unknown peer) or ``Again``
  (full pipe); ``ROUTER_HANDOVER`` lets a new connection take over a routing id.
* **PUB/SUB**: prefix subscriptions, and a PUB that drops (never blocks) past the HWM.
* The errors are pyzmq's own classes (``zmq.Again``, ``zmq.ZMQError`` with the errno libzmq
  would give), so a node's error handling is exercised unchanged.

Not modelled: CURVE and ZAP (an in-memory cluster runs insecure), heartbeats (a closed socket
detaches its pipes at once), MAXMSGSIZE, and waiting: ``Poller.poll`` never blocks — one
scheduler drives every node (``turn``) in a single thread, so a poll that slept would stall
them all. ``MemHub.moved`` counts delivered messages, which is how a scheduler tells an idle
round from a busy one.

**The air** (for the simulator, ``shardex.sim.faults``): with a ``MemHub.shaper`` installed, a
message leaves its sender into the pipe's *air* queue (one per direction) with a due time the
shaper draws, and lands in the receiver's inbox when the scheduler calls ``release(now)``
past that time and the shaper does not ``block`` that direction (a partition). What is in the
air counts against the pipe's HWM, as bytes in a stalled TCP connection do, so a partitioned
peer fills up and its sender sees ``Again`` or drops (PUB, ROUTER). Due times never decrease
within one direction of one pipe (TCP keeps order), so reordering happens only across pipes.
A pipe that goes away loses its air; ``cut(pipe)`` is a dropped connection (what was in the
air both ways and what its binding side had not read is lost; the connecting side reconnects,
or at ``reconnect(pipe)`` when the network is still down). When a connecting side reconnects
(after a cut, or when its peer binds again after a restart) is the shaper's ``redial(pipe)``:
a delay (libzmq's ``RECONNECT_IVL``, 100 ms by default, with jitter and ``RECONNECT_IVL_MAX``
backoff) during which the pipe stays detached, or None for at once. Without a shaper every
message lands at once and every reconnect is immediate, as before.
"""

from __future__ import annotations

import errno
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from shardex.wire.transport import IN_MEMORY

_HWM_DEFAULT = 1000  # libzmq's default SNDHWM and RCVHWM
_POLLIN = zmq.POLLIN
_OPTION_DEFAULTS = {
    zmq.SNDHWM: _HWM_DEFAULT,
    zmq.RCVHWM: _HWM_DEFAULT,
    zmq.LINGER: -1,
    zmq.RECONNECT_IVL: 100,
}  # (libzmq's defaults; RECONNECT_IVL_MAX: 0)


class MemFrame:
    """A received frame with ``copy=False``: its bytes and the (absent) ZAP metadata."""

    __slots__ = ("bytes",)

    def __init__(self, data: bytes) -> None:
        self.bytes = data

    def get(self, name: str) -> None:  # noqa: ARG002 - libzmq's Frame.get(property)
        return None  # no CURVE in memory: no User-Id


class Pipe:
    """One connection: the two ends' queues, each end's routing id as the other side sees it."""

    __slots__ = ("a", "b", "a_id", "b_id", "to_b", "limit_a", "limit_b", "n_a", "n_b", "endpoint",
                 "air_a", "air_b", "down_at")  # fmt: skip

    def __init__(self, a: MemSocket, endpoint: str) -> None:
        self.a = a  # the connecting side
        self.b: MemSocket | None = None  # the binding side, None while detached
        self.endpoint = endpoint
        self.a_id = a.identity_or_auto()
        self.b_id = b""
        self.to_b: deque[list[bytes]] = deque()  # what a sent, waiting for b (detached)
        self.limit_a = 0  # messages of this pipe a's inbox may hold (0: no limit) ...
        self.limit_b = 0  # ... and b's
        self.n_a = 0  # messages of this pipe in a's inbox now ...
        self.n_b = 0  # ... and in b's (both counting what is in the air toward it)
        self.air_a: deque[tuple[float, list[bytes]]] = deque()  # (due, msg) in flight to a ...
        self.air_b: deque[tuple[float, list[bytes]]] = deque()  # ... and to b (shaper only)
        self.down_at: float | None = None  # when it lost its peer (a shaper's redial backoff)

    def peer_of(self, sock: MemSocket) -> MemSocket | None:
        return self.b if sock is self.a else self.a


def _limit(sender: MemSocket, receiver: MemSocket | None) -> int:
    snd, rcv = sender.opt(zmq.SNDHWM), receiver.opt(zmq.RCVHWM) if receiver else 0
    return 0 if snd == 0 or rcv == 0 else snd + rcv


class MemHub:
    """One simulated network: which socket bound which endpoint, and the pipes waiting for one."""

    def __init__(self) -> None:
        self.bound: dict[str, MemSocket] = {}
        self.waiting: dict[str, list[Pipe]] = {}
        self.moved = 0  # messages delivered so far (a scheduler's progress signal)
        self._ids = itertools.count(1)
        self.on_deliver: Callable[[MemSocket, list[bytes]], None] | None = None  # a tap
        # a tap on every message a socket is asked to send, before it leaves (the simulator's
        # ``sim.reports`` looks at the sender's unread inbox when a link report leaves)
        self.on_send: Callable[[MemSocket, list[bytes]], None] | None = None
        # ... and on every message a socket reads (the simulator's ``sim.turns`` charges a
        # node's turn virtual time per message it handled)
        self.on_recv: Callable[[MemSocket], None] | None = None
        self.shaper: Any = None  # the simulator's network (``due``/``blocked``); None: instant
        self.airborne: dict[Pipe, None] = {}  # pipes with messages in the air (ordered)
        self.redials: dict[Pipe, float] = {}  # detached pipes -> when they connect again

    def auto_id(self) -> bytes:
        return b"\x00" + next(self._ids).to_bytes(4, "big")

    def bind(self, sock: MemSocket, endpoint: str) -> None:
        if endpoint in self.bound:
            raise zmq.ZMQError(errno.EADDRINUSE, f"Address already in use ({endpoint})")
        self.bound[endpoint] = sock
        for pipe in self.waiting.pop(endpoint, []):
            self.redial(pipe)  # (at once without a shaper's reconnect interval)

    def unbind(self, sock: MemSocket, endpoint: str) -> None:
        if self.bound.get(endpoint) is sock:
            del self.bound[endpoint]

    def connect(self, sock: MemSocket, endpoint: str) -> Pipe:
        pipe = Pipe(sock, endpoint)
        binder = self.bound.get(endpoint)
        if binder is None:
            self.waiting.setdefault(endpoint, []).append(pipe)
        else:
            binder.attach(pipe)
        return pipe

    def detach(self, pipe: Pipe) -> None:
        """The binding side went away: the connecting side reconnects when it comes back."""
        pipe.b = None
        pipe.to_b.clear()
        if self.shaper is not None and pipe.down_at is None:
            pipe.down_at = self.shaper.now()
        if not pipe.a.closed:
            self.waiting.setdefault(pipe.endpoint, []).append(pipe)

    def forget(self, pipe: Pipe) -> None:
        self.redials.pop(pipe, None)
        waiting = self.waiting.get(pipe.endpoint)
        if waiting and pipe in waiting:
            waiting.remove(pipe)

    def delivered(self, sock: MemSocket, msg: list[bytes]) -> None:
        self.moved += 1
        if self.on_deliver is not None:
            self.on_deliver(sock, msg)

    # -- the air (a shaper's delays and partitions) -----------------------------------------

    def launch(self, sender: MemSocket, pipe: Pipe, peer: MemSocket, msg: list[bytes]) -> None:
        """``msg`` from ``sender`` into the air toward ``peer`` (or straight into its inbox
        when due now, nothing is ahead of it and the way is open)."""
        to_b = pipe.b is peer
        air = pipe.air_b if to_b else pipe.air_a
        due = self.shaper.due(sender, peer)
        if not air and due <= self.shaper.now() and not self.shaper.blocked(sender, peer):
            peer._arrive(pipe, msg)
            return
        if air and air[-1][0] > due:
            due = air[-1][0]  # never overtake within one pipe
        if to_b:
            pipe.n_b += 1
        else:
            pipe.n_a += 1
        air.append((due, msg))
        self.airborne[pipe] = None

    def release(self, now: float) -> int:
        """Land every message due by ``now`` on a way not blocked; how many landed."""
        landed = 0
        if self.redials:
            for pipe in [p for p, due in self.redials.items() if due <= now]:
                del self.redials[pipe]
                self.reconnect(pipe)
        blocked = self.shaper.blocked
        for pipe in list(self.airborne):
            for air, dst, src in ((pipe.air_b, pipe.b, pipe.a), (pipe.air_a, pipe.a, pipe.b)):
                if not air or dst is None or src is None or blocked(src, dst):
                    continue
                while air and air[0][0] <= now:
                    dst._land(pipe, air.popleft()[1])
                    landed += 1
            if not pipe.air_a and not pipe.air_b:
                del self.airborne[pipe]
        return landed

    def next_due(self) -> float | None:
        """The earliest due time of a message in the air (None: the air is empty)."""
        heads = [air[0][0] for p in self.airborne for air in (p.air_a, p.air_b) if air]
        return min(heads) if heads else None

    def ground(self, pipe: Pipe) -> int:
        """``pipe`` is gone: what it had in the air is lost; how many messages."""
        if pipe not in self.airborne:
            return 0
        del self.airborne[pipe]
        lost = len(pipe.air_a) + len(pipe.air_b)
        pipe.n_a -= len(pipe.air_a)
        pipe.n_b -= len(pipe.air_b)
        pipe.air_a.clear()
        pipe.air_b.clear()
        return lost

    def cut(self, pipe: Pipe, reconnect: bool = True) -> int:
        """A dropped connection: the air both ways and what the binding side had not read of
        ``pipe`` are lost, then the connecting side reconnects (libzmq keeps its session, and
        with it what it had received) -- at once, or (``reconnect=False``: the network is
        still down) at a later ``reconnect``; meanwhile it is detached, as before a bind. How
        many messages were lost."""
        b = pipe.b
        if b is None or pipe.a.closed:
            return 0
        lost = self.ground(pipe)
        b.peer_gone(pipe)
        kept = deque(item for item in b.inbox if item[0] is not pipe)
        lost += len(b.inbox) - len(kept)
        b.inbox = kept
        pipe.b = None
        pipe.down_at = self.shaper.now() if self.shaper is not None else None
        if reconnect:
            self.redial(pipe)
        return lost

    def redial(self, pipe: Pipe) -> None:
        """A detached ``pipe`` connects again after the shaper's reconnect delay (its
        ``redial(pipe)``: libzmq's ``RECONNECT_IVL``, with backoff and jitter), or at once
        (no shaper, or one that says None)."""
        delay = None
        redial = getattr(self.shaper, "redial", None)
        if redial is not None and pipe.b is None and not pipe.a.closed:
            delay = redial(pipe)
        if delay is None:
            self.reconnect(pipe)
            return
        self.forget(pipe)  # (not in ``waiting``: a bind meanwhile does not attach it)
        self.redials[pipe] = self.shaper.now() + delay

    def reconnect(self, pipe: Pipe) -> None:
        """A detached ``pipe`` connects again: to the socket bound at its endpoint now, or to
        the next one that binds it."""
        if pipe.b is not None or pipe.a.closed:
            return
        binder = self.bound.get(pipe.endpoint)
        if binder is not None:
            pipe.down_at = None
            binder.attach(pipe)
        elif pipe not in self.waiting.setdefault(pipe.endpoint, []):
            self.waiting[pipe.endpoint].append(pipe)


class MemSocket:
    """One socket of a ``MemContext`` (the subset of pyzmq's ``Socket`` the nodes use)."""

    def __init__(self, hub: MemHub, kind: int, owner: str = "") -> None:
        if kind not in (zmq.DEALER, zmq.ROUTER, zmq.PUB, zmq.SUB):
            raise zmq.ZMQError(errno.EINVAL, f"in-memory transport has no socket type {kind}")
        self.hub = hub
        self.kind = kind
        self.owner = owner  # the node (process) this socket belongs to: what a partition cuts
        self.closed = False
        self.options: dict[int, Any] = {}
        self.subscriptions: list[bytes] = []
        self.pipes: list[Pipe] = []  # every pipe this socket is an end of
        self.by_id: dict[bytes, Pipe] = {}  # ROUTER: routing id → pipe
        self.inbox: deque[tuple[Pipe, list[bytes]]] = deque()
        self.endpoints: list[str] = []  # bound
        self.connects: dict[str, Pipe] = {}
        self._rr = 0

    # -- options --------------------------------------------------------------------------

    def setsockopt(self, option: int, value: Any) -> None:
        if option == zmq.SUBSCRIBE:
            self.subscriptions.append(bytes(value))
        elif option == zmq.UNSUBSCRIBE:
            if bytes(value) in self.subscriptions:
                self.subscriptions.remove(bytes(value))
        else:
            self.options[option] = value

    def opt(self, option: int) -> Any:
        return self.options.get(option, _OPTION_DEFAULTS.get(option, 0))

    def identity_or_auto(self) -> bytes:
        ident = self.options.get(zmq.IDENTITY)
        return bytes(ident) if ident else self.hub.auto_id()

    # -- connections -----------------------------------------------------------------------

    def bind(self, endpoint: str) -> None:
        self._check_open()
        self.hub.bind(self, endpoint)
        self.endpoints.append(endpoint)

    def unbind(self, endpoint: str) -> None:
        self.hub.unbind(self, endpoint)

    def connect(self, endpoint: str) -> None:
        self._check_open()
        pipe = self.hub.connect(self, endpoint)
        pipe.limit_b = _limit(self, pipe.b)
        self.pipes.append(pipe)
        self.connects[endpoint] = pipe

    def disconnect(self, endpoint: str) -> None:
        pipe = self.connects.pop(endpoint, None)
        if pipe is None:
            raise zmq.ZMQError(errno.ENOENT, f"not connected to {endpoint}")
        self._drop(pipe)

    def attach(self, pipe: Pipe) -> None:
        """A connecting socket's pipe reaches us (we bound its endpoint)."""
        pipe.b = self
        pipe.b_id = self.identity_or_auto()
        pipe.n_b = 0
        pipe.limit_a = _limit(self, pipe.a)
        pipe.limit_b = _limit(pipe.a, self)
        self.pipes.append(pipe)
        if self.kind == zmq.ROUTER:
            old = self.by_id.get(pipe.a_id)
            if old is not None and not self.opt(zmq.ROUTER_HANDOVER):
                pipe.a_id = self.hub.auto_id()  # libzmq: the newcomer gets another id
            self.by_id[pipe.a_id] = pipe
        queued, pipe.to_b = pipe.to_b, deque()
        for frames in queued:  # what a DEALER queued before the bind
            self._arrive(pipe, frames)

    def _drop(self, pipe: Pipe) -> None:
        """Forget one pipe on our side (a disconnect or our close)."""
        self.hub.ground(pipe)
        if pipe in self.pipes:
            self.pipes.remove(pipe)
        if pipe.a is self:
            self.hub.forget(pipe)
            if pipe.b is not None:
                pipe.b.peer_gone(pipe)
        elif not pipe.a.closed:
            self.hub.detach(pipe)

    def peer_gone(self, pipe: Pipe) -> None:
        """The connecting side of ``pipe`` closed or disconnected."""
        if pipe in self.pipes:
            self.pipes.remove(pipe)
        if self.by_id.get(pipe.a_id) is pipe:
            del self.by_id[pipe.a_id]

    def close(self, linger: int | None = None) -> None:  # noqa: ARG002 - pyzmq's signature
        if self.closed:
            return
        self.closed = True
        for endpoint in self.endpoints:
            self.hub.unbind(self, endpoint)
        for pipe in list(self.pipes):
            self._drop(pipe)
        self.inbox.clear()

    def _check_open(self) -> None:
        if self.closed:
            raise zmq.ZMQError(errno.ENOTSOCK, "Socket operation on non-socket")

    # -- sending ---------------------------------------------------------------------------

    def send_multipart(self, frames: list[Any], flags: int = 0, copy: bool = True) -> None:  # noqa: ARG002
        """Deliver at once or raise as libzmq would for a non-blocking send (a blocking send
        that could never complete in a single thread raises ``Again`` too)."""
        self._check_open()
        msg = [f if type(f) is bytes else bytes(f) for f in frames]
        if self.hub.on_send is not None:
            self.hub.on_send(self, msg)
        if self.kind == zmq.PUB:
            self._publish(msg)
        elif self.kind == zmq.ROUTER:
            self._route(msg)
        elif self.kind == zmq.DEALER:
            self._deal(msg)
        else:
            raise zmq.ZMQError(errno.ENOTSUP, "Operation not supported")

    def _deal(self, msg: list[bytes]) -> None:
        pipes = [p for p in self.pipes if self._can_take(p)]
        if not pipes:
            raise zmq.Again()
        pipe = pipes[self._rr % len(pipes)]
        self._rr += 1
        self._to_peer(pipe, msg)

    def _can_take(self, pipe: Pipe) -> bool:
        mine = pipe.a is self
        if pipe.peer_of(self) is None:  # detached: only a connecting side without IMMEDIATE
            if not mine or self.opt(zmq.IMMEDIATE):
                return False
            hwm = self.opt(zmq.SNDHWM)
            return hwm == 0 or len(pipe.to_b) < hwm
        return not self._full(pipe, mine)

    @staticmethod
    def _full(pipe: Pipe, mine: bool) -> bool:
        """Whether the peer's share of ``pipe`` is at its limit (``mine``: we are side a)."""
        if mine:
            return pipe.limit_b != 0 and pipe.n_b >= pipe.limit_b
        return pipe.limit_a != 0 and pipe.n_a >= pipe.limit_a

    def _route(self, msg: list[bytes]) -> None:
        pipe = self.by_id.get(msg[0]) if msg else None
        mandatory = self.opt(zmq.ROUTER_MANDATORY)
        if pipe is None or pipe.a.closed:
            if mandatory:
                raise zmq.ZMQError(errno.EHOSTUNREACH, "Host unreachable")
            return
        if self._full(pipe, False):
            if mandatory:
                raise zmq.Again()
            return
        self._to_peer(pipe, msg[1:])

    def _publish(self, msg: list[bytes]) -> None:
        for pipe in self.pipes:
            peer = pipe.peer_of(self)
            if peer is None or not peer.subscribed(msg[0] if msg else b""):
                continue
            if not self._full(pipe, pipe.a is self):
                self._to_peer(pipe, msg)

    def subscribed(self, first: bytes) -> bool:
        return any(first.startswith(s) for s in self.subscriptions)

    def _to_peer(self, pipe: Pipe, msg: list[bytes]) -> None:
        peer = pipe.peer_of(self)
        if peer is None:
            pipe.to_b.append(msg)  # detached DEALER queue: delivered on attach
        elif self.hub.shaper is None:
            peer._arrive(pipe, msg)
        else:
            self.hub.launch(self, pipe, peer, msg)

    def _arrive(self, pipe: Pipe, msg: list[bytes]) -> None:
        """``msg`` reaches us at once (counted against the pipe's HWM, then read)."""
        if pipe.b is self:
            pipe.n_b += 1
        else:
            pipe.n_a += 1
        self._land(pipe, msg)

    def _land(self, pipe: Pipe, msg: list[bytes]) -> None:
        """``msg`` (already counted) into our inbox."""
        if self.kind == zmq.ROUTER:
            msg = [pipe.a_id if pipe.b is self else pipe.b_id, *msg]
        self.inbox.append((pipe, msg))
        self.hub.delivered(self, msg)

    # -- receiving -------------------------------------------------------------------------

    def recv_multipart(self, flags: int = 0, copy: bool = True) -> list[Any]:  # noqa: ARG002
        self._check_open()
        if not self.inbox:
            raise zmq.Again()
        pipe, msg = self.inbox.popleft()
        if pipe.b is self:
            pipe.n_b -= 1
        else:
            pipe.n_a -= 1
        if self.hub.on_recv is not None:
            self.hub.on_recv(self)
        return msg if copy else [MemFrame(f) for f in msg]

    def readable(self) -> bool:
        return bool(self.inbox)

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:  # noqa: ARG002
        return zmq.POLLIN if (flags & zmq.POLLIN and self.inbox) else 0


IN_MEMORY.add(MemSocket)


class MemPoller:
    """pyzmq's ``Poller`` over in-memory sockets; ``poll`` reports, never waits."""

    def __init__(self) -> None:
        self.sockets: list[tuple[Any, int]] = []
        self._readers: list[MemSocket] = []  # the sockets registered for POLLIN

    def register(self, sock: Any, flags: int = zmq.POLLIN | zmq.POLLOUT) -> None:
        if not isinstance(sock, MemSocket):
            raise TypeError(f"the in-memory poller cannot watch {sock!r} (a file descriptor?)")
        self.unregister(sock)
        self.sockets.append((sock, flags))
        self._readers = [s for s, f in self.sockets if f & zmq.POLLIN]

    def unregister(self, sock: Any) -> None:
        self.sockets = [(s, f) for s, f in self.sockets if s is not sock]
        self._readers = [s for s, f in self.sockets if f & zmq.POLLIN]

    def poll(self, timeout: float | None = None) -> list[tuple[Any, int]]:  # noqa: ARG002
        # (the readers are listed once at register: an enum ``&`` per socket per poll was a
        # tenth of a simulated run's time)
        return [(s, _POLLIN) for s in self._readers if s.inbox]


class MemContext:
    """pyzmq's ``Context`` over one ``MemHub``; ``owner`` names the node its sockets belong to
    (the simulator sets it on each node's context, so faults can tell nodes apart)."""

    def __init__(self, hub: MemHub, owner: str = "") -> None:
        self.hub = hub
        self.owner = owner
        self.socks: list[MemSocket] = []

    def socket(self, kind: int) -> MemSocket:
        sock = MemSocket(self.hub, kind, self.owner)
        self.socks.append(sock)
        return sock

    def term(self) -> None:
        for sock in self.socks:
            sock.close()

    destroy = term
