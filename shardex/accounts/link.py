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
