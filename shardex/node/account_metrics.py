"""Prometheus: an account shard's counters and gauges (``AccountCollector``)."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.node.leader import replica_families
from shardex.node.outbox import outbox_families


class AccountCollector:
    """Prometheus: the account shard's counters and gauges."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Any:
        node = self.node
        core = node.machine.core
        lab = [str(node.cfg.index)]
        fam = CounterMetricFamily(
            "shardex_accounts_link", "Engine link messages by kind", labels=["shard", "what"]
        )
        for what, n in node.counts.items():
            fam.add_metric([*lab, what], n)
        yield fam
        # replies (acks of holds among them) that the router link could not take: counted,
        # never silent; the order's fate stays queryable on its engine shard (OP_ORDER)
        yield from outbox_families(
            node.links, lab,
            ("shardex_accounts_replies_dropped",
             "Reply batches the router link could not take (its outbox full, or the router gone)"),
            ("shardex_accounts_outbox", "Reply batches waiting for a full pipe"),
        )  # fmt: skip
        for name, doc, value in (
            ("shardex_accounts_commands", "Commands journaled and applied", node.handler.commands),
            ("shardex_accounts_rejected", "Client commands refused (funds, shape, key)",
             node.handler.rejected),
            ("shardex_accounts_anomalies", "Settlements that did not fit (ALERT)", core.anomalies),
            ("shardex_accounts_journal_resent", "Events re-sent to the bridge from the journal "
             "(older than the ring)", node.handler.journal_resent),
            ("shardex_accounts_internal_errors", "Requests that hit a bug (ALERT)",
             node.handler.internal_errors),
            ("shardex_accounts_shed", "Commands refused overloaded (an engine shard's link "
             "backed up)", node.handler.shed),
        ):  # fmt: skip
            fam = CounterMetricFamily(name, doc, labels=["shard"])
            fam.add_metric(lab, value)
            yield fam
        for name, doc, value in (
            ("shardex_accounts_seq", "Last event seq", core.seq),
            ("shardex_accounts_open_orders", "Orders holding funds", len(core.orders)),
            ("shardex_accounts_unconfirmed", "Forwards not yet confirmed by the engine shards",
             sum(len(q) for q in node.unconfirmed.values())),
            ("shardex_accounts_accounts", "Accounts with a balance", len(core.balances)),
            ("shardex_accounts_journal_up", "1 while the journal can write",
             0 if node.handler.journal_down else 1),
        ):  # fmt: skip
            fam = GaugeMetricFamily(name, doc, labels=["shard"])
            fam.add_metric(lab, value)
            yield fam
        if node.replica is not None:  # a replicated leader
            yield from replica_families(node.replica, node.refused, lab,
                                        "shardex_accounts_replica")  # fmt: skip
