"""What a sequenced node keeps to repair a subscriber's gap by seq: the ``EventRing`` (one type
for every tier, ``shardex.ring``), and how much one journal read may replay when the ring no
longer holds a range (the engine shard's and the account shard's ``OP_EVENTS``, and the link
re-sends of ``link_port.LinkPort``)."""

from __future__ import annotations

from shardex.ring import EventRing

JOURNAL_READ_BUDGET = 20_000  # journaled commands one gap-repair read may replay (~60 ms quiet;
# it blocks the loop: orders wait, and a replicated leader must keep ticking its lease)

__all__ = ["JOURNAL_READ_BUDGET", "EventRing"]
