"""Each WebSocket client's bounded queue and what happens when it is full (pure: the time is
given, nothing is sent from here).

Frames are shared, already encoded messages (one encoding per message, whoever receives it);
the queue holds references: a message (``str``) or a step's chunk of a channel's messages
(``fanout.Chunk``, counted as as many frames as it holds; a batch as its trades: the bound
is on how far behind a client is, not on how its messages are cut). A client whose queue is
full has *fallen behind*: everything queued is dropped, its subscriptions are told
``resync_required`` (the book ones stop getting deltas until the client resyncs; a trades one
says the last seq it got, to resume from), and a strike is counted. A client with
``MAX_STRIKES`` strikes within ``STRIKE_WINDOW`` seconds is closed: it keeps falling behind.
Nobody else waits for a slow client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sized
from dataclasses import dataclass, field

QUEUE_FRAMES = 1000  # frames a client may have queued
MAX_STRIKES = 3  # falls behind this often within STRIKE_WINDOW: closed
STRIKE_WINDOW = 60.0  # seconds

OK, BEHIND, CLOSE = "ok", "behind", "close"


@dataclass
class Outbox:
    """One client's queue of encoded frames and its strikes."""

    limit: int = QUEUE_FRAMES
    max_strikes: int = MAX_STRIKES
    window: float = STRIKE_WINDOW
    frames: deque[Sized] = field(default_factory=deque)  # str, or a chunk of several
    strikes: deque[float] = field(default_factory=deque)
    closing: bool = False
    dropped: int = 0  # frames queued, then dropped unsent, since the count was last taken
    lost: list[Sized] = field(default_factory=list)  # what the last drop dropped (take_lost)
    count: int = 0  # frames queued (a chunk counts its messages)

    def offer(self, frame: Sized, now: float) -> str:
        """Queue ``frame`` (a message, or a chunk weighing ``weight(frame)``): ``OK``; else
        the queue is dropped and it is ``BEHIND`` (the caller queues the resync notices) or
        ``CLOSE`` (strikes used up). An empty queue takes any chunk (one step's messages can
        outnumber ``limit``: that is not the client falling behind)."""
        if self.closing:
            return CLOSE
        n = weight(frame)
        if not self.count or self.count + n <= self.limit:
            self.frames.append(frame)
            self.count += n
            return OK
        self.dropped += self.count
        self.lost = list(self.frames)
        self.frames.clear()
        self.count = 0
        while self.strikes and now - self.strikes[0] > self.window:
            self.strikes.popleft()
        self.strikes.append(now)
        if len(self.strikes) >= self.max_strikes:
            self.closing = True
            return CLOSE
        return BEHIND

    def control(self, frame: str) -> None:
        """Queue a notice (resync_required, an answer) past the limit: the queue was just
        emptied, or the client asked for it; bounded by what a client can ask."""
        if not self.closing:
            self.frames.append(frame)
            self.count += 1

    def take_lost(self) -> list[Sized]:
        """The entries the last drop dropped (what the client was never sent), once."""
        lost, self.lost = self.lost, []
        return lost

    def take_dropped(self) -> int:
        """The frames dropped since the last call (for the metrics), and start again."""
        n, self.dropped = self.dropped, 0
        return n

    def take(self) -> Sized | None:
        """The oldest entry (a message ``str`` or a chunk), or None."""
        if not self.frames:
            return None
        item = self.frames.popleft()
        self.count -= weight(item)
        return item

    def messages(self) -> list[str]:
        """Every queued message in order, chunks opened (for tests and the Binance writer)."""
        out: list[str] = []
        for item in self.frames:
            out.extend([item] if isinstance(item, str) else item.frames)  # type: ignore[attr-defined]
        return out

    def __len__(self) -> int:
        return self.count


def weight(item: Sized) -> int:
    """What a queue entry counts for: a message 1, a chunk its ``weight`` (its messages, or
    the trades of a batch: ``fanout.Chunk``)."""
    return 1 if isinstance(item, str) else item.weight  # type: ignore[attr-defined]
