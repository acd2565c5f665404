"""Integer codes and tuple layouts shared by the engine and the edge (protocol, journal).

Commands (tuples, position = meaning):

* ``(OP_NEW, symbol, id, account, side, type, price|None, qty, tif, post_only, stp)``
* a new order with options: OP_NEW's 11 fields, then ``budget`` (None: budgets are the
  account tier's) and ``opts``, a map of str keys (``"trigger"``: the trigger price in ticks of
  a stop / take-profit type, ``shardex.engine.stops``)
* ``(OP_CANCEL, symbol, id, account)``
* a new order with options: ``OP_NEW``'s 11 fields, then ``budget|None`` and ``opts`` (13), a
  map with str keys; ``"expire"`` (ms of exchange time) for tif ``GTD`` (``shardex.engine.expiry``)
* ``(OP_CANCEL_ALL, symbol, ref, account[, after])`` — cancel every live order of ``account``
  in that pair ("": every pair of this shard); one ``cancelled`` event (reason ``cancel_all``)
  per order. With ``after`` (ms) it cancels nothing now: it arms the pair's dead-man switch
* ``(OP_EXPIRE, ts)`` — journaled by the leader after a batch's ``OP_TIME`` when an order's
  expire time is <= ``ts``: one ``cancelled`` event (reason ``expired``) per such order, in
  (expire time, accept seq) order; none when nothing is due. Never accepted from a client.
* ``(OP_AMEND, symbol, id, account, qty|None, price|None)``
* ``(OP_REJECT, symbol, id, reason[, code])`` — a command the edge could not decode (or may not
  run); the engine emits the ``rejected`` event so that it gets a seq and replays identically.
  ``code`` is a ``REJ_*`` code; without it (journals written before codes existed) or when it
  is not a known code, the event carries ``REJ_MALFORMED``.
* ``(OP_TIME, ts)`` — exchange time: the leader journals one at the head of each batch (``ts``
  in ms since the Unix epoch, UTC); it emits no event and takes no seq, it only moves the
  machine's ``ts`` forward (never back), so replay reproduces every event's time. Never
  accepted from a client (the edge rejects the op).

Prices are integer ticks and quantities integer lots of the symbol's market.

Events (tuples; index 0 kind, index 1 seq, index 2 symbol):

* ``(EV_ACCEPTED, seq, symbol, id)``
* ``(EV_TRADE, seq, symbol, price, qty, taker_id, maker_id, taker_side, trade_id)``
* ``(EV_CANCELLED, seq, symbol, id, reason, qty)`` — reason
  ``user|ioc|fok|stp|delist|expired|cancel_all|deadman|liquidation``, qty = open lots removed
* ``(EV_REJECTED, seq, symbol, id, reason, code)`` — ``reason`` is for humans and may change
  wording; ``code`` (a ``REJ_*`` int, public name ``REJECT_NAMES[code]``) is the stable part
* ``(EV_AMENDED, seq, symbol, id, qty, price)`` — the order's new open qty and price
* ``(EV_MOVED, seq, symbol, to shard, trade_id, orders)`` — the pair was handed off (its last
  trade id, its resting orders): from here on this shard answers it with ``moving``
* ``(EV_ADOPTED, seq, symbol, from shard, from seq, trade_id, orders)`` — the pair was adopted
  with the state the hand-off at ``from seq`` of ``from shard`` took
* ``(EV_TRIGGERED, seq, symbol, id, last, trigger)`` — a pending stop / take-profit order's
  trigger was reached at last trade price ``last``: its matching events follow
* ``(EV_MARKET, seq, symbol, state, band_bps, max_qty, max_notional, min_qty)`` — the pair's state
  (``open|halted|cancel_only|delisted``) and limits from here on (0: no limit); a delisting's
  cancels (reason ``delist``) follow it

Move commands (an admin's, journaled like any other; ``shardex.engine.moves``):

* ``(OP_HANDOFF, symbol, to shard)``
* ``(OP_ADOPT, symbol, from shard, from seq, pair state)`` — the state ``snapshot_pair`` made

Market rules (an admin's, journaled; ``shardex.engine.admin``):

* ``(OP_MARKET_RULE, symbol, changes)`` — ``changes`` a map of ``state`` (name),
  ``band_bps``, ``max_qty`` (lots), ``max_notional`` (ticks × lots), ``min_qty`` (lots); 0
  lifts a limit
* ``(OP_LIST, symbol, [tick, lot, max_price, max_qty])`` — list a new pair (decimal strings;
  ``shardex.engine.listing``); its event ``(EV_LISTED, seq, symbol, tick, lot, max_price,
  max_qty)``

Perp index prices (a ``feed`` key's, journaled; ``shardex.engine.perps``):

* ``(OP_INDEX, symbol, index)`` — the index price in ticks; its event ``(EV_INDEX, seq,
  symbol, index, mark)``: the index and the mark recomputed from it, in ticks

Perp positions and margin (``shardex.engine.positions``):

* ``(OP_MARGIN, symbol, account, amount)`` — an admin's: ``amount`` (signed, notional units
  of tick × lot) into or out of the account's collateral on the pair; its event
  ``(EV_MARGIN, seq, symbol, account, amount, collateral)``
* ``(EV_POSITION, seq, symbol, account, size, cost, realized)`` — after a command's trades on
  a perp pair, once per account they moved: signed lots, cost basis and realized PnL (units)
* ``(EV_LIQUIDATION, seq, symbol, account, closed, bankruptcy, notional, settled, uncovered,
  fund)`` — after an index, per account taken over (``shardex.engine.liquidation``)
* ``(EV_ADL, seq, symbol, account, bankrupt, closed, price)`` — in a take-over, per position
  auto-deleveraged against the bankrupt account's: signed lots of ``account``'s position
  closed at ``price`` ticks (``shardex.engine.adl``)
* ``(OP_FUNDING, ts)`` — journaled by the leader after a batch's ``OP_TIME`` when a perp pair's
  funding payment time is <= ``ts``; its event per paying pair ``(EV_FUNDING, seq, symbol,
  per_lot, cumulative, remainder)`` (millionths of a unit per lot; units). Never accepted from
  a client.
"""

from typing import Any

# (the compiled engine is built from the engine sources alone: there the table is untyped)
from shardex.wire import codes as wire_codes  # type: ignore

OP_NEW, OP_CANCEL, OP_AMEND, OP_REJECT = 1, 2, 3, 4
OP_TIME = 50  # (outside every tier's client, link and read ops)
# a live move of one pair (``shardex.engine.moves``): the source's hand-off, the target's adoption
OP_HANDOFF, OP_ADOPT = 5, 6
# markets at runtime (an admin's, journaled; ``shardex.engine.admin``): a pair's state and limits
OP_MARKET_RULE = 21
OP_LIST = 22  # a new pair, listed at runtime (``shardex.engine.listing``)
OP_INDEX = 60  # a perp pair's index price, from a ``feed`` key (``shardex.engine.perps``)
OP_MARGIN = 61  # collateral into / out of a perp pair's margin (``shardex.engine.positions``)
OP_FUNDING = 63  # the leader's: due perp pairs pay funding (``shardex.engine.funding``)
# expiring orders and cancel-all (``shardex.engine.expiry``): a client's cancel-all, and the
# leader's journaled sweep of the orders whose expire time the exchange time has reached
OP_CANCEL_ALL, OP_EXPIRE = 17, 18
BUY, SELL = 0, 1
LIMIT, MARKET = 0, 1
# triggered types (``shardex.engine.stops``): wait in the pair's trigger book for its last trade
# price, then enter matching as a market (STOP_MARKET, TAKE_PROFIT) or limit order
STOP_MARKET, STOP_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT = 2, 3, 4, 5
GTC, IOC, FOK = 0, 1, 2
GTD, DAY = 3, 4  # rest like gtc until an expire time (gtd: given; day: the UTC day's end)
STP_NONE, STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH = 0, 1, 2, 3
EV_ACCEPTED, EV_TRADE, EV_CANCELLED, EV_REJECTED, EV_AMENDED = 0, 1, 2, 3, 4
EV_MOVED, EV_ADOPTED = 5, 6
EV_TRIGGERED = 7  # a stop / take-profit order's trigger was reached: it enters matching now
EV_MARKET = 10  # a pair's state or limits changed (``shardex.engine.admin``)
EV_LISTED = 11  # a new pair listed (``shardex.engine.listing``)
EV_INDEX = 20  # a perp pair's new index and mark price (``shardex.engine.perps``)
EV_POSITION, EV_MARGIN = 21, 22  # a perp position / margin changed (``engine.positions``)
EV_FUNDING = 23  # a perp pair paid funding (``shardex.engine.funding``)
EV_LIQUIDATION = 24  # a position taken over at the mark (``shardex.engine.liquidation``)
EV_ADL = 25  # a position auto-deleveraged against a bankrupt one (``shardex.engine.adl``)

SIDES = ("buy", "sell")
TYPES = ("limit", "market", "stop_market", "stop_limit", "take_profit", "take_profit_limit")
TIFS = ("gtc", "ioc", "fok", "gtd", "day")
STPS = ("none", "cancel_taker", "cancel_maker", "cancel_both")
EVENT_NAMES = ("accepted", "trade", "cancelled", "rejected", "amended", "moved", "adopted",
               "triggered", "", "", "market")  # ("": kinds reserved, not used)

MAX_ID_LEN = 64

# Reject codes: the stable, machine-readable half of a ``rejected`` event (the reason text is the
# human half). The public form (JSON ``code``, metrics label) is the name. They are rows of the
# one code table, ``shardex.wire.codes`` (numbers, names, stage and meaning of every result
# code; never renumber or rename, only append); here under their historical ``REJ_`` names.
# ``not_leader`` never appears in an event: it is the code of a batch error.
REJ_MALFORMED: int = wire_codes.MALFORMED
REJ_INVALID: int = wire_codes.INVALID
REJ_UNKNOWN_OP: int = wire_codes.UNKNOWN_OP
REJ_UNKNOWN_SYMBOL: int = wire_codes.UNKNOWN_SYMBOL
REJ_OUT_OF_RANGE: int = wire_codes.OUT_OF_RANGE
REJ_OFF_GRID: int = wire_codes.OFF_GRID
REJ_DUPLICATE_ID: int = wire_codes.DUPLICATE_ID
REJ_NOT_LIVE: int = wire_codes.NOT_LIVE
REJ_WRONG_ACCOUNT: int = wire_codes.WRONG_ACCOUNT
REJ_POST_ONLY_CROSS: int = wire_codes.POST_ONLY_CROSS
REJ_AMEND_INCREASE: int = wire_codes.AMEND_INCREASE
REJ_WRONG_SHARD: int = wire_codes.WRONG_SHARD
REJ_NOT_ALLOWED: int = wire_codes.NOT_ALLOWED
# the account tier's (``shardex.accounts.codes``): only account shards emit them
REJ_INSUFFICIENT_FUNDS: int = wire_codes.INSUFFICIENT_FUNDS
REJ_UNKNOWN_ASSET: int = wire_codes.UNKNOWN_ASSET
REJ_DUPLICATE_REF: int = wire_codes.DUPLICATE_REF
# replicated shards: never an engine event, the code of a batch error
REJ_NOT_LEADER: int = wire_codes.NOT_LEADER
# a command for a pair this shard handed off (or is handing off): retryable, nothing ran
REJ_MOVING: int = wire_codes.MOVING
# markets at runtime (``shardex.engine.admin``; ``account_restricted`` is the account tier's)
REJ_MARKET_HALTED: int = wire_codes.MARKET_HALTED
REJ_CANCEL_ONLY: int = wire_codes.CANCEL_ONLY
REJ_DELISTED: int = wire_codes.DELISTED
REJ_PRICE_BAND: int = wire_codes.PRICE_BAND
REJ_ORDER_TOO_LARGE: int = wire_codes.ORDER_TOO_LARGE
REJ_ORDER_TOO_SMALL: int = wire_codes.ORDER_TOO_SMALL
REJ_ACCOUNT_RESTRICTED: int = wire_codes.ACCOUNT_RESTRICTED
REJ_UNIT_CONFLICT: int = wire_codes.UNIT_CONFLICT  # (a listing, refused by the account tier)
# a good-till-date order whose expire time has already passed (``shardex.engine.expiry``)
REJ_EXPIRED: int = wire_codes.EXPIRED
# stop and take-profit orders (``shardex.engine.stops``)
REJ_WOULD_TRIGGER: int = wire_codes.WOULD_TRIGGER
REJ_UNTRIGGERED: int = wire_codes.UNTRIGGERED
# an index price for a pair that is not a perpetual market (``shardex.engine.perps``)
REJ_NOT_PERP: int = wire_codes.NOT_PERP
# perp positions and margin (``shardex.engine.positions``)
REJ_INSUFFICIENT_MARGIN: int = wire_codes.INSUFFICIENT_MARGIN
REJ_REDUCE_ONLY_REJECTED: int = wire_codes.REDUCE_ONLY_REJECTED
REJ_NO_MARK: int = wire_codes.NO_MARK
# names indexed by code: the per-command codes (0..the highest, a number no row has is
# ``unused_N``; batch and client codes start at 100)
REJECT_NAMES: tuple[str, ...] = wire_codes.names_below(wire_codes.last_command_code() + 1)
REJECT_CODES = {
    name: code for code, name in enumerate(REJECT_NAMES) if not name.startswith("unused_")
}


def reject_name(code: object) -> str:
    """The public name of a reject code; ``"invalid"`` for anything that is not a known code
    (a newer peer's code, garbage), so that a name is always one of ``REJECT_NAMES``."""
    if type(code) is int and 0 <= code < len(REJECT_NAMES):
        name = REJECT_NAMES[code]
        return name if name in REJECT_CODES else "invalid"  # (``unused_N``: no code yet)
    return "invalid"

# Order fates (``Engine.order_status``); the same strings as
# ``shardex.wire.protocol.STATE_*``, which the pure engine must not import.
STATE_LIVE, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN = "live", "filled", "cancelled", "unknown"
STATE_PENDING = "pending"  # a stop / take-profit order waiting for its trigger
RECENT_TRADES = 32  # most recent trades kept per order (live or recently finished)
DEFAULT_RECENT = 100_000  # finished orders an engine remembers (FIFO) for status and duplicates

Command = tuple[Any, ...]
Event = tuple[Any, ...]
