"""The sides of the cluster benches' limit-order streams (pure: no processes, no sockets).

Order ``i`` of a stream goes to symbol ``i % len(symbols)``. Its side must alternate *per
symbol*: ``BUY if i % 2`` gave every order of one symbol the same side when the symbols were
even in number (two, the benches' default), so nothing crossed and each book grew by the whole
offered rate (25,000 resting orders per 5 s round at 5k/s); a shard's periodic snapshot then
grew with it and stalled the very loop the latency phase measures.
"""

from __future__ import annotations

from shardex.engine.codes import BUY, SELL


def side_of(i: int, symbols: int) -> int:
    """The side of order ``i`` over ``symbols`` symbols: each symbol's orders alternate
    sell, buy, sell, ... so that, priced around one level, about half of them cross."""
    return BUY if (i // max(1, symbols)) % 2 else SELL
