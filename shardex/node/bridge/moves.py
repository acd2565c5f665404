"""The bridge follows a pair that moved between engine shards: its trades stream stays in order.

A pair's trades come from the source shard up to its hand-off, then from the target after
the adoption (``EV_ADOPTED`` carries the source shard and the hand-off's seq). The bridge
writes each shard's events in its own task, so without a rule the target's first trades of
the pair could reach ``shardex:trades:<SYMBOL>`` before the source's last ones. The rule: an
engine shard's events from an adoption on are written only once the source shard's events
up to the hand-off are (its tracker's ``last``), waited for at most ``MAX_WAIT`` seconds (then
an ALERT, and the events are written anyway: late is better than never).

The trades stream's IDs stay increasing across the move in the write script (a trade whose
``<seq>-0`` is not above the stream's top goes just above it: ``script.WRITE_SCRIPT``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from shardex.engine.codes import EV_ADOPTED
from shardex.wire.layouts import ADOPTED_FROM, ADOPTED_SEQ, EV_KIND, EV_SYMBOL

MAX_WAIT = 30.0  # seconds an adoption waits for its source's events to be written
POLL = 0.01  # seconds between two looks at the source's progress
_KIND = itemgetter(EV_KIND)


def first_adoption(batch: Sequence[tuple]) -> int:
    """The index of the first ``EV_ADOPTED`` of ``batch``, -1 if it has none (on every batch
    of the bridge's hot path: one C-level pass, no Python loop over the events)."""
    if EV_ADOPTED not in map(_KIND, batch):
        return -1
    return list(map(_KIND, batch)).index(EV_ADOPTED)


async def gate(batch: list[tuple], tracker: Any, shards: Sequence[Any], alerts: Any,
               label: str, now: Callable[[], float],
               max_wait: float = MAX_WAIT) -> list[tuple]:  # fmt: skip
    """The part of ``batch`` (one engine shard's contiguous events, taken from ``tracker``) to
    write now; the rest goes back to ``tracker``. Events before an adoption go at once; an
    adoption goes once its source shard (``shards[i].tracker``) wrote up to the hand-off.
    ``now``: the bridge's monotonic clock."""
    k = first_adoption(batch)
    if k < 0:
        return batch
    if k > 0:
        tracker.putback(batch[k:])
        return batch[:k]
    ev = batch[0]
    source, upto = ev[ADOPTED_FROM], ev[ADOPTED_SEQ]
    if not 0 <= source < len(shards):
        return batch  # (a source the bridge does not follow: nothing to wait for)
    src = shards[source].tracker
    deadline = now() + max_wait
    while src.last < upto:
        if now() >= deadline:
            alerts.alert(label, "move", "adoption unordered",
                         "pair %s adopted from shard %d at its seq %d, whose events are "
                         "written only up to %d after %.0f s: writing on (its trades stream "
                         "may show the target's trades first)", ev[EV_SYMBOL], source, upto,
                         src.last, max_wait)  # fmt: skip
            break
        await asyncio.sleep(POLL)
    return batch
