"""Each WebSocket client's bounded queue and what happens when it is full (pure: the time is
given, nothing is sent from here).

Frames are shared, already encoded bytes (one encoding per message, whoever receives it); the
queue holds references. A client whose queue is full has *fallen behind*: everything queued is
dropped, its subscriptions are told ``resync_required`` (the book ones stop getting deltas
until the client resyncs; a trades one says the last seq it got, to resume from), and a strike
is counted. A client with ``MAX_STRIKES`` strikes within ``STRIKE_WINDOW`` seconds is closed:
it keeps falling behind. Nobody else waits for a slow client.
"""

from __future__ import annotations

from collections import deque
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
    frames: deque[str] = field(default_factory=deque)
    strikes: deque[float] = field(default_factory=deque)
    closing: bool = False
    dropped: int = 0  # frames queued, then dropped unsent, since the count was last taken

    def offer(self, frame: str, now: float) -> str:
        """Queue ``frame``: ``OK``; else the queue is dropped and it is ``BEHIND`` (the
        caller queues the resync notices) or ``CLOSE`` (strikes used up)."""
        if self.closing:
            return CLOSE
        if len(self.frames) < self.limit:
            self.frames.append(frame)
            return OK
        self.dropped += len(self.frames)
        self.frames.clear()
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

    def take_dropped(self) -> int:
        """The frames dropped since the last call (for the metrics), and start again."""
        n, self.dropped = self.dropped, 0
        return n

    def take(self) -> str | None:
        return self.frames.popleft() if self.frames else None

    def __len__(self) -> int:
        return len(self.frames)
