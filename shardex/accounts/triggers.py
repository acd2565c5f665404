"""Stop and take-profit orders on an account shard (pure): held exactly as the order they
stand for, forwarded with their trigger.

A pending stop order can fill at any time, so its hold is taken when it is placed, by the rules
of the order it becomes (``shardex.engine.stops.BASE``): a stop-limit or take-profit-limit as a
limit order (a buy holds qty x price + the taker fee, a sell its qty), a stop-market or
take-profit sell its qty, and a stop-market or take-profit BUY, like a market buy, needs a
budget and holds it: it is forwarded as the limit kind (stop-limit / take-profit-limit, tif
ioc/fok) at the highest price the budget pays for all of qty, so it can never overspend. The
hold is released by the engine's cancel (a user cancel while pending, an ioc/fok remainder
after the trigger) or refusal (``would_trigger``...), and settled by its trades, through the
settlements every order goes through.
"""

from __future__ import annotations

from typing import Any

from shardex.engine.codes import (
    LIMIT,
    REJ_INVALID,
    REJ_MALFORMED,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
)
from shardex.engine.expiry import CLIENT_OPTION_KEYS as OPT_KEYS
from shardex.engine.stops import BASE, CAPPED
from shardex.wire.layouts import NEW_OPTS, NEW_TYPE

A_NEW_WIDTH = 12  # (A_NEW, the engine's 10 fields after the op, budget)
# the kind a market stop is forwarded as when the account tier turned it into a capped limit
_AS_LIMIT = {STOP_MARKET: STOP_LIMIT, TAKE_PROFIT: TAKE_PROFIT_LIMIT}
# (the stop / take-profit type, or None for a plain order with options (a gtd's expire); its
# options)
Stop = tuple[int | None, dict[str, Any]]


def split_stop(cmd: tuple) -> tuple[tuple | None, Any]:
    """An ``A_NEW`` → (its 12 fields with a stop's base type in place of its own, the stop's
    (type, options), (None, options) for a plain order with options, or None), or (None,
    (reason, code)) when its width or options are not acceptable. The trigger's value is the
    engine's to judge."""
    if len(cmd) == A_NEW_WIDTH:
        return tuple(cmd), None
    if len(cmd) != NEW_OPTS + 1:
        return None, ("new: expected 12 fields (13 with options)", REJ_MALFORMED)
    otype, opts = cmd[NEW_TYPE], cmd[NEW_OPTS]
    if type(opts) is not dict or not all(type(k) is str for k in opts):
        return None, ("new: options must be a map with string keys", REJ_MALFORMED)
    if set(opts) - OPT_KEYS:
        return None, (f"new: unknown option {sorted(set(opts) - OPT_KEYS)[0][:40]!r}", REJ_INVALID)
    base = BASE.get(otype) if type(otype) is int else None
    if base is None:
        if opts.get("trigger") is not None:
            return None, ("trigger needs a stop or take-profit type", REJ_INVALID)
        return tuple(cmd[:A_NEW_WIDTH]), ((None, dict(opts)) if opts else None)
    return (*cmd[:NEW_TYPE], base, *cmd[NEW_TYPE + 1 : A_NEW_WIDTH]), (otype, dict(opts))


def stop_forward(fwd: tuple, stop: Stop | None, capped: bool = False) -> tuple:
    """The engine command of a held order: ``fwd`` (a plain OP_NEW) itself, or for a stop its
    type back (the limit kind when the account tier capped a market buy) and its options;
    ``capped`` (a market buy sent on as a limit at its budget's price) adds ``{"capped": 1}``:
    the engine judges it by the pair's rules as the market order it is."""
    if stop is None:
        return (*fwd, None, {CAPPED: 1}) if capped else fwd
    otype, opts = stop
    if capped:
        opts = {**opts, CAPPED: 1}
    if otype is None:  # a plain order's options (a gtd order's expire), as the client sent them
        return (*fwd, None, opts)
    if fwd[NEW_TYPE] == LIMIT:
        otype = _AS_LIMIT.get(otype, otype)
    return (*fwd[:NEW_TYPE], otype, *fwd[NEW_TYPE + 1 :], None, opts)
