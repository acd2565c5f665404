"""The pairs a bench trades: the built-in markets, then synthetic ones balanced over the
shards, and the markets file that adds them (the driver imports no tree's package)."""

from __future__ import annotations

import zlib
from pathlib import Path

BUILTIN_PAIRS = 8  # shardex.engine.markets.DEFAULT_MARKETS (loadgen --symbols K takes these first)


def symbol_shard(symbol: str, shards: int) -> int:
    """The router's routing function (crc32 mod N, ``shardex.wire.protocol.shard_for``), here so
    the driver need not import any tree's package."""
    return zlib.crc32(symbol.encode()) % shards


BUILTIN_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "LTC-USD",
                   "ETH-BTC")  # fmt: skip
SPREAD = 64  # synthetic pairs are balanced over crc32 mod 64: so over every power of 2 ≤ 64


def synthetic_pairs(pairs: int) -> list[str]:
    """The extra markets beyond the built-in ones (``Pnnnn-USD``), chosen so every shard gets
    its share: crc32 is linear, so consecutive names like P000..P063 leave whole residues mod 16
    empty (shards with no orders). Greedy: each next pair goes to the residue mod 64 holding the
    fewest pairs so far (the built-ins counted), which balances every power-of-two shard count;
    other counts come out close (``run`` warns about a shard left with none)."""
    counts = [0] * SPREAD
    for sym in BUILTIN_SYMBOLS[: min(pairs, BUILTIN_PAIRS)]:
        counts[symbol_shard(sym, SPREAD)] += 1
    pool: dict[int, list[str]] = {r: [] for r in range(SPREAD)}
    out: list[str] = []
    i = 0
    while len(out) < pairs - BUILTIN_PAIRS:
        want = counts.index(min(counts))
        while not pool[want]:
            name = f"P{i:04d}-USD"
            pool[symbol_shard(name, SPREAD)].append(name)
            i += 1
        out.append(pool[want].pop(0))
        counts[want] += 1
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
