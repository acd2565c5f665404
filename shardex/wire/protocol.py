"""The one wire schema of shardex: public JSON form of commands/events and their engine tuples.

This module is the only place that converts between decimal strings (the public, exact form of
money and size) and the integer ticks/lots the engine uses, and between field names and the
positional tuples of ``shardex.engine.codes``. Anything that cannot be decoded becomes an
``OP_REJECT`` command carrying the reason, so the engine still sequences it and a replay of the
same input yields the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgpack

from shardex.engine.codes import (
    MAX_ID_LEN,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_NEW,
    OP_REJECT,
    REJ_MALFORMED,
    REJ_UNKNOWN_OP,
    Command,
)
from shardex.engine.markets import Market
from shardex.placement.core import default_owner
from shardex.wire import codes
from shardex.wire.envelope import VERSION, packb, unpackb, version_error
from shardex.wire.errors import (  # noqa: F401  (re-exported: their historical home)  # noqa: F401  (re-exported)
    ERR_INTERNAL_OP,
    ERR_JOURNAL,
    ERR_MALFORMED_MESSAGE,
    ERR_NOT_LEADER,
    ERR_OVERLOADED,
    ERR_RECOVERING,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_KEY,
    QUOTE_LEN,
    ErrorText,
    decode_error,
    encode_error,
    error,
    halted_error,
    internal_error,
    journal_error,
    leader_changed_error,
    not_leader_epoch,
    not_leader_error,
    quote,
    recovering_error,
    too_many_reads_error,
)
from shardex.wire.layouts import (
    CANCEL_ALL_AFTER,
    CMD_ID,
    CMD_OP,
    CMD_SYMBOL,
    NEW_OPTS,
    NEW_WIDTH,
    REJECT_CODE,
    REJECT_REASON,
)
from shardex.wire.options import options_refusal
from shardex.wire.pub import decode_events, decode_events_epoch, encode_events  # noqa: F401
from shardex.wire.schema import (  # noqa: F401  (re-exported: their historical home)
    _at,
    command_from_json,
    command_from_json_line,
    command_to_json,
    event_to_json,
    event_to_json_line,
)

# ---------------------------------------------------------------------------------------------
# Binary wire protocol (ZeroMQ multipart + msgpack)
#
# client → router:  [routing key, request id, payload]
# router → shard:   [client identity, request id, payload]            (over the shard's DEALER)
# shard → client:   [request id, reply]                               (router prepends identity)
#
# routing key: the UTF-8 symbol of the batch's commands (router hashes it), ``#<i>`` to address
#              shard i directly (status/book reads), or empty to ask the router itself (topology).
# payload:     msgpack [VERSION, [command, ...]]; commands are the engine tuples of
#              ``shardex.engine.codes`` (ints inside) plus the read ops below.
# reply:       msgpack [VERSION, error, results]; ``error`` is None or a batch-level error
#              ``[code, text, data]`` (``shardex.wire.errors``: a code of the one table
#              ``shardex.wire.codes``, e.g. ``overloaded``, ``unavailable``, ``not_leader`` with
#              its ``epoch`` in data) in which case ``results`` is None; otherwise one result
#              per command, in order: the command's event tuples for writes, a map for reads.
# events PUB:  [topic = symbol, msgpack [VERSION, shard, [event, ...]]] in seq order; a
#              replicated shard's leader appends its epoch: [VERSION, shard, [event, ...], epoch]
#              (additive: a single-process shard sends the 3-field form, as before).
#              Encoded and decoded in ``shardex.wire.pub`` (the bridge's decoder).
#
# Replicated shards: a process that does not lead its shard (a standby, or a leader
# fenced by a newer epoch or past its lease deadline) runs nothing and answers every request,
# reads included, with the batch error ``not_leader_error`` (code ``not_leader``, its epoch
# in data): ``not leader (epoch E): why``, prefixed ``shard unavailable: `` when it came
# through a router (data ``routed``). A fenced leader also tells each router once, on its link:
#   shard → router:  ["", NOT_LEADER, msgpack (OP_HELLO, info)]  (this link stopped leading)
# When a newer epoch's leader registers, the router answers the requests still in flight to
# the deposed one with ``leader_changed_error`` (code ``leader_changed``: they may have run).
#
# Router ⇄ shard link (smart batching): per wake-up the router merges the requests it forwards
# to one shard into one message, and the shard answers a wake-up's requests from one router in one
# message, so the per-message costs (syscalls, frames, Python loop turns) are paid once per batch:
#   router → shard:  [BATCH, msgpack [client, request id, client's key id, payload, ...]]
#   shard → router:  ["", BATCH, msgpack [client, request id, reply, ...]]
#   shard → router:  ["", "HELLO", msgpack (OP_HELLO, info)]  (registration, every second)
# Each request keeps its own reply and semantics; a batch is at most MAX_BATCH requests and
# MAX_BATCH_BYTES of payloads.
# ---------------------------------------------------------------------------------------------

OP_BOOK = 10  # (OP_BOOK, symbol, depth)
OP_STATUS = 11  # (OP_STATUS,)
OP_EVENTS = 12  # (OP_EVENTS, first seq, last seq): re-send a range (gap repair)
MAX_EVENTS_REPLY = 10_000  # events per OP_EVENTS reply; ask again for the rest
OP_ORDER = 13  # (OP_ORDER, symbol, account, id): the fate of one order (see ``order_state``)
OP_MARKETS = 14  # (OP_MARKETS,): the shard's market table, as ``markets_to_wire`` gives it
OP_PAIR = 15  # (OP_PAIR, symbol): a pair's move records on an engine shard (``node.moves``)
OP_PLACE = 16  # (OP_PLACE, map): an engine shard routes by this newer placement map (admin)
OP_HELLO = 20  # shard → router registration: (OP_HELLO, info map)
OP_POSITIONS = 62  # (OP_POSITIONS, account): its perp positions here (``node.positions_read``);
# (OP_POSITIONS,): every perp pair's totals here, for the audit (admin and reader keys)
MAX_FRAME = 1 << 20  # bytes; larger payloads are rejected before decoding
# Reply size budgets per request (reads share them; an OP_EVENTS read stops adding events past
# what is left, always returning at least one). Small enough that a peer which never reads cannot
# make a process hold much: the bound is (pipe HWM + outbox) × budget.
MAX_EVENTS_REPLY_BYTES = 256 << 10  # a request on a shard's direct port (the bridge's repairs)
MAX_ROUTED_REPLY_BYTES = 64 << 10  # a request relayed by the router (ask direct for more)
MAX_BOOK_DEPTH = 1000  # levels per side a book read may ask for
MAX_SYMBOL_LEN = 32  # bytes; longer symbols are rejected at the edge

# Order fates (OP_ORDER replies: {"state": ..., ...}); "unknown" means the shard has neither the
# live order nor a record of it within its recent-results window: it was never executed there.
STATE_LIVE, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN = "live", "filled", "cancelled", "unknown"
STATE_PENDING = "pending"  # a stop / take-profit order waiting for its trigger (docs/orders.md)

BATCH = b"B"  # first frame of a batched router ⇄ shard message
BATCH_REQUEST_WIDTH = 4  # client, request id, key id, payload
BATCH_REPLY_WIDTH = 3  # client, request id, reply
MAX_BATCH = 256  # requests per batched message
MAX_BATCH_BYTES = 1 << 20  # their payload bytes (a single larger request travels alone)

NOT_LEADER = b"NOTLEADER"  # shard → router: this link no longer leads its shard


def markets_to_wire(markets: Mapping[str, Market]) -> dict[str, list[str]]:
    """Market table → plain msgpack-able map {symbol: [tick, lot, max_price, max_qty]} (decimal
    strings), so a client learns the cluster's markets instead of guessing them."""
    return {
        s: [str(m.tick), str(m.lot), str(m.max_price), str(m.max_qty)]
        for s, m in sorted(markets.items())
    }


def markets_from_wire(obj: Any) -> dict[str, Market]:
    """Inverse of ``markets_to_wire``; raises ``ValueError`` on anything malformed."""
    if not isinstance(obj, Mapping):
        raise ValueError("markets: expected a map")
    out: dict[str, Market] = {}
    for symbol, spec in obj.items():
        if type(symbol) is not str or not isinstance(spec, list | tuple) or len(spec) != 4:
            raise ValueError(f"markets: bad entry for {str(symbol)[:QUOTE_LEN]!r}")
        try:
            tick, lot, max_price, max_qty = (Decimal(str(v)) for v in spec)
            out[symbol] = Market(symbol, tick, lot, max_price, max_qty)
        except (ArithmeticError, ValueError) as exc:
            raise ValueError(f"markets: bad entry for {symbol[:QUOTE_LEN]!r}: {exc}") from None
    return out


def shard_for(symbol: str | bytes, shards: int) -> int:
    """The shard a pair goes to when no placement map pins it: rendezvous hashing over N
    (``shardex.placement.default_owner``; stable across processes and hosts).

    Where a pair's owner is decided (router, shards, direct clients) ask the cluster's
    ``PlacementMap.owner`` instead: a map pins pairs that live elsewhere (a shard-count change
    over data, a moved pair). This is the map without pins, for code that has no map.
    """
    return default_owner(symbol, shards)


# OP_REJECT: 4 also (no code); OP_NEW: 13 also (budget, options map: ``wire.options``)
_WRITE_LEN = {OP_NEW: 11, OP_CANCEL: 4, OP_AMEND: 6, OP_REJECT: 5, OP_CANCEL_ALL: 4}
_WRITE_LONGER = {OP_NEW: NEW_OPTS + 1, OP_CANCEL_ALL: CANCEL_ALL_AFTER + 1}  # (after_ms)

_SCALAR = frozenset((int, str, bool, float, type(None)))
MAX_REASON_LEN = 200  # bytes: a client-sent OP_REJECT reason is cut to this


def _too_long(text: str, limit: int) -> bool:
    """More than ``limit`` bytes of UTF-8 (chars counted first: the common, cheap case)."""
    if len(text) > limit:
        return True
    return not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > limit


def _bounded(value: Any, limit: int) -> str:
    return value if type(value) is str and not _too_long(value, limit) else ""


def _plain_new(op: Any, symbol: Any, oid: Any, account: Any, side: Any, otype: Any,
               price: Any, qty: Any, tif: Any, post_only: Any, stp: Any) -> bool:  # fmt: skip
    """Whether an 11-field command is a new order that ``edge_command``'s full checks pass
    unchanged: op ``OP_NEW``, ASCII strings within their limits (so bytes = chars), ints (a
    price may be None) and a bool. Only the shape: the engine judges the values. A command
    this says no to is not refused, it takes the full checks (e.g. a non-ASCII id, a float)."""
    return (
        type(op) is int
        and op == OP_NEW
        and type(symbol) is str
        and len(symbol) <= MAX_SYMBOL_LEN
        and symbol.isascii()
        and type(oid) is str
        and len(oid) <= MAX_ID_LEN
        and oid.isascii()
        and type(account) is str
        and len(account) <= MAX_ID_LEN
        and account.isascii()
        and type(side) is int
        and type(otype) is int
        and (price is None or type(price) is int)
        and type(qty) is int
        and type(tif) is int
        and type(post_only) is bool
        and type(stp) is int
    )


def edge_command(cmd: Any) -> Command:
    """A decoded write command from the wire → a command safe to apply and journal.

    The shard calls this before the engine sees a write. A command of the expected shape passes
    unchanged (the engine still judges its meaning); anything else becomes an ``OP_REJECT`` whose
    symbol and id are echoed only when they are bounded strings, with a reason that quotes at
    most ``QUOTE_LEN`` chars of the input and a ``REJ_*`` code (``unknown_op`` or ``malformed``).
    A client's own ``OP_REJECT`` may have 4 fields or 5 (with a code; the engine turns a code it
    does not know into ``malformed``). So a reject journals and publishes a bounded record
    whatever the client sent (a 1 MiB id costs a few bytes, not a megabyte, downstream).
    """
    if type(cmd) is tuple and len(cmd) == NEW_WIDTH and _plain_new(*cmd):
        return cmd  # the common case, without the loop of the full checks (same verdict)
    return _edge_checked(cmd)


def _edge_checked(cmd: Any) -> Command:
    """``edge_command``'s full checks (every command may take them; ``_plain_new`` only
    spares a well-formed new order the loop)."""
    if type(cmd) is not tuple or not cmd:
        reason = f"malformed command: expected an array, got {quote(cmd)}"
        return (OP_REJECT, "", "", reason, REJ_MALFORMED)
    op = cmd[CMD_OP]
    n = _WRITE_LEN.get(op) if type(op) is int else None
    if n is None:
        return (OP_REJECT, _bounded(_at(cmd, CMD_SYMBOL), MAX_SYMBOL_LEN),
                _bounded(_at(cmd, CMD_ID), MAX_ID_LEN), f"unknown op {quote(op)}",
                REJ_UNKNOWN_OP)  # fmt: skip
    symbol, oid = _at(cmd, CMD_SYMBOL), _at(cmd, CMD_ID)
    reason = None
    longer = REJECT_CODE if op == OP_REJECT else _WRITE_LONGER.get(op)  # (the other length)
    with_opts = op == OP_NEW and len(cmd) == NEW_OPTS + 1  # (options: checked apart, last)
    if len(cmd) != n and len(cmd) != longer:
        reason = f"malformed command: op {op} takes {n} fields, got {len(cmd)}"
    elif with_opts and options_refusal(cmd[NEW_OPTS]) is not None:
        reason = f"malformed command: {options_refusal(cmd[NEW_OPTS])}"
    elif type(symbol) is not str:
        reason = f"symbol must be a string, got {quote(symbol)}"
    elif _too_long(symbol, MAX_SYMBOL_LEN):
        reason = f"symbol longer than {MAX_SYMBOL_LEN} bytes: {quote(symbol)}"
    elif type(oid) is not str:
        reason = f"id must be a string, got {quote(oid)}"
    elif _too_long(oid, MAX_ID_LEN):
        reason = f"id longer than {MAX_ID_LEN} bytes: {quote(oid)}"
    else:
        for i in range(CMD_ID + 1, NEW_OPTS if with_opts else len(cmd)):
            v = cmd[i]
            t = type(v)
            if t not in _SCALAR:
                reason = f"malformed command: field {i} is a {t.__name__}"
                break
            if (
                t is str
                and _too_long(v, MAX_ID_LEN)
                and not (op == OP_REJECT and i == REJECT_REASON)  # (a reason may be longer)
            ):
                reason = f"field {i} longer than {MAX_ID_LEN} bytes: {quote(v)}"
                break
        else:
            if op == OP_REJECT and type(cmd[REJECT_REASON]) is str:
                return _reason_cut(cmd)
            return cmd
    symbol, oid = _bounded(symbol, MAX_SYMBOL_LEN), _bounded(oid, MAX_ID_LEN)
    return (OP_REJECT, symbol, oid, reason, REJ_MALFORMED)


def _reason_cut(cmd: Command) -> Command:
    """An ``OP_REJECT`` with its reason cut to ``MAX_REASON_LEN`` bytes, not chars (200
    four-byte chars are 800 bytes), on a char boundary; unchanged when it fits."""
    reason = cmd[REJECT_REASON]
    if not _too_long(reason, MAX_REASON_LEN):
        return cmd
    cut = reason.encode("utf-8", "surrogatepass")[:MAX_REASON_LEN].decode("utf-8", "ignore")
    return cmd[:REJECT_REASON] + (cut,) + cmd[REJECT_REASON + 1 :]


def encode_request(cmds: list[Command] | tuple[Command, ...]) -> bytes:
    return packb((VERSION, cmds))


def decode_request(payload: bytes) -> tuple[Any, ErrorText | None]:
    """Request payload → (commands, None) or (None, error) for a batch-level reject."""
    if len(payload) > MAX_FRAME:
        return None, error(codes.FRAME_TOO_LARGE, f"frame too large ({len(payload)} bytes > "
                           f"{MAX_FRAME})", size=len(payload), max=MAX_FRAME)  # fmt: skip
    try:
        msg = unpackb(payload)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same here
        return None, error(codes.MALFORMED_REQUEST, f"malformed payload: {type(exc).__name__}")
    if type(msg) is not tuple or len(msg) != 2:
        return None, error(codes.MALFORMED_REQUEST, "malformed payload: expected [version, "
                           "commands]")  # fmt: skip
    version, cmds = msg
    if type(version) is not int or version != VERSION:  # (the call only for a refusal)
        reason = version_error(version) or "unsupported protocol version"
        return None, error(codes.UNSUPPORTED_VERSION, reason, version=quote(version),
                           speaks=VERSION)  # fmt: skip
    if type(cmds) is not tuple:
        return None, error(codes.MALFORMED_REQUEST, "malformed payload: commands must be an array")
    return cmds, None


def encode_reply(results: list[Any] | None, error: ErrorText | None = None) -> bytes:
    """A reply: ``results`` (one per command), or None and a batch ``error`` with its code
    (``TypeError`` for an error without one: every error must say what it is)."""
    return packb((VERSION, None if error is None else encode_error(error), results))


def _bad_reply(text: str, **data: Any) -> tuple[ErrorText, None]:
    return error(codes.MALFORMED_REPLY, f"malformed reply: {text}", **data), None


def decode_reply(payload: bytes) -> tuple[ErrorText | None, Any]:
    """Reply payload → (error, results): the one decoder of replies. Never raises: garbage
    becomes a ``malformed_reply`` error (its fate is open).

    ``results`` is a tuple when ``error`` is None (callers still check its length and items).
    """
    try:
        msg = unpackb(payload)
        version, err, results = msg
    except Exception as exc:
        return _bad_reply(type(exc).__name__)
    reason = version_error(version, " in reply")
    if reason is not None:  # a reply this side cannot read: its fate is open
        return error(codes.MALFORMED_REPLY, reason, version=quote(version)), None
    if err is not None:
        return decode_error(err), None
    if type(results) is not tuple:
        return _bad_reply(f"results must be an array, got {quote(results)}")
    return None, results


def encode_batch(items: list[bytes]) -> bytes:
    """A flat list of frames (``width`` per request) → one batched message body."""
    return packb(items)


def decode_batch(data: bytes, width: int) -> list[bytes] | None:
    """A batched message body → its flat list of frames, or None if it is not one.

    Both ends of the link are our own processes (and CURVE-authenticated in secure mode), but a
    bad batch must still cost a counted drop, never a crash: the shape is checked in full.
    """
    try:
        items = msgpack.unpackb(data, use_list=True, raw=True)
    except Exception:
        return None
    if type(items) is not list or not items or len(items) % width:
        return None
    if len(items) > MAX_BATCH * width * 4:  # a peer's batch limit may differ; never unbounded
        return None
    for item in items:
        if type(item) is not bytes:
            return None
    return items


# ---------------------------------------------------------------------------------------------
# Account tier (design in docs/accounts.md). Off unless the cluster runs with
# account shards (``shardex up --accounts M``); nothing above changes with it off.
#
# client → router → account shard: routing key ``@<account>`` (the router hashes the account
# with crc32 % M, ``shardex.accounts.account_shard_for``) or ``%<j>`` (account shard j: status,
# audit). Same payload/reply framing as the engine shards. Commands there:
#   (OP_NEW, ... 11 fields as for an engine shard [, budget decimal str of the quote asset])
#   (OP_AMEND, ...) as for an engine shard; cancels go to the engine shard (symbol key).
#   (OP_DEPOSIT|OP_WITHDRAW, account, asset, amount decimal str, ref)  admin keys only
#   (OP_BALANCE, account) read → {"account", "balances": {asset: [available, held]}} decimals
#   (OP_AUDIT,) read → this account shard's totals per asset (decimal strings) and "integrity"
#   (OP_FEES, account) read → the account's fee group, tier, 30-day volume and rates per market
#   (OP_FEE_GROUP, account, group) admin keys only: put the account in a fee group ("": none)
#   (OP_RESTRICT, account, restricted) admin keys only: (un)restrict the account
#   (OP_MARGIN, symbol, account, signed amount decimal str, ref) the account's key or an
#     admin's: a perp pair's margin in/out (``shardex.accounts.margin``) → a map
# A new/amend's result is ``[]`` when its hold was taken and it was forwarded to its engine
# shard, else one EV_REJECTED event (reason like ``insufficient USD: available 10.00, needed
# 30.01``, code ``insufficient_funds``); a transfer's result is a map (``ok`` or ``rejected``).
#
# account shard j ⇄ engine shard i: account shard j's DEALER (identity ``accounts-<j>``)
# connects to engine shard i's account link (a ROUTER bound at ``Layout.account_link(i)``):
#   j → i: [LINK_FWD, msgpack (j, [(seq, prev, engine command), ...])]   forwarded orders
#   j → i: [LINK_SYNC, msgpack (j, last engine seq j applied from i)]    every second + on gap
#   i → j: [LINK_SETTLE, msgpack (i, [settlement, ...])]   layouts in shardex.accounts.codes
#   i → j: [LINK_HAVE, msgpack (i, last forward seq i applied from j)]   answer to a SYNC
#   i → j: [LINK_MARK, msgpack (i, token)]   a cancel for an order i does not know is parked
#   j → i: [LINK_MARK, msgpack (j, (token, last forward seq j put on the link to i))]   at once
# A SYNC makes i re-send its settlements for j after the given seq (from a bounded ring); a
# HAVE makes j re-send its forwards after the given seq. Both sides skip duplicates and refuse
# gaps by (seq, prev) (``shardex.accounts.link``), so every message is applied exactly once.
# A MARK's answer follows on j's link every forward j sent before it (``shardex.node.parked``).
# A replicated leader appends its lease epoch to every payload, ``(j, body, epoch)`` (``wire.link``;
# the 2-tuple is epoch 0); the receiver drops one below the highest epoch it has seen from that
# shard (``accounts.link.EpochFence``, docs/account-link.md).
# ---------------------------------------------------------------------------------------------

OP_DEPOSIT = 30
OP_WITHDRAW = 31
OP_BALANCE = 32
OP_AUDIT = 33
OP_FEES = 34
OP_FEE_GROUP = 35
OP_RESTRICT = 38  # (OP_RESTRICT, account, restricted: bool) admin keys only (accounts.restrict)
OP_LIST_PAIR = 39  # (OP_LIST_PAIR, symbol, definition, [maker, taker]) admin (accounts.listing)
# Engine shard journal record of a forwarded command: (OP_FORWARD, j, seq, prev, command).
# Never accepted from a client: only the account link produces it.
OP_FORWARD = 40
ACCOUNT_ROUTE = b"@"  # routing key prefix: @<account>
ACCOUNT_SHARD_ROUTE = b"%"  # routing key prefix: %<account shard index>
LINK_FWD = b"FWD"
LINK_SYNC = b"SYNC"
LINK_SETTLE = b"SETTLE"
LINK_HAVE = b"HAVE"
LINK_MARK = b"MARK"


# Commands that only shardex creates, never a client: an edge reject (the SDK answers its own
# undecodable commands locally; a shard records the rejects it makes itself), a forward (only
# the account link makes one) and a shard's registration. A client that sends one could put
# any order id and any text into the journal and the event streams.
INTERNAL_OPS = frozenset((OP_REJECT, OP_HELLO, OP_FORWARD))


def internal_op_refusal(cmds: Any) -> ErrorText | None:
    """The batch error for a decoded request holding an internal-only op (None: it holds none).

    Checked before anything of the request is applied, so a refused request leaves no trace.
    """
    for cmd in cmds:
        op = cmd[CMD_OP] if type(cmd) is tuple and cmd else None
        if type(op) is int and op in INTERNAL_OPS:
            return error(codes.INTERNAL_OP, f"{ERR_INTERNAL_OP} {op}: made inside the "
                         "cluster only, never accepted from a client (nothing of this request "
                         "ran)", op=op)  # fmt: skip
    return None


def account_route(account: str) -> bytes:
    """The routing key of an account's commands (new, amend, transfers, balance)."""
    return ACCOUNT_ROUTE + account.encode()
