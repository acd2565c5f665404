"""The router's reports: Prometheus families and the status answer (an empty routing key).

A mixin of ``Router`` (``router_core.py``): it only reads the counters the routing decisions
keep, so it sits apart from them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.clock import Clock
from shardex.metrics import Hist
from shardex.node.sojourn import Codel, ServiceRate
from shardex.placement.core import PlacementMap

RECOVERING_TTL_S = 3.0  # a recovering state this old is forgotten (the beacon beats at 2 Hz)


def _slot_name(slot: int, shards: int) -> str:
    return f"shard {slot}" if slot < shards else f"account shard {slot - shards}"


class RouterReports:
    """Metrics (``collect``, for the Prometheus registry) and ``info`` of a ``Router``."""

    # what the reports read (set by ``Router.__init__``)
    clock: Clock  # the node's; ``last_seen`` holds its ``perf_counter`` times
    shards: int
    accounts: int
    slots: int
    topology: dict[int, dict[str, Any]]
    placement: PlacementMap
    last_seen: dict[int, float]
    recovering: dict[int, tuple[Any, float]]
    forwarded: list[int]
    rejected: dict[str, int]
    shard_inflight: list[int]
    foreign_replies: int
    malformed_from_shards: int
    replies_dropped: dict[str, int]
    ack_time: list[Hist]
    batch_size: Hist
    codel: list[Codel]
    front_codel: Codel
    rates: list[ServiceRate]

    def collect(self) -> Iterator[Any]:
        yield from self._slot_families("", "shard", range(self.shards))
        fam = CounterMetricFamily(
            "shardex_router_rejected", "Requests the router rejected", labels=["reason"]
        )
        for reason, n in self.rejected.items():
            fam.add_metric([reason.replace(" ", "_")], n)
        yield fam
        yield CounterMetricFamily(
            "shardex_router_shed_by_wait",
            "Requests answered overloaded because they would have waited past --max-queue-ms "
            "at their shard or in the router's socket (CoDel-style; included in "
            "rejected{reason=overloaded})",
            value=sum(c.shed for c in self.codel) + self.front_codel.shed,
        )
        fam = CounterMetricFamily(
            "shardex_router_replies_dropped",
            "Replies a client could not take (its pipe full, or gone); results stay queryable",
            labels=["reason"],
        )
        for reason, n in self.replies_dropped.items():
            fam.add_metric([reason], n)
        yield fam
        yield self.batch_size.family(
            "shardex_router_batch_requests",
            "Requests per message the router sent to a shard (smart batching: >1 under load)",
            {},
        )
        if self.accounts:
            yield from self._slot_families(
                "account_", "account_shard", range(self.shards, self.slots)
            )

    def _slot_families(self, kind: str, label: str, slots: range) -> Iterator[Any]:
        """Per-slot metrics of one tier: engine shards as ``shardex_router_*{shard}``, account
        shards as ``shardex_router_account_*{account_shard}`` numbered 0..M-1 (slot N+j is
        account shard j: labelled ``shard="N+j"`` it was a phantom engine shard per panel)."""
        now = self.clock.perf_counter()  # (the source ``last_seen`` was stamped from)
        what = "an account shard" if kind else "a shard"
        families = (
            (CounterMetricFamily, "forwarded", f"Requests forwarded to {what}", self.forwarded),
            (GaugeMetricFamily, "inflight", "Requests forwarded and not yet answered",
             self.shard_inflight),
            (GaugeMetricFamily, "service_rate", f"Requests per second {what} answers while "
             "busy, as the router measures it (what shedding by time divides its queue by)",
             [r.rate for r in self.rates]),
            (GaugeMetricFamily, "standing_queue", f"1 while {what}'s queue held a wait past "
             "its target for a whole interval (requests past --max-queue-ms are shed)",
             [int(c.overloaded) for c in self.codel]),
        )  # fmt: skip
        for cls, name, doc, values in families:
            fam = cls(f"shardex_router_{kind}{name}", doc, labels=[label])
            for i in slots:
                fam.add_metric([str(i - slots.start)], values[i])
            yield fam
        fam = GaugeMetricFamily(
            f"shardex_router_{kind}shard_up", f"1 when {what} said hello within 3 s",
            labels=[label],
        )
        for i in slots:
            seen = self.last_seen.get(i)
            fam.add_metric([str(i - slots.start)], 1 if seen is not None and now - seen < 3 else 0)
        yield fam
        for i in slots:
            yield self.ack_time[i].family(
                f"shardex_router_{kind}ack_seconds",
                f"Order→ack time seen by the router (forward to reply), per {what[2:]}",
                {label: str(i - slots.start)},
            )

    def recovering_now(self, now: float) -> dict[str, Any]:
        """Fresh recovering estimates by slot name (``shardex status`` and the start banner)."""
        return {_slot_name(i, self.shards): state for i, (state, seen) in self.recovering.items()
                if now - seen <= RECOVERING_TTL_S}  # fmt: skip

    def info(self, now: float) -> dict[str, Any]:
        return {
            "router": True,
            "recovering": self.recovering_now(now),
            "shards": self.shards,
            "placement": self.placement.to_wire(),  # (``Router.learn_placement``)
            "pid": os.getpid(),
            "accounts": self.accounts,
            "account_topology": [
                {
                    **self.topology.get(self.shards + j, {"shard": j}),
                    "seen_s_ago": round(now - self.last_seen[self.shards + j], 3)
                    if self.shards + j in self.last_seen
                    else None,
                }
                for j in range(self.accounts)
            ],
            "topology": [
                {
                    **self.topology.get(i, {"shard": i}),
                    "seen_s_ago": round(now - self.last_seen[i], 3)
                    if i in self.last_seen
                    else None,
                }
                for i in range(self.shards)
            ],
            "forwarded": self.forwarded[: self.shards],
            "rejected": self.rejected,
            "inflight": self.shard_inflight,
            "foreign_replies": self.foreign_replies,
            "malformed_from_shards": self.malformed_from_shards,
            "batching": {
                "messages": sum(self.batch_size.counts),
                "requests": round(self.batch_size.sum),
            },
            "replies_dropped": self.replies_dropped,
        }
