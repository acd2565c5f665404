"""Integer codes and tuple layouts shared by the engine and the edge (protocol, journal).

Commands (tuples, position = meaning):

* ``(OP_NEW, symbol, id, account, side, type, price|None, qty, tif, post_only, stp)``
* ``(OP_CANCEL, symbol, id, account)``
* ``(OP_AMEND, symbol, id, account, qty|None, price|None)``
* ``(OP_REJECT, symbol, id, reason)`` — a command the edge could not decode; the engine emits the
  ``rejected`` event so that it gets a seq and replays identically.

Prices are integer ticks and quantities integer lots of the symbol's market.

Events (tuples; index 0 kind, index 1 seq, index 2 symbol):

* ``(EV_ACCEPTED, seq, symbol, id)``
* ``(EV_TRADE, seq, symbol, price, qty, taker_id, maker_id, taker_side, trade_id)``
* ``(EV_CANCELLED, seq, symbol, id, reason, qty)`` — reason ``user|ioc|fok|stp``, qty = open lots
  removed
* ``(EV_REJECTED, seq, symbol, id, reason)``
* ``(EV_AMENDED, seq, symbol, id, qty, price)`` — the order's new open qty and price
"""

from typing import Any

OP_NEW, OP_CANCEL, OP_AMEND, OP_REJECT = 1, 2, 3, 4
BUY, SELL = 0, 1
LIMIT, MARKET = 0, 1
GTC, IOC, FOK = 0, 1, 2
STP_NONE, STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH = 0, 1, 2, 3
EV_ACCEPTED, EV_TRADE, EV_CANCELLED, EV_REJECTED, EV_AMENDED = 0, 1, 2, 3, 4

SIDES = ("buy", "sell")
TYPES = ("limit", "market")
TIFS = ("gtc", "ioc", "fok")
STPS = ("none", "cancel_taker", "cancel_maker", "cancel_both")
EVENT_NAMES = ("accepted", "trade", "cancelled", "rejected", "amended")

MAX_ID_LEN = 64

# Order fates (``Engine.order_status``); the same strings as
# ``shardex.wire.protocol.STATE_*``, which the pure engine must not import.
STATE_LIVE, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN = "live", "filled", "cancelled", "unknown"
RECENT_TRADES = 32  # most recent trades kept per order (live or recently finished)
DEFAULT_RECENT = 100_000  # finished orders an engine remembers (FIFO) for status and duplicates

Command = tuple[Any, ...]
Event = tuple[Any, ...]
