"""Integer codes and tuple layouts shared by the engine and the edge (protocol, journal).

Commands (tuples, position = meaning):

* ``(OP_NEW, symbol, id, account, side, type, price|None, qty, tif, post_only, stp)``
* ``(OP_CANCEL, symbol, id, account)``
* ``(OP_AMEND, symbol, id, account, qty|None, price|None)``
* ``(OP_REJECT, symbol, id, reason[, code])`` — a command the edge could not decode (or may not
  run); the engine emits the ``rejected`` event so that it gets a seq and replays identically.
  ``code`` is a ``REJ_*`` code; without it (journals written before codes existed) or when it
  is not a known code, the event carries ``REJ_MALFORMED``.

Prices are integer ticks and quantities integer lots of the symbol's market.

Events (tuples; index 0 kind, index 1 seq, index 2 symbol):

* ``(EV_ACCEPTED, seq, symbol, id)``
* ``(EV_TRADE, seq, symbol, price, qty, taker_id, maker_id, taker_side, trade_id)``
* ``(EV_CANCELLED, seq, symbol, id, reason, qty)`` — reason ``user|ioc|fok|stp``, qty = open lots
  removed
* ``(EV_REJECTED, seq, symbol, id, reason, code)`` — ``reason`` is for humans and may change
  wording; ``code`` (a ``REJ_*`` int, public name ``REJECT_NAMES[code]``) is the stable part
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

# Reject codes: the stable, machine-readable half of a ``rejected`` event (the reason text is the
# human half). The public form (JSON ``code``, metrics label) is the name. Codes and names are a
# contract: never renumber or rename, only append.
#
# malformed        the command is not of the schema's shape: not an object/array, invalid JSON or
#                  UTF-8, wrong field count, a field missing, unknown or of the wrong type, a
#                  string too long (also edge rejects recorded before codes existed)
# invalid          every field has the right type but a value or combination is not allowed:
#                  unknown side/type/tif/stp, a market order with a price, a limit order without
#                  one, post_only with a market order or a tif other than gtc, an amend with
#                  neither qty nor price
# unknown_op       the op is not new, cancel or amend
# unknown_symbol   no market of that symbol
# out_of_range     price or qty <= 0 or above the market's max
# off_grid         price or qty not a multiple of the market's tick or lot
# duplicate_id     a new order reuses the id of a live or recently finished order of the pair
# not_live         cancel/amend of an order that is not live (never was, or finished)
# wrong_account    cancel/amend of a live order of another account
# post_only_cross  a post_only order (or amend) would cross the book
# amend_increase   an amend asks for more than the open qty
# wrong_shard      the symbol belongs to another shard
# not_allowed      the client's key may not act for that account (identity)
# not_leader       the process that got the request does not lead its shard (a standby, or a
#                  leader fenced by a newer epoch / past its lease deadline): nothing ran; it
#                  travels as a batch error (``protocol.not_leader_error``, with the epoch)
(
    REJ_MALFORMED,
    REJ_INVALID,
    REJ_UNKNOWN_OP,
    REJ_UNKNOWN_SYMBOL,
    REJ_OUT_OF_RANGE,
    REJ_OFF_GRID,
    REJ_DUPLICATE_ID,
    REJ_NOT_LIVE,
    REJ_WRONG_ACCOUNT,
    REJ_POST_ONLY_CROSS,
    REJ_AMEND_INCREASE,
    REJ_WRONG_SHARD,
    REJ_NOT_ALLOWED,
    # the account tier's (``shardex.accounts.codes`` uses the same numbers): only account
    # shards emit them
    REJ_INSUFFICIENT_FUNDS,
    REJ_UNKNOWN_ASSET,
    REJ_DUPLICATE_REF,
    # replicated shards (issue 15): never an engine event, the code of a batch error
    REJ_NOT_LEADER,
) = range(17)
REJECT_NAMES = (
    "malformed",
    "invalid",
    "unknown_op",
    "unknown_symbol",
    "out_of_range",
    "off_grid",
    "duplicate_id",
    "not_live",
    "wrong_account",
    "post_only_cross",
    "amend_increase",
    "wrong_shard",
    "not_allowed",
    # the account tier's (shardex.accounts.codes, issue 14): only account shards emit them
    "insufficient_funds",  # a hold or withdraw exceeds the available balance
    "unknown_asset",  # a transfer in an asset no market trades
    "duplicate_ref",  # a transfer ref already used by another transfer
    # replicated shards (issue 15): the batch error of a standby or fenced leader, nothing ran
    "not_leader",
)
REJECT_CODES = {name: code for code, name in enumerate(REJECT_NAMES)}


def reject_name(code: object) -> str:
    """The public name of a reject code; ``"invalid"`` for anything that is not a known code
    (a newer peer's code, garbage), so that a name is always one of ``REJECT_NAMES``."""
    if type(code) is int and 0 <= code < len(REJECT_NAMES):
        return REJECT_NAMES[code]
    return "invalid"

# Order fates (``Engine.order_status``); the same strings as
# ``shardex.wire.protocol.STATE_*``, which the pure engine must not import.
STATE_LIVE, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN = "live", "filled", "cancelled", "unknown"
RECENT_TRADES = 32  # most recent trades kept per order (live or recently finished)
DEFAULT_RECENT = 100_000  # finished orders an engine remembers (FIFO) for status and duplicates

Command = tuple[Any, ...]
Event = tuple[Any, ...]
