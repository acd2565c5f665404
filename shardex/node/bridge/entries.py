"""Stream entries: an event → (stream ID, fields) as the bridge writes it to Redis.

Pure formatting (no Redis): an engine event becomes an entry of ``shardex:events:<i>`` (a trade
also of ``shardex:trades:<SYMBOL>``), an account shard's balance or fee event an entry of
``shardex:balances:<j>``, and a forwarded new order an entry of ``shardex:orders:<j>`` (the
order's fields as its account shard placed it: account, side, type, price, qty..., which no
engine event carries). IDs are ``<seq>-0``, so Redis itself refuses a second copy. Every
entry has ``ts``: the event's exchange time (decimal ms since the Unix epoch, UTC).
"""

from __future__ import annotations

from collections.abc import Mapping

from shardex.accounts.assets import AssetTable
from shardex.accounts.codes import AE_BALANCE, AE_FEES, AE_FILL, AE_FORWARD, AE_RESTRICTED
from shardex.engine import Market
from shardex.engine.codes import EV_TRADE, OP_NEW
from shardex.wire.account_events import account_event_to_json
from shardex.wire.layouts import (
    AE_KIND,
    AE_SEQ,
    CMD_OP,
    EV_KIND,
    EV_SEQ,
    FWD_CMD,
    FWD_ESHARD,
    NEW_OPTS,
)
from shardex.wire.protocol import command_to_json, event_to_json

# the account shard events written to its balances stream (an admin's restrict / unrestrict
# of an account too: what a consumer of the account's history needs to see)
BALANCE_KINDS = (AE_BALANCE, AE_FEES, AE_FILL, AE_RESTRICTED)
NEW_ORDER_WIDTH = 11  # (OP_NEW, symbol, id, account, side, type, price, qty, tif, post_only, stp)
_NEW_WIDTHS = (NEW_ORDER_WIDTH, NEW_OPTS + 1)  # plain, with options (a trigger, an expire)
FORMAT_CACHE = 200_000  # cached decimal strings before the cache starts over


def event_fields(ev: tuple, markets: Mapping[str, Market], shard: int, ts: int = 0
                 ) -> list[str]:  # fmt: skip
    """The flat field list of an engine event's entry (its public JSON form with its exchange
    time ``ts``, plus its shard)."""
    return _flat(event_to_json(ev, markets, ts), shard)


class EntryFormatter:
    """Formats events into entries; trades (the bulk) with cached decimal strings."""

    def __init__(self, markets: Mapping[str, Market], assets: AssetTable) -> None:
        self.markets = markets
        self.assets = assets
        self._fmt: dict[tuple[str, int, int], str] = {}
        self._ts, self._ts_str = -1, ""  # the last time formatted (a batch's events share one)

    def item(self, ev: tuple, shard: int, ts: int = 0) -> tuple:
        """(ID, fields) of an engine event with exchange time ``ts``; a trade adds (symbol,
        trades-stream fields)."""
        if ev[EV_KIND] != EV_TRADE:
            return (f"{ev[EV_SEQ]}-0", event_fields(ev, self.markets, shard, ts))
        # Trades are the bulk: format them directly, with cached decimal strings (prices and
        # sizes repeat a lot, and Decimal formatting is the costliest step here).
        _, seq, symbol, price, qty, taker, maker, side, trade_id = ev
        cache = self._fmt
        p = cache.get((symbol, 0, price))
        if p is None:
            p = cache[(symbol, 0, price)] = self.markets[symbol].price_str(price)
        q = cache.get((symbol, 1, qty))
        if q is None:
            q = cache[(symbol, 1, qty)] = self.markets[symbol].qty_str(qty)
        if len(cache) > FORMAT_CACHE:
            cache.clear()
        if self._ts != ts:
            self._ts, self._ts_str = ts, str(ts)
        tail = ["price", p, "qty", q, "taker", taker, "maker", maker,
                "taker_side", ("buy", "sell")[side], "trade_id", str(trade_id),
                "seq", str(seq), "ts", self._ts_str, "shard", str(shard)]  # fmt: skip
        # the events stream entry is the trades stream entry plus what the stream key implies
        return (f"{seq}-0", ["ev", "trade", "symbol", symbol, *tail], symbol, tail)

    def balance_item(self, ev: tuple, shard: int, ts: int = 0) -> tuple:
        """An ``AE_BALANCE``/``AE_FEES``/``AE_FILL``/``AE_RESTRICTED`` event → (stream id,
        fields): its public
        JSON form (``account_event_to_json``, what ``shardex replay`` prints) with its exchange
        time ``ts``, plus its shard."""
        fields = _flat(account_event_to_json(ev, self.assets, self.markets, ts), shard)
        return (f"{ev[AE_SEQ]}-0", fields)

    def order_item(self, ev: tuple, shard: int, ts: int = 0) -> tuple | None:
        """A forward of a new order → (stream id, fields) of ``shardex:orders:<j>``: the
        order's public JSON form (``command_to_json``, without ``op``), its engine shard, seq
        and account shard. None for any other event, or a command that does not format (an
        entry is only ever written for a well-formed order)."""
        if ev[AE_KIND] != AE_FORWARD or len(ev) <= FWD_CMD:
            return None
        cmd = ev[FWD_CMD]
        if type(cmd) is not tuple or len(cmd) not in _NEW_WIDTHS or cmd[CMD_OP] != OP_NEW:
            return None
        try:
            obj = order_fields(command_to_json(cmd, self.markets), ev[FWD_ESHARD], ev[AE_SEQ])
        except (KeyError, ValueError, TypeError, IndexError, AttributeError):
            return None
        if obj is None:
            return None
        obj["ts"] = ts  # (its exchange time, as on every entry; not a field of the order)
        return (f"{ev[AE_SEQ]}-0", _flat(obj, shard))


def order_fields(cmd: Mapping, eshard: object, seq: int) -> dict | None:
    """A forwarded new order's public JSON form (``command_to_json``) → the fields of its
    ``shardex:orders:<j>`` entry (before the shard): the order without ``op``, ``post_only``
    and ``stp`` always present, its engine shard and the account shard's seq. None when it is
    not a new order with a string id and account. The history check derives the same fields
    from a journal replay with it."""
    if cmd.get("op") != "new" or not all(type(cmd.get(k)) is str for k in ("id", "account")):
        return None
    obj = {k: v for k, v in cmd.items() if k != "op"}
    obj["post_only"] = "true" if cmd.get("post_only") else "false"
    obj.setdefault("stp", "none")
    obj["eshard"] = eshard
    obj["seq"] = seq
    return obj


def _flat(obj: dict, shard: int) -> list[str]:
    """A JSON object's fields as a flat list of strings, then the shard: an entry's fields."""
    out = []
    for k, v in obj.items():
        out.append(k)
        out.append(v if isinstance(v, str) else ("true" if v else "false") if isinstance(v, bool)
                   else str(v))  # fmt: skip
    out.append("shard")
    out.append(str(shard))
    return out
