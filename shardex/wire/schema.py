"""The public JSON form of commands and events, and their engine tuples: field names ↔ the
positional tuples of ``shardex.engine.codes``, decimal strings (the public, exact form of money
and size) ↔ the integer ticks/lots the engine uses (``shardex.amounts.parse_decimal``).

Anything that cannot be decoded becomes an ``OP_REJECT`` command carrying the reason and its
code, so the engine still sequences it and a replay of the same input yields the same events.
The binary envelopes (requests, replies, batches) are in ``shardex.wire.protocol``, which
re-exports these names from their historical home.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from shardex.amounts import parse_decimal
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_ADL,
    EV_ADOPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_FUNDING,
    EV_INDEX,
    EV_LIQUIDATION,
    EV_LISTED,
    EV_MARGIN,
    EV_MARKET,
    EV_MOVED,
    EV_POSITION,
    EV_REJECTED,
    EV_TRADE,
    EV_TRIGGERED,
    GTC,
    IOC,
    MARKET,
    MAX_ID_LEN,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_NEW,
    OP_REJECT,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_UNKNOWN_OP,
    REJ_UNKNOWN_SYMBOL,
    SIDES,
    STPS,
    TIFS,
    TYPES,
    Command,
    Event,
    reject_name,
)
from shardex.engine.markets import Market
from shardex.engine.stops import BASE as _TRIGGERED_BASE
from shardex.wire.index_event import index_event_json
from shardex.wire.layouts import (
    ADOPTED_FROM,
    ADOPTED_ORDERS,
    ADOPTED_SEQ,
    ADOPTED_TRADE_ID,
    AMENDED_PRICE,
    AMENDED_QTY,
    CANCEL_ALL_AFTER,
    CANCELLED_QTY,
    CANCELLED_REASON,
    CMD_ACCOUNT,
    CMD_ID,
    CMD_OP,
    CMD_SYMBOL,
    EV_ID,
    EV_KIND,
    EV_SEQ,
    EV_SYMBOL,
    MOVED_ORDERS,
    MOVED_TO,
    MOVED_TRADE_ID,
    NEW_OPTS,
    NEW_WIDTH,
    REJECT_REASON,
    REJECTED_CODE,
    REJECTED_REASON,
    TRIGGERED_AT,
    TRIGGERED_LAST,
)
from shardex.wire.liquidation_event import perp_event_json
from shardex.wire.listed import listed_json
from shardex.wire.market_rules import market_event_json

_NEW_FIELDS = {
    "op",
    "symbol",
    "id",
    "account",
    "side",
    "type",
    "price",
    "qty",
    "tif",
    "post_only",
    "stp",
    "expire",
    "trigger",  # stop / take-profit types only: the trigger price (``shardex.engine.stops``)
    "reduce_only",  # true: a perp pair's ioc/fok order that only shrinks a position
}
_CANCEL_FIELDS = {"op", "symbol", "id", "account"}
_AMEND_FIELDS = {"op", "symbol", "id", "account", "qty", "price"}
_CANCEL_ALL_FIELDS = {"op", "symbol", "id", "account", "after"}  # all but account optional
_FIELDS = {"new": _NEW_FIELDS, "cancel": _CANCEL_FIELDS, "amend": _AMEND_FIELDS,
           "cancel_all": _CANCEL_ALL_FIELDS}  # fmt: skip


class _Bad(Exception):
    """Internal: a decoding problem; its message is the reject reason, ``code`` its REJ_* code."""

    def __init__(self, reason: str, code: int = REJ_MALFORMED) -> None:
        super().__init__(reason)
        self.code = code


def _reject(obj: Any, reason: str, code: int) -> Command:
    symbol = obj.get("symbol") if isinstance(obj, dict) else None
    oid = obj.get("id") if isinstance(obj, dict) else None
    return (
        OP_REJECT,
        symbol if type(symbol) is str else "",
        oid if type(oid) is str else "",
        reason,
        code,
    )


def _str(obj: dict[str, Any], name: str) -> str:
    if name not in obj:
        raise _Bad(f"missing field {name!r}")
    value = obj[name]
    if type(value) is not str or not value:
        raise _Bad(f"field {name!r} must be a non-empty string")
    if len(value) > MAX_ID_LEN:
        raise _Bad(f"field {name!r} longer than {MAX_ID_LEN} chars")
    return value


def _enum(obj: dict[str, Any], name: str, names: tuple[str, ...], default: int | None) -> int:
    if name not in obj:
        if default is None:
            raise _Bad(f"missing field {name!r}")
        return default
    value = obj[name]
    if value not in names or type(value) is not str:
        code = REJ_INVALID if type(value) is str else REJ_MALFORMED
        raise _Bad(f"unknown {name} {value!r} (expected one of {', '.join(names)})", code)
    return names.index(value)


def _decimal(obj: dict[str, Any], name: str) -> Decimal:
    value = obj[name]
    if type(value) is not str:
        raise _Bad(f"{name} must be a decimal string, got {type(value).__name__}")
    # signed: a negative price or qty gets its precise range reject ("qty must be > 0")
    d = parse_decimal(value, signed=True)
    if d is None:
        raise _Bad(f"{name} {value[:40]!r} is not a plain decimal string")
    return d


def _units(obj: dict[str, Any], name: str, market: Market) -> int:
    d = _decimal(obj, name)
    units = market.to_lots(d) if name == "qty" else market.to_ticks(d)
    if type(units) is not int:
        raise _Bad(units.reason, units.code)
    return units


def command_from_json(obj: Any, markets: Mapping[str, Market]) -> Command:
    """A decoded JSON object → engine command tuple, or an ``OP_REJECT`` tuple with the reason."""
    try:
        return _command(obj, markets)
    except _Bad as exc:
        return _reject(obj, str(exc), exc.code)


def _command(obj: Any, markets: Mapping[str, Market]) -> Command:
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
    op = obj.get("op")
    fields = _FIELDS.get(op) if type(op) is str else None
    if fields is None:
        raise _Bad(f"unknown op {op!r} (expected new, cancel or amend)", REJ_UNKNOWN_OP)
    unknown = set(obj) - fields
    if unknown:
        raise _Bad(f"unknown field {sorted(unknown)[0]!r} for op {op}")
    if op == "cancel_all":
        return cancel_all_from_json(obj, markets)
    symbol = _str(obj, "symbol")
    market = markets.get(symbol)
    if market is None:
        raise _Bad(f"unknown symbol {symbol}", REJ_UNKNOWN_SYMBOL)
    oid = _str(obj, "id")
    account = _str(obj, "account")
    if op == "cancel":
        return (OP_CANCEL, symbol, oid, account)
    if op == "amend":
        if "qty" not in obj and "price" not in obj:
            raise _Bad("amend needs qty and/or price", REJ_INVALID)
        qty = _units(obj, "qty", market) if "qty" in obj else None
        price = _units(obj, "price", market) if "price" in obj else None
        return (OP_AMEND, symbol, oid, account, qty, price)
    side = _enum(obj, "side", SIDES, None)
    otype = _enum(obj, "type", TYPES, None)
    if "qty" not in obj:
        raise _Bad("missing field 'qty'")
    qty = _units(obj, "qty", market)
    trigger = None
    if otype in _TRIGGERED_BASE:  # stop / take-profit: the order it becomes, and its trigger
        if "trigger" not in obj:
            raise _Bad(f"a {TYPES[otype]} order needs a trigger", REJ_INVALID)
        trigger = _units(obj, "trigger", market)
    elif "trigger" in obj:
        raise _Bad("trigger needs a stop or take-profit type", REJ_INVALID)
    if _TRIGGERED_BASE.get(otype, otype) == MARKET:
        if "price" in obj:
            raise _Bad("market order must not have a price", REJ_INVALID)
        price = None
        tif = _enum(obj, "tif", TIFS, IOC)
    else:
        if "price" not in obj:
            raise _Bad("limit order needs a price", REJ_INVALID)
        price = _units(obj, "price", market)
        tif = _enum(obj, "tif", TIFS, GTC)
    post_only = obj.get("post_only", False)
    if type(post_only) is not bool:
        raise _Bad("post_only must be true or false")
    stp = _enum(obj, "stp", STPS, 0)
    cmd = (OP_NEW, symbol, oid, account, side, otype, price, qty, tif, post_only, stp)
    return _with_options(cmd, obj, trigger)


def _with_options(cmd: Command, obj: dict[str, Any], trigger: int | None) -> Command:
    """A new order with its options map (``layouts.NEW_OPTS``) when it has any: a stop's
    trigger, a gtd order's expire (ms of exchange time, a JSON integer: the engine judges it)."""
    opts: dict[str, Any] = {}
    if trigger is not None:
        opts["trigger"] = trigger
    if "expire" in obj:
        expire = obj["expire"]
        if type(expire) is not int:
            raise _Bad("expire must be an integer (ms since the Unix epoch, UTC)")
        opts["expire"] = expire
    reduce_only = obj.get("reduce_only", False)
    if type(reduce_only) is not bool:
        raise _Bad("reduce_only must be a boolean")
    if reduce_only:  # (``shardex.engine.positions``)
        opts["reduce_only"] = 1
    return (*cmd, None, opts) if opts else cmd


def cancel_all_from_json(obj: dict[str, Any], markets: Mapping[str, Market]) -> Command:
    """``{"op": "cancel_all", "account", "symbol"?, "id"?, "after"?}`` → ``OP_CANCEL_ALL`` (no
    symbol: every pair of the shard it is sent to; ``id``: the caller's ref, echoed by a
    reject; ``after``: arm the pair's dead-man switch instead, see ``engine.expiry``)."""
    account = _str(obj, "account")
    symbol = _str(obj, "symbol") if "symbol" in obj else ""
    if symbol and symbol not in markets:
        raise _Bad(f"unknown symbol {symbol}", REJ_UNKNOWN_SYMBOL)
    ref = _str(obj, "id") if "id" in obj else ""
    if "after" in obj:  # a dead-man switch of (account, symbol): ms, 0 disarms it
        after = obj["after"]
        if type(after) is not int:
            raise _Bad("after must be an integer (ms)")
        return (OP_CANCEL_ALL, symbol, ref, account, after)
    return (OP_CANCEL_ALL, symbol, ref, account)


def command_from_json_line(
    line: str | bytes, markets: Mapping[str, Market], where: str = ""
) -> Command:
    """One JSON line → command. ``where`` (e.g. ``"line 7: "``) prefixes edge reject reasons."""
    try:
        obj = json.loads(line)
    except UnicodeDecodeError:
        return (OP_REJECT, "", "", f"{where}not valid UTF-8", REJ_MALFORMED)
    except (ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        return (OP_REJECT, "", "", f"{where}invalid JSON: {msg}", REJ_MALFORMED)
    cmd = command_from_json(obj, markets)
    if cmd[CMD_OP] == OP_REJECT and where:
        cmd = (*cmd[:REJECT_REASON], where + cmd[REJECT_REASON], *cmd[REJECT_REASON + 1 :])
    return cmd


def command_to_json(cmd: Command, markets: Mapping[str, Market]) -> dict[str, Any]:
    """Engine command tuple → public JSON object (used by generators, SDK and journal tools)."""
    op = cmd[CMD_OP]
    if op == OP_CANCEL_ALL:
        symbol, ref, account = cmd[CMD_SYMBOL], cmd[CMD_ID], cmd[CMD_ACCOUNT]
        obj = {"op": "cancel_all", "account": account}
        if len(cmd) > CANCEL_ALL_AFTER:
            obj["after"] = cmd[CANCEL_ALL_AFTER]
        if symbol:
            obj["symbol"] = symbol
        if ref:
            obj["id"] = ref
        return obj
    m = markets[cmd[CMD_SYMBOL]]
    if op == OP_NEW:
        _, symbol, oid, account, side, otype, price, qty, tif, post_only, stp = cmd[:NEW_WIDTH]
        obj: dict[str, Any] = {
            "op": "new",
            "symbol": symbol,
            "id": oid,
            "account": account,
            "side": SIDES[side],
            "type": TYPES[otype],
        }
        if price is not None:
            obj["price"] = m.price_str(price)
        obj["qty"] = m.qty_str(qty)
        obj["tif"] = TIFS[tif]
        if post_only:
            obj["post_only"] = True
        if stp:
            obj["stp"] = STPS[stp]
        if len(cmd) > NEW_OPTS and "expire" in cmd[NEW_OPTS]:
            obj["expire"] = cmd[NEW_OPTS]["expire"]
        if len(cmd) > NEW_OPTS and cmd[NEW_OPTS].get("reduce_only"):
            obj["reduce_only"] = True
        trigger = cmd[NEW_OPTS].get("trigger") if len(cmd) > NEW_OPTS else None
        if trigger is not None:
            obj["trigger"] = m.price_str(trigger)
        return obj
    if op == OP_CANCEL:
        _, symbol, oid, account = cmd
        return {"op": "cancel", "symbol": symbol, "id": oid, "account": account}
    if op == OP_AMEND:
        _, symbol, oid, account, qty, price = cmd
        obj = {"op": "amend", "symbol": symbol, "id": oid, "account": account}
        if qty is not None:
            obj["qty"] = m.qty_str(qty)
        if price is not None:
            obj["price"] = m.price_str(price)
        return obj
    raise ValueError(f"cannot encode op {op!r} as JSON")


def event_to_json(ev: Event, markets: Mapping[str, Market], ts: int | None = None
                  ) -> dict[str, Any]:  # fmt: skip
    """Engine event tuple → public JSON object with decimal strings (schema in DESIGN.md);
    ``ts``: its exchange time (ms since the Unix epoch, UTC), added as ``"ts"`` when known."""
    obj = listed_json(ev) if ev[EV_KIND] == EV_LISTED else _event_json(ev, markets)
    if ts is not None:
        obj["ts"] = ts
    return obj


def _move_json(ev: Event, symbol: str, seq: int) -> dict[str, Any]:
    """A pair's hand-off (``moved``) or adoption (``adopted``) event as JSON."""
    if ev[EV_KIND] == EV_MOVED:
        return {"ev": "moved", "symbol": symbol, "to": ev[MOVED_TO],
                "trade_id": ev[MOVED_TRADE_ID], "orders": ev[MOVED_ORDERS], "seq": seq}  # fmt: skip
    return {"ev": "adopted", "symbol": symbol, "from": ev[ADOPTED_FROM],
            "from_seq": ev[ADOPTED_SEQ], "trade_id": ev[ADOPTED_TRADE_ID],
            "orders": ev[ADOPTED_ORDERS], "seq": seq}  # fmt: skip


def _event_json(ev: Event, markets: Mapping[str, Market]) -> dict[str, Any]:
    kind = ev[EV_KIND]
    if kind == EV_TRADE:  # (the bulk: unpacked, as cheap as literal indexes)
        _, seq, symbol, price, qty, taker, maker, side, trade_id = ev
        m = markets[symbol]
        return {
            "ev": "trade",
            "symbol": symbol,
            "price": m.price_str(price),
            "qty": m.qty_str(qty),
            "taker": taker,
            "maker": maker,
            "taker_side": SIDES[side],
            "trade_id": trade_id,
            "seq": seq,
        }
    # the other kinds by index: a peer's event may carry more fields than these read
    seq, symbol = ev[EV_SEQ], ev[EV_SYMBOL]
    if kind == EV_ACCEPTED:
        return {"ev": "accepted", "symbol": symbol, "id": ev[EV_ID], "seq": seq}
    if kind == EV_CANCELLED:
        return {
            "ev": "cancelled",
            "symbol": symbol,
            "id": ev[EV_ID],
            "reason": ev[CANCELLED_REASON],
            "qty": markets[symbol].qty_str(ev[CANCELLED_QTY]),
            "seq": seq,
        }
    if kind == EV_REJECTED:
        return {
            "ev": "rejected",
            "symbol": symbol,
            "id": ev[EV_ID],
            "reason": ev[REJECTED_REASON],
            # the stable name; "invalid" if none or unknown (a journal older than codes)
            "code": reject_name(_at(ev, REJECTED_CODE)),
            "seq": seq,
        }
    if kind == EV_AMENDED:
        m = markets[symbol]
        return {
            "ev": "amended",
            "symbol": symbol,
            "id": ev[EV_ID],
            "qty": m.qty_str(ev[AMENDED_QTY]),
            "price": m.price_str(ev[AMENDED_PRICE]),
            "seq": seq,
        }
    if kind in (EV_MOVED, EV_ADOPTED):
        return _move_json(ev, symbol, seq)
    if kind == EV_MARKET:
        return market_event_json(ev, markets.get(symbol), seq)
    if kind == EV_TRIGGERED:
        return _triggered_json(ev, markets[symbol])
    if kind == EV_INDEX:
        return index_event_json(ev, markets)
    if kind in (EV_POSITION, EV_MARGIN, EV_FUNDING, EV_LIQUIDATION, EV_ADL):
        return perp_event_json(ev, markets)
    raise ValueError(f"unknown event kind {kind!r}")


def _triggered_json(ev: Event, m: Market) -> dict[str, Any]:
    """A stop / take-profit order's trigger was reached: last trade price and its trigger."""
    return {"ev": "triggered", "symbol": ev[EV_SYMBOL], "id": ev[EV_ID],
            "last": m.price_str(ev[TRIGGERED_LAST]), "trigger": m.price_str(ev[TRIGGERED_AT]),
            "seq": ev[EV_SEQ]}  # fmt: skip


def event_to_json_line(ev: Event, markets: Mapping[str, Market], ts: int | None = None) -> str:
    return json.dumps(event_to_json(ev, markets, ts), separators=(",", ":"))


def _at(seq: Any, i: int) -> Any:
    """``seq[i]``, or None when ``seq`` is not indexable or too short (hostile input)."""
    try:
        return seq[i]
    except Exception:
        return None
