"""The liquidation index of a perp pair: its positions keyed by the mark at which each one
goes below maintenance, so that an index tick finds the breaching accounts without walking
every position (pure: no sockets, no clock, no I/O; part of the compiled build).

**The key is exact.** With ``K = collateral + realized + funding − cost`` an account's equity
at the mark ``m`` is ``K + s·m`` (``s`` its signed size) and it breaches when that is below
``ceil(|s|·m·num / den)`` (``liquidation.maintenance``, rounded up). An integer is below the
ceiling of a real exactly when it is below the real itself, so, all of ``den``, ``den − num``
(the fraction is below 1) and ``|s|`` positive:

* a long (``s > 0``) breaches iff ``den·K + den·s·m < num·s·m`` iff ``m < −den·K / (s·(den −
  num))`` iff (``m`` an integer) ``m < ceil(−den·K / (s·(den − num)))``: its key ``L``, and
  it breaches exactly when ``m < L``;
* a short (``n = −s > 0``) breaches iff ``den·K − den·n·m < num·n·m`` iff ``m > den·K /
  (n·(den + num))`` iff ``m > floor(den·K / (n·(den + num)))``: its key ``S``, and it
  breaches exactly when ``m > S``.

``tests/unit/test_liqindex.py`` checks the equivalence on random rows and the index against
the full scan (``liquidation.breaching``) on random sessions.

**Bookkeeping.** Longs sit in a max-heap of ``L``, shorts in a min-heap of ``S``, each entry
tagged with its account's version: a row that changes is re-keyed (a new version, a new entry;
the old one is dropped when it surfaces: lazy deletion). What changes a row marks its account
``dirty`` (``Positions.touch``: fills, margin moves, a take-over's settlement); a funding
payment changes every row's ``K``, so it drops the index (``Positions.liq = None``) and the
next tick rebuilds it, as a load or a move does (the index is derived: never journaled nor in
a snapshot). A tick re-keys the dirty accounts, then pops the entries whose key the mark has
crossed and pushes the live ones back: O((dirty + breaching) · log n), not O(n).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

SIZE, COST, REALIZED, COLLATERAL, FUNDING = 0, 1, 2, 3, 4  # (``positions``' row layout)


def keys(row: list[int], num: int, den: int) -> tuple[int, int]:
    """(side, key) of a row: (1, L) for a long (breaches iff mark < L), (-1, S) for a short
    (breaches iff mark > S), (0, 0) flat (never breaches)."""
    size = row[SIZE]
    if not size:
        return 0, 0
    k = row[COLLATERAL] + row[REALIZED] + row[FUNDING] - row[COST]
    if size > 0:
        return 1, -((den * k) // (size * (den - num)))
    return -1, (den * k) // (-size * (den + num))


class LiqIndex:
    """One pair's positions by liquidation key (see the module docstring). ``longs`` holds
    ``(−L, version, account)``, ``shorts`` ``(S, version, account)``; ``version[account]``
    is its live entry's version."""

    __slots__ = ("num", "den", "longs", "shorts", "version")

    def __init__(self, accounts: Mapping[str, list[int]], num: int, den: int) -> None:
        self.num, self.den = num, den
        self.longs: list[tuple[int, int, str]] = []
        self.shorts: list[tuple[int, int, str]] = []
        self.version: dict[str, int] = {}
        self.build(accounts)

    def build(self, accounts: Mapping[str, list[int]]) -> None:
        """Every position afresh (version 0): on first use and to drop dead entries."""
        longs: list[tuple[int, int, str]] = []
        shorts: list[tuple[int, int, str]] = []
        for account, row in accounts.items():
            side, key = keys(row, self.num, self.den)
            if side > 0:
                longs.append((-key, 0, account))
            elif side < 0:
                shorts.append((key, 0, account))
        heapq.heapify(longs)
        heapq.heapify(shorts)
        self.longs, self.shorts = longs, shorts
        self.version = dict.fromkeys(accounts, 0)

    def rekey(self, accounts: Mapping[str, list[int]], names: Iterable[str]) -> None:
        """Give each of ``names`` a new version and, if it has a position, a new entry (the
        heaps are rebuilt once dead entries outnumber the accounts)."""
        for account in names:
            ver = self.version.get(account, 0) + 1
            self.version[account] = ver
            row = accounts.get(account)
            side, key = keys(row, self.num, self.den) if row is not None else (0, 0)
            if side > 0:
                heapq.heappush(self.longs, (-key, ver, account))
            elif side < 0:
                heapq.heappush(self.shorts, (key, ver, account))
        if len(self.longs) + len(self.shorts) > 2 * len(self.version) + 64:
            self.build(accounts)

    def candidates(self, mark: int) -> list[str]:
        """The accounts whose current key the mark has crossed (those, and only those, below
        maintenance at ``mark``: the key is exact), in no particular order; the index keeps
        them."""
        found: list[str] = []
        for heap, sign in ((self.longs, -1), (self.shorts, 1)):
            kept = []
            # (longs: −L < −mark, i.e. mark < L; shorts: S < mark)
            while heap and heap[0][0] < sign * mark:
                entry = heapq.heappop(heap)
                if self.version.get(entry[2]) == entry[1]:
                    kept.append(entry)
                    found.append(entry[2])
            for entry in kept:
                heapq.heappush(heap, entry)
        return found
