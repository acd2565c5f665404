"""``shardex feed``: index prices for perp markets (docs/perps.md).

Pure parts: ``sources`` (a seeded random walk, a recorded file's lines, Binance's public
trade/bookTicker messages → quotes) and ``combine`` (the median of the fresh, non-outlying
sources of a market); the process around them: ``node``.
"""
