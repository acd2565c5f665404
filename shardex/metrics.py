"""Prometheus metrics: names are a contract with ``grafana/`` (prefix ``shardex_``, seconds).

Each process serves its own exporter (router base+2, bridge base+3, shard i base+300+i).

The shard's hot path never calls prometheus-client: ``Histogram.observe`` costs about as much as
matching an order. Instead it bumps plain ints and lists (``ShardStats``) once per batch, and a
custom collector turns them into metric families when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)

from shardex import __version__, health
from shardex.engine.codes import REJECT_NAMES
from shardex.health import HEALTH, Probe, serving
from shardex.kinds.files import prometheus_config  # noqa: F401 - generated from the kinds
from shardex.move_metrics import MoveStats
from shardex.wire.codes import MOVING

# 1 µs .. 10 s in a 1-2.5-5 series: a tail of seconds (an overloaded open-loop run) must land in a
# bucket of its own, or histogram_quantile flattens the p99 at the top bucket's bound.
LATENCY_BUCKETS = tuple(round(m * 10.0**e, 9) for e in range(-6, 1) for m in (1, 2.5, 5)) + (10.0,)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

# ``shardex_commands_rejected_total{reason=...}``: the label value is the reject code's public
# name (``shardex.engine.codes.REJECT_NAMES``: malformed, invalid, unknown_op, unknown_symbol,
# out_of_range, off_grid, duplicate_id, not_live, wrong_account, post_only_cross, amend_increase,
# wrong_shard, not_allowed), plus ``overloaded`` for messages the shard shed. Every value is
# always exported (0 until it happens), so a dashboard's series never appear out of nowhere.
# The values are a contract: codes are only ever appended, never renamed.
OVERLOADED_LABEL = "overloaded"


class Hist:
    """A histogram as plain lists: ``add(value, n)`` is a bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    def family(self, name: str, doc: str, labels: dict[str, str]) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=list(labels))
        cum = 0
        buckets = []
        for bound, c in zip(self.bounds, self.counts, strict=False):
            cum += c
            buckets.append((repr(float(bound)), cum))
        cum += self.counts[-1]
        buckets.append(("+Inf", cum))
        fam.add_metric(list(labels.values()), buckets, self.sum)
        return fam


class ShardStats:
    """Everything a shard counts, as plain numbers updated once per batch."""

    def __init__(self, shard: int) -> None:
        self.shard = str(shard)
        self.received = 0  # commands received (writes and reads)
        self.engine: Any = None  # accepted/trades/cancelled/rejects are the engine's counters
        self.shed = 0  # messages answered "overloaded"
        self.engine_time = Hist(LATENCY_BUCKETS)  # seconds per command (batch average)
        self.batch_size = Hist(SIZE_BUCKETS)  # messages per wake-up
        self.cmds_per_msg = Hist(SIZE_BUCKETS)
        self.journal_write = Hist(LATENCY_BUCKETS)
        self.journal_fsync = Hist(LATENCY_BUCKETS)
        self.backlog = 0
        self.seq = 0
        self.resting = 0
        self.up = 1
        self.moves = MoveStats()  # live pair moves (``shardex.move_metrics``)


class ShardCollector:
    def __init__(self, stats: ShardStats) -> None:
        self.s = stats

    def collect(self) -> Iterator[Any]:
        s = self.s
        lab = {"shard": s.shard}
        yield _counter(
            "shardex_commands_received", "Commands received by the shard", lab, s.received
        )
        books = list(s.engine.books.values()) if s.engine is not None else []
        counts = list(s.engine.rejected) if s.engine is not None else []
        fam = CounterMetricFamily(
            "shardex_orders_accepted", "Orders accepted", labels=["shard", "symbol"]
        )
        for b in books:
            fam.add_metric([s.shard, b.symbol], b.accepted)
        yield fam
        fam = CounterMetricFamily("shardex_trades", "Trades", labels=["shard", "symbol"])
        for b in books:
            fam.add_metric([s.shard, b.symbol], b.trade_id)
        yield fam
        fam = CounterMetricFamily(
            "shardex_commands_rejected",
            "Rejected commands by reject code name (or overloaded)",
            labels=["shard", "reason"],
        )
        for code, name in enumerate(REJECT_NAMES):
            fam.add_metric([s.shard, name], counts[code] if code < len(counts) else 0)
        fam.add_metric([s.shard, OVERLOADED_LABEL], s.shed)
        yield fam
        yield _counter(
            "shardex_orders_cancelled",
            "Cancel events (user, ioc, fok, stp)",
            lab,
            sum(b.cancelled for b in books),
        )
        yield s.engine_time.family(
            "shardex_engine_command_seconds", "Engine time per command (batch average)", lab
        )
        yield s.batch_size.family("shardex_shard_batch_messages", "Messages per wake-up", lab)
        yield s.cmds_per_msg.family("shardex_shard_message_commands", "Commands per message", lab)
        yield s.journal_write.family(
            "shardex_journal_write_seconds", "Journal write per batch", lab
        )
        yield s.journal_fsync.family(
            "shardex_journal_fsync_seconds", "Journal fsync per batch", lab
        )
        yield _gauge(
            "shardex_shard_backlog", "Messages waiting in the last wake-up", lab, s.backlog
        )
        yield _gauge("shardex_shard_seq", "Last event seq of the shard", lab, s.seq)
        yield _gauge("shardex_shard_resting_orders", "Resting orders", lab, s.resting)
        yield _gauge("shardex_shard_up", "1 while the shard process runs", lab, s.up)
        yield from s.moves.families(s.shard, counts[MOVING] if len(counts) > MOVING else 0)


def _counter(name: str, doc: str, labels: dict[str, str], value: float) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=list(labels))
    fam.add_metric(list(labels.values()), value)
    return fam


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=list(labels))
    fam.add_metric(list(labels.values()), value)
    return fam


class InfoCollector:
    def __init__(self, role: str, extra: dict[str, str]) -> None:
        self.role = role
        self.extra = extra

    def collect(self) -> Iterator[Any]:
        fam = InfoMetricFamily(
            "shardex_process", "What this process is", labels=["role", "version", *self.extra]
        )
        fam.add_metric([self.role, __version__, *self.extra.values()], {})
        yield fam


def serve(port: int | None, role: str, probe: Probe = serving, **extra: str) -> None:
    """Start this process's exporter (a daemon thread) unless ``port`` is falsy, with
    ``GET /healthz`` answered by ``probe`` (``shardex.health``; default: 200 once serving).

    Binds ``SHARDEX_METRICS_HOST`` (default 127.0.0.1; set 0.0.0.0 for a remote Prometheus).
    A port this process bound already (a standby's, which now leads) is kept.
    """
    REGISTRY.register(InfoCollector(role, extra))
    HEALTH.set(role, probe)
    health.start(port)
