"""Open orders and their holds, order by order (pure: no sockets, no clock).

Two uses of the same rows:

* an account's open orders with what each holds (``shardex orders ACCOUNT``,
  ``Client.open_orders``): before, nothing listed them, so a hold that outlived its order (or an
  order resting without its hold) could not even be seen;
* the per-order audit (``shardex audit``): every live order in every book must be held by its
  account shard for at least its open quantity (at its price or more, for a buy), and every
  held order must be live in its book. Counting orders on both sides (as the live check did)
  hides one order resting unfunded while another's hold stays for nothing.

Rows on the wire are lists of plain values. An account shard's row: ``[account, symbol, id,
side, open lots, price ticks (None: market sell), cap ticks, held units, pending amends]``; an
engine shard's: ``[account, symbol, id, side, open lots, price ticks]``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from decimal import Decimal
from itertools import chain, islice
from operator import itemgetter
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.engine.codes import BUY
from shardex.wire.layouts import (
    ROW_ACCOUNT,
    ROW_CAP,
    ROW_HELD,
    ROW_ID,
    ROW_OPEN,
    ROW_PRICE,
    ROW_SIDE,
    ROW_SYMBOL,
)
from shardex.wire.protocol import OP_AUDIT, OP_BOOK

PAGE = 2_000  # rows per answer at most (the caller asks again from the next offset)
MAX_LISTED = 2_000  # one account's orders in one answer (more: ``truncated``)


Index = Mapping[str, Mapping[tuple[str, str], Any]]  # account → (symbol, id) → held order


def held_rows(by_account: Index, offset: int, limit: int = PAGE) -> list[list[Any]]:
    """Up to ``limit`` of an account shard's held orders from ``offset``, account by account
    (``by_account``: the core's ``open_by``). Whole accounts before ``offset`` are skipped
    by their count, so a page costs its rows, one step per account before it and the orders
    it skips in the account it starts in, not a walk over every order before ``offset`` (an
    audit of n orders of many accounts read page by page was O(n²) of the writer loop)."""
    skip, rows = max(0, offset), []
    for acct, mine in by_account.items():
        if skip >= len(mine):
            skip -= len(mine)
            continue
        for (symbol, oid), o in islice(mine.items(), skip, skip + limit - len(rows)):
            rows.append([acct, symbol, oid, o.side, o.rem, o.price, o.cap, o.held, o.pending])
        skip = 0
        if len(rows) >= limit:
            break
    return rows


def grid(table: AssetTable, symbol: str) -> tuple[Decimal, Decimal]:
    """A market's (tick, lot) from the asset table (exact: units divide both)."""
    pair = table.pairs[symbol]
    lot = pair.base_per_lot * table.units[pair.base]
    tick = pair.quote_per_tick_lot * table.units[pair.quote] / lot
    return tick.normalize(), lot.normalize()


def account_orders(by_account: Index, account: str, table: AssetTable) -> dict[str, Any]:
    """One account's open orders for humans: decimal strings (price, open qty, held and its
    asset; held at the asset's precision, as balances print), at most ``MAX_LISTED``, by
    symbol then id. Looked up through ``by_account`` (the core's ``open_by``): the account's
    own orders only, never a walk over the shard's."""
    mine = sorted(by_account.get(account, {}).items(), key=itemgetter(0))
    rows, grids = [], {}
    for (symbol, oid), o in mine[:MAX_LISTED]:
        if symbol not in grids:
            grids[symbol] = grid(table, symbol)
        tick, lot = grids[symbol]
        pair = table.pairs[symbol]
        asset = pair.quote if o.side == BUY else pair.base
        rows.append({
            "symbol": symbol, "id": oid, "side": "buy" if o.side == BUY else "sell",
            "price": None if o.price is None else f"{(o.price * tick).quantize(tick):f}",
            "open": f"{(o.rem * lot).quantize(lot):f}", "held": table.fixed(asset, o.held),
            "asset": asset, "pending_amends": o.pending,
        })  # fmt: skip
    return {"account": account, "orders": rows, "truncated": len(mine) > MAX_LISTED}


def book_rows(book: Any, offset: int, limit: int = PAGE) -> list[list[Any]]:
    """Up to ``limit`` live orders of an engine ``Book`` from ``offset``: its resting orders,
    then its pending stop / take-profit orders (held like any other; ``book_total``)."""
    pending = book.stops.orders.values() if book.stops is not None else ()
    first = max(0, offset)
    return [
        [o.account, book.symbol, o.id, o.side, o.qty, o.price]
        for o in islice(chain(book.orders.values(), pending), first, first + limit)
    ]


def book_total(book: Any) -> int:
    """How many rows ``book_rows`` pages through."""
    return len(book.orders) + (len(book.stops.orders) if book.stops is not None else 0)


def _key(row: list[Any]) -> tuple[Any, Any, Any]:
    """An order row's (account, symbol, id)."""
    return row[ROW_ACCOUNT], row[ROW_SYMBOL], row[ROW_ID]


def audit_orders(
    held_before: Iterable[list[Any]], live: Iterable[list[Any]], held_after: Iterable[list[Any]]
) -> list[str]:
    """Problems, order by order, between the account shards' held orders (read before and
    after the books) and the engine shards' live orders ([] when every live order is covered
    by its hold and every hold by a live order).

    Reading is not atomic across processes, so only what both reads of the holds agree on
    counts: an order held in both but live in no book (its hold stays for nothing), an order
    live in a book but held in neither (it rests unfunded), or live for more lots, or a buy at
    a higher price, than its hold covers. An order placed or ended between the reads is in
    one of them only and is not judged."""
    before = {_key(r): r for r in held_before}
    after = {_key(r): r for r in held_after}
    books = {_key(r): r for r in live if r[ROW_OPEN] > 0}  # (qty 0: dead, not live)
    out = []
    for key, r in books.items():
        h = before.get(key) or after.get(key)
        account, symbol, oid = key
        who = f"{symbol} {oid} of {account}"
        side, lots, price = r[ROW_SIDE], r[ROW_OPEN], r[ROW_PRICE]
        if h is None:
            out.append(f"{who}: live in its book ({lots} lots) and held by no account shard")
        elif h[ROW_SIDE] != side or lots > h[ROW_OPEN] or (side == BUY and price > h[ROW_CAP]):
            out.append(f"{who}: live {lots} lots at {price} side {side}, but held for "
                       f"{h[ROW_OPEN]} lots at {h[ROW_CAP]} side {h[ROW_SIDE]}")  # fmt: skip
    for key, h in before.items():
        held = h[ROW_HELD]
        if key in after and key not in books and after[key][ROW_HELD] == held and held > 0:
            account, symbol, oid = key
            out.append(f"{symbol} {oid} of {account}: holds {held} units and is live in no "
                       "book")  # fmt: skip
    return sorted(out)


# -- reading them from a live cluster (driven by Client and AsyncClient alike) --------------------
#
# A plan is a generator: it yields ``(routing key, read command, engine shard or None for an
# account shard)``, is sent each answer's map, and returns its result; the clients only carry
# the messages, so the sync and async SDKs run the same logic.

Ask = tuple[bytes, tuple, "int | None"]


class PlanError(Exception):
    """An answer the plan cannot use (an error map, or the wrong shape)."""


def _page(raw: Mapping[str, Any], what: str) -> tuple[list[list[Any]], int]:
    if "error" in raw:
        raise PlanError(f"{what}: {str(raw['error'])[:200]}")
    rows, total = raw.get("orders"), raw.get("total")
    if type(rows) not in (list, tuple) or type(total) is not int:
        raise PlanError(f"{what}: malformed answer")
    if not all(type(r) in (list, tuple) and len(r) >= 6 for r in rows):
        raise PlanError(f"{what}: malformed order row")
    return [list(r) for r in rows], total


def held_plan(accounts: int) -> Generator[Ask, Mapping[str, Any], list[list[Any]]]:
    """Every order every account shard holds funds for (pages of ``(OP_AUDIT, offset)``)."""
    rows: list[list[Any]] = []
    for j in range(accounts):
        offset = 0
        while True:
            got, total = _page((yield (f"%{j}".encode(), (OP_AUDIT, offset), None)),
                               f"account shard {j}")  # fmt: skip
            rows += got
            offset += len(got)
            if not got or offset >= total:
                break
    return rows


def live_plan(
    symbols: Iterable[str], shard_of: Callable[[str], int]
) -> Generator[Ask, Mapping[str, Any], list[list[Any]]]:
    """Every live order of every book (pages of ``(OP_BOOK, symbol, 1, offset)``)."""
    rows: list[list[Any]] = []
    for symbol in symbols:
        offset = 0
        while True:
            ask = (symbol.encode(), (OP_BOOK, symbol, 1, offset), shard_of(symbol))
            got, total = _page((yield ask), f"book {symbol}")
            rows += got
            offset += len(got)
            if not got or offset >= total:
                break
    return rows


def audit_plan(
    accounts: int, symbols: Iterable[str], shard_of: Callable[[str], int]
) -> Generator[Ask, Mapping[str, Any], list[str]]:
    """Holds, books, holds again → ``audit_orders``' problems."""
    before = yield from held_plan(accounts)
    live = yield from live_plan(list(symbols), shard_of)
    after = yield from held_plan(accounts)
    return audit_orders(before, live, after)


def persistent(rounds: Iterable[list[str]]) -> list[str]:
    """The problems every round found (a round with none ends it: an order in flight between
    the tiers shows in one round, not in all)."""
    found: set[str] | None = None
    for problems in rounds:
        found = set(problems) if found is None else found & set(problems)
        if not found:
            return []
    return sorted(found or ())
