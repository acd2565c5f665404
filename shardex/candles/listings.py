"""Pairs listed at runtime, for the candles worker: the engine shards' market tables.

The worker's pairs start as its markets file; a pair listed later (``shardex market add``)
is only in its engine shard's table. The router's topology carries every registered shard's
table (from its HELLOs), so a thread asks it every ``EVERY`` seconds and hands the tables
over; the worker's loop folds them into its table (``CandleWorker.learn``). The thread owns
its client (ZeroMQ sockets are single-threaded) and never blocks the worker: a router that
does not answer (a worker run on Redis alone) only means no new pairs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.client import Client, ShardexError
from shardex.engine import Market
from shardex.wire.listed import learn_tables, shard_tables

log = logging.getLogger("shardex.candles")
EVERY = 5.0  # seconds between two looks at the shards' market tables
TIMEOUT = 2.0  # seconds a look may wait for the router


def learn_pairs(markets: dict[str, Market], tables: list[Any]) -> list[str]:
    """Add to ``markets`` the pairs the shards' tables name and it lacks; the symbols added
    (a known pair is never changed: ``learn_tables``)."""
    before = set(markets)
    learn_tables(markets, AssetTable(markets), tables)
    return sorted(set(markets) - before)


class ListingWatcher(threading.Thread):
    """Asks the router for the shards' market tables every ``EVERY`` s (daemon thread);
    ``take()`` gives the newest tables once (None: nothing new since the last take)."""

    def __init__(self, endpoint: str, key: Any) -> None:
        super().__init__(name="candles-listings", daemon=True)
        self.endpoint = endpoint
        self.key = key
        self._lock = threading.Lock()
        self._tables: list[Any] | None = None
        self._halt = threading.Event()

    def take(self) -> list[Any] | None:
        with self._lock:
            tables, self._tables = self._tables, None
        return tables

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        client = Client(self.endpoint, key=self.key, timeout=TIMEOUT, retry=False)
        try:
            while not self._halt.is_set():
                try:
                    tables = shard_tables(client.topology())
                except (ShardexError, OSError) as exc:
                    log.debug("market tables: router did not answer (%s)", exc)
                else:
                    with self._lock:
                        self._tables = tables
                self._halt.wait(EVERY)
        finally:
            client.close()
