"""How far this node's wall clock is from its coordination store's: checked once when a
replica starts, and a warning logged past ``SKEW_WARN_MS``.

Why only a warning: the lease never trusts a wall clock (``shardex.lease``: the leader acts
until a deadline on its own *monotonic* clock, read before the request left; the store expires
the lease on its own clock; a standby waits for the store's ``PTTL``), so a node whose wall
clock is off keeps no lease it lost (``tests/unit/test_lease_skew.py``). What the wall clock
does decide is an order's expiry time and every event's timestamp: a leader whose clock is off
from its standby's moves those at a failover. And a Redis whose own clock is *stepped* forward
expires leases early, which no node can detect: run NTP (chrony) slewing on every host.

How the store's time is read: Redis ``TIME`` (microseconds; the ``lease`` user may run it);
etcd has no time in its responses (the header holds revisions and the raft term only), so
the ``Date`` header of its HTTP gateway's ``/version`` answer is used: whole seconds, so the
check allows half a second more there.
"""

from __future__ import annotations

import logging
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any

from shardex.clock import REAL, Clock
from shardex.coord.etcd import EtcdClient

SKEW_WARN_MS = 250  # a clock further off than this (beyond what the round trip hides) is flagged
log = logging.getLogger("shardex.lease")


def offset_ms(before: float, after: float, store_s: float, resolution_s: float = 0.0
              ) -> tuple[float, float]:  # fmt: skip
    """(the store's clock minus ours, give or take) in ms, from our wall clock read
    ``before`` and ``after`` the store's answer ``store_s`` (seconds; ``resolution_s``: how
    coarse the store's reading is)."""
    mid = (before + after) / 2
    return (store_s - mid) * 1000, ((after - before) / 2 + resolution_s) * 1000


def skewed(offset: float, uncertainty: float, bound_ms: float = SKEW_WARN_MS) -> bool:
    """Whether the clocks differ by more than ``bound_ms`` for certain."""
    return abs(offset) - uncertainty > bound_ms


def store_time(client: Any, timeout: float = 1.0) -> tuple[float, float]:
    """The store's wall clock now and how far off that reading may be (seconds)."""
    if isinstance(client, EtcdClient):
        host, port = client.members[client.current]
        url = f"http://{host}:{port}/version"
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http only
            # (whole seconds, truncated: the true time is within the half second either
            # side of the second's middle)
            return parsedate_to_datetime(resp.headers["Date"]).timestamp() + 0.5, 0.5
    sec, usec = client.time()
    return sec + usec / 1e6, 0.0


def check_store_clock(client: Any, clock: Clock = REAL) -> float | None:
    """Compare our wall clock with the store's once; log a warning when they differ by more
    than ``SKEW_WARN_MS``. Returns the offset in ms (None: the store could not say; never
    raises: a store that is down now is the standby loop's to wait for)."""
    try:
        before = clock.time()
        store_s, resolution = store_time(client)
        after = clock.time()
    except Exception as exc:  # noqa: BLE001 - any failure: no check, not a failed start
        log.info("could not compare this host's clock with the lease store's: %s", exc)
        return None
    off, unc = offset_ms(before, after, store_s, resolution)
    if skewed(off, unc):
        log.warning("CLOCK: this host's wall clock is %+.0f ms off the lease store's (more "
                    "than %d ms): leases are safe (monotonic deadlines), but order expiry "
                    "times and event timestamps follow this clock; fix time sync (NTP/chrony)",
                    -off, SKEW_WARN_MS)  # fmt: skip
    return off
