"""Shrinking a failing fault schedule: delta debugging (Zeller and Hildebrandt's ``ddmin``).

A failing seed's schedule may hold hundreds of faults of which two matter. ``ddmin`` takes the
schedule and a predicate ``fails(subset)`` ("the run with only these faults still violates
an invariant") and returns a 1-minimal subset: it still fails, and removing any single fault
makes it pass. It first tries halves, then complements, and splits finer only when neither
helps, so a failure caused by k faults of n costs about O(k log n) runs rather than 2^n.

Pure: the predicate is the only thing that runs anything. Every subset is tried at most once
(a cache), and ``max_runs`` bounds the runs; when the budget ends first, the smallest failing
subset found so far is returned, marked ``exhausted``. Subsets keep the schedule's order (a
fault schedule is a sequence in time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Shrunk(Generic[T]):
    """The smallest failing subset found (``items``, and their ``indexes`` in the input),
    the predicate's ``runs``, and whether ``max_runs`` ended the search (``exhausted``:
    then ``items`` fails but may not be 1-minimal)."""

    items: list[T]
    indexes: list[int]
    runs: int
    exhausted: bool = False
    tried: dict[tuple[int, ...], bool] = field(default_factory=dict, repr=False)


class _Budget(Exception):
    """The run budget is spent (internal: unwinds the search)."""


def _chunks(idx: list[int], n: int) -> list[list[int]]:
    """``idx`` cut into ``n`` contiguous parts of near-equal size (none empty)."""
    k, r = divmod(len(idx), n)
    out, at = [], 0
    for i in range(n):
        size = k + (1 if i < r else 0)
        out.append(idx[at : at + size])
        at += size
    return [c for c in out if c]


def ddmin(
    items: Sequence[T], fails: Callable[[list[T]], bool], max_runs: int | None = None
) -> Shrunk[T]:
    """A 1-minimal subset of ``items`` on which ``fails`` holds (``items`` itself must fail:
    ValueError if it does not). The empty subset is tried first: a failure that needs no
    fault at all shrinks to nothing."""
    result: Shrunk[T] = Shrunk([], [], 0)

    def test(idx: list[int]) -> bool:
        key = tuple(idx)
        if key not in result.tried:
            if max_runs is not None and result.runs >= max_runs:
                raise _Budget
            result.runs += 1
            result.tried[key] = bool(fails([items[i] for i in idx]))
        return result.tried[key]

    cur = list(range(len(items)))
    if not test(cur):
        raise ValueError("ddmin: the whole schedule does not fail (nothing to shrink)")
    try:
        cur = [] if test([]) else _search(cur, test)
    except _Budget:
        result.exhausted = True
        cur = min((list(k) for k, bad in result.tried.items() if bad), key=len)
    result.indexes = cur
    result.items = [items[i] for i in cur]
    return result


def _search(cur: list[int], test: Callable[[list[int]], bool]) -> list[int]:
    """The ``ddmin`` loop over index lists (``cur`` fails)."""
    n = 2
    while len(cur) >= 2:
        parts = _chunks(cur, n)
        for part in parts:  # a part alone still fails: keep only it
            if test(part):
                cur, n = part, 2
                break
        else:
            for part in parts if n > 2 else ():  # (for n == 2 the complements are the parts)
                rest = [i for i in cur if i not in set(part)]
                if test(rest):  # without this part it still fails: drop it
                    cur, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(cur):
                    break  # every single fault is needed: 1-minimal
                n = min(len(cur), 2 * n)
    return cur
