"""``EventRing``: the events a sequenced node keeps in memory, by seq, to repair a subscriber's
gap (the bridge's range re-sends, ``OP_EVENTS``) and to look up an order's recent trades. One
type for every tier: the engine shard's published events (handed from a promoted standby to
its leader) and the account machine's events (its tail is part of that machine's snapshot).
A range older than the ring is regenerated from the journal by the caller.

``extend`` is on the hot path of both tiers (the account machine calls it for every command
it applies, the engine shard once per batch), so it is one C-level ``list.extend`` into the
newest chunk; a new chunk is started once that one holds ``CHUNK`` events, and the oldest chunk
is dropped once the rest hold ``size``. ``get`` (repairs: rare) finds a range's chunk by
bisecting the chunks' first seqs. Events carry their seq at index 1.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Any

CHUNK = 1024  # events per chunk before the next one starts (a batch is never split)


class EventRing:
    """The last ``size`` events, contiguous by seq. Events that do not continue the ones held
    (a hole) restart the ring: a range across a hole is never served."""

    __slots__ = ("size", "chunks", "starts", "newest", "held", "last")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"event ring size {size}: expected >= 1")
        self.size = size
        self.chunks: deque[list[Any]] = deque()  # contiguous runs of events, oldest first
        self.starts: deque[int] = deque()  # the first seq of each chunk
        self.newest: list[Any] = []  # the newest chunk (a fresh list: empty ring)
        self.held = 0  # events in the chunks before ``newest``
        self.last = 0  # seq of the newest event held (0: empty)

    @property
    def first(self) -> int:
        """Seq of the oldest event served (0: empty)."""
        if not self.chunks:
            return 0
        return max(self.starts[0], self.last - self.size + 1)

    def extend(self, events: list[Any]) -> None:
        """Append events in seq order, contiguous (as a machine emits them)."""
        if events:
            newest = self.newest
            if len(newest) >= CHUNK or events[0][1] != self.last + 1 or not newest:
                newest = self._roll(events[0][1])
            newest.extend(events)
            self.last = events[-1][1]

    def _roll(self, start: int) -> list[Any]:
        """A new newest chunk starting at ``start``: after the others when it continues
        them, else (empty, or a hole) alone; then the chunks no longer served go."""
        chunks, starts = self.chunks, self.starts
        if not self.newest or start != self.last + 1:
            chunks.clear()
            starts.clear()
            self.held = 0
        else:
            self.held += len(self.newest)
        newest = self.newest = []
        chunks.append(newest)
        starts.append(start)
        while len(chunks) > 1 and self.held - len(chunks[0]) >= self.size:
            self.held -= len(chunks.popleft())
            starts.popleft()
        return newest

    def get(self, first: int, last: int) -> list[Any] | None:
        """Events ``first..last``, or None unless the ring holds every one of them."""
        if not self.chunks or first < self.first or last > self.last:
            return None
        starts, chunks = self.starts, self.chunks
        k = bisect_right(starts, first) - 1
        out: list[Any] = []
        at = first
        while at <= last:
            chunk = chunks[k]
            lo = at - starts[k]
            piece = chunk[lo : lo + last - at + 1]
            if not piece:
                return None  # (cannot happen: the chunks are contiguous)
            out += piece
            at += len(piece)
            k += 1
        return out

    def tail(self, n: int) -> list[Any]:
        """The newest ``n`` events held (fewer if it holds fewer), oldest first."""
        if not self.chunks:
            return []
        return self.get(max(self.first, self.last - n + 1), self.last) or []
