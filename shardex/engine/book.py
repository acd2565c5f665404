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
from collections.abc import Iterator, Mapping
from heapq import heapify, heappop, heappush
from itertools import islice
from typing import Any

try:  # only the compiled build (mypyc, see shardex.engine.build) needs it; a no-op otherwise
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover - the default install has no mypy

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls

from shardex.engine.codes import STATE_CANCELLED, STATE_FILLED
from shardex.engine.markets import Market
from shardex.engine.perps import Oracle, load_oracle
from shardex.engine.positions import Positions


@mypyc_attr(native_class=False)  # mypyc compiles no subclass of a builtin exception
class IntegrityError(AssertionError):
    """A book's internal structures disagree with each other; the message says where and how.

    An ``AssertionError`` so that tests treat it as a failed check; raised explicitly (never with
    ``assert``) so that it also works under ``python -O``.
    """


class Order:
    """A resting order. ``qty`` is the open quantity in lots; 0 means dead (cancelled/filled).

    ``seq`` is the seq of the event that accepted it (kept across a re-pricing amend) and
    ``filled`` the lots it has traded: with the seq of its last event they bound where its
    trades are in the event stream, so an order status query needs no per-fill trade list
    (see ``Engine.order_status``). ``filled`` is the only per-fill bookkeeping, and only on
    a partial maker fill.
    """

    __slots__ = ("id", "account", "side", "price", "qty", "stp", "post_only", "seq", "filled")

    def __init__(
        self,
        oid: str,
        account: str,
        side: int,
        price: int,
        qty: int,
        stp: int,
        post_only: bool,
        seq: int = 0,
        filled: int = 0,
    ) -> None:
        self.id = oid
        self.account = account
        self.side = side
        self.price = price
        self.qty = qty
        self.stp = stp
        self.post_only = post_only
        self.seq = seq
        self.filled = filled


# A finished order as the recent-results index keeps it: (account, state, filled lots, cancel
# reason or None, seq of its accepted event, seq of its last event); see Engine._finish.
Finished = tuple[Any, ...]


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

    __slots__ = (
        "symbol",
        "market",
        "sides",
        "orders",
        "finished",
        "nprev",
        "trade_id",
        "accepted",
        "cancelled",
        "last",
        "gate",
        "stops",
        "oracle",
        "positions",
    )

    def __init__(self, symbol: str, market: Market) -> None:
        self.symbol = symbol
        self.market = market
        self.sides = (Side(), Side())  # 0 = bids (key -price), 1 = asks (key price)
        self.orders: dict[str, Order] = {}
        # Recently finished orders of this pair (id → Finished), oldest first, in one dict:
        # the first ``nprev`` are the engine's previous generation, the rest its current one.
        # One dict so that a new order's duplicate check is one probe, not one per generation
        # (each probe of a large dict is a likely cache miss). The engine rotates the
        # generations of all pairs at once, so what is forgotten when is global and
        # deterministic (see Engine.__init__ and Engine._store).
        self.finished: dict[str, Finished] = {}
        self.nprev = 0
        self.trade_id = 0  # also the number of trades of this pair
        # Counters for metrics (read at scrape time; not part of snapshots: they count what
        # this process did, like any Prometheus counter).
        self.accepted = 0
        self.cancelled = 0
        # the price of the pair's last trade (ticks; 0: none yet): the stops' trigger and the
        # price band's reference
        self.last = 0
        # the pair's rules (``shardex.engine.admin.Rules``): None while it is open, no limits
        self.gate: Any = None
        # its pending stop / take-profit orders (a ``shardex.engine.stops.TriggerBook``, None
        # until the first; part of the pair's state: ``stops.save``)
        self.stops: Any = None
        # a perp pair's index and mark (a ``shardex.engine.perps.Oracle``; None: a spot pair,
        # or no index yet; part of the pair's state)
        self.oracle: Oracle | None = None
        # a perp pair's positions and margin (``shardex.engine.positions``; None: a spot pair;
        # part of the pair's state)
        self.positions: Positions | None = (
            None if getattr(market, "perp", None) is None else Positions())

    @property
    def prev(self) -> dict[str, Finished]:
        """The previous generation of finished orders (a copy; tests and debugging)."""
        return dict(islice(self.finished.items(), self.nprev))

    @property
    def done(self) -> dict[str, Finished]:
        """The current generation of finished orders (a copy; tests and debugging)."""
        return dict(islice(self.finished.items(), self.nprev, None))

    def forget_previous(self, keep: bool) -> None:
        """Rotate this pair's generations: drop the previous one (the oldest ``nprev``
        entries) and make the current one previous (``keep``) or drop it too."""
        fin = self.finished
        n = self.nprev
        if not keep or n >= len(fin):
            self.finished = {}
            self.nprev = 0
            return
        if n:
            for oid in list(islice(fin, n)):
                del fin[oid]
        self.nprev = len(fin)

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

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """This pair's matching state: trade-id counter and live orders in priority order.

        Each order is ``(id, account, price, qty, stp, post_only, filled, seq)``; the first
        six fields are the version-1 layout, which ``restore`` still reads (as it reads the
        version-3 layout, whose 8th field was a list of trades). Plain lists, ints and
        strings only (msgpack-able); ``restore`` rebuilds an identical book. The recently
        finished orders are added by the engine, which owns their global order.
        """
        sides = []
        for side in (0, 1):
            s = self.sides[side]
            orders = []
            for key in sorted(s.levels):
                for o in s.levels[key].orders:
                    if o.qty:
                        orders.append(
                            (
                                o.id,
                                o.account,
                                o.price,
                                o.qty,
                                o.stp,
                                o.post_only,
                                o.filled,
                                o.seq,
                            )
                        )
            sides.append(orders)
        state: dict[str, Any] = {"trade_id": self.trade_id, "bids": sides[0], "asks": sides[1]}
        if self.last:  # (left out before the first trade: older readers never see it)
            state["last"] = self.last
        if self.oracle is not None:  # (a perp pair's index and mark)
            state["oracle"] = self.oracle.save()
        if self.positions is not None and (self.positions.accounts or self.positions.due):
            state["positions"] = self.positions.save()
        return state

    def restore(self, state: Mapping[str, Any], since: int = 0) -> None:
        """Load what ``snapshot`` produced into this (empty) book; raises ValueError if unusable.

        ``since``: the accept seq given to orders of older layouts, which do not carry one
        (the snapshot's seq: their trades before it are not looked up).
        """
        if self.orders or self.sides[0].levels or self.sides[1].levels:
            raise ValueError(f"book {self.symbol}: restore needs an empty book")
        self.restore_head(state)
        self.restore_orders(state["bids"], state["asks"], since)

    def restore_head(self, state: Mapping[str, Any]) -> None:
        """``restore``'s part without the resting orders: trade-id counter, last price, a perp
        pair's oracle and positions (a pre-copied book gets its orders ahead of these)."""
        trade_id = state["trade_id"]
        if type(trade_id) is not int or trade_id < 0:
            raise ValueError(f"book {self.symbol}: bad trade_id {trade_id!r}")
        self.trade_id = trade_id
        last = state.get("last", 0)
        if type(last) is not int or last < 0:
            raise ValueError(f"book {self.symbol}: bad last price {last!r}")
        self.last = last
        self.oracle = load_oracle(state.get("oracle"))
        if self.positions is not None:
            self.positions.load(state.get("positions"))

    def restore_orders(self, bids: Any, asks: Any, since: int = 0) -> None:
        """Rest ``snapshot``'s order entries of each side, checked, at the back of their
        levels (so in the given order); ValueError for an entry that is not one."""
        market = self.market
        max_price = getattr(market, "max_price_ticks", None)
        max_qty = getattr(market, "max_qty_lots", None)
        for side, orders in ((0, bids), (1, asks)):
            for entry in orders:
                oid, account, price, qty, stp, post_only = entry[:6]
                if (
                    type(oid) is not str
                    or type(account) is not str
                    or type(price) is not int
                    or type(qty) is not int
                    or not 0 < price <= (max_price or price)
                    or not 0 < qty <= (max_qty or qty)
                    or stp not in (0, 1, 2, 3)
                    or type(post_only) is not bool
                ):
                    raise ValueError(f"book {self.symbol}: bad order entry {tuple(entry)!r:.200}")
                filled, seq = 0, since  # version 1 entries carry no fill history
                if len(entry) >= 8:
                    filled = entry[6]
                    if type(entry[7]) is int:  # version 4; version 3 had a trade list here
                        seq = entry[7]
                if type(filled) is not int or filled < 0:
                    raise ValueError(f"book {self.symbol}: order {oid!r} filled {filled!r}")
                if type(seq) is not int or seq < 0:
                    raise ValueError(f"book {self.symbol}: order {oid!r} seq {seq!r}")
                if oid in self.orders:
                    raise ValueError(f"book {self.symbol}: order {oid!r} appears twice")
                rest_order(
                    self, Order(oid, account, side, price, qty, stp, post_only, seq, filled)
                )

    def check_integrity(self) -> None:
        """Raise IntegrityError unless every internal structure agrees with the others.

        Checks: each level's key, price, ``total`` and ``live`` against its live orders; every
        live order in exactly one level of its own side and price, and in the ``orders`` index
        (and nothing else in the index); no empty level kept; every level key in its side's heap
        and the heap ordered; open quantities and prices positive; the book not crossed.
        Costs O(orders + heap); meant for tests, recovery and debugging, not the hot path.
        """
        sym = self.symbol
        seen: dict[str, Order] = {}
        for side in (0, 1):
            self._check_side(side, seen)
        if len(seen) != len(self.orders):
            extra = sorted(set(self.orders).difference(seen))[:5]
            raise IntegrityError(f"{sym}: index holds orders resting nowhere: {extra}")
        self._check_records()
        bid, ask = self.best(0), self.best(1)
        if bid is not None and ask is not None and bid >= ask:
            raise IntegrityError(f"{sym}: crossed book, best bid {bid} >= best ask {ask}")

    def _check_side(self, side: int, seen: dict[str, Order]) -> None:
        """``check_integrity`` for one side: its levels, their orders (added to ``seen``), its
        heap."""
        sym = self.symbol
        s = self.sides[side]
        name = ("bids", "asks")[side]
        for key, level in s.levels.items():
            where = f"{sym} {name} level {level.price}"
            if type(level.price) is not int or level.price <= 0:
                raise IntegrityError(f"{where}: price must be a positive int")
            if key != (-level.price if side == 0 else level.price):
                raise IntegrityError(f"{where}: stored under key {key}")
            total = live = 0
            for o in level.orders:
                if type(o.qty) is not int or o.qty < 0:
                    raise IntegrityError(f"{where}: order {o.id!r} has qty {o.qty!r}")
                if not o.qty:
                    continue
                live += 1
                total += o.qty
                if o.side != side or o.price != level.price:
                    raise IntegrityError(
                        f"{where}: order {o.id!r} is side {o.side} price {o.price}"
                    )
                if o.id in seen:
                    raise IntegrityError(f"{where}: order {o.id!r} rests twice")
                seen[o.id] = o
                if self.orders.get(o.id) is not o:
                    raise IntegrityError(f"{where}: order {o.id!r} missing from the index")
            if not live:
                raise IntegrityError(f"{where}: empty level kept")
            if level.total != total or level.live != live:
                raise IntegrityError(
                    f"{where}: counters total={level.total} live={level.live}, "
                    f"orders say total={total} live={live}"
                )
        heap = s.heap
        for i in range(1, len(heap)):
            if heap[(i - 1) // 2] > heap[i]:
                raise IntegrityError(f"{sym} {name}: heap order broken at index {i}")
        missing = set(s.levels).difference(heap)
        if missing:
            raise IntegrityError(f"{sym} {name}: level keys {sorted(missing)} not in heap")

    def _check_records(self) -> None:
        """``check_integrity`` for the order index and the recent-results records."""
        sym = self.symbol
        for oid, o in self.orders.items():
            if o.id != oid:
                raise IntegrityError(f"{sym}: index key {oid!r} holds order {o.id!r}")
        if type(self.trade_id) is not int or self.trade_id < 0:
            raise IntegrityError(f"{sym}: trade_id {self.trade_id!r}")
        for oid, o in self.orders.items():
            if type(o.filled) is not int or o.filled < 0 or type(o.seq) is not int or o.seq < 0:
                raise IntegrityError(f"{sym}: order {oid!r} filled {o.filled!r} seq {o.seq!r}")
            if oid in self.finished:
                raise IntegrityError(f"{sym}: order {oid!r} is both live and finished")
        if type(self.nprev) is not int or not 0 <= self.nprev <= len(self.finished):
            raise IntegrityError(f"{sym}: {self.nprev} previous of {len(self.finished)} finished")
        for oid, rec in self.finished.items():
            account, state, filled, reason, first, last = rec
            if state not in (STATE_FILLED, STATE_CANCELLED) or (
                (reason is None) != (state == STATE_FILLED)
            ):
                raise IntegrityError(f"{sym}: finished order {oid!r} state {state} {reason}")
            if type(filled) is not int or filled < 0 or not 0 <= first <= last:
                raise IntegrityError(
                    f"{sym}: finished order {oid!r} filled {filled} seqs {first}..{last}"
                )


def rest_order(book: Book, order: Order) -> None:
    """Append a live order at the back of its price level (creating the level if needed)."""
    side = order.side
    s = book.sides[side]
    key = -order.price if side == 0 else order.price
    levels = s.levels
    level = levels.get(key)
    if level is None:
        level = levels[key] = Level(order.price)
        heappush(s.heap, key)
        s.maybe_rebuild_heap()
    level.orders.append(order)
    level.total += order.qty
    level.live += 1
    book.orders[order.id] = order


def unlink_order(book: Book, order: Order) -> None:
    """Take a live order out of the book in O(1): lazy removal from its level's deque."""
    side = order.side
    s = book.sides[side]
    key = -order.price if side == 0 else order.price
    level = s.levels[key]
    level.total -= order.qty
    level.live -= 1
    order.qty = 0
    del book.orders[order.id]
    if not level.live:
        del s.levels[key]
    elif len(level.orders) > 2 * level.live + 16:
        level.orders = deque([o for o in level.orders if o.qty])
