"""``ClientCore``: everything both clients (and ``shardex loadgen``) do that is not I/O.

Command building, routing and the batching plan live here; storing and decoding replies
(``Replies``), fates and retries (``FateDecisions``) and topology and markets (``Topology``) in
the mixins it is made of. ``Client`` and ``AsyncClient`` only move frames; keeping the rest here
is what stops them (and loadgen) from drifting apart. It can be used and tested without sockets.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from shardex.auth import AuthError, KeyFile
from shardex.client.errors import AuthenticationFailed, RequestTimeout, ShardexError
from shardex.client.fatesteps import FateDecisions
from shardex.client.replies import Replies
from shardex.client.results import Retry, _money
from shardex.client.topology import Topology
from shardex.config import load_markets
from shardex.endpoints import NO_REPLY_SUSPECTS, EndpointsFileError, find_router
from shardex.engine import DEFAULT_MARKETS, Market
from shardex.engine.codes import OP_AMEND, OP_NEW, OP_REJECT, Command
from shardex.layout import Layout
from shardex.wire import codes
from shardex.wire.layouts import CMD_ACCOUNT, CMD_OP, CMD_SYMBOL, ORDER_ACCOUNT, ORDER_ID
from shardex.wire.protocol import OP_ORDER, account_route, command_from_json
from shardex.wire.transport import (
    EndpointError,
    Handshake,
    RequestIds,
    check_endpoint,
    find_key,
)

DEFAULT_ENDPOINT = Layout().frontend
KeyArg = KeyFile | str | os.PathLike | bool | None
Route = tuple[int, bytes]  # (shard slot: engine 0..N-1, account N..N+M-1; routing key)


# the positions ``plan`` reads of every command: (op, symbol, account; an OP_ORDER read's
# account, and its length)
_PLAN_AT = (CMD_OP, CMD_SYMBOL, CMD_ACCOUNT, ORDER_ACCOUNT, ORDER_ID + 1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expire_ms(expire: int | datetime) -> int:
    """An expire time as the wire's int ms since the Unix epoch (UTC)."""
    if isinstance(expire, datetime):
        if expire.tzinfo is None:
            raise ValueError("expire: use an aware datetime (UTC), not a naive one")
        return (expire - _EPOCH) // timedelta(milliseconds=1)  # (exact: no float)
    if type(expire) is not int:
        raise ValueError(f"expire must be int ms since the epoch or a datetime, not {expire!r}")
    return expire


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


class ClientCore(Replies, FateDecisions, Topology):
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
        expire: int | datetime | None = None,
        trigger: Decimal | str | int | None = None,
        reduce_only: bool = False,
    ) -> dict[str, Any]:
        """Build a ``new`` command dict (does not send it); type defaults from ``price``.
        ``expire`` (ms since the Unix epoch, UTC, or an aware datetime) makes it tif ``gtd``
        unless ``tif`` says otherwise. ``trigger``: the trigger price of a ``stop_market``,
        ``stop_limit``, ``take_profit`` or ``take_profit_limit`` type (docs/orders.md).
        ``reduce_only``: a perp pair's ioc/fok order that only shrinks a position
        (docs/perps.md)."""
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
        if expire is not None:
            cmd["expire"] = expire_ms(expire)
            cmd.setdefault("tif", "gtd")
        if trigger is not None:
            cmd["trigger"] = _money(trigger, "trigger")
        if reduce_only:
            cmd["reduce_only"] = True
        return cmd

    def _cancel_all_cmds(self, symbol: str | None, account: str | None,
                         after_ms: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """One ``cancel_all`` per pair: ``symbol``'s, or every pair of the markets table (each
        goes to its pair's shard, like a cancel: the fan-out needs no new route); with
        ``after_ms``, each arms (0: disarms) that pair's dead-man switch instead."""
        acct = self._acct(account)
        symbols = [symbol] if symbol is not None else sorted(self.markets or ())
        tail = {} if after_ms is None else {"after": after_ms}
        return [{"op": "cancel_all", "symbol": s, "account": acct, **tail} for s in symbols]

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

    # -- routing and the batching plan ---------------------------------------------------------

    @staticmethod
    def misrouted(decoded: list[tuple[str | None, Any]]) -> list[int]:
        """Indexes of commands a shard refused as another shard's pair (``wrong_shard``: the
        sender's placement map was stale; nothing ran): a client sends them once more, after
        a direct client took the router's newer map."""
        return [
            i
            for i, (err, evs) in enumerate(decoded)
            if err is None
            and any(e.get("ev") == "rejected" and e.get("code") == "wrong_shard" for e in evs)
        ]

    def shard_of(self, symbol: Any) -> int:
        return self.owner_of(symbol) if self.shards and type(symbol) is str else 0

    def route(self, t: Command, via_accounts: bool = False, by_shard: bool = False) -> Route:
        """Where one command goes: its slot (its symbol's engine shard; with the account tier,
        N + j for a ``new``/``amend`` of an account of account shard j, and with
        ``via_accounts`` for an ``OP_ORDER`` fate query of one) and the routing key the router
        routes it by: the symbol (``#<shard>`` without one), ``@<account>``, or with
        ``by_shard`` ``%<j>`` (one frame may then hold any of the shard's accounts)."""
        acct = self._account_of(t, via_accounts) if self.accounts else None
        if acct is not None:
            return self._account_route(acct, by_shard)
        return self._symbol_route(t[CMD_SYMBOL] if len(t) > CMD_SYMBOL else "")

    def _account_of(self, t: Command, via_accounts: bool) -> str | None:
        """The account whose account shard takes ``t`` first (the tier is on), else None."""
        if not (self.accounts and self.shards) or len(t) <= CMD_ACCOUNT:
            return None
        op = t[CMD_OP]
        if op in (OP_NEW, OP_AMEND):
            acct = t[CMD_ACCOUNT]
        elif via_accounts and len(t) == ORDER_ID + 1 and op == OP_ORDER:
            acct = t[ORDER_ACCOUNT]
        else:
            return None
        return acct if type(acct) is str else None

    def _account_route(self, acct: str, by_shard: bool) -> Route:
        j = zlib.crc32(acct.encode()) % self.accounts  # (``account_shard_for``)
        return (self.shards or 0) + j, f"%{j}".encode() if by_shard else account_route(acct)

    def _symbol_route(self, symbol: Any) -> Route:
        sym = symbol if type(symbol) is str else ""
        s = self.owner_of(sym) if self.shards and sym else 0
        return s, sym.encode() if sym else f"#{s}".encode()

    def plan(
        self, tuples: list[Command], batch: int, via_accounts: bool = False, by_shard: bool = False
    ) -> list[tuple[int, bytes, list[int]]]:
        """Group command indexes into per-shard batches (``route``), keeping each shard's order.

        Returns (slot, routing key, indexes) in send order. An engine shard's frame is keyed by
        its first command's symbol (the router hashes it to the same shard); an account shard's
        frame holds one account's commands (``@<account>``), or with ``by_shard`` any of its
        accounts' (``%<j>``). ``via_accounts``: ``OP_ORDER`` reads ``(op, symbol, account,
        id)`` go to the account's shard (the account tier's fate query)."""
        if len(tuples) == 1:  # one command per frame (loadgen's default, most SDK calls):
            t = tuples[0]  # no grouping to do, so none of the tables below (~20 µs less each)
            if t and t[CMD_OP] == OP_REJECT:
                return []
            s, key = self.route(t, via_accounts, by_shard)
            return [(s, key, [0])]
        batch = max(1, batch)
        where: dict[Any, Route] = {}  # per distinct symbol / account once: this runs per command
        whose: dict[str, Route] = {}
        open_: dict[int, tuple[bytes, list[int]]] = {}
        plan: list[tuple[int, bytes, list[int]]] = []
        tier = bool(self.accounts and self.shards)
        op_at, sym_at, acct_at, by_acct, order_len = _PLAN_AT  # (locals: read per command)
        for i, t in enumerate(tuples):
            op = t[op_at] if t else None
            if op == OP_REJECT:
                continue  # answered here (``edge_rejects``): shards refuse a client's OP_REJECT
            acct = None
            if tier and len(t) > acct_at:  # (``_account_of``, inline: the SDK's hot path)
                if op in (OP_NEW, OP_AMEND):
                    acct = t[acct_at]
                elif via_accounts and op == OP_ORDER and len(t) == order_len:
                    acct = t[by_acct]
                if type(acct) is not str:
                    acct = None
            if acct is None:
                symbol = t[sym_at] if len(t) > sym_at else ""
                w = where.get(symbol) if type(symbol) is str else None
                if w is None:
                    w = self._symbol_route(symbol)
                    if type(symbol) is str:
                        where[symbol] = w
            else:
                w = whose.get(acct)
                if w is None:
                    w = whose[acct] = self._account_route(acct, by_shard)
            s, key = w
            cur = open_.get(s)
            if cur is None:
                cur = open_[s] = (key, [])
            elif acct is not None and cur[0] != key:  # another account of the shard: own frame
                plan.append((s, cur[0], cur[1]))
                cur = open_[s] = (key, [])
            cur[1].append(i)
            if len(cur[1]) >= batch:
                plan.append((s, cur[0], cur[1]))
                del open_[s]
        plan.extend((s, key, idx) for s, (key, idx) in open_.items())
        return plan
