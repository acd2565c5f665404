"""``AsyncClient``: the SDK's logic, written once (``shardex.client._sync.client`` is generated
from this file by ``python scripts/unasync_client.py``: never edit that one by hand).

Everything here runs the same way in both flavours; what genuinely differs (sockets, waiting for
replies, sleeping) is ``AsyncIO`` in ``shardex.client._async.io`` and its hand-written sync
counterpart. The decisions themselves (plan, fates, retries, decoding) are ``ClientCore``'s.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Mapping
from decimal import Decimal
from typing import Any

from shardex.accounts.orders import PlanError, audit_plan, persistent
from shardex.client._async.io import AsyncIO, ZmqContext
from shardex.client.core import KeyArg
from shardex.client.errors import (
    MALFORMED_PREFIX,
    ShardexError,
    _bad_reply,
    _failed,
    stale_topology,
)
from shardex.client.listing import account_result, fee_of, listing_result
from shardex.client.listing import definition as listing_definition
from shardex.client.market_admin import market_rule_result, pair_rules
from shardex.client.perps import (
    index_command,
    index_result,
    margin_command,
    margin_result,
    positions_merged,
    tier_margin_command,
    tier_margin_result,
)
from shardex.client.results import (
    DEFAULT_RETRY,
    UNKNOWN,
    CancelAll,
    Fate,
    Result,
    Retry,
    _money,
    transfer_result,
)
from shardex.clock import REAL, Clock
from shardex.engine import Market
from shardex.engine.codes import OP_LIST, OP_MARKET_RULE, OP_NEW, Command
from shardex.wire.market_rules import changes_from_json
from shardex.wire.protocol import (
    OP_AUDIT,
    OP_BALANCE,
    OP_BOOK,
    OP_DEPOSIT,
    OP_FEE_GROUP,
    OP_FEES,
    OP_LIST_PAIR,
    OP_MARKETS,
    OP_ORDER,
    OP_POSITIONS,
    OP_RESTRICT,
    OP_STATUS,
    OP_WITHDRAW,
    account_route,
)

NO_ACCOUNT_TIER = "this cluster runs without account shards (start it with shardex up --accounts M)"


class AsyncClient(AsyncIO):
    """The SDK client (see ``shardex.client``). ``Client`` is blocking and not thread-safe (one
    per thread: ZeroMQ sockets are single-threaded); ``AsyncClient`` has the same methods,
    awaitable, and is safe to share between the tasks of one event loop.

    ``clock`` (``shardex.clock``): where the client reads "now" (retry deadlines, when to ask
    for the markets again); its waits are its flavour's (the event loop's timers, or the
    blocking sockets'), so a virtual clock goes with a loop whose time is that clock."""

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
        context: ZmqContext | None = None,
        retry: Retry | bool | None = DEFAULT_RETRY,
        clock: Clock = REAL,
    ) -> None:
        self.clock = clock
        super().__init__(endpoint, markets, timeout, direct, shard_endpoints, account, key, retry)
        self._open(context)

    # -- orders ----------------------------------------------------------------------------------

    async def place(self, symbol: str, side: str, qty: Any, price: Any = None, **kw: Any) -> Result:
        """Send one new order; returns its events (accepted, trades, cancels or a reject)."""
        return (await self.submit_many([self.order(symbol, side, qty, price, **kw)]))[0]

    async def cancel(self, symbol: str, id: str, *, account: str | None = None) -> Result:  # noqa: A002
        return (await self.submit_many([self._cancel_cmd(symbol, id, account)]))[0]

    async def cancel_all(
        self, symbol: str | None = None, *, account: str | None = None
    ) -> CancelAll:
        """Cancel every live order of the account in ``symbol``, or in every pair (one
        ``cancel_all`` per pair, each to its pair's shard); says how many were cancelled."""
        return CancelAll(await self.submit_many(self._cancel_all_cmds(symbol, account)))

    async def cancel_after(
        self, timeout_ms: int, symbol: str | None = None, *, account: str | None = None
    ) -> CancelAll:
        """Cancel-on-disconnect: arm (or push back) the account's dead-man switch of
        ``symbol``, or of every pair: unless called again within ``timeout_ms`` ms of exchange
        time, the shard cancels the account's orders of that pair (reason ``deadman``). Call
        it again well within the timeout as a heartbeat (``timeout_ms`` 0 disarms it); a
        session that dies stops the heartbeat, and its orders go."""
        cmds = self._cancel_all_cmds(symbol, account, timeout_ms)
        return CancelAll(await self.submit_many(cmds))

    async def amend(
        self,
        symbol: str,
        id: str,  # noqa: A002
        *,
        qty: Any = None,
        price: Any = None,
        account: str | None = None,
    ) -> Result:
        return (await self.submit_many([self._amend_cmd(symbol, id, qty, price, account)]))[0]

    async def submit_many(
        self, commands: Iterable[Mapping[str, Any]], *, batch: int = 100, window: int = 8
    ) -> list[Result]:
        """Send many JSON-schema command dicts; results come back in input order.

        Commands are grouped per shard into frames of ``batch``; up to ``window`` frames are in
        flight at once. A command that gets no reply within ``timeout`` has its fate asked from
        its shard before this returns (``Result.fate``/``Result.status``).
        """
        cmds = [dict(c) for c in commands]
        await self._ready(markets=True)
        if self.unlisted(cmds):  # a pair listed after this client learned the table
            await self._refresh_markets()
        tuples = [self.command(c) for c in cmds]
        decoded = self.decode(await self._exchange(tuples, batch, window))
        again = self.misrouted(decoded)
        if again:  # another shard's pair: this client's (or the router's) map was stale
            if self.direct:
                await self._refresh_direct()  # (the router's topology brings its newest map)
            sent = await self._exchange([tuples[i] for i in again], batch, window)
            for i, d in zip(again, self.decode(sent), strict=True):
                decoded[i] = d  # (once: a second refusal is the answer)
        if self.retry is not None:
            return await self._retried(cmds, tuples, decoded, batch, window)
        if self.direct and any(stale_topology(err) for err, _ in decoded):
            await self._refresh_direct()  # (the next call goes to the leader the router knows)
        fates = await self._fates(tuples, decoded, batch)
        return self.results(cmds, decoded, fates)

    async def _retried(
        self, cmds: list[dict[str, Any]], tuples: list[Command], decoded: list, batch: int,
        window: int,
    ) -> list[Result]:  # fmt: skip
        """``Retry`` rounds until every write is settled or the deadline passed (each round may
        add one ``timeout`` to it): ask the fates, send again what never ran."""
        policy = self.retry
        assert policy is not None
        mono = self.clock.monotonic
        deadline = mono() + policy.deadline
        pause = policy.backoff
        resolved: dict[int, Fate] = {}
        last: dict[int, Fate] = {}
        attempts = [1] * len(tuples)
        while True:
            ask, send = self.retry_plan(tuples, decoded, resolved, attempts)
            if not (ask or send) or mono() >= deadline:
                break
            if self.direct and self.topology_stale(decoded, last, ask + send):
                await self._refresh_direct()  # (its fate query would go where nothing answers)
            await self._sleep(pause)
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
        """Ask the router for the topology again and reconnect the direct sockets whose shard
        now registers another endpoint (a new leader after a failover)."""
        if self.shard_endpoints is not None:
            return  # given by the caller: nothing to learn
        try:
            eps = self.direct_endpoints(await self.topology())  # (and the placement map)
        except ShardexError:
            return  # the router cannot say right now: the next round asks again
        for s, ep in enumerate(eps[: len(self._shard_socks)]):
            if self.direct_eps[s] != ep:
                self._reconnect_direct(s, ep)

    async def submit_raw(
        self, tuples: list[Command], *, batch: int = 100, window: int = 8
    ) -> list[tuple[str | None, tuple]]:
        """Fast path for load generators: engine command tuples (ints) in, and per command
        ``(error, event tuples)`` out, with no Decimal conversion and no fate queries."""
        if not tuples:
            return []
        await self._ready(markets=False)
        return self.raw_events(await self._exchange(tuples, batch, window))

    async def _fates(self, tuples: list[Command], decoded: list, batch: int) -> dict[int, Fate]:
        """Ask for the fates of uncertain commands (timeouts, bad replies): ``fate_steps``,
        the account shard first with the tier on; a query refused with a batch error (e.g.
        overloaded) is asked again a few times."""
        targets = self.fate_targets(tuples, decoded)
        fates: dict[int, Fate] = {}
        for attempt in range(3):
            if not targets:
                break
            got, refused = await self._ask_fates(tuples, targets, batch, 8)
            fates.update(got)
            targets = refused if attempt < 2 else []
            if targets:
                await self._sleep(0.05 * (attempt + 1))
        return fates

    async def _ask_fates(
        self, tuples: list[Command], idx: list[int], batch: int, window: int
    ) -> tuple[dict[int, Fate], list[int]]:
        """Run ``fate_steps`` for ``idx``: each step's queries sent, its outcomes given back."""
        steps = self.fate_steps(tuples, idx)
        try:
            queries, via = next(steps)
            while True:
                queries, via = steps.send(await self._exchange(queries, batch, window, via))
        except StopIteration as done:
            return done.value

    # -- reads -----------------------------------------------------------------------------------

    async def order_status(
        self,
        symbol: str,
        id: str,  # noqa: A002
        account: str | None = None,
    ) -> dict[str, Any]:
        """The order's fate from its shard: ``{"state": "live"|"filled"|"cancelled"|"unknown",
        ...}`` with Decimal price/qty/filled and trades ``[(price, qty, trade_id)]``."""
        await self._ready(markets=True)
        cmd = (OP_ORDER, symbol, self._acct(account), id)
        raw = await self._read(symbol.encode(), cmd, self.shard_of(symbol))
        return self.order_status_map(raw)

    async def fate(self, symbol: str, id: str, *, account: str | None = None) -> Fate:  # noqa: A002
        """The fate of new order ``id`` whose answer never came (a timeout, a lost
        connection): ``("executed" | "not executed" | "unknown", status)``, asked the way a
        timed-out ``place`` asks (the account shard first with the account tier on)."""
        await self._ready(markets=True)
        probe = (OP_NEW, symbol, id, self._acct(account))  # (what a fate query reads of it)
        fates, _ = await self._ask_fates([probe], [0], 1, 1)
        return fates.get(0, (UNKNOWN, None))

    async def book(self, symbol: str, depth: int = 10) -> dict[str, Any]:
        """L2 depth: {'bids': [(price, qty, orders)...], 'asks': [...]} with Decimals."""
        await self._ready(markets=True)
        s = self.shard_of(symbol)
        return self.decimal_book(await self._read(symbol.encode(), (OP_BOOK, symbol, depth), s))

    async def status(self) -> list[dict[str, Any]]:
        """Status of every shard (seq, resting orders, backlog, uptime...)."""
        await self._ready(markets=False)
        out = []
        for i in range(self.shards or 0):
            try:
                out.append(await self._read(f"#{i}".encode(), (OP_STATUS,), i))
            except ShardexError as exc:
                out.append({"shard": i, "error": str(exc), "code": exc.code})
        return out

    async def topology(self) -> dict[str, Any]:
        """Ask the router for the cluster shape (shard count, shard endpoints, pids, markets)."""
        return self.apply_topology(*await self._topology_reply())

    def _sock(self, shard: int) -> Any:
        """Shard ``shard``'s socket: its direct one, else the router's (account shards, slots
        N and up, are always reached through the router)."""
        if self.direct and shard < len(self._shard_socks):
            return self._shard_socks[shard]
        return self._router

    async def _read(self, key: bytes, cmd: tuple, shard: int) -> dict[str, Any]:
        what = f"shard {shard}"
        return self.read_result(*await self._request(self._sock(shard), key, cmd, what), what)

    # -- connecting and closing ------------------------------------------------------------------

    async def _ready(self, markets: bool) -> None:
        """Connect lazily (once, even with many tasks): topology (shard count, direct
        endpoints), direct sockets, then the market table."""
        self._start()
        async with self._guard():
            info = None
            if self.shards is None or (self.direct and not self._shard_socks):
                if self.shard_endpoints is None:
                    info = await self.topology()
                if self.direct and not self._shard_socks:
                    for ep in self.shard_endpoints or self.direct_endpoints(info or {}):
                        self._connect_direct(ep)
                    self.shards = len(self._shard_socks)
            if markets and self.markets_due():
                await self._learn_markets(info)

    async def _learn_markets(self, info: dict[str, Any] | None) -> None:
        """Ask the cluster for its market table (from the topology, else a shard)."""
        try:
            if info is None and self.shard_endpoints is None:
                info = await self.topology()
            s = self.markets_shard(info)
            if self.needs_markets() and s is not None:
                reply = await self._request(self._sock(s), f"#{s}".encode(), (OP_MARKETS,), "")
                self.learn_markets_reply(*reply)
        except ShardexError:
            pass  # the cluster cannot say right now: defaults for now, asked again later
        finally:
            self.markets_tried()

    async def _refresh_markets(self) -> None:
        """Learn the market table again from every engine shard (a pair listed at runtime is
        in its own shard's table only); a shard that cannot answer adds nothing."""
        tables = []
        for i in range(self.shards or 0):
            try:
                reply = await self._request(self._sock(i), f"#{i}".encode(), (OP_MARKETS,), "")
            except ShardexError:
                continue
            tables.append(self.reply_markets(*reply))
        self.learn_markets([self.markets_wire(), *tables])

    async def close(self) -> None:
        self.close_watches()
        self._close_sockets()

    async def __aenter__(self) -> AsyncClient:
        await self._enter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the account tier ----------------------------------------------------------------------

    async def _need_accounts(self) -> None:
        await self._ready(markets=False)
        if not self.accounts:
            raise ShardexError(NO_ACCOUNT_TIER)

    async def deposit(
        self, account: str, asset: str, amount: Any, *, ref: str | None = None
    ) -> Result:
        """Credit ``amount`` (Decimal or str) of ``asset`` (admin key). ``ref`` makes it
        idempotent: sending the same transfer again with it changes nothing."""
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
        money = _money(amount, "amount")
        cmd = (op, account, asset, money, ref)
        what = "deposit" if op == OP_DEPOSIT else "withdraw"
        command = {"op": what, "account": account, "asset": asset, "amount": money, "ref": ref}
        error, results = await self._request(self._router, account_route(account), cmd, what)
        return transfer_result(command, error, results)

    async def _account_map(self, account: str, cmd: Command, what: str) -> dict[str, Any]:
        """``cmd`` to ``account``'s shard; its answer, a map (``ShardexError`` otherwise)."""
        await self._need_accounts()
        reply = await self._request(self._router, account_route(account), cmd, "")
        raw = self.read_result(*reply, f"{what} of {account}")
        if not isinstance(raw, dict) or "error" in raw:
            raise _failed(what, raw.get("error") if isinstance(raw, dict) else raw)
        return raw

    async def balance(self, account: str | None = None) -> dict[str, tuple[Decimal, Decimal]]:
        """``{asset: (available, held)}`` as Decimals (a trader key reads its own only)."""
        account = self._acct(account)
        raw = await self._account_map(account, (OP_BALANCE, account), "balance")
        try:
            return {a: (Decimal(v[0]), Decimal(v[1])) for a, v in raw["balances"].items()}
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
            raise _bad_reply(f"balance: {MALFORMED_PREFIX}") from None

    async def margin_moves(self, account: str | None = None) -> dict[str, dict[str, Any]]:
        """``{symbol: {"moved": net in − out the engine confirmed (decimal string), "pending":
        moves still in flight}}`` of ``account``'s perp margin, as its account shard sees it."""
        raw = await self._account_map(acct := self._acct(account), (OP_BALANCE, acct), "balance")
        return raw.get("margin", {})  # (an older account shard: none)

    async def fees(self, account: str | None = None) -> dict[str, Any]:
        """``account``'s fees as its account shard charges them now: ``{group, tier, volume:
        {asset: 30-day volume}, rates: {symbol: {maker_bps, taker_bps}}, tiers: [...]}`` (a
        negative ``maker_bps`` is a rebate; a trader key reads its own only)."""
        return await self._account_map(acct := self._acct(account), (OP_FEES, acct), "fees")

    async def set_fee_group(self, account: str, group: str) -> dict[str, Any]:
        """Put ``account`` in fee ``group`` (a tier name of the schedule; ``""``: none), admin
        key: ``{"ok": True, account, group, tier}`` or ``{"rejected": reason, "code": name}``.
        Journaled on the account's shard; orders placed after it get the new rates."""
        return await self._account_map(account, (OP_FEE_GROUP, account, group), "fee_group")

    async def set_market(self, symbol: str, **changes: Any) -> dict[str, Any]:
        """Change pair ``symbol``'s state or limits (admin key; journaled on its engine shard):
        ``state`` (``open``, ``halted``, ``cancel_only``, ``delisted``: final, cancels every
        order), ``band_bps`` (int), ``max_qty``, ``max_notional`` (decimal strings; 0 lifts a
        limit). ``{"ok": True, state, band_bps, max_qty, max_notional, seq, cancelled}`` or
        ``{"ok": False, "rejected": reason, "code": name}``; ``ShardexError`` on a refusal
        (``not_allowed``) or a bad change (``ValueError``)."""
        await self._ready(markets=True)
        market = self.markets.get(symbol)
        if market is None:
            raise ValueError(f"unknown symbol {symbol!r:.40}")
        cmd = (OP_MARKET_RULE, symbol, changes_from_json(market, changes))
        reply = await self._request(self._router, symbol.encode(), cmd, f"market {symbol}")
        return market_rule_result(*reply, symbol, market)

    async def set_index(self, symbol: str, price: Any) -> dict[str, Any]:
        """Send perp pair ``symbol``'s index price (a decimal string, rounded to the nearest
        tick; a ``feed`` key only, journaled on its engine shard): ``{"ok": True, symbol,
        index, mark, seq}`` or ``{"ok": False, "rejected", "code"}`` (docs/perps.md)."""
        await self._ready(markets=True)
        market = self.markets.get(symbol)
        if market is None:
            raise ValueError(f"unknown symbol {symbol!r:.40}")
        reply = await self._request(self._router, symbol.encode(), index_command(market, price),
                                    f"index {symbol}")  # fmt: skip
        return index_result(*reply, symbol, market)

    async def set_margin(self, account: str, symbol: str, amount: Any, *,
                         ref: str | None = None) -> dict[str, Any]:  # fmt: skip
        """``amount`` (a signed decimal string) of the settle asset into or out of ``account``'s
        margin on perp pair ``symbol``, through its account shard if any (docs/perps.md)."""
        await self._ready(markets=True)
        market = self.markets.get(symbol)
        if market is None:
            raise ValueError(f"unknown symbol {symbol!r:.40}")
        if self.accounts:
            cmd = tier_margin_command(market, account, amount, ref or self.new_id())
            reply = await self._request(self._router, account_route(account), cmd, "margin")
            return tier_margin_result(*reply, symbol)
        cmd = margin_command(market, account, amount)
        reply = await self._request(self._router, symbol.encode(), cmd, f"margin {symbol}")
        return margin_result(*reply, symbol, market)

    async def positions(self, account: str | None = None) -> list[dict[str, Any]]:
        """``account``'s perp positions from every engine shard, by symbol: size, entry, cost,
        realized and unrealized PnL, collateral, equity, margins (decimal strings)."""
        await self._ready(markets=True)
        cmd = (OP_POSITIONS, self._acct(account))
        return positions_merged([await self._read(f"#{i}".encode(), cmd, i)
                                 for i in range(self.shards or 0)])  # fmt: skip

    async def market_rules(self) -> dict[str, Any]:
        """Every pair's state and limits, by the engine shard that serves it: ``{symbol:
        {state, band_bps, max_qty, max_notional, shard}}`` (a shard that cannot answer: its
        pairs are missing)."""
        await self._ready(markets=True)
        replies = []
        for i in range(self.shards or 0):
            try:
                replies.append(await self._read(f"#{i}".encode(), (OP_MARKETS,), i))
            except ShardexError:
                replies.append({})
        return pair_rules(self.markets, replies)

    async def list_market(
        self, symbol: str, spec: Mapping[str, Any], fee: Any = None, shard: int | None = None
    ) -> dict[str, Any]:
        """List a new pair on the running cluster (admin key): ``spec`` is ``{tick, lot[,
        max_price, max_qty]}`` (decimal strings), ``fee`` ``(maker_bps, taker_bps)`` (None: the
        default). Every account shard first (the unit rule), then the pair's engine shard;
        ``{"ok": True, symbol, tick, lot, max_price, max_qty, seq}`` or ``{"ok": False,
        "rejected", "code"[, "shard"]}``. Repeating a listing is a no-op that succeeds.
        ``shard``: send the engine listing to that shard (one the pair was just pinned to,
        ``shardex.tools.list_pin``), not by the symbol (a router may not have the new map)."""
        market, definition = listing_definition(symbol, spec)
        fees = fee_of(fee)
        await self._ready(markets=True)
        for j in range(self.accounts or 0):
            cmd = (OP_LIST_PAIR, symbol, definition, fees)
            reply = await self._request(self._router, f"%{j}".encode(), cmd, "list")
            refused = account_result(self.read_result(*reply, f"account shard {j}"), j)
            if refused is not None:
                return refused
        route = symbol.encode() if shard is None else f"#{shard}".encode()
        reply = await self._request(self._router, route, (OP_LIST, symbol, definition),
                                    f"list {symbol}")  # fmt: skip
        out = listing_result(*reply, symbol)
        if out["ok"] and self.markets_source != "given":
            self.markets[symbol] = market
        return out

    async def restrict(self, account: str, restricted: bool = True) -> dict[str, Any]:
        """Restrict (or with ``restricted=False`` unrestrict) ``account`` on its account shard
        (admin key): no new orders, amends or withdrawals; cancels still run. ``{"ok": True,
        account, restricted}`` or ``{"rejected": reason, "code": name}``."""
        await self._need_accounts()
        cmd = (OP_RESTRICT, account, bool(restricted))
        reply = await self._request(self._router, account_route(account), cmd, "restrict")
        raw = self.read_result(*reply, f"restrict {account}")
        if not isinstance(raw, dict) or "error" in raw:
            raise _failed("restrict", raw.get("error") if isinstance(raw, dict) else raw)
        return raw

    async def audit(self) -> list[dict[str, Any]]:
        """Account shards' books and engine shards' perp pair totals for ``audit_report``."""
        await self._need_accounts()
        out = await self._each_account_shard(OP_AUDIT)
        margined = any(a.get("margin_pairs") for a in out)  # (else an engine's error is moot)
        for i in range(self.shards or 0):
            try:
                raw = {**await self._read(f"#{i}".encode(), (OP_POSITIONS,), i), "engine": i}
            except ShardexError as exc:
                raw = {"engine": i, "error": str(exc), "code": exc.code}
            out += [raw] if raw.get("pairs") or ("error" in raw and margined) else []
        return out

    async def open_orders(self, account: str | None = None) -> list[dict[str, Any]]:
        """``account``'s open orders and what each holds: ``{symbol, id, side, price, open,
        held, asset, pending_amends}`` each (a trader key reads its own only); a last
        ``{"truncated": True}`` when there are more than the account shard lists at once."""
        await self._need_accounts()
        account = self._acct(account)
        reply = await self._request(self._router, account_route(account), (OP_ORDER, account), "")
        return self.open_orders_result(self.read_result(*reply, f"orders of {account}"), account)

    async def audit_orders(self, rounds: int = 3) -> list[str]:
        """Per order: every live order in every book is covered by its hold, and every hold
        by a live order (``shardex.accounts.orders.audit_orders``); the problems every one of
        ``rounds`` reads found ([]: none). Admin or reader key."""
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
        """Carry a ``shardex.accounts.orders`` plan's reads; return its result."""
        try:
            ask = next(plan)
            while True:
                key, cmd, shard = ask
                what = "account shard" if shard is None else f"shard {shard}"
                sock = self._router if shard is None else self._sock(shard)
                reply = await self._request(sock, key, cmd, what)
                ask = plan.send(self.read_result(*reply, what))
        except StopIteration as done:
            return done.value
        except PlanError as exc:
            raise ShardexError(str(exc)) from None

    async def account_status(self) -> list[dict[str, Any]]:
        """Every account shard's status (seq, accounts, open orders, link state, journal);
        ``[]`` on a cluster without the account tier."""
        await self._ready(markets=False)
        return await self._each_account_shard(OP_STATUS)

    async def _each_account_shard(self, op: int) -> list[dict[str, Any]]:
        out = []
        for j in range(self.accounts):
            try:
                reply = await self._request(self._router, f"%{j}".encode(), (op,), "")
                raw = self.read_result(*reply, f"account shard {j}")
            except ShardexError as exc:
                raw = {"shard": j, "error": str(exc), "code": exc.code}
            out.append(raw)
        return out
