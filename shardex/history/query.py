"""Reading the history: one account's orders, fills or balance changes, filtered and paged.

Pages are keyset pages over ``hid`` (the insertion order), oldest first: the cursor of a page
is its last row's ``hid``, and the next page is "``hid`` above it". A row committed while a
reader pages gets a higher ``hid`` than every row already there, so it shows up on a later
page; no row is ever skipped or shown twice (OFFSET paging would do both). The cursor names
its kind (``o123``, ``f123``, ``b123``) so a cursor of one kind is refused by another.

An order row says where the order stands now: from the engine's events about it and its
fills, in engine order: ``open`` (accepted, open qty left), ``filled``, ``cancelled``,
``rejected`` or ``pending`` (the engine's word not written yet).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.history.schema import BALANCES, FILLS, ORDER_EVENTS, ORDERS, Table
from shardex.history.store import Store

KINDS = ("orders", "fills", "balances")
TABLE_OF = {"orders": ORDERS, "fills": FILLS, "balances": BALANCES}
MAX_LIMIT = 10_000
# the columns each kind shows, in order (``cursor`` first; ``id`` is the order id)
COLUMNS = {
    "orders": ("cursor", "ts", "account", "symbol", "id", "side", "type", "price", "qty", "tif",
               "post_only", "stp", "status", "filled"),
    "fills": ("cursor", "ts", "account", "symbol", "order_id", "role", "side", "price", "qty",
              "trade_id"),
    "balances": ("cursor", "ts", "account", "asset", "available", "held", "why", "ref"),
}  # fmt: skip


class QueryError(ValueError):
    """A query the history refuses (``code`` is stable, the message is for humans)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Page:
    """One page: its rows (dicts of ``COLUMNS[kind]``) and the cursor of the next page
    (None when this page was not full: nothing more right now)."""

    kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    next: str | None = None


def parse_time(text: str | int | None) -> int | None:
    """``--since``/``--until``: integer ms since the epoch, or an ISO 8601 time (UTC when it
    names no zone) → ms. QueryError ``bad_time`` for anything else."""
    if text is None or isinstance(text, int):
        return text
    s = text.strip()
    if s.isdigit():
        return int(s)
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError("bad_time", f"not a time: {text!r} (ms since epoch or ISO 8601)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def parse_cursor(kind: str, cursor: str | None) -> int:
    """The ``hid`` a cursor of ``kind`` stands for (0: from the start)."""
    if cursor is None or cursor == "":
        return 0
    tag, digits = cursor[:1], cursor[1:]
    if tag != kind[0] or not digits.isdigit() or len(digits) > 18:
        raise QueryError("bad_cursor", f"not a cursor of {kind}: {cursor!r}")
    return int(digits)


@dataclass(frozen=True)
class Query:
    """One page request; ``symbol`` filters orders and fills by pair, balances by asset (a
    pair ``B-Q`` means both its assets)."""

    account: str
    kind: str = "orders"
    symbol: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 100
    after: str | None = None

    def checked(self) -> Query:
        if self.kind not in KINDS:
            raise QueryError("bad_kind", f"kind must be one of {', '.join(KINDS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError("bad_limit", f"limit must be 1..{MAX_LIMIT}")
        if not self.account:
            raise QueryError("bad_account", "an account is needed")
        parse_cursor(self.kind, self.after)
        return self

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause (``?`` placeholders) and its parameters."""
        clauses = ["account = ?", "hid > ?"]
        params: list[Any] = [self.account, parse_cursor(self.kind, self.after)]
        if self.symbol:
            if self.kind == "balances":
                assets = self.symbol.split("-") if "-" in self.symbol else [self.symbol]
                clauses.append("asset IN (" + ", ".join("?" for _ in assets) + ")")
                params += assets
            else:
                clauses.append("symbol = ?")
                params.append(self.symbol)
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        return " AND ".join(clauses), params


def page(store: Store, q: Query) -> Page:
    """One page of ``q`` (checked first: QueryError for a bad one)."""
    q = q.checked()
    table: Table = TABLE_OF[q.kind]
    where, params = q.where()
    cols = ("hid", *table.names)
    raw = store.query(
        f"SELECT {', '.join(cols)} FROM {table.name} WHERE {where} ORDER BY hid LIMIT ?",
        [*params, q.limit],
    )
    dicts = [dict(zip(cols, r, strict=True)) for r in raw]
    if q.kind == "orders":
        _add_status(store, dicts)
    rows = [_shown(q.kind, d) for d in dicts]
    nxt = f"{q.kind[0]}{raw[-1][0]}" if len(raw) == q.limit else None
    return Page(q.kind, rows, nxt)


def _shown(kind: str, d: dict[str, Any]) -> dict[str, Any]:
    d["cursor"] = f"{kind[0]}{d['hid']}"
    if kind == "orders":
        d["id"] = d["order_id"]
        d["post_only"] = bool(d["post_only"])
    return {c: d.get(c) for c in COLUMNS[kind]}


def _add_status(store: Store, orders: list[dict[str, Any]]) -> None:
    """Each order's ``status`` and ``filled`` from the engine's events and fills about it."""
    for o in orders:
        key = (o["symbol"], o["order_id"])
        evs = store.query(
            f"SELECT eseq, ev, qty FROM {ORDER_EVENTS.name} WHERE symbol = ? AND order_id = ?",
            key,
        )
        fills = store.query(
            f"SELECT eseq, 'fill', qty FROM {FILLS.name} WHERE symbol = ? AND order_id = ? "
            "AND account = ?",
            (*key, o["account"]),
        )
        o["status"], o["filled"] = order_status(o["qty"], sorted(evs + fills))


def order_status(qty: str, events: Sequence[tuple[int, str, str | None]]) -> tuple[str, str]:
    """(status, filled qty) of an order of ``qty`` from its engine events in seq order
    (``(seq, ev, qty)``, ``ev`` accepted|amended|cancelled|rejected|fill). A ``rejected``
    after the order was accepted is not about it: a cancel or amend of it the engine
    refused, or another new order that reused its id. Pure."""
    try:
        open_qty, filled = Decimal(qty), Decimal(0)
    except InvalidOperation:
        return "unknown", "0"
    status = "pending"
    for _, ev, q in events:
        if ev == "rejected":
            if status == "pending":  # (the order itself refused)
                return "rejected", str(filled)
            continue  # a refused cancel or amend of it, or another order's duplicate id
        if ev == "cancelled":
            return "cancelled", str(filled)
        if ev == "fill" and q is not None:
            filled += Decimal(q)
            open_qty -= Decimal(q)
            status = "filled" if open_qty <= 0 else "open"
        elif ev == "amended" and q is not None:
            open_qty = Decimal(q)
            status = "open"
        elif ev == "accepted":
            status = "open" if open_qty > 0 else "filled"
    return status, str(filled)


def to_csv(kind: str, rows: Sequence[dict[str, Any]], header: bool = True) -> str:
    """Rows of ``kind`` as CSV (RFC 4180; ``None`` is an empty field)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(COLUMNS[kind])
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in COLUMNS[kind]])
    return buf.getvalue()
