"""The placement map across a change of the engine shard process count (pure: no I/O, no clock).

``shardex reshard --shards N`` on a cluster ``shardex up`` supervises changes how many engine
shard processes run, not only which of them hold pairs. The map's ``shards`` is that count
(every process reads it: a new shard process refuses a stored map of another count), so it
changes with the processes, in two steps around the pair moves:

``grown(pmap, symbols, n) -> PlacementMap``
    Before shard processes ``R..n-1`` start: the map over ``n`` shards with every pair of
    ``symbols`` (and every pair it pins or moves) pinned where it is now. Growing the count
    changes the rendezvous default of about (n-R)/n of the unpinned pairs; pinning them first
    means no pair changes owner until its live move (a router that took the new count at once
    would otherwise send a pair to a shard that does not hold its book). ``pmap`` itself when
    ``n`` is not larger.
``shrunk(pmap, symbols, n) -> PlacementMap``
    After the moves emptied shards ``n..R-1``, before their processes stop: the map over
    ``n`` shards. ``ScaleError`` when a pair (pinned, moving, or of ``symbols`` at its default)
    is still on a shard that goes away: the moves are not done, stopping it would strand a book.
    Pins that equal the default over ``n`` are dropped (rendezvous: a pair whose top weight
    over R shards is below ``n`` has the same top over ``n``).
"""

from __future__ import annotations

from collections.abc import Iterable

from shardex.placement.core import PlacementMap, default_owner


class ScaleError(Exception):
    """The map cannot change count as asked; the message says why and what to do."""


def grown(pmap: PlacementMap, symbols: Iterable[str], n: int) -> PlacementMap:
    """``pmap`` over ``n`` > ``pmap.shards`` shards, every known pair pinned to its owner."""
    if n <= pmap.shards:
        return pmap
    pins = dict(pmap.pins)
    for symbol in sorted(set(symbols) | set(pmap.moving)):
        pins.setdefault(symbol, pmap.owner(symbol))
    return PlacementMap(pmap.version + 1, n, pins, pmap.moving)


def shrunk(pmap: PlacementMap, symbols: Iterable[str], n: int) -> PlacementMap:
    """``pmap`` over ``n`` < ``pmap.shards`` shards once no pair is on shards ``n..``."""
    if n >= pmap.shards:
        return pmap
    if pmap.moving:
        names = ", ".join(sorted(pmap.moving))
        raise ScaleError(f"a move is in progress ({names}): finish it first (run the same "
                         "shardex reshard again)")  # fmt: skip
    known = sorted(set(symbols) | set(pmap.pins))
    stranded = [s for s in known if pmap.owner(s) >= n]
    if stranded:
        where = ", ".join(f"{s} (shard {pmap.owner(s)})" for s in stranded[:8])
        raise ScaleError(f"{len(stranded)} pair(s) are still on shards that would stop: "
                         f"{where}; move them to shards 0..{n - 1} first")  # fmt: skip
    pins = {s: i for s, i in pmap.pins.items() if i != default_owner(s, n)}
    for symbol in known:  # an unpinned pair keeps its owner (see the module docstring)
        if symbol not in pmap.pins and default_owner(symbol, n) != pmap.owner(symbol):
            pins[symbol] = pmap.owner(symbol)
    return PlacementMap(pmap.version + 1, n, pins)
