"""The seeded scheduler: which node runs when, and how virtual time moves.

One ``random.Random(seed)`` decides everything the scheduler decides, and nothing else in a
simulated run draws from it (faults and workload have their own streams, derived from the same
seed, so a change in one does not shift the others). ``InProcCluster`` asks it, each step:

* ``order(nodes)``: the nodes that take a turn now, in what order -- all of them shuffled
  (``mode="all"``) or one picked at random (``mode="one"``: longer runs of one node, the
  schedules a real OS makes under load);
* ``tick(now)``: before the turns: land the messages due by now (``MemHub.release``) and let
  the fault plan act (``on_tick``);
* ``pause(busy, now)``: how long to sleep after the step: a few microseconds of seeded "CPU"
  when messages moved, a seeded idle quantum when nothing did, never past the next message due
  in the air.

Same seed, same code: the same order of turns, the same messages at the same virtual times.
``Trace`` records what a run did (faults, crashes, the scheduler's own notes) as plain tuples,
and folds every delivered message into a running SHA-256 (``digest``), so two runs of one seed
can be compared byte for byte.

PYTHONHASHSEED: sets of ``str``/``bytes`` iterate in an order that changes with the hash seed
of the process. Nothing here iterates one (the scheduler keeps lists; the hub keeps its air in
an insertion-ordered dict); what the nodes iterate is listed in docs/simulator.md. Checked: one seed
in processes with different hash seeds delivers the same messages; the only bytes that differ
between two processes are the nodes' "pid" fields, which the digest reads as 0.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from typing import Any

import msgpack

BUSY_S = (0.0, 0.00005)  # a step that moved messages costs up to 50 µs of virtual CPU
IDLE_S = (0.0005, 0.005)  # a step that moved nothing sleeps this long (seeded within)
_PID_KEY = msgpack.packb("pid")


class Trace:
    """What happened in a run: ``events`` (virtual time, kind, node, detail) and a digest of
    every message delivered (receiver, frames) in delivery order."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str, str]] = []
        self._sha = hashlib.sha256()
        self.delivered = 0
        # Every node of a run reports this process's id as its own ("pid" in HELLO and
        # status maps): the one byte string that differs between two processes running one
        # seed. The digest reads it as 0, so a replay in another process digests the same.
        self._pid = _PID_KEY + msgpack.packb(os.getpid())
        self._pid0 = _PID_KEY + msgpack.packb(0)
        # and a standby's ``[PID, pid]`` to its leader (``wire.replication``): the same, read 0
        self._pid_body, self._pid0_body = msgpack.packb(os.getpid()), msgpack.packb(0)

    def add(self, t: float, kind: str, node: str = "", detail: str = "") -> None:
        self.events.append((t, kind, node, detail))

    def message(self, sock: Any, msg: list[bytes]) -> None:
        """A ``MemHub.on_deliver`` tap: fold one delivery into the digest."""
        self.delivered += 1
        sha = self._sha
        sha.update(sock.owner.encode())
        for k, frame in enumerate(msg):
            if _PID_KEY in frame:
                frame = frame.replace(self._pid, self._pid0)
            elif k and msg[k - 1] == b"PID" and frame == self._pid_body:
                frame = self._pid0_body
            sha.update(len(frame).to_bytes(4, "big"))
            sha.update(frame)

    @property
    def digest(self) -> str:
        """SHA-256 over every delivered message and every event so far (hex)."""
        sha = self._sha.copy()
        for ev in self.events:
            sha.update(repr(ev).encode())
        return sha.hexdigest()


class Scheduler:
    """The seeded choices of one run (see the module docstring)."""

    def __init__(
        self,
        seed: int,
        *,
        mode: str = "all",
        busy_s: tuple[float, float] = BUSY_S,
        idle_s: tuple[float, float] = IDLE_S,
        hub: Any = None,
        trace: Trace | None = None,
    ) -> None:
        if mode not in ("all", "one"):
            raise ValueError(f"scheduler mode must be 'all' or 'one', not {mode!r}")
        self.rng = random.Random(f"sched-{seed}")
        self.mode = mode
        self.busy_s = busy_s
        self.idle_s = idle_s
        self.hub = hub
        self.trace = trace
        self.on_tick: list[Callable[[float], None]] = []  # e.g. the fault plan's step
        # a node's turn raised (a process would have died): None re-raises, which ends the
        # run; the world crashes the node and restarts it, as a supervisor would
        self.on_failure: Callable[[Any, Exception], None] | None = None
        self.steps = 0

    def order(self, nodes: list[Any]) -> list[Any]:
        """The nodes that take a turn in this step, in order."""
        self.steps += 1
        if self.mode == "one":
            return [nodes[self.rng.randrange(len(nodes))]] if nodes else []
        out = list(nodes)
        self.rng.shuffle(out)
        return out

    def tick(self, now: float) -> int:
        """Before a step: faults act, then what is due in the air lands; how many landed."""
        for hook in self.on_tick:
            hook(now)
        hub = self.hub
        if hub is None or not (hub.airborne or hub.redials):
            return 0
        return hub.release(now)

    def failed(self, node: Any, exc: Exception) -> None:
        """``node``'s turn raised ``exc``: ``on_failure`` decides, or it ends the run."""
        if self.on_failure is None:
            raise exc
        self.on_failure(node, exc)

    def pause(self, busy: bool, now: float) -> float:
        """Seconds of virtual time after a step (``busy``: it moved messages)."""
        lo, hi = self.busy_s if busy else self.idle_s
        dt = self.rng.uniform(lo, hi)
        hub = self.hub
        if hub is not None and hub.airborne:
            due = hub.next_due()
            if due is not None and now < due < now + dt:
                dt = due - now
        return dt


__all__ = ["BUSY_S", "IDLE_S", "Scheduler", "Trace"]
