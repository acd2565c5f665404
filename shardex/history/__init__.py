"""Order, fill and balance history in a database (SQLite by default, PostgreSQL).

One concern per module: ``schema`` (the tables, both dialects), ``store`` (the connection and
its one transactional write), ``rows`` (the pure core: stream entry → rows), ``writer`` (the
loop: Redis streams → database, exactly once and resumable), ``query`` (filtered keyset
pages, CSV), ``api`` (``History``, the SDK), ``check`` (the database against the journals).
docs/history.md says what a user needs.
"""

from __future__ import annotations

from shardex.history.api import History
from shardex.history.query import Page, Query, QueryError
from shardex.history.store import HistoryDbError, Store

__all__ = ["History", "HistoryDbError", "Page", "Query", "QueryError", "Store"]
