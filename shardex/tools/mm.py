"""``shardex mm``: a market-maker bot, so a cluster has a live market (docs/marketmaker.md).

It quotes ``levels`` post-only orders per side on each pair around a reference price (a
seeded random walk, deterministic given ``seed``, or the mid of the others' orders in the
book), from one account per pair (``<prefix>-<SYMBOL>``) that it funds itself with admin
deposits, as ``shardex loadgen`` does (so it needs an admin key and the account tier). Each
round it reads each account's open orders and balances, then amends its quotes towards
``mmcore.quote``'s targets (skewed by inventory, bounded by the inventory limit). Optional
taker flow (``taker_rate`` orders/s) sends IOC orders at the best price of the other side
from a second account (``<prefix>-taker``), so trades happen. SIGINT/SIGTERM (or ``cycles``
rounds done) stops it: every open order of its accounts is cancelled before it exits.

Modules: ``mmcore`` (the pure decisions), ``mmpair`` (one pair's state and its I/O answers),
``mmreport`` (progress and summary lines, Prometheus metrics) and this one (setup, funding
and the loops).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.accounts.assets import MAX_UNITS, AssetTable
from shardex.aio import within
from shardex.client import AsyncClient, ShardexError
from shardex.engine import Market
from shardex.tools.mmcore import (
    BUY,
    SELL,
    Action,
    Cancel,
    New,
    ParamsError,
    QuoteParams,
    RandomWalk,
    others_mid,
)
from shardex.tools.mmpair import (
    PairState,
    account_balances,
    actions,
    command,
    mark,
    reconcile,
    settle,
    units,
)
from shardex.tools.mmreport import Totals, format_progress, serve_metrics

log = logging.getLogger("shardex.mm")

# Where the walk starts on the built-in markets (``--price`` overrides; other markets start
# at the others' mid in the book, else at FALLBACK_START_TICKS).
DEFAULT_START = {
    "BTC-USD": "30000", "ETH-USD": "2000", "SOL-USD": "100", "XRP-USD": "0.5",
    "DOGE-USD": "0.1", "ADA-USD": "0.4", "LTC-USD": "80", "ETH-BTC": "0.05",
}  # fmt: skip
FALLBACK_START_TICKS = 10_000
REFERENCES = ("walk", "mid")


class MMError(Exception):
    """The bot cannot run (no account tier, a refused deposit, bad options): one line."""


@dataclass(frozen=True)
class MMConfig:
    """The bot's options (``shardex mm --help`` says each). Sizes in lots, prices in ticks."""

    endpoint: str | None = None
    key: Any = None  # a key file path, False for none, None: the SDK's default
    pairs: tuple[str, ...] = ()  # () = every market of the cluster
    levels: int = 3
    size: int = 10
    spread: int = 20
    spacing: int = 10
    max_inventory: int = 50
    skew: int = 2
    refill_pct: int = 50
    reference: str = "walk"
    seed: int = 1
    walk_bps: int = 5
    prices: Mapping[str, str] = field(default_factory=dict)  # symbol → start price (decimal)
    interval: float = 1.0
    taker_rate: float = 0.0
    cycles: int = 0  # 0: until a signal
    progress: float = 10.0  # seconds between progress lines (0: none)
    prefix: str = "mm"
    timeout: float = 5.0
    wait: float = 60.0  # seconds to wait for the cluster at the start
    metrics_port: int = 0  # 0: no exporter

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise MMError(f"reference must be one of {', '.join(REFERENCES)}")
        if self.interval <= 0 or self.taker_rate < 0 or self.cycles < 0 or self.walk_bps < 0:
            raise MMError("interval must be > 0; taker rate, cycles and walk bps >= 0")
        self.params(Market("X-Y", Decimal(1), Decimal(1), Decimal(10), Decimal(10)))

    def params(self, market: Market) -> QuoteParams:
        try:
            return QuoteParams(self.levels, self.size, self.spread, self.spacing,
                               self.max_inventory, self.skew, market.max_price_ticks,
                               self.refill_pct)  # fmt: skip
        except ParamsError as exc:
            raise MMError(str(exc)) from None


def parse_prices(text: str | None) -> dict[str, str]:
    """``SYMBOL=PRICE,...`` → {symbol: decimal string}; MMError naming a bad entry."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        symbol, _, price = item.partition("=")
        try:
            ok = Decimal(price).is_finite() and Decimal(price) > 0
        except InvalidOperation:
            ok = False
        if not symbol or not ok:
            raise MMError(f"--price: expected SYMBOL=PRICE (a positive decimal), got {item!r}")
        out[symbol.strip()] = price.strip()
    return out


def _ticks(m: Market, price: str | None) -> int | None:
    """``price`` (a decimal string) in ticks of ``m``; None when absent or not one of its
    prices (off the tick grid, out of range)."""
    if price is None:
        return None
    n = m.to_ticks(Decimal(price))
    return n if type(n) is int else None


class MarketMaker:
    """The bot on one connected ``AsyncClient`` (see the module docstring)."""

    def __init__(self, c: AsyncClient, cfg: MMConfig) -> None:
        self.c = c
        self.cfg = cfg
        try:
            self.table = AssetTable(c.markets)
        except ValueError as exc:  # (a cluster with the account tier has BASE-QUOTE pairs)
            raise MMError(f"the cluster's markets: {exc}") from None
        self.states: list[PairState] = []
        self.totals = Totals()
        self.taker = f"{cfg.prefix}-taker"
        self.run_id = uuid.uuid4().hex[:8]
        self.deposits = 0

    # -- setting up ------------------------------------------------------------------------

    async def setup(self) -> None:
        """Pairs, their start references, funding, leftovers of an earlier run cancelled,
        and the balances inventory and profit are counted from."""
        self.states.clear()  # (a retried set-up starts again)
        if not self.c.accounts:
            raise MMError(
                "shardex mm needs the account tier (shardex up --accounts M, M >= 1): it "
                "funds its own accounts and counts inventory from balances"
            )
        symbols = self.cfg.pairs or tuple(sorted(self.c.markets))
        unknown = [s for s in symbols if s not in self.c.markets]
        if unknown:
            raise MMError(f"unknown pairs {', '.join(unknown)} (the cluster's markets: "
                          f"{', '.join(sorted(self.c.markets))})")  # fmt: skip
        for symbol in symbols:
            self.states.append(await self._pair(symbol))
        await self.fund()
        left = await self.clear()
        if left:
            raise MMError(f"{left} open orders of earlier runs could not be cancelled")
        for st in self.states:
            st.base_start, st.quote_start = account_balances(
                st, self.table, await self.c.balance(st.account)
            )

    async def _pair(self, symbol: str) -> PairState:
        m = self.c.markets[symbol]
        given = self.cfg.prices.get(symbol)
        ticks = _ticks(m, given or DEFAULT_START.get(symbol))
        if given and ticks is None:
            raise MMError(f"--price {symbol}={given}: not a price of the market (tick "
                          f"{m.tick}, at most {m.max_price})")  # fmt: skip
        if ticks is None:
            book = await self._book_ticks(symbol, {})
            ticks = book if book is not None else min(FALLBACK_START_TICKS, m.max_price_ticks)
        walk = RandomWalk(self.cfg.seed, symbol, ticks, self.cfg.walk_bps, m.max_price_ticks)
        return PairState(symbol, m, self.table.pairs[symbol], self.cfg.params(m),
                         f"{self.cfg.prefix}-{symbol}", walk, ticks)  # fmt: skip

    def fund_targets(self) -> dict[str, dict[str, int]]:
        """Units of each asset each account is topped up to: a maker enough for its whole
        ladder past the inventory limit at up to twice the start price, the taker ten times
        that (each capped far below an account shard's per-asset cap)."""
        want: dict[str, Counter[str]] = {}
        cap = MAX_UNITS // 1024
        for st in self.states:
            lots = 2 * (st.params.max_inventory + st.params.levels * st.params.size)
            base = lots * st.pair.base_per_lot
            quote_ = 2 * lots * st.reference * st.pair.quote_per_tick_lot
            for account, k in ((st.account, 1), (self.taker, 10)):
                acct = want.setdefault(account, Counter())
                acct[st.pair.base] += min(cap, k * base)
                acct[st.pair.quote] += min(cap, k * quote_)
        return {a: {asset: min(cap, n) for asset, n in w.items()} for a, w in want.items()}

    async def fund(self, only: str | None = None) -> None:
        """Top the accounts (``only``: that one) up to ``fund_targets`` with admin deposits,
        each with a fresh ``ref``; MMError when one is refused (say, not an admin key)."""
        for account, want in self.fund_targets().items():
            if only is not None and account != only:
                continue
            have = await self.c.balance(account)
            for asset, target in sorted(want.items()):
                avail, held = have.get(asset, (Decimal(0), Decimal(0)))
                now = (self.table.to_units(asset, avail) or 0) + (
                    self.table.to_units(asset, held) or 0
                )
                if now >= target:
                    continue
                self.deposits += 1
                amount = self.table.fmt(asset, target - now)
                ref = f"mm-{self.run_id}-{self.deposits}"
                res = await self.c.deposit(account, asset, amount, ref=ref)
                if not res.ok:
                    raise MMError(f"funding {account}: deposit of {amount} {asset} refused "
                                  f"({res.code}); shardex mm needs an admin key")  # fmt: skip

    async def clear(self, deadline_s: float | None = None) -> int:
        """Cancel every open order of the bot's accounts until none is left or the deadline
        passes; returns how many were still open (0: clean). A cancel whose order is still
        listed a second later (the account shard hears of the cancel after the engine) is
        sent again; ``not_live`` answers are expected (filled or cancelled meanwhile)."""
        accounts = [st.account for st in self.states] + [self.taker]
        end = time.monotonic() + (deadline_s or max(10.0, 3 * self.cfg.timeout))
        sent: dict[str, float] = {}
        while True:
            rows = []
            for account in accounts:
                rows += [(account, r) for r in await self.c.open_orders(account)
                         if not r.get("truncated")]  # fmt: skip
            now = time.monotonic()
            if not rows or now > end:
                return len(rows)
            cmds = [{"op": "cancel", "symbol": r["symbol"], "id": r["id"], "account": a}
                    for a, r in rows if now - sent.get(r["id"], -9.0) >= 1.0]  # fmt: skip
            for cmd in cmds:
                sent[cmd["id"]] = now
            if cmds:
                await self.c.submit_many(cmds)
            await asyncio.sleep(0.1)

    # -- one round -----------------------------------------------------------------------------

    async def round(self) -> None:
        """Every pair once, all at once (each pair has its own account, so the pairs share
        nothing but the client): read, decide, act."""
        await asyncio.gather(*(self._guarded_round(st) for st in self.states))
        self.totals.cycles += 1

    async def _guarded_round(self, st: PairState) -> None:
        """A pair whose reads fail this round (timeout, overloaded...) is skipped, its error
        counted by code; the next round tries again."""
        try:
            await self._pair_round(st)
        except ShardexError as exc:
            st.rejects[exc.code or "error"] += 1
            log.warning("%s: round skipped: %s", st.symbol, exc)

    async def _pair_round(self, st: PairState) -> None:
        reconcile(st, await self.c.open_orders(st.account))
        bal = await self.c.balance(st.account)
        if self.cfg.reference == "walk":
            st.reference = st.walk.step()
        else:
            mid = await self._book_ticks(st.symbol, st.own_levels())
            st.reference = st.reference if mid is None else mid
        mark(st, *account_balances(st, self.table, bal))
        todo = actions(st)
        cancels = [a for a in todo if isinstance(a, Cancel)]
        rest = [a for a in todo if not isinstance(a, Cancel)]
        if cancels and not await self._send(st, cancels):
            rest = [a for a in rest if not isinstance(a, New)]
        if rest:
            await self._send(st, rest)

    async def _send(self, st: PairState, todo: list[Action]) -> bool:
        """Send ``todo`` in one batch and take the answers; True when all were done.

        Cancels go first, alone (``_pair_round``): a cancel goes straight to the engine shard
        and its answer is the engine's, while a new order goes through the account shard, so
        sent together the new one could rest before the cancel ran, the two beyond the room
        under the inventory limit. And when a cancel is refused (``not_live``: filled first,
        an inventory change the bot has not read yet) the round's new orders wait for the
        next round's fresh reads."""
        cmds = [command(st, a, self.c.new_id()) for a in todo]
        ok = True
        for a, cmd, res in zip(todo, cmds, await self.c.submit_many(cmds), strict=True):
            settle(st, a, cmd, res.ok, res.code)
            ok = ok and res.ok
        return ok

    async def _book_ticks(self, symbol: str, own: dict[tuple[str, int], int]) -> int | None:
        """The mid of the others' orders in ``symbol``'s book (ticks), or None."""
        m = self.c.markets[symbol]
        book = await self.c.book(symbol, depth=max(10, 2 * self.cfg.levels + 2))
        levels = [[(units(m, p, "price"), units(m, q, "qty")) for p, q, _ in book.get(side, ())]
                  for side in ("bids", "asks")]  # fmt: skip
        return others_mid(levels[0], levels[1], own)

    # -- taker flow ------------------------------------------------------------------------

    async def take(self, rng: random.Random) -> None:
        """One taker order: a random pair and side, 1..size lots, IOC at the other side's
        best price (nothing when that side is empty); insufficient funds tops it up."""
        st = rng.choice(self.states)
        side = rng.choice((BUY, SELL))
        qty = rng.randint(1, st.params.size)
        book = await self.c.book(st.symbol, depth=1)
        best = book.get("asks" if side == BUY else "bids") or ()
        if not best:
            self.totals.taker_skipped += 1
            return
        res = await self.c.place(st.symbol, side, st.market.qty_str(qty), best[0][0],
                                 tif="ioc", account=self.taker)  # fmt: skip
        self.totals.taker_orders += 1
        if not res.ok:
            self.totals.taker_rejects[res.code or "unknown"] += 1
            if res.code == "insufficient_funds":
                await self.fund(only=self.taker)


async def _every(period: float, stop: asyncio.Event, step: Callable[[], Any]) -> None:
    """Run ``step`` every ``period`` seconds (on a schedule: a slow step is not followed by
    a burst) until ``stop`` is set; a client error in a step is logged, never fatal."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stop.is_set():
        try:
            await step()
        except ShardexError as exc:
            log.warning("%s", exc)
        due = max(due + period, loop.time() - period)
        try:
            await within(stop.wait(), max(0.0, due - loop.time()))
        except TimeoutError:
            pass


async def _patiently(step: Callable[[], Any], wait: float, stop: asyncio.Event, what: str) -> Any:
    """``await step()``, again every half second while it fails with a client error (the
    cluster still starting: under ``shardex up`` or honcho the bot starts with it), for at most
    ``wait`` seconds; MMError saying ``what`` failed, or that a signal came first."""
    end = time.monotonic() + wait
    while True:
        try:
            return await step()
        except ShardexError as exc:
            if time.monotonic() > end:
                raise MMError(f"{what} for {wait:g}s: {exc}") from None
        try:
            await within(stop.wait(), 0.5)
            raise MMError(f"stopped before the start was done ({what})")
        except TimeoutError:
            pass


async def run(cfg: MMConfig, out: Callable[[str], Any] = print) -> MarketMaker:
    """Run the bot until SIGINT/SIGTERM or ``cfg.cycles`` rounds; cancel its orders; return
    it (``mm.totals.left_open``: orders still open at the end, 0 when clean, None when the
    cluster could not say)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            c = AsyncClient(cfg.endpoint, key=cfg.key, timeout=cfg.timeout)
        except ShardexError as exc:
            raise MMError(str(exc)) from None
        try:
            await _patiently(c.topology, cfg.wait, stop, "the router did not answer")
            mm = MarketMaker(c, cfg)
            await _patiently(mm.setup, cfg.wait, stop, "setting up failed")
            await _run_set_up(mm, cfg, stop, out)
        finally:
            await c.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return mm


async def _run_set_up(mm: MarketMaker, cfg: MMConfig, stop: asyncio.Event, out: Callable) -> None:
    """The loops of a set-up bot, then its final cancels (whatever ended the loops)."""
    stopper = serve_metrics(mm, cfg.metrics_port)
    pairs = ", ".join(st.symbol for st in mm.states)
    out(f"mm: quoting {pairs} ({cfg.levels} levels per side, reference {cfg.reference}, "
        f"seed {cfg.seed})")  # fmt: skip
    try:
        await _loops(mm, cfg, stop, out)
    finally:
        try:
            mm.totals.left_open = await mm.clear()
        except ShardexError as exc:
            mm.totals.left_open = None
            log.error("could not cancel the bot's orders: %s", exc)
        stopper()


async def _loops(mm: MarketMaker, cfg: MMConfig, stop: asyncio.Event, out: Callable) -> None:
    """The quoting rounds, the taker flow and the progress lines, until ``stop``."""

    async def one_round() -> None:
        await mm.round()
        if cfg.cycles and mm.totals.cycles >= cfg.cycles:
            stop.set()

    rng = random.Random(f"shardex-mm-taker:{cfg.seed}")
    tasks = [asyncio.create_task(_every(cfg.interval, stop, one_round))]
    if cfg.taker_rate > 0:
        tasks.append(asyncio.create_task(
            _every(1.0 / cfg.taker_rate, stop, lambda: mm.take(rng))))  # fmt: skip
    if cfg.progress > 0:

        async def progress() -> None:
            out(format_progress(mm))

        tasks.append(asyncio.create_task(_every(cfg.progress, stop, progress)))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        done = await asyncio.gather(stopped, *tasks, return_exceptions=True)
    for result in done:  # a bug in a loop ends the bot (after its orders are cancelled)
        if isinstance(result, Exception):
            raise result
