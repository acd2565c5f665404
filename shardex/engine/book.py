"""Order book data structures for one symbol: price levels, FIFO queues, best-price heaps.

Layout, chosen for CPython speed rather than elegance:

* Each side keeps ``levels: dict[key, Level]`` and a min-heap of keys. Bids use ``key = -price``
  and asks ``key = price`` so that "best" is always the smallest key and "crosses a limit" is
  always ``key <= limit_key`` for both sides. Best price is O(log L) via the heap.
* A level holds a deque of orders in time priority. Cancels are *lazy*: the order's ``qty`` goes
  to 0 and the level's counters are updated (O(1)); the dead order is skipped and dropped when it
  reaches the front, or the deque is compacted when dead entries outnumber live ones.
* Empty levels are deleted from the dict at once; their heap key becomes stale and is discarded
  lazily when it reaches the top (the heap is rebuilt if stale keys pile up).

Matching itself lives in ``engine.py`` so that the hot loop can keep everything in locals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from heapq import heapify, heappop, heappush


class Order:
    """A resting order. ``qty`` is the open quantity in lots; 0 means dead (cancelled/filled)."""

    __slots__ = ("id", "account", "side", "price", "qty", "stp", "post_only")

    def __init__(
        self, oid: str, account: str, side: int, price: int, qty: int, stp: int, post_only: bool
    ) -> None:
        self.id = oid
        self.account = account
        self.side = side
        self.price = price
        self.qty = qty
        self.stp = stp
        self.post_only = post_only


class Level:
    """All resting orders at one price, FIFO. ``total``/``live`` count only live orders."""

    __slots__ = ("price", "orders", "total", "live")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[Order] = deque()
        self.total = 0
        self.live = 0


class Side:
    """One side of a book (bids or asks)."""

    __slots__ = ("levels", "heap")

    def __init__(self) -> None:
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []

    def maybe_rebuild_heap(self) -> None:
        """Drop stale keys in one go when they dominate the heap (keeps memory and pops bounded)."""
        if len(self.heap) > 2 * len(self.levels) + 64:
            self.heap = list(self.levels)
            heapify(self.heap)

    def iter_keys(self) -> Iterator[int]:
        """Live level keys best-first without popping: a best-first walk of the heap tree.

        Costs O(k log k) for the first k keys, so depth queries and FOK checks never scan or
        sort the whole side.
        """
        heap, levels = self.heap, self.levels
        if not heap:
            return
        frontier = [(heap[0], 0)]
        seen: set[int] = set()
        n = len(heap)
        while frontier:
            key, i = heappop(frontier)
            for c in (2 * i + 1, 2 * i + 2):
                if c < n:
                    heappush(frontier, (heap[c], c))
            if key in levels and key not in seen:
                seen.add(key)
                yield key


class Book:
    """All state of one symbol. Separable on purpose: a pair can be snapshotted and moved alone."""

    __slots__ = ("symbol", "market", "sides", "orders", "trade_id", "accepted", "cancelled")

    def __init__(self, symbol: str, market: object) -> None:
        self.symbol = symbol
        self.market = market
        self.sides = (Side(), Side())  # 0 = bids (key -price), 1 = asks (key price)
        self.orders: dict[str, Order] = {}
        self.trade_id = 0  # also the number of trades of this pair
        # Counters for metrics (read at scrape time; not part of snapshots: they count what
        # this process did, like any Prometheus counter).
        self.accepted = 0
        self.cancelled = 0

    def best(self, side: int) -> int | None:
        """Best price (ticks) of a side, or None when empty."""
        s = self.sides[side]
        for key in s.iter_keys():
            return s.levels[key].price
        return None

    def depth(self, k: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Top ``k`` levels per side as (price ticks, total lots, order count), best first."""
        out: list[list[tuple[int, int, int]]] = [[], []]
        for side in (0, 1):
            s = self.sides[side]
            for key in s.iter_keys():
                if len(out[side]) >= k:
                    break
                lvl = s.levels[key]
                out[side].append((lvl.price, lvl.total, lvl.live))
        return out[0], out[1]

    def resting(self) -> int:
        return len(self.orders)

    def level_orders(self, side: int) -> list[list[tuple[str, int]]]:
        """Every level best-first as [(id, open qty), ...] in priority order (tests, snapshots)."""
        s = self.sides[side]
        return [[(o.id, o.qty) for o in s.levels[key].orders if o.qty] for key in sorted(s.levels)]
