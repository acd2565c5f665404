"""Process-wide runtime settings of the hot loops (router, shard).

Python's cyclic GC walks every tracked container of a generation when it collects it. A shard
holds its books (hundreds of thousands of long-lived orders) and allocates a few short-lived
tuples per command, so the default thresholds (700, 10, 10) trigger a young collection every few
hundred commands and a full one, which walks every resting order, every ~70k allocations:
measured at 8-12% of a shard's main thread at saturation. Nothing on the hot path creates
reference cycles (commands, events and replies are tuples, bytes and dicts freed by reference
counting), so collections find almost nothing.

``tune_gc`` therefore freezes what start-up built (recovered books, modules: never scanned
again), and raises the young threshold so a collection runs every ~50k allocations instead of
700. Cycles are still collected, only later; ``SHARDEX_GC=default`` keeps Python's settings (for
comparisons, or if a workload ever shows growth).
"""

from __future__ import annotations

import gc
import logging
import os

log = logging.getLogger("shardex.runtime")

GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> bool:
    """Freeze start-up objects and raise the GC thresholds; False when ``SHARDEX_GC=default``."""
    if os.environ.get("SHARDEX_GC", "") == "default":
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.debug("gc: froze %d start-up objects, thresholds %s", gc.get_freeze_count(), GC_THRESHOLDS)
    return True
