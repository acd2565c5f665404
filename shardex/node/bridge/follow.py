"""The bridge follows the engine shard count live (``shardex reshard`` starts and stops shards).

The bridge used to read the router's topology once, at its start, so a reshard restarted it to
make it subscribe to new shards (and a restart is a window in which nothing is written). Now
it asks the router every ``FOLLOW_S`` seconds (``Bridge._follow_count``), and:

* a shard the topology adds (index ``n``, ``n+1``, ...) is followed like the ones it started
  with: its tracker resumes from what Redis holds for it (a shard that ran before, stopped by a
  shrink and started again by a grow, continues its stream), the SUB connects to its PUB, and
  its link, status poller and writer start. Whatever it published before the bridge listened is
  repaired from its journal like any gap, so a late follow loses nothing;
* a shard the topology drops (a shrink stops it once the moves emptied it) is let go only once
  its events are written up to the seq its last status answer gave and nothing it sent is
  pending (``retirable``): a shard the bridge has not caught up with stays followed (and its
  lag and stall alerts stay visible) rather than being dropped with events unwritten.

Shards are added and removed at the end only, so every other shard keeps its index (the
index is the shard's number: ``shardex:events:<i>``, the PUB messages' shard field, and an
adoption's source in ``moves.gate``). The decisions are pure; ``serve`` does the I/O.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

FOLLOW_S = 1.0  # how often the bridge asks the router for the engine shard count


def added(following: int, topology: Sized) -> range:
    """The engine shard indexes the router lists that the bridge does not follow yet."""
    return range(following, len(topology))


def retirable(tracker: Any) -> bool:
    """Whether a shard the router no longer lists may be let go: every event it sent and its
    last status answer reported is written (``tracker``: its ``ShardTracker``)."""
    return not tracker.pending and tracker.last >= tracker.shard_seq
