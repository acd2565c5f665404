"""shardex: a sharded, multiprocess order-matching cluster.

``from shardex import Client`` is the SDK entry point. It is imported lazily so that the pure
engine (``shardex.engine``) and ``shardex replay`` never load ZeroMQ.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "RequestTimeout", "Result", "ShardexError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from shardex import client

        return getattr(client, name)
    raise AttributeError(f"module 'shardex' has no attribute {name!r}")
