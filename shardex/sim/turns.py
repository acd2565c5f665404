"""Turns that cost virtual time: a node's turn lasts as long as the messages it handled take.

Without it a turn is instant: the scheduler runs every node in every step, so a node reads
each message the step it lands, and what a real loop finds after a long turn -- a backlog
that came while it worked -- never exists. That hides the bugs of a loop that does something
at the top of a turn with what it knew before reading it (the late SYNC: a stale ``have``).

``TurnCost`` (the world's ``Faults.turn_s``: seconds per message, a range) counts the
messages each node reads (a ``MemHub.on_recv`` tap, by socket owner) and, at each scheduler
tick, before the step's turns, freezes every node that read ``k`` messages since the last tick
for ``k`` times a cost drawn from ``turn_s`` (its own ``random.Random``, ``turns-<seed>``: the
other streams do not shift). The freeze is the ``slow`` fault's (``InProcCluster.freeze``) and
never shortens a longer one (a pause). A node that reads nothing costs nothing: idle turns
stay free, so a quiet cluster runs as fast as before.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any


class TurnCost:
    """Charges each node's turns virtual time per message read (see the module)."""

    def __init__(self, seed: int, per_msg: tuple[float, float], life: Any, hub: Any) -> None:
        """``life``: the world's ``Lifecycle`` (nodes by name, their cluster's freeze);
        ``hub``: the ``MemHub`` whose reads are counted (after any tap already there)."""
        self.rng = random.Random(f"turns-{seed}")
        self.per_msg = per_msg
        self.life = life
        self.reads: dict[str, int] = {}  # socket owner → messages read since the last tick
        self.turns = 0  # turns charged
        self.charged_s = 0.0  # virtual seconds charged, in all
        self._next: Callable[[Any], None] | None = hub.on_recv
        hub.on_recv = self.on_recv

    @classmethod
    def of(cls, seed: int, faults: Any, life: Any, hub: Any) -> TurnCost | None:
        """The world's turn cost, or None when its ``Faults.turn_s`` is all zero (turns free).
        ``turn_s`` is a ``(lo, hi)`` range or one number (``--faults turn_s=0.001``)."""
        turn_s = faults.turn_s
        lo, hi = (turn_s, turn_s) if isinstance(turn_s, (int, float)) else tuple(turn_s)
        if not (lo or hi):
            return None
        return cls(seed, (float(lo), float(hi)), life, hub)

    def on_recv(self, sock: Any) -> None:
        if self._next is not None:
            self._next(sock)
        owner = sock.owner
        if owner:
            self.reads[owner] = self.reads.get(owner, 0) + 1

    def step(self, now: float) -> None:
        """A scheduler tick: the turns since the last one cost their reads (a freeze)."""
        if not self.reads:
            return
        reads, self.reads = self.reads, {}
        named = self.life.named()
        cluster = self.life.cluster
        frozen = cluster._frozen  # (read only: a longer freeze is kept)
        for name in sorted(reads):
            node = named.get(name)
            if node is None:
                continue  # a client's socket, or a node gone since it read
            cost = reads[name] * self.rng.uniform(*self.per_msg)
            if frozen.get(id(node), 0.0) < now + cost:
                cluster.freeze(node, cost)
                self.turns += 1
                self.charged_s += cost


__all__ = ["TurnCost"]
