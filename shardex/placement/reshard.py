"""The plan of a shard-count change on a running cluster (pure: no I/O, no clock).

``shardex reshard --shards N`` spreads the pairs over shards ``0..N-1`` of the running engine
shard processes (the map's ``shards``: R >= N): each pair's target is its rendezvous default
over N (``default_owner(symbol, N)``), so growing N to N' moves only the pairs whose top weight
is a new shard's (about (N'-N)/N' of them) and none between old shards; shrinking empties shards
N..R-1.

``plan(pmap, symbols, n) -> ReshardPlan``
    The moves that bring ``pmap`` to ``n`` active shards: first every move the map records as in
    progress (``moving``: a crashed mover or reshard left it half done; it is finished towards
    the target it was started with), then one move per pair whose owner (after those) is not its
    target. ``ReshardError`` when ``n`` is outside ``1..pmap.shards``.

Why recompute from the map each time instead of keeping a plan file: the map is the cluster's
record of where every pair is and which move is half done, so a reshard killed at any point is
simply run again, and a second run of a finished reshard plans nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shardex.placement.core import PlacementMap, default_owner


class ReshardError(Exception):
    """The reshard cannot be planned as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Move:
    """One pair's move: ``symbol`` from shard ``source`` to shard ``target``; ``resumed`` when
    the map recorded it as in progress (a move another run began)."""

    symbol: str
    source: int
    target: int
    resumed: bool = False


@dataclass(frozen=True)
class ReshardPlan:
    """What ``shardex reshard`` does: ``moves`` in order, and the pairs per shard after them."""

    shards: int  # the active count asked for (N)
    processes: int  # the engine shard processes running (the map's shards, R)
    version: int  # the map's version the plan was made from
    moves: tuple[Move, ...]
    after: tuple[tuple[str, ...], ...]  # shard i's pairs once every move is done

    @property
    def emptied(self) -> list[int]:
        """Shards that own no pair after the moves (idle processes; on a shrink N..R-1)."""
        return [i for i, pairs in enumerate(self.after) if not pairs]


def target(symbol: str, n: int) -> int:
    """Where ``symbol`` goes over ``n`` active shards: its rendezvous default over ``n``."""
    return default_owner(symbol, n)


def plan(pmap: PlacementMap, symbols: Iterable[str], n: int) -> ReshardPlan:
    """The moves that place every pair of ``symbols`` (and every pair the map pins or moves)
    at ``target(symbol, n)``; moves in progress first (see the module docstring)."""
    if type(n) is not int or not 1 <= n <= pmap.shards:
        raise ReshardError(
            f"--shards {n}: the cluster runs engine shards 0..{pmap.shards - 1}, so 1.."
            f"{pmap.shards} of them can hold pairs; to run more shard processes restart it "
            f"with shardex up --shards {n} (every book stays where it is), then reshard"
        )
    moves: list[Move] = []
    where: dict[str, int] = {}
    for symbol, (src, dst) in sorted(pmap.moving.items()):
        moves.append(Move(symbol, src, dst, resumed=True))
        where[symbol] = dst
    for symbol in sorted(set(symbols) | set(pmap.pins) | set(pmap.moving)):
        now = where.get(symbol, pmap.owner(symbol))
        want = target(symbol, n)
        where[symbol] = want
        if now != want:
            moves.append(Move(symbol, now, want))
    after: list[list[str]] = [[] for _ in range(pmap.shards)]
    for symbol, i in sorted(where.items()):
        after[i].append(symbol)
    return ReshardPlan(n, pmap.shards, pmap.version, tuple(moves),
                       tuple(tuple(p) for p in after))  # fmt: skip


def describe(p: ReshardPlan) -> list[str]:
    """The lines ``--dry-run`` (and a real run, before it starts) prints."""
    lines = [f"reshard to {p.shards} of {p.processes} engine shard(s) from placement "
             f"v{p.version}: {len(p.moves)} move(s)"]  # fmt: skip
    for k, m in enumerate(p.moves, 1):
        note = " (in progress: finishing it)" if m.resumed else ""
        lines.append(f"  {k}. {m.symbol}: shard {m.source} -> shard {m.target}{note}")
    for i, pairs in enumerate(p.after):
        lines.append(f"  after: shard {i}: {' '.join(pairs) or '(no pair)'}")
    return lines
