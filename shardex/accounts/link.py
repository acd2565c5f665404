"""Exactly-once on a one-way, sequenced link between two single-writer tiers (pure, no I/O).

Every message on a link (engine shard → account shard settlements; account shard → engine
shard forwarded orders) carries the sender's ``seq`` and ``prev``, the seq of the previous
message the sender put on *this* link (0 for the first). The sender's seqs are its own event or
output seqs, so they skip numbers that went to other links; ``prev`` makes the chain per link
explicit, so the receiver can tell a duplicate (``seq <= last``), a gap (``prev != last``: some
message before this one is missing; ask for ``(last, seq]`` again) and the next message
(``prev == last``) without any per-link counter on the sender beyond the last seq it sent.
"""

from __future__ import annotations

APPLY, DUPLICATE, GAP = 0, 1, 2


class Inbox:
    """The receiver's half: the last seq applied per sender. Part of the receiver's snapshot."""

    __slots__ = ("last",)

    def __init__(self, last: dict[int, int] | None = None) -> None:
        self.last: dict[int, int] = dict(last or {})

    def check(self, sender: int, seq: int, prev: int) -> int:
        """``APPLY`` (then call ``applied``), ``DUPLICATE`` (skip) or ``GAP`` (nothing applied)."""
        have = self.last.get(sender, 0)
        if seq <= have:
            return DUPLICATE
        return APPLY if prev == have else GAP

    def applied(self, sender: int, seq: int) -> None:
        self.last[sender] = seq


class Outbox:
    """The sender's half: the last seq put on each link (to fill ``prev``). Part of the
    sender's snapshot, so a sender rebuilt from its journal re-sends byte-identical messages."""

    __slots__ = ("last",)

    def __init__(self, last: dict[int, int] | None = None) -> None:
        self.last: dict[int, int] = dict(last or {})

    def put(self, link: int, seq: int) -> int:
        """Record that ``seq`` goes on ``link``; return its ``prev``."""
        prev = self.last.get(link, 0)
        self.last[link] = seq
        return prev


ALL = (1 << 63) - 1  # ``ResendGate.answer``: every message after ``have`` (nothing is known yet)


class ResendGate:
    """The sender's half of the repair of one link: which messages a report of the receiver
    calls for re-sending (an account shard's SYNC to an engine shard, for settlements; an
    engine shard's HAVE to an account shard, for forwards). Pure: the node says when a message
    went out (``put``), when a report was read (``read``) and when it answers it (``answer``).

    A report names ``have``, the last message the receiver applied from us. Being behind what
    was sent does not make the rest lost: it may be in flight (on the link, or unread in the
    receiver's backlog), and re-sending it makes a busy link carry it twice. A lost message
    stops the receiver at the one before it (the next is a gap), so its ``have`` stops moving:
    only a report whose ``have`` did not move past the previous report's re-sends, and only
    what was sent before that *previous* report was read. Those had a whole report period to
    arrive; newer ones may still be in flight: a report read in the same wake-up as a burst is
    answered after the burst's messages were sent, and may have been written before them.
    A lost message is so re-sent at the latest on the second report read after it was sent:
    nothing stalls. The first report (a sender or receiver that just started: nothing is known)
    re-sends everything after ``have``; ``sent``: the last seq the sender's journal put on the
    link before it started, which counts as sent before that report (so a re-send from the
    journal it starts goes on). At most one re-send every ``every`` seconds (gap reports come
    in bursts), except during a re-send from the journal (each report continues it).
    """

    __slots__ = ("every", "sent", "_mark", "_have", "_bound", "_at")

    def __init__(self, every: float, sent: int = 0) -> None:
        self.every = every
        self.sent = sent  # the newest seq put on the link
        self._mark = sent  # ``sent`` when the report now waiting for its answer was read
        self._have: int | None = None  # the ``have`` of the previous report answered
        self._bound = 0  # ``sent`` when that report was read
        self._at: float | None = None  # when we last re-sent

    def put(self, seq: int) -> None:
        """Messages up to ``seq`` went on the link (or were dropped trying: the same to us)."""
        if seq > self.sent:
            self.sent = seq

    def read(self) -> None:
        """A report was read; it is answered later (``answer``), after this wake-up's sends."""
        self._mark = self.sent

    def answer(self, have: int, now: float, repairing: bool = False) -> int | None:
        """Re-send the messages with seq in ``(have, bound]``: the ``bound`` returned (``ALL``:
        every one), or None for none. ``repairing``: a re-send from the journal is under way."""
        prev, bound = self._have, self._bound
        self._have, self._bound = have, self._mark
        if prev is None:
            bound = ALL
        if repairing:
            return bound
        if prev is not None and have > prev:
            return None  # moving: what follows is in flight
        if bound <= have:
            return None  # nothing sent early enough to count as lost
        if self._at is not None and now - self._at < self.every:
            return None
        self._at = now
        return bound
