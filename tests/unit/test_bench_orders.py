"""The cluster benches' limit-order streams cross (``bench/orders.py``): each symbol's orders
alternate sides, so a run leaves a small book, not one that grows with every order sent.

With two symbols the old rule (``BUY if i % 2``) gave each symbol a single side: nothing
crossed, the books grew by the whole offered rate, and the shard's periodic snapshot (whose
cost follows the books) stalled the loop the latency phase measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import BUY, EV_TRADE, GTC, LIMIT, OP_NEW, SELL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from orders import side_of  # noqa: E402

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")


def run(n: int, symbols: tuple[str, ...]) -> tuple[Engine, int]:
    """The open-loop bench's stream (``compare.role_openloop``) applied to an engine."""
    engine, trades = Engine(DEFAULT_MARKETS), 0
    for i in range(n):
        out: list = []
        cmd = (OP_NEW, symbols[i % len(symbols)], f"c-{i}", f"a{i % 50}",
               side_of(i, len(symbols)), LIMIT, 1_000_000 + (i * 7919) % 11 - 5, 1 + i % 5,
               GTC, False, 0)  # fmt: skip
        engine.apply(cmd, out)
        trades += sum(1 for ev in out if ev[0] == EV_TRADE)
    return engine, trades


def test_each_symbol_gets_both_sides() -> None:
    for k in (1, 2, 3):
        for s in range(k):
            sides = {side_of(i, k) for i in range(s, 40, k)}
            assert sides == {BUY, SELL}, (k, s)


def test_the_stream_crosses_and_the_books_stay_small() -> None:
    for k in (1, 2, 3):
        engine, trades = run(4000, SYMBOLS[:k])
        assert trades > 1000, k
        assert engine.resting() < 4000 // 2, (k, engine.resting())
