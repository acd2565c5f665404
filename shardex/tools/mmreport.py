"""What the market maker says about itself: progress and summary lines (exact decimals) and
its Prometheus metrics.

Prometheus values are floats, so the metrics carry integers only, in the units the bot counts
in: inventory in *lots* of the pair (``shardex_mm_inventory_lots``; BTC-USD's lot is 0.0001
BTC), profit in *units of the quote asset* (``shardex_mm_pnl_quote_units``; USD's unit is
0.000001 USD, see ``shardex.accounts.assets``), the reference in *ticks*. Integers below 2**53
are exact as floats. The log lines give the same numbers as exact decimal strings.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex import metrics


@dataclass
class Totals:
    """The bot's counts that are not per pair."""

    cycles: int = 0
    taker_orders: int = 0
    taker_skipped: int = 0  # the other side was empty
    taker_rejects: Counter[str] = field(default_factory=Counter)
    left_open: int | None = 0  # open orders of its accounts after its final cancels (None:
    # the cluster did not answer)
    started: float = field(default_factory=time.monotonic)


def _codes(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def pair_line(mm: Any, st: Any) -> str:
    """One pair: reference, inventory and profit as exact decimals, and its counts."""
    p, m = st.pair, st.market
    limit, seen = m.qty_str(st.params.max_inventory), m.qty_str(st.max_abs_inventory)
    return (
        f"{st.symbol}: ref {m.price_str(st.reference)} inv {m.qty_str(st.inventory)} {p.base} "
        f"(limit {limit}, max seen {seen}) pnl {mm.table.fmt(p.quote, st.pnl)} {p.quote}; "
        f"quotes {st.quotes} amends {st.amends} cancels {st.cancels} fills "
        f"{m.qty_str(st.fills)} rejects {_codes(st.rejects)}"
    )


def format_progress(mm: Any) -> str:
    """One progress line: totals, then each pair's ``pair_line`` after a ``|``."""
    t = mm.totals
    head = (f"mm {time.monotonic() - t.started:.0f}s: rounds {t.cycles}, taker orders "
            f"{t.taker_orders} (rejects {_codes(t.taker_rejects)})")  # fmt: skip
    return " | ".join([head, *(pair_line(mm, st) for st in mm.states)])


def format_summary(mm: Any) -> list[str]:
    """The lines printed when the bot stops."""
    t = mm.totals
    out = [f"mm stopped after {t.cycles} rounds, {time.monotonic() - t.started:.1f}s; taker "
           f"orders {t.taker_orders}, skipped {t.taker_skipped}, rejects "
           f"{_codes(t.taker_rejects)}"]  # fmt: skip
    out += [pair_line(mm, st) for st in mm.states]
    left = t.left_open
    if left is None:
        out.append("open orders left: unknown (the cluster did not answer; see shardex orders)")
    else:
        out.append(f"open orders left: {left or 'none'}")
    return out


class MMCollector:
    """The bot's metrics, read from its state when Prometheus scrapes."""

    def __init__(self, mm: Any) -> None:
        self.mm = mm

    def collect(self) -> Iterator[Any]:
        states = list(self.mm.states)
        pair = ["pair"]
        counters = (
            ("shardex_mm_quotes", "quotes", "New quotes placed"),
            ("shardex_mm_amends", "amends", "Quotes amended"),
            ("shardex_mm_cancels", "cancels", "Quotes cancelled"),
            ("shardex_mm_fills", "fills", "Lots of the bot's quotes seen filled"),
        )
        for name, attr, doc in counters:
            fam = CounterMetricFamily(name, doc, labels=pair)
            for st in states:
                fam.add_metric([st.symbol], getattr(st, attr))
            yield fam
        gauges = (
            ("shardex_mm_inventory_lots", "inventory", "Inventory in lots (negative: short)"),
            (
                "shardex_mm_pnl_quote_units",
                "pnl",
                "Profit marked at the reference, in units of the quote asset",
            ),
            ("shardex_mm_reference_ticks", "reference", "Reference price in ticks"),
        )
        for name, attr, doc in gauges:
            fam = GaugeMetricFamily(name, doc, labels=pair)
            for st in states:
                fam.add_metric([st.symbol], getattr(st, attr))
            yield fam
        fam = CounterMetricFamily("shardex_mm_rejects", "Refusals by stable code",
                                  labels=["pair", "code"])  # fmt: skip
        for st in states:
            for code, n in list(st.rejects.items()):
                fam.add_metric([st.symbol, code], n)
        yield fam
        yield from self._totals()

    def _totals(self) -> Iterator[Any]:
        t = self.mm.totals
        yield CounterMetricFamily("shardex_mm_rounds", "Quoting rounds", value=t.cycles)
        yield CounterMetricFamily("shardex_mm_taker_orders", "Taker orders sent",
                                  value=t.taker_orders)  # fmt: skip


def serve_metrics(mm: Any, port: int) -> Callable[[], None]:
    """Register the bot's metrics and, with a port, serve them (``shardex.metrics.serve``:
    on ``SHARDEX_METRICS_HOST``, default 127.0.0.1); returns what unregisters them."""
    collector = MMCollector(mm)
    REGISTRY.register(collector)
    if port:
        metrics.serve(port, "mm")
    return lambda: REGISTRY.unregister(collector)
