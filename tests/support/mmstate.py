"""A market maker's pair state (``shardex.tools.mmpair.PairState``) for tests of its pure
parts: the pair's account ``mm-SYMBOL``, the reference at 30000.00-like 3_000_000 ticks."""

from __future__ import annotations

from shardex.accounts.assets import AssetTable
from shardex.engine import DEFAULT_MARKETS, Market
from shardex.tools.mmcore import QuoteParams, RandomWalk
from shardex.tools.mmpair import PairState

PARAMS = QuoteParams(levels=3, size=10, spread=20, spacing=5, max_inventory=25, skew=4,
                     max_price=1_000_000)  # fmt: skip


def pair_state(
    market: Market, params: QuoteParams = PARAMS, reference: int = 3_000_000
) -> PairState:
    """A fresh ``PairState`` of ``market`` (one of the built-in markets)."""
    s = market.symbol
    walk = RandomWalk(1, s, reference, 5, market.max_price_ticks)
    pair = AssetTable(DEFAULT_MARKETS).pairs[s]
    return PairState(s, market, pair, params, f"mm-{s}", walk, reference)
