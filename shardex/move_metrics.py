"""An engine shard's counters of live pair moves, for Prometheus (plain numbers, no clock).

The shard bumps them as the mover's commands arrive (``shardex.node.moves``) and the collector
(``shardex.metrics.ShardCollector``) turns them into families when Prometheus scrapes:

* ``shardex_moves_total{shard, step, outcome}``: ``step`` ``handoff`` (on the source) or
  ``adopt`` (on the target); ``outcome`` ``done`` (journaled), ``repeat`` (a re-run of a step
  that ran: nothing new) or ``refused``.
* ``shardex_move_refusals_total{shard, kind}``: requests for a pair this shard handed off,
  answered ``moving`` (retryable): ``command`` (the engine's rejects with that code) and ``read``.
* ``shardex_move_pause_seconds{shard}`` (histogram, on the source): from the hand-off to the
  map that pins the pair to its new shard reaching this shard (the mover's publish, sent to
  the target and the account shards first): the window in which the pair's requests are
  answered ``moving``. Measured by the node's clock on the live path only (a replay of the
  journal observes nothing), so a move killed half-way and finished later after a restart
  counts no pause.

Why here and not in the mover: the mover is a short-lived command with no exporter; the shards
that journal the moves are scraped anyway.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

STEPS = ("handoff", "adopt")
OUTCOMES = ("done", "repeat", "refused")
# 1 ms .. 30 s: a pause of a large book under load lands in a bucket of its own
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0, 30.0)  # fmt: skip
_PENDING_MAX = 10_000  # hand-offs awaiting their publish (a mover that never publishes)


class MoveStats:
    """What one engine shard counts about moves."""

    def __init__(self) -> None:
        self.steps: dict[tuple[str, str], int] = {(s, o): 0 for s in STEPS for o in OUTCOMES}
        self.reads_refused = 0
        self.pending: dict[str, tuple[int, float]] = {}  # symbol -> (to, hand-off time)
        self.pause_counts = [0] * (len(PAUSE_BUCKETS) + 1)
        self.pause_sum = 0.0

    def step(self, step: str, outcome: str) -> None:
        """One mover's write of ``step`` ended with ``outcome``."""
        self.steps[step, outcome] += 1

    def handed(self, symbol: str, to: int, now: float) -> None:
        """``symbol`` was handed off to shard ``to`` at ``now`` (seconds, the node's clock)."""
        if len(self.pending) < _PENDING_MAX:
            self.pending[symbol] = (to, now)

    def published(self, owner: Any, moving: Any, now: float) -> list[float]:
        """A newer map arrived (``owner(symbol) -> shard``, ``moving``: its moves in progress):
        the pauses of the hand-offs it completes, in seconds (also kept for the collector)."""
        done = [s for s, (to, _) in self.pending.items() if owner(s) == to and s not in moving]
        out = [now - self.pending.pop(s)[1] for s in done]
        for pause in out:
            self.pause_counts[bisect_left(PAUSE_BUCKETS, pause)] += 1
            self.pause_sum += pause
        return out

    def families(self, shard: str, engine_moving: int) -> Iterator[Any]:
        """The counters and the pause histogram as metric families."""
        fam = CounterMetricFamily("shardex_moves", "Mover's writes on this shard by step "
                                  "(handoff, adopt) and outcome (done, repeat, refused)",
                                  labels=["shard", "step", "outcome"])  # fmt: skip
        for (step, outcome), n in self.steps.items():
            fam.add_metric([shard, step, outcome], n)
        yield fam
        fam = CounterMetricFamily("shardex_move_refusals", "Requests for a pair handed off "
                                  "from this shard, answered moving (retryable)",
                                  labels=["shard", "kind"])  # fmt: skip
        fam.add_metric([shard, "command"], engine_moving)
        fam.add_metric([shard, "read"], self.reads_refused)
        yield fam
        fam = HistogramMetricFamily("shardex_move_pause_seconds", "Hand-off to the new map "
                                    "reaching this (the source) shard, per move",
                                    labels=["shard"])  # fmt: skip
        cum, buckets = 0, []
        for bound, n in zip(PAUSE_BUCKETS, self.pause_counts, strict=False):
            cum += n
            buckets.append((repr(float(bound)), cum))
        buckets.append(("+Inf", cum + self.pause_counts[-1]))
        fam.add_metric([shard], buckets, self.pause_sum)
        yield fam
