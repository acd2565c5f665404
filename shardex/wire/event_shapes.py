"""The engine events' shapes, kind by kind: the one description that both readers of the
events check against, the bridge (``shardex.wire.pub.check_event``, before it writes an event
to the streams) and the SDK (``shardex.client.replies``, before it decodes a reply). Two
descriptions had drifted apart (the bridge let an event with extra fields or a negative
quantity through that the SDK called malformed); an event kind added here is known to both.

Each shape is a string, one letter per field of the tuple (``shardex.engine.codes``): ``i``
an int in 0 <= v < 2**63 (never a bool), ``n`` a signed int, -2**63 < v < 2**63 (a position's
size, cost and PnL; a margin move; a funding payment), ``s`` a str, ``d`` a side (the int 0 or
1). What a
reader checks beyond the shape is its own: the bridge bounds strings and needs a known market
to format prices; the SDK needs the pair in its market table. Pure.
"""

from __future__ import annotations

from typing import Any

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
)
from shardex.wire.layouts import EV_KIND

MAX_INT = 1 << 63  # an "i" field is below this (a msgpack int64; a stream ID's seq part)

EVENT_SHAPES: dict[int, str] = {
    EV_ACCEPTED: "iiss",  # kind, seq, symbol, id
    EV_TRADE: "iisiissdi",  # ..., price, qty, taker id, maker id, taker side, trade id
    EV_CANCELLED: "iisssi",  # ..., id, reason, remaining qty
    EV_REJECTED: "iisssi",  # ..., id, reason, code (any int: a newer shard may know more codes)
    EV_AMENDED: "iissii",  # ..., id, qty, price
    EV_MOVED: "iisiii",
    EV_ADOPTED: "iisiiii",
    EV_TRIGGERED: "iissii",  # ..., id, last trade price, trigger
    EV_MARKET: "iissiiii",  # ..., state, band_bps, max_qty, max_notional, min_qty
    EV_LISTED: "iisssss",  # ..., tick, lot, max_price, max_qty (decimal strings)
    EV_INDEX: "iisii",  # ..., index, mark (ticks)
    EV_POSITION: "iissnnn",  # ..., account, size, cost, realized
    EV_MARGIN: "iissnn",  # ..., account, amount, collateral (< 0: after a liquidation)
    EV_FUNDING: "iisnni",  # ..., per lot, cumulative, remainder
    # ..., account, closed, bankruptcy, notional, settled, uncovered, fund
    EV_LIQUIDATION: "iissniinii",
    EV_ADL: "iisssni",  # ..., account, bankrupt account, closed (signed lots), price
}

# per kind: the exact field types (one C-level comparison with ``tuple(map(type, ev))``) and
# the positions of the ints to range-check (unsigned, signed), and of the side
_TYPES = {k: tuple(str if c == "s" else int for c in s) for k, s in EVENT_SHAPES.items()}
_INTS = {k: tuple(i for i, c in enumerate(s) if c == "i") for k, s in EVENT_SHAPES.items()}
_SIGNED = {k: tuple(i for i, c in enumerate(s) if c == "n") for k, s in EVENT_SHAPES.items()}
_SIDES = {k: tuple(i for i, c in enumerate(s) if c == "d") for k, s in EVENT_SHAPES.items()}


def known_kind(ev: Any) -> bool:
    """``ev`` is a non-empty tuple or list whose kind is one of ``EVENT_SHAPES``."""
    if not isinstance(ev, tuple | list) or not ev:
        return False
    kind = ev[EV_KIND]
    return type(kind) is int and kind in EVENT_SHAPES


def fits_shape(ev: Any) -> bool:
    """``ev`` (a tuple or list) has its kind's shape: as many fields, each of its letter."""
    if not known_kind(ev):
        return False
    kind = ev[EV_KIND]
    if tuple(map(type, ev)) != _TYPES[kind]:
        return False
    return (
        all(0 <= ev[i] < MAX_INT for i in _INTS[kind])
        and all(-MAX_INT < ev[i] < MAX_INT for i in _SIGNED[kind])
        and all(ev[i] in (0, 1) for i in _SIDES[kind])
    )
