"""The history's SDK: ``History(url)`` reads one account's orders, fills and balance changes
from the history database (what ``shardex history`` prints), page by page or all of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shardex.history.query import Page, Query, page, parse_time, to_csv
from shardex.history.store import Store


class History:
    """A reader of the history database at ``url`` (``sqlite:///…`` or ``postgresql://…``;
    a plain path is a SQLite file). Use as a context manager, or ``close()`` it."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)

    def page(
        self,
        account: str,
        kind: str = "orders",
        *,
        symbol: str | None = None,
        since: str | int | None = None,
        until: str | int | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page:
        """One page, oldest first: ``Page.rows`` (dicts) and ``Page.next``, the cursor to pass
        as ``after`` for the next page (None: nothing more yet). ``since``/``until``: ms
        since the epoch or ISO 8601 (exchange time; rows without one are left out).
        Raises ``QueryError`` (with a stable ``code``) for a bad request."""
        q = Query(account, kind, symbol, parse_time(since), parse_time(until), limit, after)
        return page(self.store, q)

    def rows(self, account: str, kind: str = "orders", **filters: Any) -> Iterator[dict]:
        """Every row of ``kind`` matching the filters, walking the pages."""
        after = filters.pop("after", None)
        while True:
            p = self.page(account, kind, after=after, **filters)
            yield from p.rows
            if p.next is None:
                return
            after = p.next

    def csv(self, account: str, kind: str = "orders", **filters: Any) -> str:
        """Every matching row of ``kind`` as CSV text, with a header line."""
        return to_csv(kind, list(self.rows(account, kind, **filters)))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
