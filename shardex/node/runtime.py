"""Process-wide runtime settings of the hot loops (router, shard): the cyclic GC is off.

Python's cyclic GC walks every tracked container of a generation when it collects it, and it
pauses the loop while it does. A shard allocates a few containers per command and keeps the
resting ones (its books), so collections are both frequent and large. Measured on the engine
alone (600k mixed commands on top of 20k resting orders, this 2-core VM): default thresholds
spent 2.4 s in 2,136 collections with a longest pause of 214 ms (a full collection walking
every resting order); start-up state frozen plus thresholds raised to (50000, 20, 100) still
spent 0.9 s in 21 collections of up to 92–108 ms each — each one a latency spike far above a
venue's p99; GC off: 0 s, no pause, 1.5× the commands/s, and the same peak RSS.

Nothing on these hot paths creates a reference cycle (commands, events and replies are tuples,
bytes and dicts freed by reference counting; the engine's orders are owned by one book):
``tests/unit/test_runtime.py`` drives the engine, ``ShardCore`` (valid and fuzzed requests) and the
router's decisions with the GC off and asserts that a full collection afterwards finds nothing.
So ``tune_gc`` freezes what start-up built and turns the automatic collector off; reference
counting still frees everything as before. ``SHARDEX_GC=default`` keeps Python's settings (for
comparison, or if a new code path ever leaks cycles: the test is there to catch that first).
The bridge (asyncio, not on the order path) keeps the default GC.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any, NoReturn

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("shardex.runtime")


_registered = False


class _GcCollector:
    """``shardex_gc_young_objects``: tracked containers allocated (net of those freed) since
    start-up. With the GC off this is the leak detector: it follows the books' size and stays
    flat when they do; a steady climb with flat books means a new code path leaks cycles."""

    def collect(self) -> Any:
        fam = GaugeMetricFamily(
            "shardex_gc_young_objects",
            "Tracked objects allocated since start-up, net of frees (cyclic GC is off)",
        )
        fam.add_metric([], gc.get_count()[0])
        yield fam


def tune_gc() -> bool:
    """Freeze start-up objects and turn the cyclic GC off; False when ``SHARDEX_GC=default``."""
    if os.environ.get("SHARDEX_GC", "") == "default":
        return False
    gc.collect()
    gc.freeze()
    gc.disable()
    global _registered
    if not _registered:
        REGISTRY.register(_GcCollector())
        _registered = True
    log.debug("gc: froze %d start-up objects; automatic collection off", gc.get_freeze_count())
    return True


def exit_now() -> NoReturn:
    """End a shard process that stopped cleanly (journal closed, shutdown snapshot written)
    without tearing its heap down object by object: with a million events in its ring and
    the books of a long run that took 1-3 s after "stopped" on a loaded 2-core box (and kept
    ``shardex up``'s Ctrl-C waiting); the OS frees the memory at once. Logs are flushed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def pin_to_cpu(index: int, cpu: int | None, shards: int) -> int | None:
    """Pin this process to one core before any thread (zmq's I/O thread) exists.

    Auto: shard i → i-th usable CPU modulo the count. Returns the CPU, or None if not pinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        log.warning("CPU pinning is not supported on this platform; running unpinned")
        return None
    usable = sorted(os.sched_getaffinity(0))
    if shards > len(usable):
        log.warning(
            "%d shards on %d usable cores: shards will share cores and their latency will suffer",
            shards,
            len(usable),
        )
    target = usable[index % len(usable)] if cpu is None else cpu
    try:
        os.sched_setaffinity(0, {target})
    except OSError as exc:
        log.warning("could not pin to CPU %d (%s); running unpinned", target, exc)
        return None
    return target
