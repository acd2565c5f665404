"""The history database's tables, declared once for both SQL dialects (SQLite, PostgreSQL).

Every row names where it came from (``eshard``/``eseq``: an engine shard's event;
``ashard``/``aseq``: an account shard's event) and that origin is its UNIQUE key, so writing a
stream entry a second time (a replay after a crash) inserts nothing. ``hid`` is the insertion
order: keyset pagination walks it, and because one writer inserts in one transaction at a
time, a row committed later always has a higher ``hid`` (a page never skips a row committed
while a reader pages). Amounts are the exchange's exact decimal strings (TEXT, never floats);
``ts`` is the exchange time of the event (integer ms since the Unix epoch, UTC) when the
stream entry carries it, else NULL. ``hx_positions`` holds, per stream, the seq of the last
entry applied: written in the same transaction as the rows it covers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """A table: its name, its columns (name, SQL type) after ``hid``, its unique origin key
    and the indexes the queries use."""

    name: str
    columns: tuple[tuple[str, str], ...]
    unique: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


ORDERS = Table(
    "hx_orders",
    (("account", "TEXT NOT NULL"), ("symbol", "TEXT NOT NULL"), ("order_id", "TEXT NOT NULL"),
     ("side", "TEXT NOT NULL"), ("type", "TEXT NOT NULL"), ("price", "TEXT"),
     ("qty", "TEXT NOT NULL"), ("tif", "TEXT NOT NULL"), ("post_only", "INTEGER NOT NULL"),
     ("stp", "TEXT NOT NULL"), ("eshard", "INTEGER NOT NULL"), ("ashard", "INTEGER NOT NULL"),
     ("aseq", "BIGINT NOT NULL"), ("ts", "BIGINT")),
    ("ashard", "aseq"),
    (("account", "hid"), ("symbol", "order_id")),
)  # fmt: skip
# the engine's word on an order: accepted, amended (new open qty and price), cancelled
# (reason, open qty removed), rejected (reason, code)
ORDER_EVENTS = Table(
    "hx_order_events",
    (("symbol", "TEXT NOT NULL"), ("order_id", "TEXT NOT NULL"), ("ev", "TEXT NOT NULL"),
     ("reason", "TEXT"), ("code", "TEXT"), ("qty", "TEXT"), ("price", "TEXT"),
     ("eshard", "INTEGER NOT NULL"), ("eseq", "BIGINT NOT NULL"), ("ts", "BIGINT")),
    ("eshard", "eseq"),
    (("symbol", "order_id"),),
)  # fmt: skip
# one row per side of a trade: the taker's and the maker's fill, each with its account
FILLS = Table(
    "hx_fills",
    (("account", "TEXT NOT NULL"), ("symbol", "TEXT NOT NULL"), ("order_id", "TEXT NOT NULL"),
     ("role", "TEXT NOT NULL"), ("side", "TEXT NOT NULL"), ("price", "TEXT NOT NULL"),
     ("qty", "TEXT NOT NULL"), ("trade_id", "BIGINT NOT NULL"), ("eshard", "INTEGER NOT NULL"),
     ("eseq", "BIGINT NOT NULL"), ("ts", "BIGINT")),
    ("eshard", "eseq", "role"),
    (("account", "hid"), ("symbol", "order_id")),
)  # fmt: skip
BALANCES = Table(
    "hx_balances",
    (("account", "TEXT NOT NULL"), ("asset", "TEXT NOT NULL"), ("available", "TEXT NOT NULL"),
     ("held", "TEXT NOT NULL"), ("why", "TEXT NOT NULL"), ("ref", "TEXT NOT NULL"),
     ("ashard", "INTEGER NOT NULL"), ("aseq", "BIGINT NOT NULL"), ("ts", "BIGINT")),
    ("ashard", "aseq"),
    (("account", "hid"),),
)  # fmt: skip
TABLES = (ORDERS, ORDER_EVENTS, FILLS, BALANCES)
BY_NAME = {t.name: t for t in TABLES}
POSITIONS = "hx_positions"


def ddl(dialect: str) -> list[str]:
    """CREATE statements (idempotent) for ``dialect`` "sqlite" or "postgresql"."""
    serial = "BIGSERIAL PRIMARY KEY" if dialect == "postgresql" else "INTEGER PRIMARY KEY"
    out = [f"CREATE TABLE IF NOT EXISTS {POSITIONS} (stream TEXT PRIMARY KEY, "
           "last_seq BIGINT NOT NULL)"]  # fmt: skip
    for t in TABLES:
        cols = ", ".join(f"{c} {typ}" for c, typ in t.columns)
        out.append(f"CREATE TABLE IF NOT EXISTS {t.name} (hid {serial}, {cols}, "
                   f"UNIQUE ({', '.join(t.unique)}))")  # fmt: skip
        for idx in t.indexes:
            name = f"{t.name}_{'_'.join(idx)}"
            out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {t.name} ({', '.join(idx)})")
    return out


def insert_sql(t: Table) -> str:
    """The insert of one row of ``t`` (``?`` placeholders) that a row of the same origin
    already there turns into a no-op."""
    marks = ", ".join("?" for _ in t.columns)
    return (f"INSERT INTO {t.name} ({', '.join(t.names)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(t.unique)}) DO NOTHING")  # fmt: skip
