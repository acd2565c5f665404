"""The pairs a bench trades: the built-in markets, then synthetic ones balanced over the
shards, and the markets file that adds them (the driver imports no tree's package)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BUILTIN_PAIRS = 8  # shardex.engine.markets.DEFAULT_MARKETS (loadgen --symbols K takes these first)


def symbol_shard(symbol: str, shards: int) -> int:
    """The router's routing of a pair nothing pins (rendezvous hashing,
    ``shardex.placement.core.default_owner``), here so the driver need not import any tree's
    package: the shard of highest keyed-blake2b weight."""
    if shards <= 1:
        return 0
    key = symbol.encode()
    weights = [
        int.from_bytes(hashlib.blake2b(key, digest_size=8, key=_SALT,
                                       person=i.to_bytes(16, "little")).digest(), "little")
        for i in range(shards)
    ]  # fmt: skip
    return weights.index(max(weights))


_SALT = (24104).to_bytes(8, "little")  # (``shardex.placement.core``'s)
BUILTIN_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "LTC-USD",
                   "ETH-BTC")  # fmt: skip
BALANCED = (2, 3, 4, 8, 16)  # the shard counts the synthetic pairs are spread evenly over
LOOK = 4096  # candidate names examined for each pair before the best one is taken


def synthetic_pairs(pairs: int) -> list[str]:
    """The extra markets beyond the built-in ones (``Pnnnn-USD``), chosen so every shard gets
    its share at each count in ``BALANCED``: greedy, each next pair is the first name (in
    order) that lands on a least-loaded shard at every one of those counts (the built-ins
    counted), or, if none of the next ``LOOK`` names does, the one that comes closest."""
    counts = {n: [0] * n for n in BALANCED}
    for sym in BUILTIN_SYMBOLS[: min(pairs, BUILTIN_PAIRS)]:
        for n, c in counts.items():
            c[symbol_shard(sym, n)] += 1
    out: list[str] = []
    taken: set[str] = set()
    while len(out) < pairs - BUILTIN_PAIRS:
        best: tuple[int, str, dict[int, int]] | None = None
        i = 0
        while i < LOOK or best is None:
            name = f"P{i:04d}-USD"
            i += 1
            if name in taken:
                continue
            owners = {n: symbol_shard(name, n) for n in BALANCED}
            score = sum(counts[n][k] - min(counts[n]) for n, k in owners.items())
            if best is None or score < best[0]:
                best = (score, name, owners)
            if score == 0:
                break
        _, name, owners = best
        for n, k in owners.items():
            counts[n][k] += 1
        out.append(name)
        taken.add(name)
    return out


def write_markets(path: Path, pairs: int) -> Path:
    """A markets file adding ``pairs - 8`` synthetic markets (decimal strings: exact)."""
    lines = []
    for sym in synthetic_pairs(pairs):
        lines += [
            f'[markets."{sym}"]',
            'tick = "0.01"',
            'lot = "0.001"',
            'max_price = "1000000"',
            'max_qty = "1000000"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def all_symbols(pairs: int) -> list[str]:
    """Every pair the bench trades, in ``loadgen --symbols K``'s order (built-ins first)."""
    return [*BUILTIN_SYMBOLS[: min(pairs, BUILTIN_PAIRS)], *synthetic_pairs(pairs)]
