"""Network faults drawn from the seed, on the in-memory transport's air (``MemHub.shaper``).

Only what ZeroMQ over TCP can do to a message, nothing it cannot:

* **delay**: a message lands later (``delay_p`` of them, by ``delay_s``); never before one
  sent earlier on the same pipe (TCP keeps order), so **reordering** happens only across
  pipes (two peers' messages, or one node's sockets), as it does on a real network;
* **loss** only where libzmq loses: past an HWM (PUB and non-mandatory ROUTER drop, the rest
  get ``Again``) -- which a partition makes happen, since what waits in the air counts against
  the pipe's HWM -- and on a **dropped connection** (``cut``: the air both ways and what the
  binding side had not read are lost; the connecting side reconnects);
* **partitions** of any set of nodes from the rest (or from another set), both ways or one
  way, until healed: what is sent meanwhile waits in the air (and fills the pipe), and lands
  in order after the heal -- unless a socket with heartbeats (``HEARTBEAT_IVL``, as the
  links set) hears nothing across it for ``HEARTBEAT_TIMEOUT``: then that connection drops
  (a ``drop``: a cut that stays down, so a ROUTER no longer knows the peer and a DEALER
  queues, until the heal reconnects it).

A node is the ``owner`` of its sockets (``MemContext.owner``, set by the world); a socket with
no owner is never partitioned. ``Network`` is the shaper (``due``, ``blocked``) plus the
fault plan: ``step(now)`` heals partitions whose time is up and draws new faults at the
configured rates per virtual second from its own ``random.Random`` (derived from the seed, so
the scheduler's and the workload's draws never shift it). Every fault goes to the ``Trace``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq

from shardex.clock import VirtualClock
from shardex.net.mem import MemHub, MemSocket, Pipe
from shardex.sim.sched import Trace

SAFE_SKEW = 0.02  # the default bound on a node's clock rate error (the lease's margin: 5 %)
# the crash points inside a promotion, in its order (``shardex.sim.hazards`` arms them)
PROMOTION_POINTS = ("lease_taken", "epoch_unsynced", "before_first_reply")


@dataclass(frozen=True)
class Faults:
    """Rates of the faults a run draws (all zero: a clean network). Times in virtual seconds."""

    delay_p: float = 0.0  # share of messages delayed ...
    delay_s: tuple[float, float] = (0.0001, 0.02)  # ... by this much (uniform)
    cut_per_s: float = 0.0  # dropped connections per second
    partition_per_s: float = 0.0  # partitions started per second ...
    partition_s: tuple[float, float] = (0.05, 1.0)  # ... lasting this long
    one_way_p: float = 0.3  # share of partitions that block one direction only
    crash_per_s: float = 0.0  # node crashes per second (the world restarts them) ...
    down_s: tuple[float, float] = (0.05, 0.5)  # ... after this long
    pause_per_s: float = 0.0  # node pauses (SIGSTOP, a long GC) per second ...
    pause_s: tuple[float, float] = (0.05, 1.5)  # ... this long
    slow_per_s: float = 0.0  # long loop turns (CPU contention) per second ...
    slow_s: tuple[float, float] = (0.01, 0.2)  # ... this long
    turn_s: tuple[float, float] = (0.0, 0.0)  # a turn costs this per message it read
    # (virtual seconds, drawn per turn: ``shardex.sim.turns``; zero: turns are instant)
    crashable: tuple[str, ...] = ("router", "engine", "accounts")  # kinds crashes may hit
    power_per_s: float = 0.0  # machines losing power per second (a crash whose unsynced
    # writes are cut back on the simulated disk; engines and account shards), down ``down_s``
    skew: float = 0.0  # each node's clock rate is 1 +- up to this (``shardex.sim.skew``) ...
    skew_unsafe: float = 0.0  # ... at most SAFE_SKEW (2 %) unless this is 1 (beyond the
    # lease's 5 % margin: expected to break the lease's safety, see shardex.lease)
    step_per_s: float = 0.0  # wall-clock steps per second (a node's ``time()`` jumps) ...
    step_s: tuple[float, float] = (-5.0, 5.0)  # ... by this much (either way)
    reconnect: float = 0.0  # 1: a cut or restarted peer's connection comes back after the
    # socket's RECONNECT_IVL (100 ms by default; seeded jitter, RECONNECT_IVL_MAX backoff)
    trap_per_s: float = 0.0  # crash points per second: a shard dies at its Nth journal
    # write or sync from now (between a write and its sync) ...
    trap_power_p: float = 0.5  # ... and this share of them is a power loss (else kill -9)
    trap_promote_p: float = 0.0  # share of promotions (a standby taking its lease) that die
    # at a crash point inside it (``PROMOTION_POINTS``, ``shardex.sim.hazards``; replicas),
    trap_promote_at: tuple[str, ...] = ()  # ... one of these points (empty: any of them)
    full_per_s: float = 0.0  # disk-full spells per second (every write past the space fails)
    full_s: tuple[float, float] = (0.05, 0.5)  # ... lasting this long
    eio_per_s: float = 0.0  # spells of failing I/O per second ...
    eio_s: tuple[float, float] = (0.02, 0.3)  # ... lasting this long ...
    eio_rate: float = 0.5  # ... in which this share of writes and syncs fail with EIO

    def __post_init__(self) -> None:
        if self.skew > SAFE_SKEW and not self.skew_unsafe:
            raise ValueError(
                f"skew={self.skew} is beyond the safe {SAFE_SKEW} (the lease's "
                "margin is 5 %): set skew_unsafe=1 to run it on purpose"
            )
        unknown = [p for p in self.trap_promote_at if p not in PROMOTION_POINTS]
        if unknown:
            raise ValueError(f"trap_promote_at: no crash point {', '.join(unknown)} (one of "
                             f"{', '.join(PROMOTION_POINTS)})")  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``"delay_p=0.1,cut_per_s=0.5,crashable=engine:accounts"`` (a command line's
        ``--faults``; ``trap_promote_at=lease_taken:epoch_unsynced`` names points too)."""
        return cls(**settings(text, cls.__dataclass_fields__, "fault",
                              names=("crashable", "trap_promote_at")))  # fmt: skip


def settings(text: str, known: Any, what: str, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """``"a=0.1,b=0.2:0.5,c=x:y"`` as keyword arguments of a settings dataclass whose fields
    are ``known``: numbers, ``lo:hi`` ranges, and for the fields in ``names`` tuples of names
    (a command line's ``--faults``, ``--store-faults``); anything else a ``ValueError``."""
    kw: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        try:
            if name not in known:
                raise ValueError(name)
            if name in names:
                kw[name] = tuple(filter(None, value.split(":")))
            else:
                kw[name] = tuple(map(float, value.split(":"))) if ":" in value else float(value)
        except ValueError:
            raise ValueError(f"bad {what} setting {item!r} (known: {', '.join(known)}; "
                             "a range is lo:hi)") from None  # fmt: skip
    return kw


@dataclass
class Partition:
    """``side`` cut off from ``other`` (None: from every other node); ``one_way``: only what
    ``side`` sends is blocked. Lasts until ``until`` (virtual time) or a ``heal``."""

    side: frozenset[str]
    other: frozenset[str] | None = None
    one_way: bool = False
    until: float = math.inf
    start: float = field(default=0.0, compare=False)
    dropped: list[Pipe] = field(default_factory=list, compare=False, repr=False)  # heartbeats

    def blocks(self, src: str, dst: str) -> bool:
        if not src or not dst or src == dst:
            return False
        if self._split(src, dst):
            return True
        return not self.one_way and self._split(dst, src)

    def _split(self, src: str, dst: str) -> bool:
        if src not in self.side or dst in self.side:
            return False
        return self.other is None or dst in self.other

    def __str__(self) -> str:
        other = "rest" if self.other is None else "+".join(sorted(self.other))
        arrow = "->" if self.one_way else "<->"
        return f"{'+'.join(sorted(self.side))} {arrow} {other}"


class Network:
    """The simulated network of one hub: delays, partitions and cuts (see the module)."""

    def __init__(self, hub: MemHub, clock: VirtualClock, seed: int, faults: Faults = Faults(),
                 trace: Trace | None = None) -> None:  # fmt: skip
        self.hub = hub
        self.redials = random.Random(f"redial-{seed}")  # reconnect jitter (as delays: drawn)
        self.clock = clock
        self.faults = faults
        self.rng = random.Random(f"net-{seed}")  # the faults drawn by ``step`` ...
        self.delays = random.Random(f"delay-{seed}")  # ... and the delays: a replayed
        # schedule (``shardex.sim.script``) draws no faults and must see the same delays
        self.trace = trace if trace is not None else Trace()
        self.partitions: list[Partition] = []
        self.last_step: float | None = None
        self.counts = {"delayed": 0, "cut": 0, "drop": 0, "lost": 0, "partition": 0, "heal": 0,
                       "redial": 0}  # fmt: skip
        hub.shaper = self

    # -- the shaper (MemHub asks these for every message) ----------------------------------

    def now(self) -> float:
        return self.clock.now

    def due(self, src: MemSocket, dst: MemSocket) -> float:  # noqa: ARG002 - per-link delays later
        f = self.faults
        if f.delay_p and self.delays.random() < f.delay_p:
            self.counts["delayed"] += 1
            return self.clock.now + self.delays.uniform(*f.delay_s)
        return self.clock.now

    def blocked(self, src: MemSocket, dst: MemSocket) -> bool:
        parts = self.partitions
        return bool(parts) and any(p.blocks(src.owner, dst.owner) for p in parts)

    def redial(self, pipe: Pipe) -> float | None:
        """When the connecting side of a dropped ``pipe`` connects again (``MemHub.redial``):
        None (at once) unless ``Faults.reconnect``; else libzmq's timing: a retry every
        ``RECONNECT_IVL`` plus a jitter below it, the interval doubling up to
        ``RECONNECT_IVL_MAX`` (when set) for as long as the peer has been gone."""
        if not self.faults.reconnect:
            return None
        sock = pipe.a
        ivl = max(1, sock.opt(zmq.RECONNECT_IVL)) / 1000
        top = sock.opt(zmq.RECONNECT_IVL_MAX) / 1000
        cur = ivl
        if top > ivl and pipe.down_at is not None:
            gone, spent = self.clock.now - pipe.down_at, ivl
            while spent < gone and cur < top:
                cur = min(cur * 2, top)
                spent += cur
        self.counts["redial"] += 1
        return cur + self.redials.uniform(0, ivl)

    # -- faults, by hand or drawn by ``step`` ------------------------------------------------

    def partition(self, side: Iterable[str], other: Iterable[str] | None = None,
                  one_way: bool = False, seconds: float | None = None) -> Partition:  # fmt: skip
        """Cut ``side`` off from ``other`` (None: everyone else) for ``seconds`` (None: until
        ``heal``)."""
        until = math.inf if seconds is None else self.clock.now + seconds
        p = Partition(frozenset(side), None if other is None else frozenset(other), one_way, until,
                      self.clock.now)  # fmt: skip
        self.partitions.append(p)
        self.counts["partition"] += 1
        self.trace.add(self.clock.now, "partition", "", str(p))
        return p

    def heal(self, p: Partition | None = None) -> None:
        """End partition ``p`` (None: every one); what waited in the air lands from the next
        step on, in order."""
        for q in [p] if p is not None else list(self.partitions):
            if q in self.partitions:
                self.partitions.remove(q)
                self.counts["heal"] += 1
                self.trace.add(self.clock.now, "heal", "", str(q))
                for pipe in q.dropped:  # what its heartbeats dropped connects again
                    self.hub.redial(pipe)

    def cut(self, pipe: Pipe, during: Partition | None = None) -> int:
        """Drop one connection (``MemHub.cut``); how many messages were lost. ``during``: a
        heartbeat timeout in that partition dropped it (traced ``drop``: a consequence, not
        a fault a replay injects); it connects again when the partition heals."""
        b = pipe.b.owner if pipe.b is not None else "?"
        lost = self.hub.cut(pipe, reconnect=during is None)
        kind = "cut" if during is None else "drop"
        self.counts[kind] += 1
        self.counts["lost"] += lost
        if during is not None:
            during.dropped.append(pipe)
        self.trace.add(self.clock.now, kind, pipe.a.owner, f"{pipe.endpoint} to {b}, lost {lost}")
        return lost

    def heartbeats(self, now: float) -> None:
        """Each partition drops the connections whose heartbeat timed out across it: a socket
        with ``HEARTBEAT_IVL`` closes its connection when it has heard nothing from the peer
        for ``HEARTBEAT_TIMEOUT`` (libzmq; here counted from the partition's start)."""
        for p in self.partitions:
            for pipe in self.pipes():
                for sock, peer in ((pipe.a, pipe.b), (pipe.b, pipe.a)):
                    limit = _heartbeat_timeout(sock)
                    if (limit is not None and peer is not None and now - p.start >= limit
                            and p.blocks(peer.owner, sock.owner)):  # fmt: skip
                        self.cut(pipe, during=p)
                        break

    def pipes(self) -> list[Pipe]:
        """Every live connection, in a deterministic order (bind order, then connect order)."""
        return [p for sock in self.hub.bound.values() for p in sock.pipes if p.b is sock]

    def owners(self) -> list[str]:
        """The named nodes on the network now (sorted)."""
        names = {s.owner for p in self.pipes() for s in (p.a, p.b) if s is not None}
        return sorted(names - {""})

    def step(self, now: float, draw: bool = True) -> None:
        """A scheduler tick: heal what is due, drop what heartbeats give up on, then (``draw``)
        draw new faults for the time since the last step."""
        for p in [p for p in self.partitions if p.until <= now]:
            self.heal(p)
        if self.partitions:
            self.heartbeats(now)
        dt = 0.0 if self.last_step is None else now - self.last_step
        self.last_step = now
        if not draw:
            return
        f, rng = self.faults, self.rng
        if fire(rng, f.cut_per_s, dt):
            pipes = self.pipes()
            if pipes:
                self.cut(pipes[rng.randrange(len(pipes))])
        if fire(rng, f.partition_per_s, dt):
            self._random_partition()

    def _random_partition(self) -> None:
        names = self.owners()
        if len(names) < 2:
            return
        rng = self.rng
        side = rng.sample(names, rng.randint(1, len(names) - 1))
        rest = [n for n in names if n not in side]
        other = None if rng.random() < 0.5 else rng.sample(rest, rng.randint(1, len(rest)))
        one_way = rng.random() < self.faults.one_way_p
        self.partition(side, other, one_way, rng.uniform(*self.faults.partition_s))


def _heartbeat_timeout(sock: MemSocket | None) -> float | None:
    """Seconds of silence after which ``sock`` drops a connection (None: it never does)."""
    if sock is None or not sock.opt(zmq.HEARTBEAT_IVL):
        return None
    return (sock.opt(zmq.HEARTBEAT_TIMEOUT) or sock.opt(zmq.HEARTBEAT_IVL)) / 1000


def fire(rng: random.Random, rate: float, dt: float) -> bool:
    """Whether an event of ``rate`` per second happens in ``dt`` seconds (at most one)."""
    return rate > 0 and dt > 0 and rng.random() < 1 - math.exp(-rate * dt)


__all__ = ["SAFE_SKEW", "Faults", "Network", "Partition", "fire"]
