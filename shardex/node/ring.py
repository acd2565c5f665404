"""What a sequenced node keeps to repair a subscriber's gap by seq: the engine shard's ring
of published events (``PublishedRing``, preallocated slots: it is on the hot path), and how
much one journal read may replay when the ring no longer holds a range. (An account shard's
ring is ``accounts.machines.EventRing``: it is part of that machine's snapshot.)"""

from __future__ import annotations

from shardex.engine.codes import Event

JOURNAL_READ_BUDGET = 20_000  # journaled commands one gap-repair read may replay (~60 ms quiet;
# it blocks the loop: orders wait, and a replicated leader must keep ticking its lease)


class PublishedRing:
    """The last ``size`` published events, by seq, for gap repair (events are contiguous)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf: list[Event | None] = [None] * size
        self.first = 0  # seq of the oldest event held (0: empty)
        self.last = 0

    def extend(self, events: list[Event]) -> None:
        buf, size = self.buf, self.size
        for ev in events:
            buf[ev[1] % size] = ev
        if events:
            self.last = events[-1][1]
            if not self.first:
                self.first = events[0][1]
            self.first = max(self.first, self.last - size + 1)

    def get(self, first: int, last: int) -> list[Event] | None:
        if not self.first or first < self.first or last > self.last:
            return None
        size = self.size
        return [self.buf[s % size] for s in range(first, last + 1)]  # type: ignore[misc]
