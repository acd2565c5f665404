"""Stream entries → history rows: the pure core of the history writer (no Redis, no database).

Input is an entry's fields as ``str → str`` (what the bridge wrote, or the same JSON objects a
journal replay gives, stringified). The account of a fill is not in the trade: it is the
account that placed the order, known from ``shardex:orders:<j>``. ``account_of`` answers it;
a trade whose order is not known yet returns ``WAIT`` (the writer stops that engine stream
there until the orders stream has caught up: every order reaches an engine shard through an
account shard, so its entry comes, and writing the fill without its account would be wrong).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shardex.history.schema import BALANCES, FILLS, ORDER_EVENTS, ORDERS

Fields = Mapping[str, str]
AccountOf = Callable[[str, str], "str | None"]
WAIT = None  # an engine entry that must wait for its orders' accounts
# (a stop / take-profit order's ``triggered`` keeps the last trade price that fired it as price)
ORDER_EVENT_KINDS = ("accepted", "amended", "cancelled", "rejected", "triggered")
OTHER = {"buy": "sell", "sell": "buy"}


def ts_of(fields: Fields) -> int | None:
    """The entry's exchange time (ms), when it carries one that is a positive whole number
    (0: the bridge did not know it, e.g. an event journaled before exchange time existed)."""
    ts = fields.get("ts")
    if ts is None:
        return None
    try:
        n = int(ts)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def order_row(shard: int, f: Fields) -> tuple:
    """An entry of ``shardex:orders:<shard>`` → an ``hx_orders`` row."""
    return (f["account"], f["symbol"], f["id"], f["side"], f["type"], f.get("price"),
            f["qty"], f["tif"], 1 if f.get("post_only") == "true" else 0,
            f.get("stp", "none"), int(f["eshard"]), shard, int(f["seq"]), ts_of(f))  # fmt: skip


def balance_row(shard: int, f: Fields) -> tuple | None:
    """An entry of ``shardex:balances:<shard>`` → an ``hx_balances`` row (None for the fee
    ledger's ``fees`` entries: they belong to no account)."""
    if f.get("ev") != "balance":
        return None
    return (f["account"], f["asset"], f["available"], f["held"], f["why"], f["ref"], shard,
            int(f["seq"]), ts_of(f))  # fmt: skip


def engine_rows(shard: int, f: Fields, account_of: AccountOf) -> list[tuple[str, tuple]] | None:
    """An entry of ``shardex:events:<shard>`` → (table, row) pairs: a trade gives two fills
    (taker and maker, each with its account), an order's other events one
    ``hx_order_events`` row. ``WAIT`` (None) when a trade's order is not known yet."""
    ev, seq, ts = f.get("ev"), int(f["seq"]), ts_of(f)
    symbol = f.get("symbol", "")
    if ev == "trade":
        taker, maker = f["taker"], f["maker"]
        ta, ma = account_of(symbol, taker), account_of(symbol, maker)
        if ta is None or ma is None:
            return WAIT
        side = f["taker_side"]
        common = (f["price"], f["qty"], int(f["trade_id"]), shard, seq, ts)
        maker_side = OTHER.get(side, side)
        return [
            (FILLS.name, (ta, symbol, taker, "taker", side, *common)),
            (FILLS.name, (ma, symbol, maker, "maker", maker_side, *common)),
        ]
    if ev in ORDER_EVENT_KINDS:
        row = (symbol, f.get("id", ""), ev, f.get("reason"), f.get("code"), f.get("qty"),
               f.get("price", f.get("last")), shard, seq, ts)  # fmt: skip
        return [(ORDER_EVENTS.name, row)]
    return []


def new_rows() -> dict[str, list[tuple]]:
    """An empty batch: table name → rows."""
    return {t.name: [] for t in (ORDERS, ORDER_EVENTS, FILLS, BALANCES)}
