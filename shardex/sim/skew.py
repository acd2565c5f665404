"""Per-node clocks in a simulated run: each node's own view of the one virtual time.

Real machines do not share a clock. Each node of a skewed world (``Faults.skew``) reads a
``NodeClock``: the shared ``VirtualClock`` run at the node's own *rate* (a crystal that is
fast or slow), from its own monotonic origin (two processes' ``monotonic()`` values are never
comparable), with a wall clock (``time()``) that an operator or NTP may *step* by whole seconds
(``Faults.step_per_s``). What the code relies on, and therefore what the default draws stay
within: ``shardex.lease``'s safety argument needs the leader's and Redis's clock *rates* to
differ by less than the lease's ``MARGIN`` (5 %); the default rates are drawn within
``SAFE_SKEW`` (2 %) of the store's clock. ``Faults(skew=0.1, skew_unsafe=1)`` draws beyond the
margin on purpose: a leader whose clock runs 10 % slow keeps acting after its lease expired,
which is the danger the margin exists for -- expected to break the lease's safety once a world
runs standbys, not a bug of the code.

A stepped wall clock moves ``time()`` only: ``monotonic()`` (what timers, leases and
heartbeats read) never jumps and never goes back.

``SkewedCluster`` is an ``InProcCluster`` whose nodes each get their own transport on the
cluster's hub (the same network, sockets made through the cluster's own ``Context`` so the
``Lifecycle`` still sees them), reading their own clock. A restarted node gets its machine's
clock back (a restart is a process on the same machine).
"""

from __future__ import annotations

import random
from typing import Any

from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.net import Transport
from shardex.sim.faults import SAFE_SKEW
from shardex.sim.sched import Trace

MONO_ORIGIN_S = (0.0, 1000.0)  # a node's monotonic clock starts somewhere in here


class NodeClock:
    """One machine's clock over the shared ``base``: ``rate`` times as fast, its monotonic
    time starting at ``origin``, its wall clock ``offset`` seconds off (see the module)."""

    def __init__(self, base: VirtualClock, rate: float = 1.0, origin: float = 0.0,
                 offset: float = 0.0) -> None:  # fmt: skip
        self.base = base
        self.rate = rate
        self.offset = offset
        self._mono0 = origin  # our monotonic reading ...
        self._base0 = base.now  # ... when the base read this
        self._origin = origin
        self._born = base.now

    def monotonic(self) -> float:
        return self._mono0 + (self.base.now - self._base0) * self.rate

    def perf_counter(self) -> float:
        return self.monotonic()

    def time(self) -> float:
        return self.base.epoch + self.base.now + self.offset + self.drift()

    def drift(self) -> float:
        """How far our crystal has run ahead of (or behind) the base so far, in seconds."""
        return (self.monotonic() - self._origin) - (self.base.now - self._born)

    def set_rate(self, rate: float) -> None:
        """Run at ``rate`` from now on; ``monotonic`` stays continuous."""
        self._mono0, self._base0 = self.monotonic(), self.base.now
        self.rate = rate

    def step(self, seconds: float) -> None:
        """The wall clock jumps by ``seconds`` (either way); ``monotonic`` does not."""
        self.offset += seconds

    def __repr__(self) -> str:
        return f"<NodeClock rate={self.rate} offset={self.offset}>"


def node_name(kind: str, o: dict[str, Any]) -> str:
    """The node a ``_build`` of ``kind`` with options ``o`` makes (``crash.Lifecycle``'s
    names; a replica of a replicated shard adds ``a`` or ``b``)."""
    name = f"{kind}-{o.get('index') or 0}"
    return name + "ab"[o.get("replica") or 0] if o.get("role") == "auto" else name


def node_transport(base: Transport, clock: Any) -> Transport:
    """A transport on ``base``'s hub and disk that reads ``clock``; its sockets are made by
    ``base.Context`` at call time (so a wrapper the ``Lifecycle`` put there sees them)."""
    t = Transport(f"{base.name}+clock", lambda: base.Context(), base.Poller,
                  lambda: base.AsyncContext(), in_process=True, clock=clock)  # fmt: skip
    t.hub = base.hub  # type: ignore[attr-defined]
    t.disk = base.disk
    return t


class Clocks:
    """The clocks of one world's machines, drawn from their own seeded stream: a rate within
    ``skew`` of 1 and a monotonic origin, per node name, on first use."""

    def __init__(self, base: VirtualClock, seed: int, skew: float,
                 trace: Trace | None = None) -> None:  # fmt: skip
        self.base = base
        self.skew = skew
        self.rng = random.Random(f"skew-{seed}")
        self.trace = trace if trace is not None else Trace()
        self.by_name: dict[str, NodeClock] = {}

    def clock(self, name: str) -> NodeClock:
        got = self.by_name.get(name)
        if got is None:
            rng = self.rng
            rate = 1.0 + rng.uniform(-self.skew, self.skew)
            got = self.by_name[name] = NodeClock(self.base, rate, rng.uniform(*MONO_ORIGIN_S))
            self.trace.add(self.base.now, "skew", name, f"rate {rate!r}")
        return got

    def step(self, name: str, seconds: float) -> None:
        """``name``'s wall clock steps by ``seconds`` (traced ``step``; replayable)."""
        self.clock(name).step(seconds)
        self.trace.add(self.base.now, "step", name, f"{seconds!r}s")


class SkewedCluster(InProcCluster):
    """An ``InProcCluster`` whose every node reads its own ``NodeClock`` (see the module).
    Set ``clocks`` before building: pass it to the constructor."""

    def __init__(self, plan: Any, net: Transport, clocks: Clocks, **kw: Any) -> None:
        self.clocks = clocks
        super().__init__(plan, net=net, **kw)

    def _build(self, name: str, o: dict[str, Any]) -> None:
        base = self.net
        self.net = node_transport(base, self.clocks.clock(node_name(name, o)))
        try:
            super()._build(name, o)
        finally:
            self.net = base


__all__ = ["MONO_ORIGIN_S", "SAFE_SKEW", "Clocks", "NodeClock", "SkewedCluster", "node_name",
           "node_transport"]  # fmt: skip
