"""Field positions of every tuple that crosses a process or the journal, by name.

Commands, events, settlements and requests are plain tuples (msgpack arrays on the wire, in the
journal and on PUB): position = meaning. Their layouts are described in prose where their codes
live (``shardex.engine.codes``: engine commands and events; ``shardex.accounts.codes``: account
commands, settlements and events; ``shardex.wire.protocol``: read requests and the forward
record); this module names each position once, so code outside the engine's matching loop reads
``cmd[NEW_QTY]`` or unpacks the whole tuple, never ``cmd[7]``.

Module-level ints, not ``NamedTuple`` views: the tuples are made by the engine and by msgpack,
and several readers are on a per-order or per-event path, where an int index costs what a
literal costs and an attribute read would cost more. ``tests/unit/test_layouts.py`` checks each
name against the encoders and decoders that make the tuples, and that the modules that use
them hold no bare layout index.
"""

from __future__ import annotations

# -- engine commands (``shardex.engine.codes``) ------------------------------------------------
# every op: (op, symbol, id, account, ...); an ``OP_REJECT``: (op, symbol, id, reason[, code])
CMD_OP, CMD_SYMBOL, CMD_ID, CMD_ACCOUNT = 0, 1, 2, 3
# (OP_NEW, symbol, id, account, side, type, price|None, qty, tif, post_only, stp)
NEW_SIDE, NEW_TYPE, NEW_PRICE, NEW_QTY, NEW_TIF, NEW_POST_ONLY, NEW_STP = 4, 5, 6, 7, 8, 9, 10
NEW_WIDTH = 11
# a client's new order to an account shard: the engine's fields, then its market-buy budget
NEW_BUDGET = 11
NEW_OPTS = 12
# (OP_CANCEL_ALL, symbol|"", ref, account[, after ms]): with after, a dead-man switch
CANCEL_ALL_AFTER = 4
# (OP_AMEND, symbol, id, account, qty|None, price|None)
AMEND_QTY, AMEND_PRICE = 4, 5
# (OP_REJECT, symbol, id, reason[, code]): the edge's refusal, sequenced by the engine
REJECT_REASON, REJECT_CODE = 3, 4

# -- engine events (``shardex.engine.codes``) --------------------------------------------------
# every kind: (kind, seq, symbol, ...)
EV_KIND, EV_SEQ, EV_SYMBOL = 0, 1, 2
# accepted, cancelled, rejected, amended: (kind, seq, symbol, id, ...)
EV_ID = 3
# (EV_TRADE, seq, symbol, price, qty, taker_id, maker_id, taker_side, trade_id)
TRADE_PRICE, TRADE_QTY, TRADE_TAKER, TRADE_MAKER, TRADE_SIDE, TRADE_ID = 3, 4, 5, 6, 7, 8
TRADE_WIDTH = 9
# (EV_CANCELLED, seq, symbol, id, reason, qty)
CANCELLED_REASON, CANCELLED_QTY = 4, 5
# (EV_REJECTED, seq, symbol, id, reason, code)
REJECTED_REASON, REJECTED_CODE = 4, 5
# (EV_AMENDED, seq, symbol, id, qty, price)
AMENDED_QTY, AMENDED_PRICE = 4, 5
# a pair's move (``shardex.engine.moves``): (OP_HANDOFF, symbol, to shard) and
# (OP_ADOPT, symbol, from shard, from seq, pair state)
HANDOFF_TO = 2
ADOPT_FROM, ADOPT_SEQ, MOVE_STATE = 2, 3, 4
# (EV_TRIGGERED, seq, symbol, id, last trade price, trigger)
TRIGGERED_LAST, TRIGGERED_AT = 4, 5
# (EV_MOVED, seq, symbol, to shard, trade_id, orders)
MOVED_TO, MOVED_TRADE_ID, MOVED_ORDERS = 3, 4, 5
# (EV_ADOPTED, seq, symbol, from shard, from seq, trade_id, orders)
ADOPTED_FROM, ADOPTED_SEQ, ADOPTED_TRADE_ID, ADOPTED_ORDERS = 3, 4, 5, 6
# a pair's rules (``shardex.engine.admin``): (OP_MARKET_RULE, symbol, changes) and
# (EV_MARKET, seq, symbol, state, band_bps, max_qty, max_notional, min_qty)
RULE_CHANGES = 2
MARKET_STATE, MARKET_BAND, MARKET_MAX_QTY, MARKET_MAX_NOTIONAL = 3, 4, 5, 6
MARKET_MIN_QTY = 7
MARKET_WIDTH = 8
# a listing (``shardex.engine.listing``): (OP_LIST, symbol, definition) and
# (EV_LISTED, seq, symbol, tick, lot, max_price, max_qty)
LIST_DEFINITION = 2
LISTED_DEFINITION = 3
LISTED_WIDTH = 7
# a perp pair's index (``shardex.engine.perps``): (OP_INDEX, symbol, index) and
# (EV_INDEX, seq, symbol, index, mark)
INDEX_PRICE = 2
INDEX_EV_PRICE, INDEX_EV_MARK = 3, 4
INDEX_WIDTH = 5
# perp positions and margin (``shardex.engine.positions``): (OP_MARGIN, symbol, account,
# amount), (EV_POSITION, seq, symbol, account, size, cost, realized) and (EV_MARGIN, seq,
# symbol, account, amount, collateral)
MARGIN_ACCOUNT, MARGIN_AMOUNT = 2, 3
POSITION_ACCOUNT, POSITION_SIZE, POSITION_COST, POSITION_REALIZED = 3, 4, 5, 6
POSITION_WIDTH = 7
MARGIN_EV_ACCOUNT, MARGIN_EV_AMOUNT, MARGIN_EV_COLLATERAL = 3, 4, 5
MARGIN_WIDTH = 6
# (EV_FUNDING, seq, symbol, per_lot, cumulative, remainder) (``shardex.engine.funding``)
FUNDING_EV_PER_LOT, FUNDING_EV_CUMULATIVE, FUNDING_EV_REMAINDER = 3, 4, 5
FUNDING_WIDTH = 6
# (EV_LIQUIDATION, seq, symbol, account, closed, bankruptcy, notional, settled, uncovered,
# fund) (``shardex.engine.liquidation``)
LIQ_ACCOUNT, LIQ_CLOSED, LIQ_BANKRUPTCY, LIQ_NOTIONAL = 3, 4, 5, 6
LIQ_SETTLED, LIQ_UNCOVERED, LIQ_FUND = 7, 8, 9
LIQ_WIDTH = 10
# (EV_ADL, seq, symbol, account, bankrupt, closed, price) (``shardex.engine.adl``)
ADL_ACCOUNT, ADL_BANKRUPT, ADL_CLOSED, ADL_PRICE = 3, 4, 5, 6
ADL_WIDTH = 7

# -- account tier commands (``shardex.accounts.codes``) ----------------------------------------
# (A_DEPOSIT | A_WITHDRAW, account, asset, amount, ref); the client's (OP_DEPOSIT | OP_WITHDRAW,
# account, asset, amount string, ref) has the same positions
XFER_ACCOUNT, XFER_ASSET, XFER_AMOUNT, XFER_REF = 1, 2, 3, 4
# A_NEW and A_AMEND: the engine's OP_NEW / OP_AMEND positions (A_NEW's budget at NEW_BUDGET)

# -- settlements, engine shard → account shard (``shardex.accounts.codes``) ----------------------
# every kind: (kind, eshard, eseq, prev, symbol, ...)
S_KIND, S_ESHARD, S_ESEQ, S_PREV, S_SYMBOL = 0, 1, 2, 3, 4

# -- account shard events (``shardex.accounts.codes``) -------------------------------------------
# every kind: (kind, seq, ...)
AE_KIND, AE_SEQ = 0, 1
# (AE_BALANCE, seq, account, asset, available, held, why, ref)
BALANCE_ACCOUNT, BALANCE_ASSET, BALANCE_AVAILABLE, BALANCE_HELD = 2, 3, 4, 5
# (AE_FEES, seq, asset, total)
FEES_ASSET, FEES_TOTAL = 2, 3
# (AE_FILL, seq, account, symbol, id, ref, role, bps, fee, asset)
FILL_ACCOUNT, FILL_SYMBOL, FILL_ID, FILL_REF = 2, 3, 4, 5
FILL_ROLE, FILL_BPS, FILL_FEE, FILL_ASSET = 6, 7, 8, 9
# (AE_RESTRICTED, seq, account, restricted)
RESTRICTED_ACCOUNT, RESTRICTED_FLAG = 2, 3
RESTRICTED_WIDTH = 4
# (AE_REJECTED, seq, account, ref, reason, code) / (AE_REPEATED, seq, account, ref)
AREJ_ACCOUNT, AREJ_REF, AREJ_REASON, AREJ_CODE = 2, 3, 4, 5
# (AE_FORWARD, seq, eshard, prev, cmd)
FWD_ESHARD, FWD_PREV, FWD_CMD = 2, 3, 4
# (AE_GAP, seq, eshard, have, prev, eseq) / (AE_ANOMALY, seq, eshard, eseq, reason)
GAP_ESHARD = ANOMALY_ESHARD = 2

# -- a forward on the account → engine shard link (``AccountMachine.resend``) ---------------
# (account shard's seq, prev, engine command)
LINK_SEQ, LINK_PREV, LINK_CMD = 0, 1, 2

# -- the engine shard's journal record of a forwarded command (``wire.protocol.OP_FORWARD``) ----
# (OP_FORWARD, account shard, its forward seq, prev, command)
FWD_RECORD_WIDTH, FWD_RECORD_CMD = 5, 4

# (OP_TIME, ts): the exchange time journaled at the head of a batch (``shardex.timemarks``)
TIME_TS = 1

# -- a PUB message's payload (``shardex.wire.pub``) ----------------------------------------
# (VERSION, shard, events[, epoch]): a replicated leader appends its epoch
PUB_EPOCH = 3
PUB_TS = 4  # the events' exchange time (ms since the Unix epoch, UTC), 5-field form

# -- order rows of the per-order audit (``shardex.accounts.orders``) --------------------------
# an account shard's held order: [account, symbol, id, side, open lots, price ticks|None,
# cap ticks, held units, pending amends]; an engine shard's live order: the first six
ROW_ACCOUNT, ROW_SYMBOL, ROW_ID, ROW_SIDE, ROW_OPEN, ROW_PRICE = 0, 1, 2, 3, 4, 5
ROW_CAP, ROW_HELD, ROW_PENDING = 6, 7, 8

# -- read requests (``shardex.wire.protocol``) ---------------------------------------------------
# (OP_BALANCE, account) / (OP_ORDER, account): an account's books on its account shard
READ_ACCOUNT = 1
# (OP_ORDER, symbol, account, id): one order's fate (engine shard) or hold (account shard)
ORDER_SYMBOL, ORDER_ACCOUNT, ORDER_ID = 1, 2, 3
# (OP_AUDIT, offset): a page of an account shard's held orders
AUDIT_OFFSET = 1
# (OP_EVENTS, first seq, last seq): a range re-sent (the bridge's repairs)
EVENTS_FIRST, EVENTS_LAST = 1, 2
