"""The lease's timing as a choice (``--lease-ms``) and the accounting of its renewals.

A shorter ttl makes a failover after a kill shorter (most of one is the ttl left at the kill),
but a leader whose renewals stall for longer than ``stall_budget_ms`` loses its lease although
it is alive: a failover, not a fault, yet one nobody asked for. Whether a ttl is safe on a box
is therefore a measurement of how late renewals run there; ``RenewStats`` keeps it (pure: the
lease hands it the monotonic times it read, so the simulator's clock works too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_LEASE_MS = 800  # the ttl unless ``--lease-ms`` says otherwise (docs/failover.md)
MIN_LEASE_MS = 100  # below this a renew period is shorter than a loaded box's scheduling gaps
MAX_LEASE_MS = 60_000
# renew period = ttl·3/16 (800 → 150 ms, as before; 300 → 56 ms): ~5 renews per ttl, so 3 slow
# or lost ones are survived
RENEW_NUM, RENEW_DEN = 3, 16
MAX_SAMPLES = 4096  # the newest renewals kept for percentiles (5/s: over 13 minutes)


@dataclass(frozen=True)
class LeaseTiming:
    """A ttl and the renew period derived from it."""

    ttl_ms: int
    renew_ms: int

    @classmethod
    def of(cls, ttl_ms: int) -> LeaseTiming:
        """The timing of a ``--lease-ms``: renew every ttl·3/16 (800 → 150 ms). Raises
        ValueError outside [MIN_LEASE_MS, MAX_LEASE_MS] so a typo never becomes a 5 ms lease
        (a failover per scheduler hiccup) or a 10 minute one (no failover at all)."""
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int):
            raise ValueError(f"lease ttl must be whole milliseconds, not {ttl_ms!r}")
        if not MIN_LEASE_MS <= ttl_ms <= MAX_LEASE_MS:
            raise ValueError(f"lease ttl {ttl_ms} ms is outside {MIN_LEASE_MS}..{MAX_LEASE_MS}")
        return cls(ttl_ms, ttl_ms * RENEW_NUM // RENEW_DEN)

    def stall_budget_ms(self, margin: float) -> float:
        """How long the renewals may stall before the leader's own deadline passes: the
        deadline is ``ttl·(1-margin)`` after the last renew was *sent*, and the next one is
        due a period after that. A stall longer than this is a failover."""
        return self.ttl_ms * (1 - margin) - self.renew_ms


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class RenewStats:
    """How late the renewals of one lease ran, and the longest gap between successful ones.

    ``planned``: when the renew was due (the previous one's send + the period); ``sent``:
    when it was actually sent (the renewer thread woke, got the GIL and read the clock), so
    ``sent - planned`` is the lateness: GIL holds, scheduler delays and GC pauses of the
    leader's process. ``gap``: between the sends of successive *successful* renews, the
    quantity the deadline depends on (a gap over ``ttl·(1-margin)`` is a lost lease)."""

    lateness: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    renews: int = 0
    failed: int = 0  # the store could not be asked (deadline kept, not extended)
    max_lateness: float = 0.0
    max_gap: float = 0.0
    # the longest time since the last successful renew at any renew's send, failed ones too:
    # a renew sent more than ``ttl`` after the last good one finds the lease gone
    max_silence: float = 0.0
    max_round_trip: float = 0.0
    last_ok: float | None = None  # send time of the last successful renew (or the acquire)

    def granted(self, sent: float) -> None:
        """The lease was taken at ``sent``: gaps count from here."""
        self.last_ok = sent

    def renewed(self, planned: float, sent: float, replied: float, ok: bool) -> float | None:
        """Account one renew; returns the gap it closed (None when it failed)."""
        late = max(0.0, sent - planned)
        self.renews += 1
        self.max_lateness = max(self.max_lateness, late)
        _keep(self.lateness, late)
        rtt = max(0.0, replied - sent)
        self.max_round_trip = max(self.max_round_trip, rtt)
        _keep(self.round_trips, rtt)
        gap = None if self.last_ok is None else sent - self.last_ok
        if gap is not None:
            self.max_silence = max(self.max_silence, gap)
        if not ok:
            self.failed += 1
            return None
        if gap is not None:
            self.max_gap = max(self.max_gap, gap)
        self.last_ok = sent
        return gap

    def summary(self) -> str:
        """One log line: lateness and round-trip p50/p99/max, the longest gap (ms)."""
        ms = 1000.0
        return (
            f"{self.renews} renews ({self.failed} failed); lateness p50 "
            f"{percentile(self.lateness, 0.5) * ms:.1f} p99 "
            f"{percentile(self.lateness, 0.99) * ms:.1f} max {self.max_lateness * ms:.1f} ms; "
            f"round trip p50 {percentile(self.round_trips, 0.5) * ms:.1f} p99 "
            f"{percentile(self.round_trips, 0.99) * ms:.1f} max "
            f"{self.max_round_trip * ms:.1f} ms; longest gap between renews "
            f"{self.max_gap * ms:.1f} ms (failed ones too: {self.max_silence * ms:.1f} ms)"
        )


def _keep(values: list[float], value: float) -> None:
    """Append, dropping the oldest half once ``MAX_SAMPLES`` are held (bounded memory)."""
    if len(values) >= MAX_SAMPLES:
        del values[: MAX_SAMPLES // 2]
    values.append(value)
