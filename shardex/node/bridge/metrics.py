"""The bridge's Prometheus metrics and its ALERT lines (one rate-limited log line per kind)."""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from shardex.clock import REAL, Clock
from shardex.metrics import LATENCY_BUCKETS

log = logging.getLogger("shardex.bridge")

WRITTEN = Counter("shardex_bridge_events_written_total", "Events written to Redis", ["shard"])
TRADES = Counter("shardex_bridge_trades_written_total", "Trades written to Redis", ["shard"])
DUPS = Counter(
    "shardex_bridge_duplicates_total", "Entries Redis refused as already written", ["shard"]
)
REPAIRED = Counter(
    "shardex_bridge_repaired_events_total", "Events fetched again to fill gaps", ["shard"]
)
LOST = Counter(
    "shardex_bridge_lost_events_total", "Events no longer available anywhere (ALERT)", ["shard"]
)
CONFLICTS = Counter(
    "shardex_bridge_conflicts_total",
    "Entries not stored because Redis holds a different/foreign entry there (ALERT)",
    ["shard", "stream"],
)
ALERTS = Counter(
    "shardex_bridge_alerts_total", "ALERT log lines raised by the bridge", ["shard", "kind"]
)
ALERT_KINDS = ("stalled", "lost", "conflict", "behind", "redis", "auth")
STALLED = Gauge(
    "shardex_bridge_stalled",
    "1 while a reachable shard is ahead of Redis and nothing is written for it",
    ["shard"],
)
MALFORMED = Counter(
    "shardex_bridge_malformed_total",
    "Messages or events from shards that could not be decoded (dropped)",
    ["source"],
)
MALFORMED_SOURCES = ("pub", "reply")
STALE_EPOCH = Counter(
    "shardex_bridge_stale_epoch_total",
    "PUB messages dropped (and batches not written) because they came from a leader epoch "
    "older than the newest seen for the shard (a deposed leader)",
    ["shard"],
)
LAG = Gauge("shardex_bridge_lag_events", "Shard seq minus last seq written to Redis", ["shard"])
LAST = Gauge("shardex_bridge_last_seq", "Last seq written to Redis", ["shard"])
XADD_TIME = Histogram(
    "shardex_bridge_write_seconds", "Time of one batch write to Redis", buckets=LATENCY_BUCKETS
)
REDIS_UP = Gauge("shardex_bridge_redis_up", "1 when the last Redis call succeeded")

ALERT_EVERY = 5.0  # seconds between two ALERT lines of the same (shard, key)


class Labelled(Protocol):
    """What an alert needs of a shard's state (``links.ShardState``)."""

    label: str
    name: str
    epoch: int


class Alerts:
    """ALERT and malformed-input reporting: every call is counted, lines are rate-limited
    (``clock``: the bridge's, ``shardex.clock``)."""

    def __init__(self, clock: Clock = REAL) -> None:
        self._mono = clock.monotonic
        self._alerted: dict[tuple[int | str, str], float] = {}  # (shard, what) → last ALERT
        self._malformed_logged = -math.inf  # (never: the first line is logged at once)

    def alert(self, shard: int | str, kind: str, key: str, msg: str, *args: Any) -> None:
        """One ALERT line per (shard, key) per ``ALERT_EVERY``; the counter counts every call."""
        ALERTS.labels(str(shard), kind).inc()
        now = self._mono()
        if now - self._alerted.get((shard, key), -math.inf) >= ALERT_EVERY:
            self._alerted[(shard, key)] = now
            log.error("ALERT " + msg, *args)

    def malformed(self, source: str, n: int, why: str) -> None:
        """``n`` messages or events from a shard's ``source`` dropped as undecodable."""
        MALFORMED.labels(source).inc(n)
        now = self._mono()
        if now - self._malformed_logged >= ALERT_EVERY:
            self._malformed_logged = now
            log.warning("dropping malformed input from a shard's %s: %s", source, why)

    def reply_malformed(self) -> None:
        self.malformed("reply", 1, "reply is not [request id, payload]")

    def refused(self, st: Labelled, what: str, why: Any) -> None:
        """A shard answered that the bridge's key may not ask this: ALERT, never lost events."""
        self.alert(
            st.label,
            "auth",
            f"refused {what}",
            "%s refuses the bridge's %s requests (%s): the bridge key must have role "
            "bridge in this cluster's registry; asking again",
            st.name,
            what,
            str(why)[:100],
        )

    def stale_epoch(self, st: Labelled, epoch: int) -> None:
        """A PUB message of an epoch older than the newest seen: a deposed leader published."""
        STALE_EPOCH.labels(st.label).inc()
        self.alert(st.label, "conflict", "stale epoch",
                   "%s: dropped a PUB message of epoch %d (the newest seen is %d): a deposed "
                   "leader published", st.name, epoch, st.epoch)  # fmt: skip

    @staticmethod
    def register(label: str) -> None:
        """Create a shard's series at 0, so dashboards see them before anything happens."""
        STALLED.labels(label).set(0)
        for kind in ALERT_KINDS:
            ALERTS.labels(label, kind)
        LOST.labels(label)
        for source in MALFORMED_SOURCES:
            MALFORMED.labels(source)
