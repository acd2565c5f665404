"""Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio) with the same API.

Money goes in and out as ``Decimal`` (or decimal strings); the client converts to integer
ticks/lots with the market table (the same one the shards use), so shards only see integers.
``submit_many`` batches commands per shard and keeps a window of batches in flight, which is
what makes the cluster fast: one ZeroMQ round trip per batch instead of per order.

``direct=True`` asks the router once for the topology, then talks straight to each shard's own
endpoint with the same ``shard_for`` hash, skipping the router hop.

Markets: ``markets=`` takes a mapping or the path of a markets TOML file. Without it the client
learns the cluster's own table on connect (first request): from the router's topology, else by
asking a shard (``OP_MARKETS``), and uses the built-in defaults only when the cluster does not
say. So a market defined with ``shardex up --markets FILE`` just works in the client.

Identity: ``key=`` is a key file path (or ``KeyFile``) from ``shardex keys add``; without it the
client uses ``$SHARDEX_KEY``, else the local cluster's admin key (``./data/keys/admin.key``, made
by ``shardex up``), else no key (an ``--insecure`` cluster); ``key=False`` forces no key. The
cluster acts only for the accounts the key holds: a one-account trader key makes that account
the default. A key the cluster refuses raises ``AuthenticationFailed`` (a ``ShardexError``).

Every ``Result`` says what happened to its command (``Result.fate``):

* ``"executed"``: the shard ran it (its events are in ``Result.events``; a reject is executed too,
  ``Result.ok`` tells the outcome);
* ``"not executed"``: it never ran (``overloaded``, ``shard unavailable``, ``journal unavailable``,
  cannot connect, or the shard says it has no record of the order);
* ``"unknown"``: only when the shard itself could not be asked.

When a command gets no reply within ``timeout`` the client does not guess: it asks the owning
shard for the order (``OP_ORDER``: live / filled / cancelled / unknown) before returning, and puts
the answer, Decimal-converted, in ``Result.status``. ``order_status(symbol, id)`` asks the same
question directly. For a cancel or amend the fate is read from the order's state (cancelled by
the user / live with the asked qty and price), since the shard keeps fates per order.
With the account tier on, a ``new`` or ``amend`` (which go through the account's shard: it
holds, then forwards) asks that account shard first, on every path (``Retry`` too): no answer →
``unknown`` (it may still be queued there, and run); a held ``new`` → executed; else the
engine shard decides as above (``ClientCore.fate_steps``, shared by both clients).

Retrying safely: a shard refuses a ``new`` whose id is live or finished within its recent-results
window as a duplicate. So after a timeout, either look at ``Result.fate`` (``"not executed"``:
send it again) or simply send the *same* command with the *same id* again: it can never be
placed twice within the window; a duplicate reject means the first one ran (ask
``order_status`` for its fills). Never retry with a new id unless the fate is ``"not executed"``.

Automatic retries (``retry=Retry()``; issue 15, failover): a write whose outcome is open or that
a non-leader refused (timeout, unreadable reply, ``not leader``, ``shard unavailable``, cannot
reach) is retried within ``Retry.deadline`` so that it never runs twice: its order's fate is
asked first (``OP_ORDER``) and the command is sent again, with the same id, only when the
shard has no record of it (``unknown``; a cancel or amend: when the order does not show it
yet); a retried ``new`` refused as ``duplicate_id`` ran in an earlier attempt, and its fate is
asked. A command resolved from its fate has no events (``Result.status`` has the order's state,
fills and trades) and ``Result.attempts`` > 1. A direct client (``direct=True``; with or
without ``retry``) asks the router for the topology again after ``not leader`` or cannot
reach, so it (or its next call) follows the new leader's endpoint. Past the deadline (a round
started before it finishes: its fate query and re-send, each bounded by ``timeout``) the last
error is returned with its fate (never a guess). Not retried: ``overloaded`` (load
shedding), ``journal unavailable``, reads, ``submit_raw``. ``retry=None`` (the default)
keeps one attempt per command, as before.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from shardex.accounts.orders import PlanError, audit_plan, persistent
from shardex.amounts import plain
from shardex.auth import AuthError, KeyFile
from shardex.config import load_markets
from shardex.endpoints import NO_REPLY_SUSPECTS, EndpointsFileError, find_router
from shardex.engine import DEFAULT_MARKETS, Market
from shardex.engine.codes import (
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    OP_REJECT,
    REJ_MALFORMED,
    SIDES,
    Command,
)
from shardex.layout import Layout
from shardex.wire import codes
from shardex.wire import errors as wire_errors
from shardex.wire.protocol import (
    OP_AUDIT,
    OP_BALANCE,
    OP_BOOK,
    OP_DEPOSIT,
    OP_MARKETS,
    OP_ORDER,
    OP_STATUS,
    OP_WITHDRAW,
    STATE_CANCELLED,
    STATE_FILLED,
    STATE_LIVE,
    STATE_UNKNOWN,
    ErrorText,
    account_route,
    command_from_json,
    decode_reply,
    encode_request,
    event_to_json,
    markets_from_wire,
    shard_for,
)
from shardex.wire.transport import (
    AsyncReplies,
    EndpointError,
    Handshake,
    Pending,
    RequestIds,
    TopologyError,
    check_endpoint,
    dealer,
    find_key,
    parse_topology,
    topology_frames,
)

DEFAULT_ENDPOINT = Layout().frontend

EXECUTED, NOT_EXECUTED, UNKNOWN = "executed", "not executed", "unknown"
Fate = tuple[str, dict[str, Any] | None]  # (executed / not executed / unknown, status)
# ``ClientCore.fate_steps``: yields (queries, via account shards), is sent their outcomes,
# returns (index → fate, indexes whose query a batch error refused)
FateSteps = Generator[tuple[list[Command], bool], list, tuple[dict[int, Fate], list[int]]]
TIMEOUT_PREFIX = "timeout after"  # local error: no reply in time (fate must be asked)
MALFORMED_PREFIX = "malformed reply"  # local error: a reply we cannot read (fate must be asked)
UNREACHABLE_PREFIX = "cannot reach"  # local error: the request could not even be sent
_MAX_INT = 1 << 63
MARKETS_RETRY_S = 10.0  # seconds between attempts to learn the cluster's markets
_MAX_REASON = 300  # characters of a peer's error string kept (a hostile peer may send MBs)


@dataclass(frozen=True)
class Retry:
    """The SDK's retry policy for writes whose outcome is open or that a non-leader refused
    (see the module docstring): bounded by ``deadline`` seconds after the first attempt, with
    a pause between rounds that starts at ``backoff`` and doubles up to ``max_backoff`` (a
    failover takes ~1–1.5 s: a round every ~0.3 s past the first ones)."""

    deadline: float = 10.0
    backoff: float = 0.05
    max_backoff: float = 0.3

    def __post_init__(self) -> None:
        if not (self.deadline >= 0 and self.backoff > 0 and self.max_backoff >= self.backoff):
            raise ValueError("Retry: deadline >= 0 and 0 < backoff <= max_backoff")


DEFAULT_RETRY: Retry | None = None  # ``Client(retry=...)`` default: one attempt, as before


class ShardexError(Exception):
    """Base class of client errors (connection, timeout, bad reply). ``error``: the coded
    error behind it when there is one, and ``code`` its public name (``shardex.wire.codes``:
    ``timeout``, ``unreachable``, ``overloaded``...); match on that, not on the message."""

    def __init__(
        self, message: str = "", code: int | None = None, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.error: ErrorText | None = None if code is None else ErrorText(code, message, data)

    @property
    def code(self) -> str | None:
        return None if self.error is None else self.error.name


class RequestTimeout(ShardexError):
    """No reply within the client's timeout (shard or router down, or overloaded); code
    ``timeout``, or ``unreachable`` when the request could not even be sent."""

    def __init__(
        self, message: str = "", code: int = codes.TIMEOUT, data: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, code, data)


class AuthenticationFailed(ShardexError):
    """The cluster refused this client's key (unknown, revoked, or another cluster's), or the
    client and the cluster disagree on security (a secure cluster and no key, or the reverse)."""


KeyArg = KeyFile | str | os.PathLike | bool | None


class _Malformed(Exception):
    """Internal: a reply value that does not have the shape the protocol promises."""


@dataclass
class Result:
    """What happened to one command: its events (Decimal amounts) or a batch-level error, and
    its ``fate`` (executed / not executed / unknown; see the module docstring)."""

    command: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # overloaded / shard unavailable / timeout / malformed ...
    fate: str | None = None
    status: dict[str, Any] | None = None  # the order's state, when the fate had to be asked
    attempts: int = 1  # sends of this command (> 1: retried, see ``Retry``)

    @property
    def rejected(self) -> bool:
        return self.error is not None or any(e["ev"] == "rejected" for e in self.events)

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def reason(self) -> str | None:
        if self.error is not None:
            return self.error
        for e in self.events:
            if e["ev"] == "rejected":
                return e["reason"]
        return None

    @property
    def code(self) -> str | None:
        """The stable code (``shardex.wire.codes``) when the command was rejected: the engine's
        (``off_grid``, ``duplicate_id``, …), or the batch error's (``not_leader``,
        ``overloaded``, ``timeout``, …); None otherwise. Match on this, not on ``reason``'s
        wording."""
        if self.error is not None:
            return self.error.name if type(self.error) is ErrorText else None
        for e in self.events:
            if e["ev"] == "rejected":
                return e.get("code")
        return None

    @property
    def trades(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "trade"]

    @property
    def filled(self) -> Decimal:
        return sum((e["qty"] for e in self.trades), Decimal(0))


def _money(value: Any, name: str) -> str:
    if isinstance(value, float):
        raise TypeError(f"{name}: use Decimal or str for money and size, never float")
    if isinstance(value, Decimal | int):
        return plain(value)  # never "1E+2": the edge takes plain decimals only
    if isinstance(value, str):
        return value
    raise TypeError(f"{name}: expected Decimal, str or int, got {type(value).__name__}")


def _is_int(v: Any) -> bool:
    return type(v) is int and 0 <= v < _MAX_INT


# Event tuple layouts (see engine/codes.py): "i" non-negative int64, "s" str, "d" side (0/1).
_EVENT_SHAPES: dict[int, str] = {
    EV_ACCEPTED: "iiss",
    EV_TRADE: "iisiissdi",
    EV_CANCELLED: "iisssi",
    EV_REJECTED: "iisssi",  # ..., reason, code (any int: a newer shard may know more codes)
    EV_AMENDED: "iissii",
}
_NEEDS_MARKET = (EV_TRADE, EV_CANCELLED, EV_AMENDED)


def _item(seq: Any, i: int) -> Any:
    return seq[i] if len(seq) > i else None


def _check(value: Any, kind: str) -> bool:
    if kind == "i":
        return _is_int(value)
    if kind == "s":
        return type(value) is str
    return type(value) is int and value in (0, 1)


# The decisions read the error's code (``shardex.wire.codes``), never its text.


def uncertain(error: str | None) -> bool:
    """True when an error leaves the command's fate open (it may have run): ask the shard."""
    return wire_errors.uncertain(error)


def retryable(error: str | None) -> bool:
    """True when ``Retry`` may send the command again (after asking its fate): its outcome is
    open, or a router or non-leader refused it during a failover, or it could not be sent."""
    return wire_errors.retryable(error)


def stale_topology(error: str | None) -> bool:
    """True when a direct client should ask the router for the topology again: the process it
    reached does not lead (a standby, a fenced leader) or nothing answers there."""
    return wire_errors.refresh(error)


def _malformed(detail: str, what: str = "") -> ErrorText:
    """The client's own error for a reply it cannot read (its fate is open)."""
    return ErrorText(codes.MALFORMED_REPLY, f"{what}{MALFORMED_PREFIX}: {detail}")


def _kept(error: Any) -> Any:
    """A peer's error, cut to ``_MAX_REASON`` chars, its code kept."""
    if type(error) is ErrorText:
        return error.cut(_MAX_REASON)
    return str(error)[:_MAX_REASON]


def _bad_reply(text: str) -> ShardexError:
    """The exception for a read whose reply this client cannot read."""
    return ShardexError(text, codes.MALFORMED_REPLY)


def _failed(what: str, error: Any) -> ShardexError:
    """The exception for a read answered with a batch error (its code kept)."""
    text = f"{what}: {str(error)[:_MAX_REASON]}"
    if type(error) is ErrorText:
        return ShardexError(text, error.code, error.data)
    return ShardexError(text)


def fate_from_state(cmd: Command, status: Mapping[str, Any]) -> str:
    """The fate of ``cmd`` (engine tuple) from its order's raw ``OP_ORDER`` answer.

    new: live/filled/cancelled → executed, unknown → not executed. cancel: the order cancelled
    by the user → executed, else not executed (live, filled first, or never there). amend: live
    with the asked qty and price → executed, else not executed. Anything unreadable → unknown.
    """
    state = status.get("state") if isinstance(status, Mapping) else None
    if state not in (STATE_LIVE, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN):
        return UNKNOWN
    op = cmd[0]
    if op == OP_NEW:
        return NOT_EXECUTED if state == STATE_UNKNOWN else EXECUTED
    if op == OP_CANCEL:
        return (
            EXECUTED
            if state == STATE_CANCELLED and status.get("reason") == "user"
            else (NOT_EXECUTED)
        )
    if op == OP_AMEND:
        if state != STATE_LIVE:
            return NOT_EXECUTED
        qty_ok = cmd[4] is None or status.get("qty") == cmd[4]
        price_ok = cmd[5] is None or status.get("price") == cmd[5]
        return EXECUTED if qty_ok and price_ok else NOT_EXECUTED
    return UNKNOWN


def _load(markets: Mapping[str, Market] | str | os.PathLike | None) -> dict[str, Market] | None:
    if markets is None:
        return None
    if isinstance(markets, str | os.PathLike):
        return load_markets(Path(markets))  # MarketError (a ValueError) names file and entry
    if isinstance(markets, Mapping):
        return dict(markets)
    raise TypeError(
        f"markets: expected a mapping or a TOML file path, got {type(markets).__name__}"
    )


class ClientCore:
    """Everything both clients do that is not I/O: command building, batching plan, storing and
    decoding replies (never raising on garbage), error mapping, topology, markets and fates.

    ``Client`` and ``AsyncClient`` only move frames; keeping the rest here is what stops the two
    from drifting apart. It can be used and tested without any socket.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        markets: Mapping[str, Market] | str | os.PathLike | None = None,
        timeout: float = 5.0,
        direct: bool = False,
        shard_endpoints: list[str] | None = None,
        account: str | None = None,
        key: KeyArg = None,
        retry: Retry | bool | None = None,
    ) -> None:
        if retry is True:
            retry = Retry()
        if retry is not None and retry is not False and not isinstance(retry, Retry):
            raise TypeError(f"retry: expected a Retry, True or None, got {type(retry).__name__}")
        self.retry: Retry | None = retry or None
        try:
            self.key: KeyFile | None = find_key(key)
        except AuthError as exc:
            raise ShardexError(str(exc)) from None
        if account is None and self.key is not None and self.key.role == "trader":
            if len(self.key.accounts) == 1:
                account = self.key.accounts[0]  # the one account this key may act for
        self._watches: list[Handshake] = []
        # None: where ``shardex up`` recorded its router (DATA_DIR/endpoints.json), else the
        # default layout; the source is quoted in connection errors (a wrong port is common)
        self.endpoint_source: str | None = None
        if endpoint is None:
            try:
                found = find_router()
            except EndpointsFileError as exc:
                raise ShardexError(str(exc)) from None
            endpoint, self.endpoint_source = found.endpoint, found.describe()
        try:
            self.endpoint = check_endpoint(endpoint)
            for ep in shard_endpoints or ():
                check_endpoint(ep)
        except EndpointError as exc:
            raise ShardexError(str(exc)) from None
        if shard_endpoints is not None and not shard_endpoints:
            raise ShardexError("shard_endpoints: give one endpoint per shard (none given)")
        given = _load(markets)
        self.markets: dict[str, Market] = given if given is not None else dict(DEFAULT_MARKETS)
        # "given": from the caller; "cluster": learned; None: defaults until the cluster says.
        self.markets_source: str | None = "given" if given is not None else None
        self.timeout = timeout
        self.direct = direct or shard_endpoints is not None
        self.shard_endpoints = list(shard_endpoints) if shard_endpoints else None
        self.account = account
        self.direct_eps: list[str] = []  # the endpoints the direct sockets are connected to
        self.shards: int | None = len(shard_endpoints) if shard_endpoints else None
        # account shards (from the router's topology): with M > 0, new/amend go to the
        # account's shard (routing key ``@account``), which holds their funds first
        self.accounts = 0
        self.ids = RequestIds()
        self._markets_retry_at = 0.0
        self._n = 0
        self._prefix = os.urandom(4).hex()

    def no_reply(self, message: str, code: int = codes.TIMEOUT) -> ShardexError:
        """The error for a request that got nowhere: ``AuthenticationFailed`` when a security
        handshake failed (libzmq delivers nothing then, so the monitor is the only witness),
        else ``RequestTimeout`` (naming the key as a suspect when one is in use)."""
        for w in self._watches:
            problem = w.problem()
            if problem is not None:
                who = f"key {self.key.name or self.key.public[:8]!r}" if self.key else "no key"
                src = f"; {self.endpoint_source}" if self.endpoint_source else ""
                return AuthenticationFailed(f"{problem} ({who}, {self.endpoint}{src})")
        if self.key is not None:
            message += NO_REPLY_SUSPECTS
        if self.endpoint_source:
            message += f" (router {self.endpoint_source})"
        return RequestTimeout(message, code)

    def close_watches(self) -> None:
        for w in self._watches:
            w.close()
        self._watches.clear()

    @property
    def codec(self) -> ClientCore:
        """The JSON-dict → engine-tuple converter (``codec.command``); kept for old callers."""
        return self

    # -- command builders (JSON schema dicts) -----------------------------------------------

    def _acct(self, account: str | None) -> str:
        account = account or self.account
        if not account:
            raise ValueError("account is required (pass account= here or to the client)")
        return account

    def new_id(self) -> str:
        self._n += 1
        return f"{self._prefix}-{self._n}"

    def order(
        self,
        symbol: str,
        side: str,
        qty: Decimal | str | int,
        price: Decimal | str | int | None = None,
        *,
        type: str | None = None,  # noqa: A002 - the schema's field name
        tif: str | None = None,
        post_only: bool = False,
        stp: str | None = None,
        id: str | None = None,  # noqa: A002
        account: str | None = None,
    ) -> dict[str, Any]:
        """Build a ``new`` command dict (does not send it); type defaults from ``price``."""
        cmd: dict[str, Any] = {
            "op": "new",
            "symbol": symbol,
            "id": id or self.new_id(),
            "account": self._acct(account),
            "side": side,
            "type": type or ("market" if price is None else "limit"),
        }
        if price is not None:
            cmd["price"] = _money(price, "price")
        cmd["qty"] = _money(qty, "qty")
        if tif is not None:
            cmd["tif"] = tif
        if post_only:
            cmd["post_only"] = True
        if stp is not None:
            cmd["stp"] = stp
        return cmd

    def _cancel_cmd(self, symbol: str, id: str, account: str | None) -> dict[str, Any]:  # noqa: A002
        return {"op": "cancel", "symbol": symbol, "id": id, "account": self._acct(account)}

    def _amend_cmd(self, symbol, id, qty, price, account) -> dict[str, Any]:  # noqa: A002
        cmd: dict[str, Any] = {
            "op": "amend",
            "symbol": symbol,
            "id": id,
            "account": self._acct(account),
        }
        if qty is not None:
            cmd["qty"] = _money(qty, "qty")
        if price is not None:
            cmd["price"] = _money(price, "price")
        return cmd

    def command(self, obj: Mapping[str, Any]) -> Command:
        """JSON-schema dict (Decimals allowed) → engine tuple, or an OP_REJECT with the reason."""
        obj = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in obj.items()}
        return command_from_json(obj, self.markets)

    # -- batching plan -------------------------------------------------------------------------

    def shard_of(self, symbol: Any) -> int:
        return shard_for(symbol, self.shards) if self.shards and type(symbol) is str else 0

    def plan(
        self, tuples: list[Command], batch: int, via_accounts: bool = False
    ) -> list[tuple[int, bytes, list[int]]]:
        """Group command indexes into per-shard batches, keeping each shard's order.

        Returns (shard, routing key, indexes) in send order. The key is the first command's
        symbol (the router hashes it to the same shard) or ``#<shard>`` when it has none.
        ``via_accounts``: ``OP_ORDER`` reads ``(op, symbol, account, id)`` go to the account's
        shard (the account tier's fate query) instead of the symbol's engine shard.
        """
        batch = max(1, batch)
        n = self.shards
        # per distinct symbol once: (shard, routing key) — the loop below runs per command
        where: dict[Any, tuple[int, bytes]] = {}
        open_: dict[int, tuple[bytes, list[int]]] = {}
        plan: list[tuple[int, bytes, list[int]]] = []
        m = self.accounts
        for i, t in enumerate(tuples):
            if t and t[0] == OP_REJECT:
                continue  # answered here (``edge_rejects``): shards refuse a client's OP_REJECT
            symbol = t[1] if len(t) > 1 else ""
            acct = None
            if len(t) > 3 and t[0] in (OP_NEW, OP_AMEND):
                acct = t[3]
            elif via_accounts and len(t) == 4 and t[0] == OP_ORDER:
                acct = t[2]
            if m and n and type(acct) is str:
                # account tier: to the account's shard (slot n + j; the router's socket)
                key = account_route(acct)
                s = n + zlib.crc32(acct.encode()) % m
                cur = open_.get(s)
                if cur is None:
                    cur = open_[s] = (key, [])
                if cur[0] != key:  # another account of the same shard: its own frame
                    plan.append((s, cur[0], cur[1]))
                    cur = open_[s] = (key, [])
                cur[1].append(i)
                if len(cur[1]) >= batch:
                    plan.append((s, cur[0], cur[1]))
                    del open_[s]
                continue
            w = where.get(symbol) if type(symbol) is str else None
            if w is None:
                sym = symbol if type(symbol) is str else ""
                s = shard_for(sym, n) if n and sym else 0
                w = (s, sym.encode() if sym else f"#{s}".encode())
                if type(symbol) is str:
                    where[symbol] = w
            s = w[0]
            cur = open_.get(s)
            if cur is None:
                cur = open_[s] = (w[1], [])
            cur[1].append(i)
            if len(cur[1]) >= batch:
                plan.append((s, cur[0], cur[1]))
                del open_[s]
        plan.extend((s, key, idx) for s, (key, idx) in open_.items())
        return plan

    @staticmethod
    def edge_rejects(tuples: list[Command], out: list) -> None:
        """Answer, in ``out``, the commands this client could not encode (``OP_REJECT`` tuples):
        a ``rejected`` event with the reason and code, seq 0 (no shard sequenced it). Shards
        refuse an ``OP_REJECT`` from a client (``ERR_INTERNAL_OP``), so it is never sent."""
        for i, t in enumerate(tuples):
            if t and t[0] == OP_REJECT:
                code = t[4] if len(t) > 4 and type(t[4]) is int else REJ_MALFORMED
                sym, oid = (v if type(v) is str else "" for v in (_item(t, 1), _item(t, 2)))
                out[i] = (None, [(EV_REJECTED, 0, sym, oid, str(_item(t, 3)), code)])

    # -- replies: store, decode, map errors (never raise on a peer's garbage) -------------------

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
        kind = ev[0]
        shape = _EVENT_SHAPES.get(kind) if type(kind) is int else None
        if shape is None:
            raise _Malformed(f"unknown event kind {str(kind)[:20]!r}")
        if len(ev) != len(shape) or not all(map(_check, ev, shape)):
            raise _Malformed(f"bad fields in a kind {kind} event")
        if kind in _NEEDS_MARKET and ev[2] not in self.markets:
            raise _Malformed(
                f"event for symbol {ev[2][:32]!r} not in the client's market table "
                "(client and cluster disagree on markets)"
            )
        d = event_to_json(tuple(ev), self.markets)
        for k in ("price", "qty"):
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

    def results(
        self,
        cmds: list[dict[str, Any]],
        decoded: list[tuple[str | None, list[dict[str, Any]]]],
        fates: Mapping[int, tuple[str, dict[str, Any] | None]] | None = None,
        attempts: list[int] | None = None,
    ) -> list[Result]:
        """Build ``Result``s; ``fates`` (index → (fate, status)) covers the uncertain ones."""
        fates = fates or {}
        out = []
        for i, (c, (err, evs)) in enumerate(zip(cmds, decoded, strict=True)):
            if i in fates:
                fate, status = fates[i]
            else:
                fate, status = (EXECUTED if err is None else NOT_EXECUTED), None
                if uncertain(err):
                    fate = UNKNOWN
            out.append(Result(c, evs, err, fate, status, attempts[i] if attempts else 1))
        return out

    # -- retries (``Retry``): the decisions, shared by both clients -----------------------------

    @staticmethod
    def retry_plan(
        tuples: list[Command],
        decoded: list[tuple[str | None, Any]],
        resolved: Mapping[int, Any],
        attempts: list[int],
    ) -> tuple[list[int], list[int]]:
        """(indexes whose fate to ask, indexes to send again now) for the next retry round.

        Asked first: every write whose last attempt may have run or was refused (only a send
        that never left this client, ``cannot reach``, goes again at once), and a retried
        ``new`` refused as ``duplicate_id`` (an earlier attempt ran: its fate says how).
        ``resolved``: indexes already settled by a fate answer."""
        ask: list[int] = []
        send: list[int] = []
        for i, (err, evs) in enumerate(decoded):
            if i in resolved or tuples[i][0] not in (OP_NEW, OP_CANCEL, OP_AMEND):
                continue
            if err is None:
                if (
                    attempts[i] > 1
                    and tuples[i][0] == OP_NEW
                    and any(
                        e.get("ev") == "rejected" and e.get("code") == "duplicate_id" for e in evs
                    )
                ):
                    ask.append(i)
                continue
            if not retryable(err):
                continue
            (send if wire_errors.unsent(err) else ask).append(i)
        return ask, send

    @staticmethod
    def topology_stale(decoded: list, last: Mapping[int, tuple[str, Any]], idx: list[int]) -> bool:
        """A direct client should ask the router for the topology again: a command or its last
        fate query reached a process that does not lead, or nothing at all (a first timeout
        too: the fate query would wait another ``timeout`` at a dead leader's port)."""
        for i in idx:
            if stale_topology(decoded[i][0]) or uncertain(decoded[i][0]) and i not in last:
                return True  # (no reply at all: maybe a dead leader; asking is cheap)
            status = last.get(i, (None, None))[1]
            if isinstance(status, dict) and stale_topology(status.get("error")):
                return True
        return False

    def retry_fates(
        self,
        tuples: list[Command],
        decoded: list[tuple[str | None, Any]],
        ask: list[int],
        out: list,
        resolved: dict[int, tuple[str, dict[str, Any] | None]],
        last: dict[int, tuple[str, dict[str, Any] | None]],
    ) -> list[int]:
        """``settle_fates`` from engine-shard ``OP_ORDER`` outcomes ``out`` of ``ask`` (the
        answers alone, without the account shard's; the clients use ``fate_steps``)."""
        fates = {i: self.fate_of(tuples[i], e, raw) for i, (e, raw) in zip(ask, out, strict=True)}
        return self.settle_fates(decoded, ask, fates, resolved, last)

    @staticmethod
    def settle_fates(
        decoded: list[tuple[str | None, Any]],
        ask: list[int],
        fates: Mapping[int, tuple[str, dict[str, Any] | None]],
        resolved: dict[int, tuple[str, dict[str, Any] | None]],
        last: dict[int, tuple[str, dict[str, Any] | None]],
    ) -> list[int]:
        """Take a retry round's fates of ``ask`` (from ``fate_steps``): an executed command is
        settled (its result becomes the order's state, no events, no error); the ones nobody
        has a record of are returned, to be sent again; an unknown one (a query unanswered, an
        order or amend still queued at or in flight from its account shard) is asked again
        next round. ``last``: each command's latest fate (for the results if time runs out)."""
        again = []
        for i in ask:
            fate, status = last[i] = fates[i]
            if fate == EXECUTED:
                resolved[i] = (EXECUTED, status)
                decoded[i] = (None, [])
            elif fate == NOT_EXECUTED:
                again.append(i)
        return again

    def retry_results(
        self,
        cmds: list[dict[str, Any]],
        tuples: list[Command],
        decoded: list,
        resolved: dict[int, tuple[str, dict[str, Any] | None]],
        attempts: list[int],
        last_fates: dict[int, tuple[str, dict[str, Any] | None]],
    ) -> list[Result]:
        """The results once the rounds ended: settled ones from their fate, the rest from
        their last attempt (an open one with the last fate answer, else ``unknown``)."""
        fates = dict(resolved)
        for i, (err, _) in enumerate(decoded):
            if i not in fates and uncertain(err):
                fates[i] = last_fates.get(i, (UNKNOWN, None))
        return self.results(cmds, decoded, fates, attempts)

    @staticmethod
    def read_result(error: Any, results: Any, what: str) -> dict[str, Any]:
        """A read's reply (status, book, order, markets) → its map, or ``ShardexError``."""
        if error is not None:
            raise _failed(what, error)
        if not isinstance(results, tuple | list) or len(results) != 1:
            raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: expected one result")
        res = results[0]
        if not isinstance(res, dict):
            raise _bad_reply(f"{what}: {MALFORMED_PREFIX}: expected a map")
        return res

    @staticmethod
    def open_orders_result(raw: dict[str, Any], account: str) -> list[dict[str, Any]]:
        """An account shard's ``(OP_ORDER, account)`` answer → its open orders, amounts as
        Decimals (``price`` None for a market sell); ``ShardexError`` on an error."""
        if "error" in raw:
            raise ShardexError(f"orders of {account}: {str(raw['error'])[:_MAX_REASON]}")
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
            raise ShardexError(f"order status: {str(raw['error'])[:_MAX_REASON]}")
        state = raw.get("state")
        if state not in (STATE_LIVE, STATE_FILLED, STATE_CANCELLED, STATE_UNKNOWN):
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
            if state == STATE_LIVE:
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
                    conv.append((Decimal(m.price_str(t[0])), Decimal(m.qty_str(t[1])), t[2]))
                out["trades"] = conv
        except (_Malformed, KeyError) as exc:
            raise _bad_reply(f"order status: {MALFORMED_PREFIX}: bad {exc}") from None
        return out

    # -- fates of uncertain commands -----------------------------------------------------------

    @staticmethod
    def fate_targets(tuples: list[Command], decoded: list[tuple[str | None, Any]]) -> list[int]:
        """Indexes whose fate must be asked: uncertain errors on new/cancel/amend with an id."""
        return [
            i
            for i, (err, _) in enumerate(decoded)
            if uncertain(err)
            and len(tuples[i]) >= 4
            and tuples[i][0] in (OP_NEW, OP_CANCEL, OP_AMEND)
            and type(tuples[i][1]) is str
            and type(tuples[i][2]) is str
            and type(tuples[i][3]) is str
        ]

    def account_first(self, tuples: list[Command], idx: list[int]) -> list[int]:
        """The commands whose fate the account shard must answer first (the account tier is
        on): ``new`` and ``amend`` go through it (it holds, then forwards them), so one still
        queued there would look "not executed" at the engine shard and run later — and be sent
        again by ``Retry``. Cancels go straight to the engine shard: it alone answers."""
        if not self.accounts:
            return []
        return [i for i in idx if tuples[i][0] in (OP_NEW, OP_AMEND)]

    @staticmethod
    def held_fate(cmd: Command, error: Any, raw: Any) -> tuple[str, dict[str, Any] | None] | None:
        """The fate from the account shard's ``OP_ORDER`` answer, or None when the engine
        shard must decide. The query travels the same router link as the command, behind it,
        so an answer means the account shard has taken (held and forwarded) or refused it.

        No answer → unknown (it may still be queued there). ``new``: ``held`` → executed (its
        engine state follows); ``not_held`` → None (never taken, or ended and settled: the
        engine shard tells). ``amend``: ``held`` with amends in flight (``pending`` > 0, from
        shards that report it) → unknown (forwarded, maybe not yet at the engine shard: asked
        again); otherwise None — the account shard forwarded it before it answered, and the
        engine shard reads its account link before client requests, so its state shows it."""
        if error is not None:
            return UNKNOWN, {"error": _kept(error)}
        if not isinstance(raw, Mapping) or raw.get("state") not in ("held", "not_held"):
            return UNKNOWN, {"error": _malformed("no state", "account shard: ")}
        if raw["state"] != "held":
            return None
        if cmd[0] == OP_AMEND:
            pending = raw.get("pending")
            if _is_int(pending) and pending > 0:
                return UNKNOWN, {"state": "held", "pending": pending, "seq": raw.get("seq")}
            return None
        return EXECUTED, {"state": "held", "seq": raw.get("seq")}

    def fate_steps(self, tuples: list[Command], idx: list[int]) -> FateSteps:
        """The fate questions for commands ``idx`` as a dialogue both clients run with their
        own I/O (``_ask_fates``), so the decision lives once: yields ``(queries, via
        accounts)``, is sent their ``store`` outcomes, returns ``(fates, refused)`` — index →
        (fate, status), and the indexes whose query a batch error refused (e.g. overloaded:
        worth asking again). With the account tier, new/amend ask its shard first
        (``held_fate``); the rest, and those it leaves open, ask the engine shard."""
        fates: dict[int, tuple[str, dict[str, Any] | None]] = {}
        refused: list[int] = []
        first = self.account_first(tuples, idx)
        if first:
            out = yield [self.fate_query(tuples[i]) for i in first], True
            for i, (error, raw) in zip(first, out, strict=True):
                fate = self.held_fate(tuples[i], error, raw)
                if fate is not None:
                    fates[i] = fate
                    if error is not None and not uncertain(error):
                        refused.append(i)
        rest = [i for i in idx if i not in fates]
        if rest:
            out = yield [self.fate_query(tuples[i]) for i in rest], False
            for i, (error, raw) in zip(rest, out, strict=True):
                fates[i] = self.fate_of(tuples[i], error, raw)
                if error is not None and not uncertain(error):
                    refused.append(i)
        return fates, refused

    @staticmethod
    def fate_query(cmd: Command) -> Command:
        """The ``OP_ORDER`` read asking for ``cmd``'s order: (op, symbol, account, id)."""
        return (OP_ORDER, cmd[1], cmd[3], cmd[2])

    def fate_of(self, cmd: Command, error: Any, raw: Any) -> tuple[str, dict[str, Any] | None]:
        """(fate, Decimal status map) of ``cmd`` from its ``OP_ORDER`` outcome; ``error``
        (timeout, unreachable, batch error, malformed) leaves it unknown."""
        if error is not None:
            return UNKNOWN, {"error": _kept(error)}
        try:
            status = self.order_status_map(raw)
        except ShardexError as exc:
            return UNKNOWN, {"error": exc.error if exc.error is not None else str(exc)}
        return fate_from_state(cmd, raw), status

    # -- topology and markets ------------------------------------------------------------------

    def apply_topology(self, error: Any, results: Any) -> dict[str, Any]:
        """Check a topology reply, take the shard count and (if not given) the markets."""
        try:
            info = parse_topology(error, results)
        except TopologyError as exc:
            raise ShardexError(f"router at {self.endpoint}: {exc}") from None
        if self.shard_endpoints is not None and len(self.shard_endpoints) != info["shards"]:
            raise ShardexError(
                f"{len(self.shard_endpoints)} shard endpoints given but the cluster has "
                f"{info['shards']} shards"
            )
        self.shards = info["shards"]
        accounts = info.get("accounts", 0)
        self.accounts = accounts if type(accounts) is int and 0 <= accounts <= 100 else 0
        self.learn_markets([t.get("markets") for t in info["topology"]])
        return info

    def direct_endpoints(self, info: dict[str, Any]) -> list[str]:
        """Each shard's direct endpoint from a checked topology, or ``ShardexError`` naming the
        shard that has not registered one (yet)."""
        eps = []
        for i, t in enumerate(info["topology"]):
            ep = t.get("direct")
            if type(ep) is not str or not ep:
                raise ShardexError(f"shard {i} has not registered a direct endpoint")
            try:
                eps.append(check_endpoint(ep))
            except EndpointError as exc:
                raise ShardexError(f"shard {i}: {exc}") from None
        return eps

    def learn_markets(self, tables: list[Any]) -> bool:
        """Take the cluster's markets (wire tables, one per shard; unreadable ones skipped)
        unless the caller gave them. Returns True when the table is now known."""
        if self.markets_source == "given":
            return True
        merged: dict[str, Market] = {}
        for t in tables:
            if t is None:
                continue
            try:
                merged.update(markets_from_wire(t))
            except ValueError:
                continue
        if merged:
            self.markets = merged
            self.markets_source = "cluster"
        return self.markets_source is not None

    def learn_markets_reply(self, error: Any, results: Any) -> None:
        """An ``OP_MARKETS`` reply → markets; a shard that answered but does not say (an older
        shard rejects the op) means defaults for good; no answer leaves it to try again."""
        if error is not None:
            return
        res = results[0] if isinstance(results, tuple | list) and len(results) == 1 else None
        if not (isinstance(res, dict) and self.learn_markets([res.get("markets")])):
            self.markets_source = "defaults"

    def needs_markets(self) -> bool:
        return self.markets_source is None

    def markets_due(self) -> bool:
        """True when the market table is still unknown and it is time to ask (again)."""
        return self.markets_source is None and time.monotonic() >= self._markets_retry_at

    def markets_tried(self) -> None:
        """After an attempt: if the cluster could not say, wait before asking again (so a down
        shard does not cost every call a timeout)."""
        if self.markets_source is None:
            self._markets_retry_at = time.monotonic() + MARKETS_RETRY_S

    @staticmethod
    def markets_shard(info: dict[str, Any] | None) -> int | None:
        """The shard to ask ``OP_MARKETS``: the first registered one (0 with no topology)."""
        if info is None:
            return 0
        for i, t in enumerate(info["topology"]):
            if t.get("pid") is not None:
                return i
        return None


class Client(ClientCore):
    """Blocking client. Not thread-safe: one per thread (ZeroMQ sockets are single-threaded)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        markets: Mapping[str, Market] | str | os.PathLike | None = None,
        timeout: float = 5.0,
        direct: bool = False,
        shard_endpoints: list[str] | None = None,
        account: str | None = None,
        key: KeyArg = None,
        context: zmq.Context | None = None,
        retry: Retry | bool | None = DEFAULT_RETRY,
    ) -> None:
        super().__init__(endpoint, markets, timeout, direct, shard_endpoints, account, key, retry)
        self.ctx = context or zmq.Context.instance()
        self._router = dealer(self.ctx, self.endpoint, timeout, key=self.key, watch=self._watches)
        self._shard_socks: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)

    # -- public API ------------------------------------------------------------------------------

    def place(self, symbol: str, side: str, qty: Any, price: Any = None, **kw: Any) -> Result:
        """Send one new order; returns its events (accepted, trades, cancels or a reject)."""
        return self.submit_many([self.order(symbol, side, qty, price, **kw)])[0]

    def cancel(self, symbol: str, id: str, *, account: str | None = None) -> Result:  # noqa: A002
        return self.submit_many([self._cancel_cmd(symbol, id, account)])[0]

    def amend(
        self,
        symbol: str,
        id: str,
        *,
        qty: Any = None,
        price: Any = None,  # noqa: A002
        account: str | None = None,
    ) -> Result:
        return self.submit_many([self._amend_cmd(symbol, id, qty, price, account)])[0]

    def submit_many(
        self, commands: Iterable[Mapping[str, Any]], *, batch: int = 100, window: int = 8
    ) -> list[Result]:
        """Send many JSON-schema command dicts; results come back in input order.

        Commands are grouped per shard into frames of ``batch``; up to ``window`` frames are in
        flight at once. A command that gets no reply within ``timeout`` has its fate asked from
        its shard before this returns (``Result.fate``/``Result.status``).
        """
        cmds = [dict(c) for c in commands]
        self._ready(markets=True)
        tuples = [self.command(c) for c in cmds]
        decoded = self.decode(self._exchange(tuples, batch, window))
        if self.retry is not None:
            return self._retried(cmds, tuples, decoded, batch, window)
        if self.direct and any(stale_topology(err) for err, _ in decoded):
            self._refresh_direct()  # (the next call goes to the leader the router knows)
        fates = self._fates(tuples, decoded, batch)
        return self.results(cmds, decoded, fates)

    def _retried(
        self, cmds: list[dict[str, Any]], tuples: list[Command], decoded: list, batch: int,
        window: int,
    ) -> list[Result]:  # fmt: skip
        """``Retry`` rounds until every write is settled or the deadline passed (each round may
        add one ``timeout`` to it): ask the fates, send again what never ran."""
        policy = self.retry
        assert policy is not None
        deadline = time.monotonic() + policy.deadline
        pause = policy.backoff
        resolved: dict[int, tuple[str, dict[str, Any] | None]] = {}
        last: dict[int, tuple[str, dict[str, Any] | None]] = {}
        attempts = [1] * len(tuples)
        while True:
            ask, send = self.retry_plan(tuples, decoded, resolved, attempts)
            if not (ask or send) or time.monotonic() >= deadline:
                break
            if self.direct and self.topology_stale(decoded, last, ask + send):
                self._refresh_direct()  # (its fate query would go where nothing answers)
            time.sleep(pause)
            pause = min(2 * pause, policy.max_backoff)
            if ask:
                fates, _ = self._ask_fates(tuples, ask, batch, window)
                send += self.settle_fates(decoded, ask, fates, resolved, last)
            if send:
                got = self.decode(self._exchange([tuples[i] for i in send], batch, window))
                for i, d in zip(send, got, strict=True):
                    decoded[i] = d
                    attempts[i] += 1
                    last.pop(i, None)
        return self.retry_results(cmds, tuples, decoded, resolved, attempts, last)

    def _refresh_direct(self) -> None:
        """Ask the router for the topology again and reconnect the direct sockets whose shard
        now registers another endpoint (a new leader after a failover)."""
        if self.shard_endpoints is not None:
            return  # given by the caller: nothing to learn
        try:
            eps = self.direct_endpoints(self.topology())
        except ShardexError:
            return  # the router cannot say right now: the next round asks again
        for s, ep in enumerate(eps[: len(self._shard_socks)]):
            if self.direct_eps[s] == ep:
                continue
            old = self._shard_socks[s]
            self._poller.unregister(old)
            old.close(0)
            sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
            self._poller.register(sock, zmq.POLLIN)
            self._shard_socks[s] = sock
            self.direct_eps[s] = ep

    def submit_raw(
        self, tuples: list[Command], *, batch: int = 100, window: int = 8
    ) -> list[tuple[str | None, tuple]]:
        """Fast path for load generators: engine command tuples (ints) in, and per command
        ``(error, event tuples)`` out, with no Decimal conversion and no fate queries."""
        if not tuples:
            return []
        self._ready(markets=False)
        return self.raw_events(self._exchange(tuples, batch, window))

    def order_status(
        self,
        symbol: str,
        id: str,  # noqa: A002
        account: str | None = None,
    ) -> dict[str, Any]:
        """The order's fate from its shard: ``{"state": "live"|"filled"|"cancelled"|"unknown",
        ...}`` with Decimal price/qty/filled and trades ``[(price, qty, trade_id)]``."""
        self._ready(markets=True)
        cmd = (OP_ORDER, symbol, self._acct(account), id)
        s = self.shard_of(symbol)
        raw = self._read(symbol.encode(), cmd, s)
        return self.order_status_map(raw)

    def book(self, symbol: str, depth: int = 10) -> dict[str, Any]:
        """L2 depth: {'bids': [(price, qty, orders)...], 'asks': [...]} with Decimals."""
        self._ready(markets=True)
        s = self.shard_of(symbol)
        return self.decimal_book(self._read(symbol.encode(), (OP_BOOK, symbol, depth), s))

    def status(self) -> list[dict[str, Any]]:
        """Status of every shard (seq, resting orders, backlog, uptime...)."""
        n = self.shards or self.topology()["shards"]
        out = []
        for i in range(n):
            try:
                out.append(self._read(f"#{i}".encode(), (OP_STATUS,), i))
            except ShardexError as exc:
                out.append({"shard": i, "error": str(exc)})
        return out

    def topology(self) -> dict[str, Any]:
        """Ask the router for the cluster shape (shard count, shard endpoints, pids, markets)."""
        req = self.ids.next()
        self._send(self._router, topology_frames(req))
        error, results = self._wait(req, time.monotonic() + self.timeout, "router topology")
        return self.apply_topology(error, results)

    def close(self) -> None:
        self.close_watches()
        for s in (self._router, *self._shard_socks):
            s.close(0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _ready(self, markets: bool) -> None:
        """Connect lazily: topology (shard count, direct endpoints), then the market table."""
        info = None
        if self.shards is None or (self.direct and not self._shard_socks):
            if self.shard_endpoints is None:
                info = self.topology()
            if self.direct and not self._shard_socks:
                for ep in self.shard_endpoints or self.direct_endpoints(info or {}):
                    sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
                    self._poller.register(sock, zmq.POLLIN)
                    self._shard_socks.append(sock)
                    self.direct_eps.append(ep)
                self.shards = len(self._shard_socks)
        if markets and self.markets_due():
            try:
                if info is None and self.shard_endpoints is None:
                    info = self.topology()
                s = self.markets_shard(info)
                if self.needs_markets() and s is not None:
                    key = f"#{s}".encode()
                    self.learn_markets_reply(*self._request(self._sock(s), key, (OP_MARKETS,), ""))
            except ShardexError:
                pass  # the cluster cannot say right now: defaults for now, asked again later
            finally:
                self.markets_tried()

    def _sock(self, shard: int) -> zmq.Socket:
        if self.direct and shard < len(self._shard_socks):
            return self._shard_socks[shard]
        return self._router  # account shards (slots >= N) are reached through the router

    # -- the account tier (issue 14, phase 1) ----------------------------------------------

    def _need_accounts(self) -> None:
        self._ready(markets=False)
        if not self.accounts:
            raise ShardexError(
                "this cluster runs without account shards (start it with shardex up --accounts M)"
            )

    def deposit(self, account: str, asset: str, amount: Any, *, ref: str | None = None) -> Result:
        """Credit ``amount`` (Decimal or str) of ``asset`` (admin key). ``ref`` makes it
        idempotent: sending the same transfer again with it changes nothing."""
        return self._transfer(OP_DEPOSIT, account, asset, amount, ref)

    def withdraw(self, account: str, asset: str, amount: Any, *, ref: str | None = None) -> Result:
        """Debit ``amount`` of ``asset`` (admin key); refused beyond what is available."""
        return self._transfer(OP_WITHDRAW, account, asset, amount, ref)

    def _transfer(self, op: int, account: str, asset: str, amount: Any, ref: str | None) -> Result:
        self._need_accounts()
        ref = ref or self.new_id()
        cmd = (op, account, asset, _money(amount, "amount"), ref)
        what = "deposit" if op == OP_DEPOSIT else "withdraw"
        command = {"op": what, "account": account, "asset": asset, "amount": cmd[3], "ref": ref}
        error, results = self._request(self._router, account_route(account), cmd, what)
        return transfer_result(command, error, results)

    def balance(self, account: str | None = None) -> dict[str, tuple[Decimal, Decimal]]:
        """``{asset: (available, held)}`` as Decimals (a trader key reads its own only)."""
        self._need_accounts()
        account = self._acct(account)
        raw = self.read_result(
            *self._request(self._router, account_route(account), (OP_BALANCE, account), ""),
            f"balance of {account}",
        )
        if "error" in raw:
            raise ShardexError(f"balance: {str(raw['error'])[:_MAX_REASON]}")
        try:
            return {a: (Decimal(v[0]), Decimal(v[1])) for a, v in raw["balances"].items()}
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
            raise _bad_reply(f"balance: {MALFORMED_PREFIX}") from None

    def audit(self) -> list[dict[str, Any]]:
        """Every account shard's books (integer units) for ``audit_report``; a shard that
        cannot answer is an ``{"shard": j, "error": ...}`` entry."""
        self._need_accounts()
        return self._each_account_shard(OP_AUDIT)

    def open_orders(self, account: str | None = None) -> list[dict[str, Any]]:
        """``account``'s open orders and what each holds: ``{symbol, id, side, price, open,
        held, asset, pending_amends}`` each (a trader key reads its own only); a last
        ``{"truncated": True}`` when there are more than the account shard lists at once."""
        self._need_accounts()
        account = self._acct(account)
        cmd = (OP_ORDER, account)
        raw = self.read_result(
            *self._request(self._router, account_route(account), cmd, ""), f"orders of {account}"
        )
        return self.open_orders_result(raw, account)

    def audit_orders(self, rounds: int = 3) -> list[str]:
        """Per order: every live order in every book is covered by its hold, and every hold
        by a live order (``shardex.accounts.orders.audit_orders``); the problems every one of
        ``rounds`` reads found ([]: none). Admin or reader key."""
        self._need_accounts()
        self._ready(markets=True)
        symbols = sorted(self.markets)
        return persistent(
            self._run_plan(audit_plan(self.accounts, symbols, self.shard_of)) for _ in range(rounds)
        )

    def _run_plan(self, plan: Generator[Any, Any, Any]) -> Any:
        """Carry a ``shardex.accounts.orders`` plan's reads; return its result."""
        try:
            ask = next(plan)
            while True:
                key, cmd, shard = ask
                what = "account shard" if shard is None else f"shard {shard}"
                sock = self._router if shard is None else self._sock(shard)
                ask = plan.send(self.read_result(*self._request(sock, key, cmd, what), what))
        except StopIteration as done:
            return done.value
        except PlanError as exc:
            raise ShardexError(str(exc)) from None

    def account_status(self) -> list[dict[str, Any]]:
        """Every account shard's status (seq, accounts, open orders, link state, journal);
        ``[]`` on a cluster without the account tier."""
        self._ready(markets=False)
        return self._each_account_shard(OP_STATUS)

    def _each_account_shard(self, op: int) -> list[dict[str, Any]]:
        out = []
        for j in range(self.accounts):
            try:
                raw = self.read_result(
                    *self._request(self._router, f"%{j}".encode(), (op,), ""),
                    f"account shard {j}",
                )
            except ShardexError as exc:
                raw = {"shard": j, "error": str(exc)}
            out.append(raw)
        return out

    def _exchange(
        self, tuples: list[Command], batch: int, window: int, via_accounts: bool = False
    ) -> list:
        """Send ``tuples`` in planned frames with ``window`` in flight; ``store``'s outcomes."""
        out: list[Any] = [None] * len(tuples)
        self.edge_rejects(tuples, out)
        queue = list(reversed(self.plan(tuples, batch, via_accounts)))
        pending = Pending(self.timeout)
        window = max(1, window)
        while queue or pending:
            while queue and len(pending) < window:
                s, key, idx = queue.pop()
                req = self.ids.next()
                try:
                    self._send(self._sock(s), [key, req, encode_request([tuples[i] for i in idx])])
                except RequestTimeout as exc:
                    self.store(idx, exc.error, None, out)
                    continue
                pending.add(req, idx)
            if not pending:
                continue
            got = self._recv(pending.next_deadline() or 0.0)
            if got is None:
                for idx in pending.expire():
                    timeout = ErrorText(codes.TIMEOUT, f"{TIMEOUT_PREFIX} {self.timeout}s",
                                        {"after": self.timeout})  # fmt: skip
                    self.store(idx, timeout, None, out)
                continue
            idx = pending.pop(got[0])
            if idx is None:
                continue  # a late reply to a request that already timed out
            self.store(idx, *decode_reply(got[1]), out)
        return out

    def _fates(self, tuples: list[Command], decoded: list, batch: int) -> dict[int, Fate]:
        """Ask for the fates of uncertain commands (timeouts, bad replies): ``fate_steps``,
        the account shard first with the tier on; a query refused with a batch error (e.g.
        overloaded) is asked again a few times."""
        targets = self.fate_targets(tuples, decoded)
        fates: dict[int, Fate] = {}
        for attempt in range(3):
            if not targets:
                break
            got, refused = self._ask_fates(tuples, targets, batch, 8)
            fates.update(got)
            targets = refused if attempt < 2 else []
            if targets:
                time.sleep(0.05 * (attempt + 1))
        return fates

    def _ask_fates(
        self, tuples: list[Command], idx: list[int], batch: int, window: int
    ) -> tuple[dict[int, Fate], list[int]]:
        """Run ``fate_steps`` for ``idx``: each step's queries sent, its outcomes given back."""
        steps = self.fate_steps(tuples, idx)
        try:
            queries, via = next(steps)
            while True:
                queries, via = steps.send(self._exchange(queries, batch, window, via))
        except StopIteration as done:
            return done.value

    def _request(self, sock: zmq.Socket, key: bytes, cmd: tuple, what: str) -> tuple[Any, Any]:
        """One read command → its reply's ``(error, results)``; ``RequestTimeout`` if none."""
        req = self.ids.next()
        self._send(sock, [key, req, encode_request([cmd])])
        return self._wait(req, time.monotonic() + self.timeout, what)

    def _read(self, key: bytes, cmd: tuple, shard: int) -> dict[str, Any]:
        what = f"shard {shard}"
        return self.read_result(*self._request(self._sock(shard), key, cmd, what), what)

    def _send(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        """Send, waiting at most ``timeout`` for a connected peer (IMMEDIATE: never queue a
        request toward a peer that is down, where it could run long after we gave up)."""
        try:
            sock.send_multipart(frames)
        except zmq.Again:
            raise self.no_reply(
                f"{UNREACHABLE_PREFIX} "
                f"{sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint} "
                f"within {self.timeout}s (not running?)", codes.UNREACHABLE
            ) from None

    def _wait(self, req: bytes, deadline: float, what: str) -> tuple[Any, Any]:
        """Wait for the reply to ``req`` → ``(error, results)``; ``RequestTimeout`` if none."""
        while True:
            got = self._recv(deadline)
            if got is None:
                raise self.no_reply(
                    f"no reply from {what or 'the cluster'} within {self.timeout}s "
                    f"(is the cluster running at {self.endpoint}?)"
                )
            if got[0] == req:
                return decode_reply(got[1])

    def _recv(self, deadline: float) -> tuple[bytes, bytes] | None:
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            for sock, _ in self._poller.poll(max(1, int(wait * 1000))):
                frames = sock.recv_multipart()
                if len(frames) == 2:
                    return frames[0], frames[1]


class AsyncClient(ClientCore):
    """asyncio twin of ``Client``: same methods, awaitable; safe to share between tasks."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        markets: Mapping[str, Market] | str | os.PathLike | None = None,
        timeout: float = 5.0,
        direct: bool = False,
        shard_endpoints: list[str] | None = None,
        account: str | None = None,
        key: KeyArg = None,
        retry: Retry | bool | None = DEFAULT_RETRY,
    ) -> None:
        super().__init__(endpoint, markets, timeout, direct, shard_endpoints, account, key, retry)
        self.ctx = zmq.asyncio.Context.instance()
        self._router = dealer(self.ctx, self.endpoint, timeout, key=self.key, watch=self._watches)
        self._shard_socks: list[zmq.asyncio.Socket] = []
        self._replies = AsyncReplies()
        self._readers: list[asyncio.Task] = []
        self._shard_readers: list[asyncio.Task] = []  # one per direct socket, in shard order
        self._lock: asyncio.Lock | None = None

    async def _ready(self, markets: bool) -> None:
        """Connect lazily (once, even with many tasks): topology, direct sockets, markets."""
        if not self._readers:
            self._readers.append(asyncio.ensure_future(self._replies.read(self._router)))
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            info = None
            if self.shards is None or (self.direct and not self._shard_socks):
                if self.shard_endpoints is None:
                    info = await self.topology()
                if self.direct and not self._shard_socks:
                    for ep in self.shard_endpoints or self.direct_endpoints(info or {}):
                        sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
                        self._shard_socks.append(sock)
                        self.direct_eps.append(ep)
                        reader = asyncio.ensure_future(self._replies.read(sock))
                        self._readers.append(reader)
                        self._shard_readers.append(reader)
                    self.shards = len(self._shard_socks)
            if markets and self.markets_due():
                try:
                    if info is None and self.shard_endpoints is None:
                        info = await self.topology()
                    s = self.markets_shard(info)
                    if self.needs_markets() and s is not None:
                        self.learn_markets_reply(
                            *await self._request(
                                self._sock(s), f"#{s}".encode(), [(OP_MARKETS,)], ""
                            )
                        )
                except ShardexError:
                    pass  # the cluster cannot say right now: defaults for now, asked again later
                finally:
                    self.markets_tried()

    def _sock(self, shard: int) -> zmq.asyncio.Socket:
        return self._shard_socks[shard] if self.direct else self._router

    async def _send(self, sock, key: bytes, cmds: list) -> tuple[bytes, asyncio.Future]:
        """Send one frame now (so frames leave in call order); return its reply future."""
        req = self.ids.next()
        fut = self._replies.expect(req)
        try:
            await asyncio.wait_for(
                sock.send_multipart([key, req, encode_request(cmds)]), self.timeout
            )
        except (TimeoutError, zmq.Again):
            self._replies.forget(req)
            raise self.no_reply(
                f"{UNREACHABLE_PREFIX} {self.endpoint} within {self.timeout}s", codes.UNREACHABLE
            ) from None
        return req, fut

    async def _reply(self, req: bytes, fut: asyncio.Future, what: str) -> tuple[Any, Any]:
        try:
            payload = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            self._replies.forget(req)
            raise self.no_reply(
                f"{TIMEOUT_PREFIX} {self.timeout}s (no reply from {what or 'the cluster'})"
            ) from None
        return decode_reply(payload)

    async def _request(self, sock, key: bytes, cmds: list, what: str) -> tuple[Any, Any]:
        req, fut = await self._send(sock, key, cmds)
        return await self._reply(req, fut, what)

    async def topology(self) -> dict[str, Any]:
        if not self._readers:
            self._readers.append(asyncio.ensure_future(self._replies.read(self._router)))
        req, fut = await self._send(self._router, b"", [])
        return self.apply_topology(*await self._reply(req, fut, "router topology"))

    # -- the account tier (issue 14): twins of Client's, same arguments and results -------------

    async def _need_accounts(self) -> None:
        await self._ready(markets=False)
        if not self.accounts:
            raise ShardexError(
                "this cluster runs without account shards (start it with shardex up --accounts M)"
            )

    async def deposit(
        self, account: str, asset: str, amount: Any, *, ref: str | None = None
    ) -> Result:
        """Credit ``amount`` of ``asset`` (admin key); ``ref`` makes a retry a no-op."""
        return await self._transfer(OP_DEPOSIT, account, asset, amount, ref)

    async def withdraw(
        self, account: str, asset: str, amount: Any, *, ref: str | None = None
    ) -> Result:
        """Debit ``amount`` of ``asset`` (admin key); refused beyond what is available."""
        return await self._transfer(OP_WITHDRAW, account, asset, amount, ref)

    async def _transfer(
        self, op: int, account: str, asset: str, amount: Any, ref: str | None
    ) -> Result:
        await self._need_accounts()
        ref = ref or self.new_id()
        cmd = (op, account, asset, _money(amount, "amount"), ref)
        what = "deposit" if op == OP_DEPOSIT else "withdraw"
        command = {"op": what, "account": account, "asset": asset, "amount": cmd[3], "ref": ref}
        error, results = await self._request(self._router, account_route(account), [cmd], what)
        return transfer_result(command, error, results)

    async def balance(self, account: str | None = None) -> dict[str, tuple[Decimal, Decimal]]:
        """``{asset: (available, held)}`` as Decimals (a trader key reads its own only)."""
        await self._need_accounts()
        account = self._acct(account)
        reply = await self._request(
            self._router, account_route(account), [(OP_BALANCE, account)], ""
        )
        raw = self.read_result(*reply, f"balance of {account}")
        if "error" in raw:
            raise ShardexError(f"balance: {str(raw['error'])[:_MAX_REASON]}")
        try:
            return {a: (Decimal(v[0]), Decimal(v[1])) for a, v in raw["balances"].items()}
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
            raise _bad_reply(f"balance: {MALFORMED_PREFIX}") from None

    async def audit(self) -> list[dict[str, Any]]:
        """Every account shard's books for ``audit_report`` (as ``Client.audit``)."""
        await self._need_accounts()
        return await self._each_account_shard(OP_AUDIT)

    async def open_orders(self, account: str | None = None) -> list[dict[str, Any]]:
        """``account``'s open orders and their holds (as ``Client.open_orders``)."""
        await self._need_accounts()
        account = self._acct(account)
        cmd = (OP_ORDER, account)
        reply = await self._request(self._router, account_route(account), [cmd], "")
        return self.open_orders_result(self.read_result(*reply, f"orders of {account}"), account)

    async def audit_orders(self, rounds: int = 3) -> list[str]:
        """The per-order audit (as ``Client.audit_orders``)."""
        await self._need_accounts()
        await self._ready(markets=True)
        symbols = sorted(self.markets)
        found: list[list[str]] = []
        for _ in range(rounds):
            found.append(await self._run_plan(audit_plan(self.accounts, symbols, self.shard_of)))
            if not persistent(found):
                return []
        return persistent(found)

    async def _run_plan(self, plan: Generator[Any, Any, Any]) -> Any:
        try:
            ask = next(plan)
            while True:
                key, cmd, shard = ask
                what = "account shard" if shard is None else f"shard {shard}"
                sock = self._router if shard is None else self._sock(shard)
                reply = await self._request(sock, key, [cmd], what)
                ask = plan.send(self.read_result(*reply, what))
        except StopIteration as done:
            return done.value
        except PlanError as exc:
            raise ShardexError(str(exc)) from None

    async def account_status(self) -> list[dict[str, Any]]:
        """Every account shard's status (as ``Client.account_status``)."""
        await self._ready(markets=False)
        return await self._each_account_shard(OP_STATUS)

    async def _each_account_shard(self, op: int) -> list[dict[str, Any]]:
        out = []
        for j in range(self.accounts):
            try:
                reply = await self._request(self._router, f"%{j}".encode(), [(op,)], "")
                raw = self.read_result(*reply, f"account shard {j}")
            except ShardexError as exc:
                raw = {"shard": j, "error": str(exc)}
            out.append(raw)
        return out

    async def place(self, symbol: str, side: str, qty: Any, price: Any = None, **kw) -> Result:
        return (await self.submit_many([self.order(symbol, side, qty, price, **kw)]))[0]

    async def cancel(self, symbol: str, id: str, *, account: str | None = None) -> Result:  # noqa: A002
        return (await self.submit_many([self._cancel_cmd(symbol, id, account)]))[0]

    async def amend(
        self,
        symbol: str,
        id: str,
        *,
        qty: Any = None,
        price: Any = None,  # noqa: A002
        account: str | None = None,
    ) -> Result:
        return (await self.submit_many([self._amend_cmd(symbol, id, qty, price, account)]))[0]

    async def submit_many(
        self, commands: Iterable[Mapping[str, Any]], *, batch: int = 100, window: int = 8
    ) -> list[Result]:
        cmds = [dict(c) for c in commands]
        await self._ready(markets=True)
        tuples = [self.command(c) for c in cmds]
        decoded = self.decode(await self._exchange(tuples, batch, window))
        if self.retry is not None:
            return await self._retried(cmds, tuples, decoded, batch, window)
        if self.direct and any(stale_topology(err) for err, _ in decoded):
            await self._refresh_direct()
        fates = await self._fates(tuples, decoded, batch)
        return self.results(cmds, decoded, fates)

    async def _retried(
        self, cmds: list[dict[str, Any]], tuples: list[Command], decoded: list, batch: int,
        window: int,
    ) -> list[Result]:  # fmt: skip
        """``Client._retried``'s twin (same decisions, from ``ClientCore``)."""
        policy = self.retry
        assert policy is not None
        deadline = time.monotonic() + policy.deadline
        pause = policy.backoff
        resolved: dict[int, tuple[str, dict[str, Any] | None]] = {}
        last: dict[int, tuple[str, dict[str, Any] | None]] = {}
        attempts = [1] * len(tuples)
        while True:
            ask, send = self.retry_plan(tuples, decoded, resolved, attempts)
            if not (ask or send) or time.monotonic() >= deadline:
                break
            if self.direct and self.topology_stale(decoded, last, ask + send):
                await self._refresh_direct()
            await asyncio.sleep(pause)
            pause = min(2 * pause, policy.max_backoff)
            if ask:
                fates, _ = await self._ask_fates(tuples, ask, batch, window)
                send += self.settle_fates(decoded, ask, fates, resolved, last)
            if send:
                sent = await self._exchange([tuples[i] for i in send], batch, window)
                for i, d in zip(send, self.decode(sent), strict=True):
                    decoded[i] = d
                    attempts[i] += 1
                    last.pop(i, None)
        return self.retry_results(cmds, tuples, decoded, resolved, attempts, last)

    async def _refresh_direct(self) -> None:
        """``Client._refresh_direct``'s twin."""
        if self.shard_endpoints is not None:
            return
        try:
            eps = self.direct_endpoints(await self.topology())
        except ShardexError:
            return
        for s, ep in enumerate(eps[: len(self._shard_socks)]):
            if self.direct_eps[s] == ep:
                continue
            self._shard_readers[s].cancel()
            self._shard_socks[s].close(0)
            sock = dealer(self.ctx, ep, self.timeout, key=self.key, watch=self._watches)
            self._shard_socks[s] = sock
            self.direct_eps[s] = ep
            reader = self._shard_readers[s] = asyncio.ensure_future(self._replies.read(sock))
            self._readers.append(reader)

    async def submit_raw(
        self, tuples: list[Command], *, batch: int = 100, window: int = 8
    ) -> list[tuple[str | None, tuple]]:
        if not tuples:
            return []
        await self._ready(markets=False)
        return self.raw_events(await self._exchange(tuples, batch, window))

    async def _exchange(
        self, tuples: list[Command], batch: int, window: int, via_accounts: bool = False
    ) -> list:
        out: list[Any] = [None] * len(tuples)
        self.edge_rejects(tuples, out)
        gate = asyncio.Semaphore(max(1, window))

        async def finish(req: bytes, fut: asyncio.Future, s: int, idx: list[int]) -> None:
            try:
                error, results = await self._reply(req, fut, f"shard {s}")
            except RequestTimeout as exc:
                error, results = exc.error, None
            finally:
                gate.release()
            self.store(idx, error, results, out)

        tasks = []
        for s, key, idx in self.plan(tuples, batch, via_accounts):
            await gate.acquire()
            try:
                req, fut = await self._send(self._sock(s), key, [tuples[i] for i in idx])
            except RequestTimeout as exc:
                gate.release()
                self.store(idx, exc.error, None, out)
                continue
            tasks.append(asyncio.ensure_future(finish(req, fut, s, idx)))
        await asyncio.gather(*tasks)
        return out

    async def _fates(self, tuples: list[Command], decoded: list, batch: int) -> dict[int, Fate]:
        """``Client._fates``'s twin (the decisions are ``ClientCore.fate_steps``)."""
        targets = self.fate_targets(tuples, decoded)
        fates: dict[int, Fate] = {}
        for attempt in range(3):
            if not targets:
                break
            got, refused = await self._ask_fates(tuples, targets, batch, 8)
            fates.update(got)
            targets = refused if attempt < 2 else []
            if targets:
                await asyncio.sleep(0.05 * (attempt + 1))
        return fates

    async def _ask_fates(
        self, tuples: list[Command], idx: list[int], batch: int, window: int
    ) -> tuple[dict[int, Fate], list[int]]:
        """``Client._ask_fates``'s twin."""
        steps = self.fate_steps(tuples, idx)
        try:
            queries, via = next(steps)
            while True:
                queries, via = steps.send(await self._exchange(queries, batch, window, via))
        except StopIteration as done:
            return done.value

    async def order_status(
        self,
        symbol: str,
        id: str,  # noqa: A002
        account: str | None = None,
    ) -> dict[str, Any]:
        await self._ready(markets=True)
        s = self.shard_of(symbol)
        cmd = (OP_ORDER, symbol, self._acct(account), id)
        res = self.read_result(
            *await self._request(self._sock(s), symbol.encode(), [cmd], f"shard {s}"),
            f"shard {s}",
        )
        return self.order_status_map(res)

    async def book(self, symbol: str, depth: int = 10) -> dict[str, Any]:
        await self._ready(markets=True)
        s = self.shard_of(symbol)
        res = self.read_result(
            *await self._request(
                self._sock(s), symbol.encode(), [(OP_BOOK, symbol, depth)], f"shard {s}"
            ),
            f"shard {s}",
        )
        return self.decimal_book(res)

    async def status(self) -> list[dict[str, Any]]:
        await self._ready(markets=False)
        out = []
        for i in range(self.shards or 0):
            try:
                error, results = await self._request(
                    self._sock(i), f"#{i}".encode(), [(OP_STATUS,)], f"shard {i}"
                )
                out.append(self.read_result(error, results, f"shard {i}"))
            except ShardexError as exc:
                out.append({"shard": i, "error": str(exc)})
        return out

    async def close(self) -> None:
        self.close_watches()
        for t in self._readers:
            t.cancel()
        for s in (self._router, *self._shard_socks):
            s.close(0)

    async def __aenter__(self) -> AsyncClient:
        await self._ready(markets=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "EXECUTED",
    "NOT_EXECUTED",
    "UNKNOWN",
    "AsyncClient",
    "AuthenticationFailed",
    "Client",
    "ClientCore",
    "RequestTimeout",
    "Result",
    "Retry",
    "ShardexError",
    "fate_from_state",
]


def transfer_result(command: dict[str, Any], error: Any, results: Any) -> Result:
    """An account shard's answer to a deposit/withdraw → a ``Result`` whose one event is
    ``balance`` (available/held after it, Decimals) or ``rejected`` (reason, code)."""
    if error is not None:
        return Result(command, [], _kept(error), NOT_EXECUTED)
    res = results[0] if isinstance(results, tuple | list) and len(results) == 1 else None
    if not isinstance(res, dict):
        return Result(command, [], _malformed("expected a map"), UNKNOWN)
    if "rejected" in res:
        ev = {"ev": "rejected", "reason": str(res["rejected"]), "code": res.get("code")}
        return Result(command, [ev], None, EXECUTED)
    try:
        ev = {"ev": "balance", "asset": res["asset"], "available": Decimal(res["available"]),
              "held": Decimal(res["held"]), "repeated": bool(res.get("repeated"))}  # fmt: skip
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return Result(command, [], _malformed("bad balance"), UNKNOWN)
    return Result(command, [ev], None, EXECUTED)


def audit_report(shards: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Conservation over every account shard (lines to print, ok): per asset, Σ(available +
    held) + fees == deposits - withdrawals, the shards' trade inflows sum to 0, and each shard
    passes its own integrity check. A shard that did not answer fails the audit."""
    ok = True
    lines: list[str] = []
    sums: dict[str, dict[str, int]] = {}
    units: dict[str, Decimal] = {}
    for sh in shards:
        j = sh.get("shard")
        if "error" in sh:
            lines.append(f"account shard {j}: ERROR {sh['error']}")
            ok = False
            continue
        if sh.get("integrity") != "ok":
            lines.append(f"account shard {j}: INTEGRITY {sh.get('integrity')}")
            ok = False
        for a, u in (sh.get("units") or {}).items():
            units[a] = Decimal(u)
        for name in ("balances", "fees", "deposited", "withdrawn", "flow"):
            for a, v in (sh.get(name) or {}).items():
                sums.setdefault(a, {}).setdefault(name, 0)
                sums[a][name] += int(v)
        if sh.get("anomalies"):
            # a settlement that did not fit (an order traded twice, a fill of an order the
            # shard never held): money may have moved where it should not, so the audit fails
            lines.append(f"account shard {j}: {sh['anomalies']} settlement anomalies VIOLATION")
            ok = False
    for a in sorted(sums):
        t = sums[a]
        have = t.get("balances", 0) + t.get("fees", 0)
        owed = t.get("deposited", 0) - t.get("withdrawn", 0)
        unit = units.get(a, Decimal(1))
        good = have == owed and t.get("flow", 0) == 0
        ok = ok and good

        def amt(units: int, unit: Decimal = unit) -> str:
            return format(units * unit, "f")  # (never 0E-8)

        lines.append(
            f"{a:<6} balances+fees {amt(have)}  deposits-withdrawals {amt(owed)}  "
            f"fees {amt(t.get('fees', 0))}  trade inflow {amt(t.get('flow', 0))}  "
            f"{'ok' if good else 'VIOLATION'}"
            + ("" if have == owed else f" (difference {amt(have - owed)}: money "
               f"{'appeared' if have > owed else 'disappeared'})")  # fmt: skip
        )
    lines.append(f"audit: {'ok' if ok else 'FAILED'} ({len(shards)} account shards)")
    return lines, ok
