"""Prometheus: an engine shard loop's own counters (what ``metrics.ShardStats`` does not
cover: outboxes, journal up, malformed messages, replication, the account link) and its perp
pairs' gauges (``perp_families``).

The perp numbers are read from the engine's state at scrape time (the prometheus thread):
open interest, index and mark, the funding rate the current interval pays so far, the
cumulative funding index, the insurance fund and its uncovered deficits, and the index's age.
The engine keeps them as exact integers; a gauge is a float, so what Prometheus shows is
rounded (observability, never accounting: the money is in the journal and ``shardex
positions``). Liquidations and deleveraged lots are counted here as the node publishes their
events (``count_liquidations``): the engine's state has no count of them. The take-overs a
stale oracle held back (``frozen``) are in the pair's state, so their counter is the pair's
since it began (a restart or a standby shows the same number).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from operator import itemgetter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.engine.codes import EV_ADL, EV_LIQUIDATION
from shardex.engine.funding import SCALE, per_lot
from shardex.engine.positions import SIZE
from shardex.node.leader import replica_families
from shardex.node.outbox import outbox_families
from shardex.wire.layouts import ADL_CLOSED

_KIND = itemgetter(0)
_GAUGES = (  # (name, help) of the per-pair gauges, in ``_pair_values``'s order
    ("shardex_perp_open_interest_lots", "Open interest of a perp pair (lots, longs = shorts)"),
    ("shardex_perp_index", "A perp pair's last index price (float of the exact ticks)"),
    ("shardex_perp_mark", "A perp pair's mark price (float of the exact ticks)"),
    ("shardex_perp_funding_rate", "The funding rate the current interval pays so far: the "
     "average premium, capped, a fraction of the index (> 0: longs pay)"),
    ("shardex_perp_funding_cumulative", "Cumulative funding paid by longs per 1 unit of the "
     "base since the pair began (settle asset; the last payment is its last step)"),
    ("shardex_perp_insurance_fund", "A perp pair's insurance fund (settle asset)"),
    ("shardex_perp_uncovered", "Deficits the insurance fund could not pay (settle asset)"),
    ("shardex_perp_index_age_seconds", "Exchange time since the pair's last index"),
)  # fmt: skip
_COUNTED = (  # (name, help) of the counters ``count_liquidations`` keeps, in its order
    ("shardex_perp_liquidations", "Positions taken over by the engine (since this process "
     "started)"),
    ("shardex_perp_deleveraged_lots", "Lots of opposite positions auto-deleveraged against "
     "bankrupt ones (since this process started)"),
)  # fmt: skip


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
        yield from perp_families(node.core.engine, lab[0], node.liquidations)
        if node.replica is not None:  # a replicated leader
            yield from replica_families(node.replica, node.refused, lab)
        if node.cfg.accounts:
            fam = CounterMetricFamily(
                "shardex_shard_account_link",
                "Account link: forwards applied/duplicate/gap, settlements sent/re-sent/unsent, "
                "cancels parked/park_late/park_full/unfound (node.parked)",
                labels=["shard", "what"],
            )
            for what, n in node.link_counts.items():
                fam.add_metric([*lab, what], n)
            yield fam


def count_liquidations(counts: dict[str, list[int]], events: list[Any]) -> None:
    """Add a batch's ``EV_LIQUIDATION`` and ``EV_ADL`` events to ``counts`` (symbol →
    [take-overs, deleveraged lots]). An ``EV_ADL`` always comes inside a take-over, so a batch
    without ``EV_LIQUIDATION`` has none: one scan in C (``in map``) for it, and the hot path
    pays next to nothing."""
    if EV_LIQUIDATION in map(_KIND, events):
        for ev in events:
            if ev[0] == EV_LIQUIDATION:
                counts.setdefault(ev[2], [0, 0])[0] += 1
            elif ev[0] == EV_ADL:
                counts.setdefault(ev[2], [0, 0])[1] += abs(ev[ADL_CLOSED])


def _pair_values(book: Any, now: int) -> list[float | None]:
    """One perp book's gauges (None: not known yet, e.g. before its first index)."""
    m, pos, o = book.market, book.positions, book.oracle
    unit = m.tick * m.lot
    rows = list(pos.accounts.values())  # (one C-level copy: the engine thread may add rows)
    oi = sum(r[SIZE] for r in rows if r[SIZE] > 0)
    index = mark = rate = age = None
    if o is not None and o.index:
        index, mark, age = float(o.index * m.tick), float(o.mark * m.tick), (now - o.ts) / 1000
        try:  # (the engine thread may pay funding meanwhile: its samples back to 0)
            rate = float(Fraction(per_lot(pos, o.index, m.perp.funding_cap), SCALE * o.index))
        except ZeroDivisionError:  # no sample in this interval yet: no rate to show
            rate = None
    cumulative = float(Decimal(pos.cumulative) * m.tick / SCALE)
    return [oi, index, mark, rate, cumulative, float(pos.fund * unit),
            float(pos.uncovered * unit), age]  # fmt: skip


def perp_families(engine: Any, shard: str,
                  liquidations: dict[str, list[int]]) -> Iterator[Any]:  # fmt: skip
    """The perp pairs' gauges (labels shard, symbol) and their counters: liquidations and
    deleveraged lots (``count_liquidations``), take-overs a stale oracle held back."""
    books = [b for _, b in sorted(list(engine.books.items())) if b.positions is not None]
    if not books:
        return
    values = [(b.symbol, _pair_values(b, engine.ts)) for b in books]
    for i, (name, doc) in enumerate(_GAUGES):
        fam = GaugeMetricFamily(name, doc, labels=["shard", "symbol"])
        for symbol, vals in values:
            if vals[i] is not None:
                fam.add_metric([shard, symbol], vals[i])
        yield fam
    for i, (name, doc) in enumerate(_COUNTED):
        fam = CounterMetricFamily(name, doc, labels=["shard", "symbol"])
        for symbol, _ in values:
            fam.add_metric([shard, symbol], liquidations.get(symbol, (0, 0))[i])
        yield fam
    fam = CounterMetricFamily(
        "shardex_perp_frozen_takeovers", "Take-overs a stale oracle held back (the pair's "
        "state: since the pair began)", labels=["shard", "symbol"])  # fmt: skip
    for b in books:
        fam.add_metric([shard, b.symbol], b.positions.frozen)
    yield fam
