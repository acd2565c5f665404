"""Prometheus: an engine shard loop's own counters (what ``metrics.ShardStats`` does not
cover: outboxes, journal up, malformed messages, replication, the account link)."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.node.leader import replica_families
from shardex.node.outbox import outbox_families


class ShardNodeCollector:
    """The process loop's own counters (what ``ShardStats`` does not cover)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Any:
        node = self.node
        lab = [str(node.core.index)]
        yield from outbox_families(
            node.outboxes, lab,
            ("shardex_replies_dropped",
             "Replies that could not be delivered (order results stay queryable)"),
            ("shardex_shard_outbox", "Replies waiting for a full pipe"),
        )  # fmt: skip
        fam = GaugeMetricFamily(
            "shardex_journal_up", "1 while the journal can write (0: writes refused)",
            labels=["shard"],
        )  # fmt: skip
        fam.add_metric(lab, 0 if node.core.journal_down else 1)
        yield fam
        fam = CounterMetricFamily(
            "shardex_shard_malformed_messages",
            "Messages with a wrong frame count, dropped or answered with an error",
            labels=["shard"],
        )
        fam.add_metric(lab, node.malformed)
        yield fam
        fam = CounterMetricFamily(
            "shardex_shard_internal_errors", "Requests that hit a bug (ALERT)", labels=["shard"]
        )
        fam.add_metric(lab, node.core.internal_errors)
        yield fam
        if node.replica is not None:  # a replicated leader
            yield from replica_families(node.replica, node.refused, lab)
        if node.cfg.accounts:
            fam = CounterMetricFamily(
                "shardex_shard_account_link",
                "Account link: forwards applied/duplicate/gap, settlements sent/re-sent/unsent",
                labels=["shard", "what"],
            )
            for what, n in node.link_counts.items():
                fam.add_metric([*lab, what], n)
            yield fam
