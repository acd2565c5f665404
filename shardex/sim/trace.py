"""A simulated run's trace: what happened, when (virtual time) and where (node), kept compact
enough to read next to a violation, and a stable hash of the whole run.

``Trace`` records every event into a running SHA-256 (``digest``: the run's fingerprint; the
same seed on the same commit must give the same digest, byte for byte, which is what makes a
failing seed worth printing) and keeps only the newest ``keep`` events in memory (a long run
must not grow without bound). ``lead_up`` picks what a person reads first when a check fires:
the events before it, those of the nodes the violation names first.

The events' encoding is canonical on purpose: ``repr`` of the virtual time (exact for a float,
the same on every machine), the node and the text, separated by a byte no name contains. No
``hash()`` (salted per process by PYTHONHASHSEED), no ``id()``, no wall-clock time.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KEEP = 10_000  # events a trace holds for reading (the digest covers all of them)
LEAD_UP = 25  # events ``lead_up`` returns by default


@dataclass(frozen=True)
class Event:
    """``what`` happened at ``node`` at virtual time ``t`` (seconds)."""

    t: float
    node: str
    what: str

    def line(self) -> str:
        return f"{self.t:12.6f}s  {self.node:<14} {self.what}"

    def encode(self) -> bytes:
        return f"{self.t!r}\x1f{self.node}\x1f{self.what}\n".encode()


def as_event(x: Any) -> Event:
    """An ``Event`` from what a simulator records: an ``Event``, a ``(t, node, what)``
    tuple, ``sim.sched.Trace``'s ``(t, kind, node, detail)``, a dict, or an object with
    ``t``/``time``/``at``, ``node`` and ``what``/``event``/``kind``."""
    if isinstance(x, Event):
        return x
    if isinstance(x, tuple | list) and len(x) == 4:  # ``sim.sched.Trace``'s (t, kind, node, detail)
        t, kind, node, detail = x
        return Event(float(t), str(node), f"{kind} {detail}".rstrip())
    if isinstance(x, tuple | list) and len(x) == 3:
        return Event(float(x[0]), str(x[1]), str(x[2]))
    get = x.get if isinstance(x, dict) else (lambda k, d=None: getattr(x, k, d))
    t = next((get(k) for k in ("t", "time", "at") if get(k) is not None), 0.0)
    what = next((get(k) for k in ("what", "event", "kind") if get(k) is not None), repr(x))
    return Event(float(t), str(get("node", "") or ""), str(what))


class Trace:
    """The newest ``keep`` events of a run, and a digest of every event ever added."""

    def __init__(self, keep: int = KEEP) -> None:
        self.events: deque[Event] = deque(maxlen=keep)
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, t: float, node: str, what: str) -> Event:
        ev = Event(t, node, what)
        self.record(ev)
        return ev

    def record(self, ev: Any) -> None:
        ev = as_event(ev)
        self.events.append(ev)
        self._hash.update(ev.encode())
        self.count += 1

    def extend(self, events: Iterable[Any]) -> None:
        for ev in events:
            self.record(ev)

    def digest(self) -> str:
        """The run's fingerprint so far (16 hex digits of SHA-256 over every event)."""
        return self._hash.hexdigest()[:16]


def run_hash(events: Iterable[Any]) -> str:
    """``Trace.digest`` of ``events`` (any shape ``as_event`` reads)."""
    t = Trace(keep=1)
    t.extend(events)
    return t.digest()


def lead_up(events: Iterable[Any], until: float | None = None, mentions: str = "",
            n: int = LEAD_UP) -> list[Event]:  # fmt: skip
    """The ``n`` events up to virtual time ``until`` (None: the end) a reader needs first:
    those of a node ``mentions`` names (e.g. the violation's message), then the newest others,
    shown in time order."""
    evs = [e for e in map(as_event, events) if until is None or e.t <= until]
    named = [i for i, e in enumerate(evs) if e.node and e.node in mentions]
    keep = set(named[-n:])
    for i in range(len(evs) - 1, -1, -1):
        if len(keep) >= n:
            break
        keep.add(i)
    return [evs[i] for i in sorted(keep)]


def render(events: Iterable[Any], skipped: int = 0) -> str:
    """The events one per line (``time  node  what``), noting how many were left out."""
    lines = [as_event(e).line() for e in events]
    if skipped:
        lines.insert(0, f"  ... {skipped} earlier events not shown")
    return "\n".join(lines)
