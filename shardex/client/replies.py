"""Replies → what the caller sees, never raising on a peer's garbage: ``Replies`` stores each
frame's outcome per command, checks every event's shape before converting it to Decimals, and
reads the maps of reads (status, book, order state, open orders). A mixin of ``ClientCore``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shardex.client.errors import (
    MALFORMED_PREFIX,
    ShardexError,
    _bad_reply,
    _failed,
    _kept,
    _malformed,
)
from shardex.client.results import _MAX_INT, _is_int
from shardex.engine import Market
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_ADOPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_FUNDING,
    EV_INDEX,
    EV_LISTED,
    EV_MARGIN,
    EV_MARKET,
    EV_MOVED,
    EV_POSITION,
    EV_REJECTED,
    EV_TRADE,
    EV_TRIGGERED,
    OP_REJECT,
    REJ_MALFORMED,
    SIDES,
    TYPES,
    Command,
)
from shardex.wire.errors import result_error
from shardex.wire.layouts import (
    CMD_ID,
    CMD_OP,
    CMD_SYMBOL,
    EV_KIND,
    EV_SYMBOL,
    REJECT_CODE,
    REJECT_REASON,
)
from shardex.wire.protocol import (
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_LIVE,
    STATE_PENDING,
    STATE_UNKNOWN,
    event_to_json,
)


def coded_result(res: dict[str, Any]) -> dict[str, Any]:
    """A read's result map with its refusal (if any) readable: ``error`` the text, an
    ``ErrorText`` carrying its code, and ``code`` the code's public name, as the client's own
    per-shard failures show (``{"shard": j, "error": ..., "code": ...}``). Every shard codes
    its refusals; a slot this client cannot read shows as ``malformed_reply``."""
    err = result_error(res)
    return res if err is None else {**res, "error": err, "code": err.name}


class _Malformed(Exception):
    """Internal: a reply value that does not have the shape the protocol promises."""


# Event tuple layouts (see engine/codes.py): "i" non-negative int64, "s" str, "d" side (0/1),
# "n" a signed int64 (a position's size, cost and PnL; a margin move).
_EVENT_SHAPES: dict[int, str] = {
    EV_ACCEPTED: "iiss",
    EV_TRADE: "iisiissdi",
    EV_CANCELLED: "iisssi",
    EV_REJECTED: "iisssi",  # ..., reason, code (any int: a newer shard may know more codes)
    EV_AMENDED: "iissii",
    EV_MOVED: "iisiii",
    EV_ADOPTED: "iisiiii",
    EV_TRIGGERED: "iissii",  # ..., id, last trade price, trigger
    EV_MARKET: "iissiiii",  # ..., state, band_bps, max_qty, max_notional, min_qty
    EV_LISTED: "iisssss",  # ..., tick, lot, max_price, max_qty (decimal strings)
    EV_INDEX: "iisii",  # ..., index, mark (ticks)
    EV_POSITION: "iissnnn",  # ..., account, size, cost, realized
    EV_MARGIN: "iissni",  # ..., account, amount, collateral
    EV_FUNDING: "iisnni",  # ..., per lot, cumulative, remainder
}
_NEEDS_MARKET = (EV_TRADE, EV_CANCELLED, EV_AMENDED, EV_TRIGGERED)


def _item(seq: Any, i: int) -> Any:
    return seq[i] if len(seq) > i else None


def _check(value: Any, kind: str) -> bool:
    if kind == "i":
        return _is_int(value)
    if kind == "s":
        return type(value) is str
    if kind == "n":
        return type(value) is int and -_MAX_INT < value < _MAX_INT
    return type(value) is int and value in (0, 1)


class Replies:
    """Store, decode and read replies (uses ``markets``: the client's market table)."""

    markets: dict[str, Market]

    @staticmethod
    def edge_rejects(tuples: list[Command], out: list) -> None:
        """Answer, in ``out``, the commands this client could not encode (``OP_REJECT`` tuples):
        a ``rejected`` event with the reason and code, seq 0 (no shard sequenced it). Shards
        refuse an ``OP_REJECT`` from a client (``ERR_INTERNAL_OP``), so it is never sent."""
        for i, t in enumerate(tuples):
            if t and t[CMD_OP] == OP_REJECT:
                code = _item(t, REJECT_CODE)
                code = code if type(code) is int else REJ_MALFORMED
                sym, oid = (
                    v if type(v) is str else "" for v in (_item(t, CMD_SYMBOL), _item(t, CMD_ID))
                )
                reason = str(_item(t, REJECT_REASON))
                out[i] = (None, [(EV_REJECTED, 0, sym, oid, reason, code)])

    @staticmethod
    def store(idx: list[int], error: Any, results: Any, out: list) -> None:
        """Record one frame's outcome as ``(error, raw result)`` per command index."""
        if error is not None and (not isinstance(error, str) or not error):
            error = _malformed("batch error is not a non-empty string")
        if error is None and (not isinstance(results, tuple | list) or len(results) != len(idx)):
            error = _malformed("result count does not match the batch")
        if error is not None:
            error = _kept(error)
            for i in idx:
                out[i] = (error, None)
        else:
            for i, res in zip(idx, results, strict=True):
                out[i] = (None, res)

    @staticmethod
    def raw_events(out: list) -> list[tuple[str | None, tuple]]:
        """``store``'s outcomes → ``(error, event tuples)`` (the ``submit_raw`` contract)."""
        res = []
        append = res.append
        for error, evs in out:
            if error is None:
                t = type(evs)
                if t is tuple:
                    append((None, evs))
                elif t is list:
                    append((None, tuple(evs)))
                else:
                    append((_malformed("result is not an event list"), ()))
            else:
                append((error, ()))
        return res

    def event(self, ev: Any) -> dict[str, Any]:
        """One event tuple → public dict with Decimal amounts; ``_Malformed`` on a bad shape."""
        if not isinstance(ev, tuple | list) or not ev:
            raise _Malformed("event is not an array")
        kind = ev[EV_KIND]
        shape = _EVENT_SHAPES.get(kind) if type(kind) is int else None
        if shape is None:
            raise _Malformed(f"unknown event kind {str(kind)[:20]!r}")
        if len(ev) != len(shape) or not all(map(_check, ev, shape)):
            raise _Malformed(f"bad fields in a kind {kind} event")
        if kind in _NEEDS_MARKET and ev[EV_SYMBOL] not in self.markets:
            raise _Malformed(
                f"event for symbol {ev[EV_SYMBOL][:32]!r} not in the client's market table "
                "(client and cluster disagree on markets)"
            )
        d = event_to_json(tuple(ev), self.markets)
        for k in ("price", "qty", "last", "trigger"):  # (the last two: a triggered event's)
            if k in d:
                d[k] = Decimal(d[k])
        return d

    def decode(self, out: list) -> list[tuple[str | None, list[dict[str, Any]]]]:
        """``store``'s outcomes → ``(error, event dicts)``; a malformed result becomes an error."""
        decoded = []
        event = self.event
        for error, evs in out:
            if error is not None:
                decoded.append((error, []))
                continue
            try:
                if not isinstance(evs, tuple | list):
                    raise _Malformed("result is not an event list")
                decoded.append((None, [event(e) for e in evs]))
            except _Malformed as exc:
                decoded.append((_malformed(str(exc)), []))
        return decoded

    @staticmethod
    def read_result(error: Any, results: Any, what: str) -> dict[str, Any]:
        """A read's reply (status, book, order, markets) → its map, or ``ShardexError``."""
        if error is not None:
            raise _failed(what, error)
        if not isinstance(results, tuple | list) or len(results) != 1:
            raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: expected one result")
        (res,) = results
        if not isinstance(res, dict):
            raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: expected a map")
        return coded_result(res)

    @staticmethod
    def open_orders_result(raw: dict[str, Any], account: str) -> list[dict[str, Any]]:
        """An account shard's ``(OP_ORDER, account)`` answer → its open orders, amounts as
        Decimals (``price`` None for a market sell); ``ShardexError`` on an error."""
        if "error" in raw:
            raise _failed(f"orders of {account}", result_error(raw))
        try:
            rows = [dict(r) for r in raw["orders"]]
            for r in rows:
                for name in ("price", "open", "held"):
                    if r[name] is not None:
                        r[name] = Decimal(r[name])
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
            raise _bad_reply(f"orders of {account}: {MALFORMED_PREFIX}") from None
        if raw.get("truncated"):
            rows.append({"truncated": True})
        return rows

    def decimal_book(self, book: dict[str, Any]) -> dict[str, Any]:
        """Book read (ticks/lots) → Decimals; a malformed level list becomes ``ShardexError``."""
        symbol = book.get("symbol")
        m = self.markets.get(symbol) if type(symbol) is str else None
        if m is None or "error" in book:
            return book
        out = dict(book)
        for side in ("bids", "asks"):
            levels = book.get(side, ())
            if not isinstance(levels, tuple | list):
                raise _bad_reply(f"book: {MALFORMED_PREFIX}: {side} is not a list")
            conv = []
            for lvl in levels:
                if not (isinstance(lvl, tuple | list) and len(lvl) == 3 and all(map(_is_int, lvl))):
                    raise _bad_reply(f"book: {MALFORMED_PREFIX}: bad level in {side}")
                p, q, n = lvl
                conv.append((Decimal(m.price_str(p)), Decimal(m.qty_str(q)), n))
            out[side] = conv
        return out

    def order_status_map(self, raw: Any) -> dict[str, Any]:
        """An ``OP_ORDER`` answer → map with Decimal price/qty/filled and trade tuples
        ``(price, qty, trade_id)``, side as "buy"/"sell"; ``ShardexError`` when malformed."""
        if not isinstance(raw, dict):
            raise _bad_reply(f"order status: {MALFORMED_PREFIX}: expected a map")
        if "error" in raw:
            raise _failed("order status", result_error(raw))
        state = raw.get("state")
        if state not in (STATE_LIVE, STATE_PENDING, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN):
            raise _bad_reply(f"order status: {MALFORMED_PREFIX}: state {str(state)[:20]!r}")
        out: dict[str, Any] = {"state": state}
        for k in ("symbol", "id"):
            if type(raw.get(k)) is not str:
                raise _bad_reply(f"order status: {MALFORMED_PREFIX}: bad {k}")
            out[k] = raw[k]
        if not _is_int(raw.get("seq")):
            raise _bad_reply(f"order status: {MALFORMED_PREFIX}: bad seq")
        out["seq"] = raw["seq"]
        if state == STATE_UNKNOWN:
            return out
        m = self.markets.get(out["symbol"])
        if m is None:
            raise ShardexError(f"order status: symbol {out['symbol'][:32]!r} not in market table")
        try:
            if state == STATE_PENDING:  # (a stop's type and trigger, then what a live one has)
                out.update(_pending_terms(raw, m))
            if state in (STATE_LIVE, STATE_PENDING):
                side, price, qty = raw["side"], raw["price"], raw["qty"]
                if side not in (0, 1) or type(side) is not int or not _is_int(qty):
                    raise _Malformed("side/qty")
                if price is not None and not _is_int(price):
                    raise _Malformed("price")
                out["side"] = SIDES[side]
                out["price"] = None if price is None else Decimal(m.price_str(price))
                out["qty"] = Decimal(m.qty_str(qty))
            elif state == STATE_CANCELLED:
                reason = raw.get("reason", "")
                if type(reason) is not str:
                    raise _Malformed("reason")
                out["reason"] = reason
            # filled/trades: given by shards with a recent-results index (absent: not known)
            if "filled" in raw:
                if not _is_int(raw["filled"]):
                    raise _Malformed("filled")
                out["filled"] = Decimal(m.qty_str(raw["filled"]))
            if "trades" in raw:
                trades = raw["trades"]
                if not isinstance(trades, tuple | list):
                    raise _Malformed("trades")
                conv = []
                for t in trades:
                    if not (isinstance(t, tuple | list) and len(t) == 3 and all(map(_is_int, t))):
                        raise _Malformed("trade")
                    price, qty, trade_id = t
                    conv.append((Decimal(m.price_str(price)), Decimal(m.qty_str(qty)), trade_id))
                out["trades"] = conv
        except (_Malformed, KeyError) as exc:
            raise _bad_reply(f"order status: {MALFORMED_PREFIX}: bad {exc}") from None
        return out


def _pending_terms(raw: dict[str, Any], m: Market) -> dict[str, Any]:
    """A pending stop / take-profit order's type name and trigger price (Decimal)."""
    otype, trigger = raw["type"], raw["trigger"]
    if type(otype) is not int or otype not in range(len(TYPES)) or not _is_int(trigger):
        raise _Malformed("type/trigger")
    return {"type": TYPES[otype], "trigger": Decimal(m.price_str(trigger))}
