"""Seeded, realistic order flow for benches, tests and ``shardex loadgen`` (engine command tuples,
ints inside). The one order generator of the project, with the one default mix.

The mix follows what a busy venue sees: mostly limit orders near the touch, a large share of
cancels of *live* orders, some IOC/market takers and a few amends. With ``shadow=True`` (the
default) a shadow engine tracks which orders are really live, so cancels and amends hit resting
orders instead of producing rejects, and prices follow the real touch. ``shadow=False`` is the
load generator's cheap mode (no matching inside the generator, so one process offers well over
100k orders/s): it remembers the resting orders it sent, some of which the cluster has filled
meanwhile (their cancels are then rejected as unknown, as a real client's sometimes are).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence

from shardex.engine import Engine
from shardex.engine.codes import (
    BUY,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_AMEND,
    OP_CANCEL,
    OP_NEW,
    STOP_LIMIT,
    STOP_MARKET,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
    Command,
)
from shardex.engine.markets import DEFAULT_MARKETS, Market
from shardex.wire.layouts import CMD_ACCOUNT, NEW_PRICE, NEW_QTY, NEW_TIF, NEW_TYPE

DEFAULT_MIX = {"limit": 45, "ioc": 10, "market": 5, "cancel": 35, "amend": 5}
# the kinds a mix may weigh: the default mix's, and stop / take-profit orders (``stop``: a
# quarter of each type, triggers a few ticks from the mid on the side where they wait)
KINDS = (*DEFAULT_MIX, "stop")
STOP_TYPES = (STOP_MARKET, STOP_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT)
MAX_REMEMBERED = 100_000  # resting orders the cheap mode keeps for cancels/amends


def format_mix(mix: Mapping[str, int]) -> str:
    """``{"limit": 45, ...}`` → ``"limit=45,..."`` (the ``--mix`` option's form)."""
    return ",".join(f"{k}={v}" for k, v in mix.items())


DEFAULT_MIX_TEXT = format_mix(DEFAULT_MIX)


class Workload:
    """Generates commands one at a time; keeps per-symbol mid prices and the live-order set."""

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"),
        seed: int = 1,
        markets: Mapping[str, Market] = DEFAULT_MARKETS,
        mix: Mapping[str, int] = DEFAULT_MIX,
        accounts: int = 100,
        levels: int = 200,
        *,
        shadow: bool = True,
        prefix: str = "o",
    ) -> None:
        unknown = set(mix) - set(KINDS)
        if unknown:
            raise ValueError(f"mix: unknown kind {sorted(unknown)[0]!r} ({', '.join(KINDS)})")
        if sum(mix.values()) <= 0 or min(mix.values()) < 0:
            raise ValueError("mix: weights must be >= 0 and add up to more than 0")
        missing = [s for s in symbols if s not in markets]
        if missing or not symbols:
            raise ValueError(f"symbols: {missing[0] if missing else 'none'} not in the markets")
        self.rng = random.Random(seed)
        self.symbols = list(symbols)
        self.markets = markets
        self.shadow: Engine | None = Engine(markets) if shadow else None
        self.prefix = prefix
        self._open: dict[str, list[int]] = {}  # cheap mode: id → [open qty, price] as sent
        self.accounts = [f"acct-{i}" for i in range(accounts)]
        self.levels = levels
        self.mid = {}
        self.unit = {}
        for s in self.symbols:
            m = markets[s]
            # Mid around a plausible price, expressed in ticks; lots sized ~1 unit of the asset.
            self.mid[s] = m.max_price_ticks // 200
            self.unit[s] = max(1, int(1 / m.lot) // 10) if m.lot < 1 else 10
        self.live: list[tuple[str, str, str]] = []  # (symbol, id, account)
        self.next_id = 0
        kinds, weights = zip(*mix.items(), strict=True)
        self._kinds = kinds
        self._cum = []
        acc = 0
        for w in weights:
            acc += w
            self._cum.append(acc)
        self._total = acc
        self._events: list = []

    def warmup(self, orders_per_symbol: int) -> list[Command]:
        """Resting GTC orders on both sides over ``levels`` price levels (book depth)."""
        cmds = []
        rng = self.rng
        for s in self.symbols:
            for _ in range(orders_per_symbol):
                side = BUY if rng.random() < 0.5 else 1
                off = 1 + rng.randrange(self.levels)
                price = self.mid[s] - off if side == BUY else self.mid[s] + off
                cmds.append(self._emit(self._new(s, side, LIMIT, price, GTC)))
        return cmds

    def take(self, n: int) -> list[Command]:
        return [self.next() for _ in range(n)]

    def next(self) -> Command:
        rng = self.rng
        r = rng.random() * self._total
        kind = self._kinds[bisect_right(self._cum, r)]
        s = self.symbols[rng.randrange(len(self.symbols))]
        if self.shadow is not None:  # the cheap mode quotes around a fixed mid (no book here)
            self._follow_touch(s)
        if kind in ("cancel", "amend"):
            picked = self._pick_live()
            if picked is not None:
                sym, oid, account = picked
                if kind == "cancel":
                    return self._emit((OP_CANCEL, sym, oid, account))
                self.live.append(picked)  # still live after the amend (checked lazily later)
                if self.shadow is not None:
                    order = self.shadow.books[sym].orders[oid]
                    qty, price = order.qty, order.price
                else:
                    qty, price = self._open[oid]
                if qty > 1 and rng.random() < 0.7:
                    return self._emit((OP_AMEND, sym, oid, account, qty // 2, None))
                step = rng.choice((-2, -1, 1, 2))
                return self._emit((OP_AMEND, sym, oid, account, None, max(1, price + step)))
            kind = "limit"
        side = BUY if rng.random() < 0.5 else 1
        if kind == "stop":
            return self._emit(self._stop(s, side))
        if kind == "market":
            tif = IOC if rng.random() < 0.9 else FOK
            return self._emit(self._new(s, side, MARKET, None, tif, taker=True))
        # Near the touch: mostly passive, a few ticks through the mid for IOC takers.
        if kind == "ioc":
            off = -rng.randrange(1, 6)
            tif = IOC
        else:
            off = int(rng.expovariate(0.15)) + 1 if rng.random() < 0.95 else -rng.randrange(1, 3)
            tif = GTC
        price = self.mid[s] - off if side == BUY else self.mid[s] + off
        return self._emit(self._new(s, side, LIMIT, max(1, price), tif, taker=tif == IOC))

    def _follow_touch(self, symbol: str) -> None:
        """Quote around the live touch (with a little noise) so the book neither drains nor
        drifts away from where new orders land."""
        book = self.shadow.books.get(symbol) if self.shadow is not None else None
        if book is not None:
            bid, ask = book.best(BUY), book.best(1)
            if bid is not None and ask is not None:
                self.mid[symbol] = (bid + ask) // 2
        self.mid[symbol] += self.rng.choice((-1, 0, 0, 1))

    def _new(
        self, symbol: str, side: int, otype: int, price: int | None, tif: int, taker: bool = False
    ) -> Command:
        self.next_id += 1
        account = self.accounts[self.rng.randrange(len(self.accounts))]
        # Takers are smaller than resting orders, as on real venues; this also keeps the
        # stream's book depth steady instead of draining under the 35% cancel share.
        qty = self.unit[symbol] * self.rng.randrange(1, 6 if taker else 20)
        oid = f"{self.prefix}{self.next_id}"
        return (OP_NEW, symbol, oid, account, side, otype, price, qty, tif, False, 0)

    def _stop(self, symbol: str, side: int) -> Command:
        """A stop or take-profit order (the options form of OP_NEW) whose trigger waits 1..5
        ticks from the mid; the limit kinds' price 2 ticks past the trigger."""
        rng = self.rng
        otype = STOP_TYPES[rng.randrange(4)]
        up = (otype in (STOP_MARKET, STOP_LIMIT)) == (side == BUY)
        trigger = max(1, self.mid[symbol] + rng.randrange(1, 6) * (1 if up else -1))
        market = otype in (STOP_MARKET, TAKE_PROFIT)
        price = None if market else max(1, trigger + (2 if side == BUY else -2))
        cmd = self._new(symbol, side, otype, price, IOC if market else GTC, taker=True)
        return (*cmd, None, {"trigger": trigger})

    def _emit(self, cmd: Command) -> Command:
        if self.shadow is None:
            return self._remember(cmd)
        ev = self._events
        ev.clear()
        self.shadow.apply(cmd, ev)
        op, symbol, oid, account = cmd[: CMD_ACCOUNT + 1]
        if op == OP_NEW and cmd[NEW_TIF] == GTC and oid in self.shadow.books[symbol].orders:
            self.live.append((symbol, oid, account))
        return cmd

    def _remember(self, cmd: Command) -> Command:
        """Cheap mode: remember GTC limit orders as resting (bounded) and follow amends."""
        op, symbol, oid, account = cmd[: CMD_ACCOUNT + 1]
        if op == OP_NEW:
            if cmd[NEW_TIF] == GTC and cmd[NEW_TYPE] == LIMIT and len(self._open) < MAX_REMEMBERED:
                self.live.append((symbol, oid, account))
                self._open[oid] = [cmd[NEW_QTY], cmd[NEW_PRICE]]
        elif op == OP_AMEND:
            _, _, _, _, qty, price = cmd
            entry = self._open[oid]  # [open qty, price]
            if qty is not None:
                entry[0] = qty
            if price is not None:
                entry[1] = price
        elif op == OP_CANCEL:
            self._open.pop(oid, None)
        return cmd

    def _pick_live(self) -> tuple[str, str, str] | None:
        live, rng = self.live, self.rng
        books = self.shadow.books if self.shadow is not None else None
        while live:
            i = rng.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            sym, oid, account = live[-1]
            live.pop()
            if books is None or oid in books[sym].orders:
                return sym, oid, account
        return None
