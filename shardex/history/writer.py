"""The history writer: the cluster's Redis streams → the history database, exactly once.

Each round reads, from the position the database holds for it, every account shard's
``shardex:orders:<j>`` and ``shardex:balances:<j>`` and then every engine shard's
``shardex:events:<i>`` (XRANGE, ``batch`` entries at a time), turns the entries into rows
(``rows``) and writes a stream's rows and its new position in ONE transaction
(``Store.apply``). A crash between two transactions loses nothing (the next start resumes at
the stored position) and a crash inside one leaves nothing of it; an entry applied twice
anyway inserts nothing (every row's origin is a unique key). Orders are read before the
events, and an engine stream stops at a trade whose order's account is not known yet (its
orders entry is still on its way through the bridge): it resumes there next round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from shardex.history.rows import (
    WAIT,
    balance_row,
    engine_rows,
    new_rows,
    order_row,
)
from shardex.history.schema import BALANCES, ORDERS
from shardex.history.store import Store

log = logging.getLogger("shardex.history")

ROWS = Counter(
    "shardex_history_rows_written_total", "Rows inserted into the history database", ["table"]
)
LAG = Gauge(
    "shardex_history_lag_seqs",
    "Seqs between a stream's newest entry in Redis and the last applied",
    ["stream"],
)
WAITING = Gauge(
    "shardex_history_waiting",
    "1 while an engine stream waits for the orders entry of a trade's order",
    ["stream"],
)
MALFORMED = Counter(
    "shardex_history_malformed_total",
    "Stream entries skipped: not a well-formed entry of the bridge",
    ["stream"],
)
GONE = Counter(
    "shardex_history_gone_total",
    "Events stream entries missing from Redis when the writer came to them (trimmed)",
    ["stream"],
)
ACCOUNT_CACHE = 500_000  # (symbol, order id) → account entries kept before starting over


@dataclass(frozen=True)
class WriterConfig:
    """What the writer reads: ``shards`` engine shards and ``accounts`` account shards of
    the cluster whose streams are under ``prefix``; ``batch`` entries per read."""

    shards: int
    accounts: int
    prefix: str = "shardex:"
    batch: int = 2000
    poll_interval: float = 0.2


class HistoryWriter:
    """The streams → database loop; ``redis`` a redis-py client (``decode_responses=True``)."""

    def __init__(self, cfg: WriterConfig, redis: Any, store: Store) -> None:
        self.cfg = cfg
        self.redis = redis
        self.store = store
        self.pos = store.positions()
        self._accounts: dict[tuple[str, str], str] = {}
        self._holes: set[tuple[str, int]] = set()  # (stream, last seq) gaps already reported

    def streams(self) -> list[tuple[str, int, str]]:
        """(key, shard, what) in the order a round reads them: orders, balances, events."""
        p = self.cfg.prefix
        out = []
        for j in range(self.cfg.accounts):
            out += [(f"{p}orders:{j}", j, "orders"), (f"{p}balances:{j}", j, "balances")]
        out += [(f"{p}events:{i}", i, "events") for i in range(self.cfg.shards)]
        return out

    def step(self) -> int:
        """One round over every stream; the entries applied."""
        return sum(self._stream(key, shard, what) for key, shard, what in self.streams())

    def _stream(self, key: str, shard: int, what: str) -> int:
        last = self.pos.get(key, 0)
        entries = self.redis.xrange(key, f"{last + 1}-0", "+", count=self.cfg.batch)
        if not entries:
            return 0
        first = int(entries[0][0].partition("-")[0])
        hole = (key, last)
        if what == "events" and first > last + 1 and hole not in self._holes:  # (said once)
            self._holes.add(hole)  # (an events stream's seqs have no holes of their own)
            GONE.labels(key).inc(first - last - 1)
            log.warning("history: %s entries %d..%d are gone from Redis (trimmed?): the "
                        "history lacks them (shardex history --check names them)", key,
                        last + 1, first - 1)  # fmt: skip
        rows = new_rows()
        applied = last
        for eid, fields in entries:
            try:
                got = self._rows(shard, what, fields)
            except (KeyError, ValueError, TypeError) as exc:  # not an entry of ours: skipped
                MALFORMED.labels(key).inc()
                log.warning("history: %s entry %s skipped, malformed: %r", key, eid, exc)
                got = []
            if got is WAIT:
                WAITING.labels(key).set(1)
                break
            for table, row in got:
                rows[table].append(row)
            applied = int(eid.partition("-")[0])
        else:
            WAITING.labels(key).set(0)
        if applied == last:
            return 0
        self._commit(rows, key, applied)
        return sum(len(r) for r in rows.values()) or 1

    def _rows(self, shard: int, what: str, fields: dict) -> list[tuple[str, tuple]] | None:
        """The (table, row) pairs of one entry of a ``what`` stream (``WAIT``: not yet)."""
        if what == "events":
            return engine_rows(shard, fields, self.account_of)
        if what == "orders":
            return [(ORDERS.name, order_row(shard, fields))]
        row = balance_row(shard, fields)
        return [] if row is None else [(BALANCES.name, row)]

    def _commit(self, rows: dict[str, list[tuple]], key: str, applied: int) -> None:
        inserted = self.store.apply(rows, {key: applied})
        self.pos[key] = applied
        for table, n in inserted.items():  # (rows already there, from a replay: not counted)
            ROWS.labels(table).inc(n)
        for row in rows[ORDERS.name]:  # (account, symbol, order_id, ...)
            self._remember(row[1], row[2], row[0])

    def _remember(self, symbol: str, oid: str, account: str) -> None:
        if len(self._accounts) > ACCOUNT_CACHE:
            self._accounts.clear()
        self._accounts[(symbol, oid)] = account

    def account_of(self, symbol: str, oid: str) -> str | None:
        """The account that placed order ``oid`` of ``symbol`` (None: not known yet)."""
        acc = self._accounts.get((symbol, oid))
        if acc is None:
            found = self.store.query(
                f"SELECT account FROM {ORDERS.name} WHERE symbol = ? AND order_id = ? "
                "ORDER BY hid DESC LIMIT 1",
                (symbol, oid),
            )
            if found:
                acc = found[0][0]
                self._remember(symbol, oid, acc)
        return acc

    def measure_lag(self) -> dict[str, int]:
        """Per stream, the seqs its newest Redis entry is ahead of the last applied."""
        out = {}
        for key, _, _ in self.streams():
            top = self.redis.xrevrange(key, "+", "-", count=1)
            newest = int(top[0][0].partition("-")[0]) if top else 0
            out[key] = max(0, newest - self.pos.get(key, 0))
            LAG.labels(key).set(out[key])
        return out

    def run(self, stop: threading.Event, errors: Iterable[type[BaseException]] = ()) -> None:
        """Rounds until ``stop`` is set: idle rounds pause ``poll_interval``; a Redis or
        database error in ``errors`` is logged and retried after a pause (nothing is lost:
        the positions are the database's)."""
        retry = tuple(errors)
        next_lag = 0.0
        while not stop.is_set():
            try:
                n = self.step()
                if time.monotonic() >= next_lag:
                    self.measure_lag()
                    next_lag = time.monotonic() + 1.0
            except retry as exc:
                log.warning("history writer: %s; retrying", exc)
                self.pos = self._reload_positions()
                stop.wait(1.0)
                continue
            if not n:
                stop.wait(self.cfg.poll_interval)

    def _reload_positions(self) -> dict[str, int]:
        try:
            return self.store.positions()
        except Exception:  # (the database itself is away: keep ours, retry later)
            return self.pos
