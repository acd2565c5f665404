"""``EventRing``: the events a sequenced node keeps in memory, by seq, to repair a subscriber's
gap (the bridge's range re-sends, ``OP_EVENTS``) and to look up an order's recent trades. One
type for every tier: the engine shard's published events (handed from a promoted standby to
its leader) and the account machine's events (its tail is part of that machine's snapshot).
A range older than the ring is regenerated from the journal by the caller.

Preallocated slots indexed by ``seq % size``: ``extend`` is on the engine shard's hot path (one
store per event) and ``get`` is one slice-free lookup per seq. Events carry their seq at index 1.
"""

from __future__ import annotations

from typing import Any


class EventRing:
    """The last ``size`` events, contiguous by seq. Events that do not continue the ones held
    (a hole) restart the ring: a range across a hole is never served."""

    __slots__ = ("size", "buf", "first", "last")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"event ring size {size}: expected >= 1")
        self.size = size
        self.buf: list[Any] = [None] * size
        self.first = 0  # seq of the oldest event held (0: empty)
        self.last = 0  # seq of the newest

    def extend(self, events: list[Any]) -> None:
        """Append events in seq order, contiguous (as a machine emits them)."""
        if not events:
            return
        buf, size = self.buf, self.size
        for ev in events:
            buf[ev[1] % size] = ev
        start = events[0][1]
        if not self.first or start != self.last + 1:
            self.first = start  # empty, or a hole: what was held before is not served
        self.last = events[-1][1]
        if self.last - self.first >= size:
            self.first = self.last - size + 1

    def get(self, first: int, last: int) -> list[Any] | None:
        """Events ``first..last``, or None unless the ring holds every one of them."""
        if not self.first or first < self.first or last > self.last:
            return None
        size = self.size
        return [self.buf[s % size] for s in range(first, last + 1)]

    def tail(self, n: int) -> list[Any]:
        """The newest ``n`` events held (fewer if it holds fewer), oldest first."""
        if not self.first:
            return []
        return self.get(max(self.first, self.last - n + 1), self.last) or []
