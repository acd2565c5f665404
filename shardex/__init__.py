"""shardex: a sharded, multiprocess order-matching cluster."""

__version__ = "0.1.0"
