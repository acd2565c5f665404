"""Candles and tickers: OHLCV per pair at 1m 5m 15m 1h 4h 1d and a rolling 24 h ticker, from
the trades streams the bridge writes, exactly once (docs/candles.md).

``core``: trades → candles in integers (pure); ``fmt``: exact decimal strings and the stored
JSON; ``ticker``: the 24 h ticker and flat fill (pure); ``store``: the Redis keys, the atomic
commit script and the reads; ``worker``: the ``shardex candles-worker`` loop and its metrics.
"""
