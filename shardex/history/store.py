"""The history database: one connection, SQLite (stdlib ``sqlite3``, WAL) or PostgreSQL
(psycopg 3), behind the same few methods.

A URL picks the database: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain
file path for SQLite; ``postgresql://…`` (or ``postgres://…``) for PostgreSQL, passed to psycopg as
is (a unix socket: ``postgresql://user@/db?host=/run/postgresql``). The SQL is written once
with ``?`` placeholders; PostgreSQL's are ``%s``.

``apply`` is the writer's only write: rows of any tables plus the new stream positions, in ONE
transaction, so a crash leaves either all of a batch (rows and positions) or none of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from shardex.history.schema import BY_NAME, POSITIONS, ddl, insert_sql

PG_SCHEMES = ("postgresql://", "postgres://")
DB_ERRORS = (psycopg.Error, sqlite3.Error)  # what a database that went away raises


class HistoryDbError(Exception):
    """The database cannot be opened or used (a bad URL, a server that refuses)."""


def dialect_of(url: str) -> str:
    """The dialect of a history database URL: "postgresql" or "sqlite"."""
    return "postgresql" if url.startswith(PG_SCHEMES) else "sqlite"


def sqlite_path(url: str) -> str:
    """The file of a SQLite URL, as SQLAlchemy spells them: ``sqlite:///data/h.db`` is
    relative, ``sqlite:////var/h.db`` absolute (``sqlite:PATH`` or a plain path work too)."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite:"):
        return url[len("sqlite:") :]
    return url


class Store:
    """One connection to the history database (not shared between threads)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open ``url``; ``create``: make the tables if missing (the writer; readers too, so an
        empty database answers empty pages rather than an error)."""
        self.url = url
        self.dialect = dialect_of(url)
        try:
            if self.dialect == "postgresql":
                self.conn: Any = psycopg.connect(url, autocommit=False)
            else:
                path = sqlite_path(url)
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # isolation_level None: transactions are begun explicitly (BEGIN IMMEDIATE)
                self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
        except (psycopg.Error, sqlite3.Error, OSError) as exc:
            raise HistoryDbError(f"cannot open history database: {exc}") from None
        if create:
            self._transaction(lambda cur: [cur.execute(s) for s in ddl(self.dialect)])

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _transaction(self, body: Any) -> Any:
        """Run ``body(cursor)`` in one transaction: committed, or rolled back on any error."""
        cur = self.conn.cursor()
        try:
            if self.dialect == "sqlite":
                cur.execute("BEGIN IMMEDIATE")
            out = body(cur)
            self.conn.commit() if self.dialect == "postgresql" else cur.execute("COMMIT")
            return out
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            cur.close()

    def apply(
        self, rows: Mapping[str, Sequence[tuple]], positions: Mapping[str, int]
    ) -> dict[str, int]:
        """Insert ``rows`` (table name → row tuples in the table's column order; a row whose
        origin is already there is skipped) and set ``positions`` (stream → last seq applied),
        in one transaction. Returns the rows actually inserted, per table."""

        def body(cur: Any) -> dict[str, int]:
            n = {}
            for name, batch in rows.items():
                if batch:
                    cur.executemany(self._sql(insert_sql(BY_NAME[name])), batch)
                    n[name] = max(cur.rowcount, 0)
            upsert = (f"INSERT INTO {POSITIONS} (stream, last_seq) VALUES (?, ?) ON CONFLICT "
                      "(stream) DO UPDATE SET last_seq = excluded.last_seq")  # fmt: skip
            if positions:
                cur.executemany(self._sql(upsert), list(positions.items()))
            return n

        return dict(self._transaction(body))

    def positions(self) -> dict[str, int]:
        """Stream → the seq of its last entry applied (absent: nothing yet)."""
        return {s: int(q) for s, q in self.query(f"SELECT stream, last_seq FROM {POSITIONS}")}

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Rows of a read (``?`` placeholders); ends the read transaction it opened."""
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            out = [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()
        if self.dialect == "postgresql":
            self.conn.commit()  # (a read opens a transaction in psycopg: end it)
        return out

    def close(self) -> None:
        try:
            self.conn.close()
        except (psycopg.Error, sqlite3.Error):
            pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
