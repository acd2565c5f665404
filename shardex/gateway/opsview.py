"""The operator page's numbers from the processes' own Prometheus exporters (pure: exposition
text and times in, one JSON-able dict out; ``ops`` fetches the text).

Per engine shard: up (the router's view), order→ack latency p50/p99 at the router over the
window (orders sent to the engine shards directly: a cluster with the account tier sends
them through an account shard, whose row has that latency) and the engine's own time per
command p50/p99, commands/s, backlog, the bridge's lag behind it, resting orders, and the
leader epoch with the failovers seen (a replicated shard's epoch grows by one per new
leader). Per account shard: the router's latency to it, commands/s, orders holding funds,
its bridge lag. Rates and percentiles are over the window between the oldest and newest
snapshot kept (``WINDOW_S``), the way Prometheus' ``rate`` and ``histogram_quantile`` compute
them, so the page and a Grafana panel agree. Latencies here are measurements, not money:
floats in milliseconds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

WINDOW_S = 10.0  # seconds of history a rate or a percentile is computed over
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Exposition text → {(sample name, sorted labels): value}; ``ValueError`` if unreadable."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


@dataclass
class Snapshot:
    """Every exporter's samples at one time (``t``: monotonic seconds)."""

    t: float
    samples: Samples = field(default_factory=dict)

    def by(self, name: str, label: str) -> dict[str, float]:
        """{value of ``label``: sample} of the series ``name`` (the other labels summed)."""
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            if n == name:
                key = dict(labels).get(label)
                if key is not None:
                    out[key] = out.get(key, 0.0) + v
        return out

    def buckets(self, name: str, label: str, value: str) -> list[tuple[float, float]]:
        """The cumulative (le, count) buckets of histogram ``name`` where ``label=value``."""
        out = []
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n == f"{name}_bucket" and d.get(label) == value and "le" in d:
                out.append((float(d["le"]), v))
        return sorted(out)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` of cumulative buckets (le ascending, +Inf last): linear within
    the bucket the rank falls in; the highest finite bound if it falls in +Inf; None when
    there are no observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lo, below = q * buckets[-1][1], 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if math.isinf(le):
                return lo
            return lo + (le - lo) * ((rank - below) / (cum - below) if cum > below else 1.0)
        lo, below = le, cum
    return lo


def _delta(new: list[tuple[float, float]], old: list[tuple[float, float]]
           ) -> list[tuple[float, float]]:  # fmt: skip
    """Bucket counts of the window (a restarted exporter's reset: the new counts alone)."""
    before = dict(old)
    if any(cum < before.get(le, 0.0) for le, cum in new):
        return new
    return [(le, cum - before.get(le, 0.0)) for le, cum in new]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class OpsView:
    """The snapshots of the last ``window`` seconds and the leader epochs seen, per shard."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self.snaps: deque[Snapshot] = deque()
        self.epochs: dict[str, float] = {}  # "e0"/"a0" → the last epoch seen
        self.failovers: dict[str, int] = {}

    def add(self, snap: Snapshot) -> None:
        """A new snapshot; the ones older than the window go (the oldest in it stays)."""
        self.snaps.append(snap)
        while len(self.snaps) > 2 and snap.t - self.snaps[1].t >= self.window:
            self.snaps.popleft()
        self._epochs(snap.by("shardex_replica_epoch", "shard"), "e")
        self._epochs(snap.by("shardex_accounts_replica_epoch", "shard"), "a")

    def _epochs(self, now: Mapping[str, float], prefix: str) -> None:
        for shard, epoch in now.items():
            key = prefix + shard
            seen = self.epochs.get(key)
            if seen is not None and epoch > seen:
                self.failovers[key] = self.failovers.get(key, 0) + int(epoch - seen)
            self.epochs[key] = epoch

    def _rate(self, name: str, label: str) -> dict[str, float | None]:
        new, old = self.snaps[-1], self.snaps[0]
        dt, now, before = new.t - old.t, new.by(name, label), old.by(name, label)
        out: dict[str, float | None] = {}
        for k, v in now.items():
            if dt <= 0 or k not in before:
                out[k] = None
            else:
                out[k] = round(max(0.0, v - before[k] if v >= before[k] else v) / dt, 1)
        return out

    def _latency(self, name: str, label: str, value: str) -> tuple[float | None, float | None]:
        new = self.snaps[-1].buckets(name, label, value)
        old = self.snaps[0].buckets(name, label, value) if len(self.snaps) > 1 else []
        window = _delta(new, old)
        return _ms(quantile(0.5, window)), _ms(quantile(0.99, window))

    def view(self, sources: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The page's JSON: engine and account shards, totals, and each source's state."""
        if not self.snaps:
            return {"window_s": 0.0, "shards": [], "accounts": [], "totals": {},
                    "sources": list(sources)}  # fmt: skip
        return {"window_s": round(self.snaps[-1].t - self.snaps[0].t, 1),
                "shards": self._engines(), "accounts": self._accounts(),
                "totals": self._totals(), "sources": list(sources)}  # fmt: skip

    def _engines(self) -> list[dict[str, Any]]:
        s = self.snaps[-1]
        up, own = s.by("shardex_router_shard_up", "shard"), s.by("shardex_shard_up", "shard")
        rate = self._rate("shardex_commands_received_total", "shard")
        lag, backlog = s.by("shardex_bridge_lag_events", "shard"), s.by("shardex_shard_backlog",
                                                                        "shard")  # fmt: skip
        resting, epoch = s.by("shardex_shard_resting_orders", "shard"), s.by(
            "shardex_replica_epoch", "shard")  # fmt: skip
        out = []
        for k in sorted(set(up) | set(own), key=_num):
            p50, p99 = self._latency("shardex_router_ack_seconds", "shard", k)
            e50, e99 = self._latency("shardex_engine_command_seconds", "shard", k)
            out.append({"shard": k, "up": bool(up.get(k, own.get(k, 0))), "p50_ms": p50,
                        "p99_ms": p99, "engine_p50_ms": e50, "engine_p99_ms": e99,
                        "commands_per_s": rate.get(k), "backlog": backlog.get(k),
                        "bridge_lag": lag.get(k), "resting": resting.get(k),
                        "epoch": epoch.get(k), "failovers": self.failovers.get("e" + k, 0)
                        if k in epoch else None})  # fmt: skip
        return out

    def _accounts(self) -> list[dict[str, Any]]:
        s = self.snaps[-1]
        up = s.by("shardex_router_account_shard_up", "account_shard")
        journal = s.by("shardex_accounts_journal_up", "shard")
        rate = self._rate("shardex_accounts_commands_total", "shard")
        lag, held = s.by("shardex_bridge_lag_events", "shard"), s.by(
            "shardex_accounts_open_orders", "shard")  # fmt: skip
        epoch = s.by("shardex_accounts_replica_epoch", "shard")
        out = []
        for k in sorted(set(up) | set(journal), key=_num):
            p50, p99 = self._latency("shardex_router_account_ack_seconds", "account_shard", k)
            out.append({"shard": k, "up": bool(up.get(k, journal.get(k, 0))), "p50_ms": p50,
                        "p99_ms": p99, "commands_per_s": rate.get(k),
                        "bridge_lag": lag.get("a" + k), "open_orders": held.get(k),
                        "epoch": epoch.get(k), "failovers": self.failovers.get("a" + k, 0)
                        if k in epoch else None})  # fmt: skip
        return out

    def _totals(self) -> dict[str, Any]:
        def total(name: str, label: str) -> float | None:
            got = [v for v in self._rate(name, label).values() if v is not None]
            return round(sum(got), 1) if got else None

        lag = self.snaps[-1].by("shardex_bridge_lag_events", "shard")
        return {"commands_per_s": total("shardex_commands_received_total", "shard"),
                "trades_per_s": total("shardex_trades_total", "shard"),
                "bridge_events_per_s": total("shardex_bridge_events_written_total", "shard"),
                "bridge_lag": sum(lag.values()) if lag else None,
                "failovers": sum(self.failovers.values())}  # fmt: skip


def _num(k: str) -> tuple[int, str]:
    return (int(k), "") if k.isdigit() else (1 << 30, k)
