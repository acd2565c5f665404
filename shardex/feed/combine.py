"""Several sources of one market → one index price (pure).

The median of the sources that are fresh (a quote no older than ``stale_ms``) and not
outlying (no further than ``outlier_bps`` from the median of the fresh ones); each source left
out is named with its reason, for the node's metrics and log. One source alone is used as is
(nothing to compare it with); none left: no index this round (the engine keeps the last one,
and its staleness shows in ``shardex market list``).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from shardex.feed.sources import Quote

STALE, OUTLIER = "stale", "outlier"


class Combined(NamedTuple):
    """The index (None: no usable source), the sources used and those dropped (source →
    ``stale`` | ``outlier``)."""

    price: Decimal | None
    used: tuple[str, ...]
    dropped: dict[str, str]


def median(values: list[Decimal]) -> Decimal:
    """The median of exact decimals (an even count: the mean of the middle two, exact)."""
    v = sorted(values)
    n = len(v)
    mid = n // 2
    return v[mid] if n % 2 else (v[mid - 1] + v[mid]) / 2


def combine(quotes: Iterable[Quote], now: int, stale_ms: int, outlier_bps: int) -> Combined:
    """The index of one market from the latest quote of each of its sources."""
    dropped: dict[str, str] = {}
    fresh: list[Quote] = []
    for q in quotes:
        if now - q.ts > stale_ms:
            dropped[q.source] = STALE
        else:
            fresh.append(q)
    if not fresh:
        return Combined(None, (), dropped)
    center = median([q.price for q in fresh])
    kept = []
    for q in fresh:
        if len(fresh) > 2 and abs(q.price - center) * 10_000 > center * outlier_bps:
            dropped[q.source] = OUTLIER
        else:
            kept.append(q)
    return Combined(median([q.price for q in kept]), tuple(sorted(q.source for q in kept)),
                    dropped)  # fmt: skip


def to_ticks(price: Decimal, tick: Decimal) -> int:
    """The nearest whole tick (half to even), at least 1."""
    return max(int((price / tick).to_integral_value(ROUND_HALF_EVEN)), 1)
