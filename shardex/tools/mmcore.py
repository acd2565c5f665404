"""The market maker's decisions, pure: given a pair's reference price, the bot's inventory and
its resting quotes, which orders to place, amend or cancel (``quote``). No sockets, no clock,
no randomness beyond a seeded generator: every number is an integer (ticks, lots, asset
units), so the same inputs always give the same actions and a test can check each rule alone.

The rules (docs/marketmaker.md):

* ``levels`` quotes per side, ``size`` lots each, the best bid and ask ``spread`` ticks apart
  around the reference, further levels ``spacing`` ticks out;
* inventory skews the centre: ``skew`` ticks down per ``size`` lots held long (up when short),
  so the quotes lean towards trades that bring the inventory back;
* inventory limit ``max_inventory`` lots: the bids resting at any time add up to at most
  ``max_inventory - inventory`` (the asks to ``max_inventory + inventory``), so even if every
  resting bid filled at once the inventory would not pass the limit; at the limit a side is
  not quoted at all;
* a resting quote whose price or size is off its target is *amended* (keeping its id); an
  amend can only shrink, so a quote filled down below ``refill_pct`` % of its target size is
  replaced (cancel, then a new order); a quote with no target any more is cancelled.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

BUY, SELL = "buy", "sell"
BPS = 10_000


class ParamsError(ValueError):
    """Quoting parameters that cannot work (the message says which and why)."""


@dataclass(frozen=True)
class QuoteParams:
    """One pair's quoting parameters in the market's integers (ticks and lots)."""

    levels: int  # quotes per side
    size: int  # lots per quote
    spread: int  # ticks between the best bid and the best ask
    spacing: int  # ticks between two levels of one side
    max_inventory: int  # lots, long or short
    skew: int  # ticks the centre moves per ``size`` lots of inventory
    max_price: int  # the market's highest price in ticks
    refill_pct: int = 50  # below this % of its target size a quote is replaced

    def __post_init__(self) -> None:
        for name in ("levels", "size", "spread", "spacing", "max_inventory", "max_price"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ParamsError(f"{name} must be a whole number >= 1")
        if type(self.skew) is not int or self.skew < 0:
            raise ParamsError("skew must be a whole number >= 0")
        if type(self.refill_pct) is not int or not 0 <= self.refill_pct <= 100:
            raise ParamsError("refill_pct must be 0..100")


class Target(NamedTuple):
    """Where one quote should be: side, level (0 = best), price (ticks), size (lots)."""

    side: str
    level: int
    price: int
    qty: int


class Resting(NamedTuple):
    """One of the bot's quotes as it rests: id, side, level, price (ticks), open qty (lots)."""

    id: str
    side: str
    level: int
    price: int
    qty: int


class New(NamedTuple):
    side: str
    level: int
    price: int
    qty: int


class Amend(NamedTuple):
    """Move quote ``id`` to ``price`` (None: keep) and/or shrink it to ``qty`` (None: keep)."""

    id: str
    side: str
    level: int
    price: int | None
    qty: int | None


class Cancel(NamedTuple):
    id: str
    side: str
    level: int


Action = New | Amend | Cancel


def _trunc_div(a: int, b: int) -> int:
    """``a / b`` rounded towards zero (``//`` floors, which would skew shorts one tick more)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def skew_ticks(p: QuoteParams, inventory: int) -> int:
    """How far the centre moves *down* for ``inventory`` lots (negative: up)."""
    return _trunc_div(inventory * p.skew, p.size)


def targets(p: QuoteParams, reference: int, inventory: int) -> list[Target]:
    """Every quote the pair should have: bids from the best down, asks from the best up, each
    side's sizes bounded by its room under the inventory limit; prices outside 1..max_price
    are left out."""
    centre = reference - skew_ticks(p, inventory)
    bid0 = centre - p.spread // 2
    out: list[Target] = []
    sides = ((BUY, bid0, -1, p.max_inventory - inventory),
             (SELL, bid0 + p.spread, 1, p.max_inventory + inventory))  # fmt: skip
    for side, best, direction, room in sides:
        for level in range(p.levels):
            qty = min(p.size, room)
            if qty <= 0:
                break
            price = best + direction * level * p.spacing
            if not 1 <= price <= p.max_price:
                continue
            out.append(Target(side, level, price, qty))
            room -= qty
    return out


def plan(p: QuoteParams, wanted: Iterable[Target], resting: Iterable[Resting]) -> list[Action]:
    """The actions that turn ``resting`` into ``wanted``: cancels first, then amends (those
    moving away from the other side before those moving towards it), then new orders (so
    what frees room under the limit runs before what uses it)."""
    want = {(t.side, t.level): t for t in wanted}
    cancels: list[Action] = []
    amends: list[tuple[bool, Action]] = []  # (advances towards the other side, amend)
    news: list[Action] = []
    seen: set[tuple[str, int]] = set()
    # per level the biggest quote is kept (then the smallest id): another one there goes
    for r in sorted(resting, key=lambda r: (r.side, r.level, -r.qty, r.id)):
        key = (r.side, r.level)
        t = want.get(key)
        if t is None or key in seen:
            cancels.append(Cancel(r.id, r.side, r.level))
            continue
        seen.add(key)
        if r.qty * 100 < t.qty * p.refill_pct:
            cancels.append(Cancel(r.id, r.side, r.level))
            news.append(New(t.side, t.level, t.price, t.qty))
        elif r.price != t.price or r.qty > t.qty:
            price = t.price if r.price != t.price else None
            qty = t.qty if r.qty > t.qty else None
            advances = price is not None and (price > r.price) == (r.side == BUY)
            amends.append((advances, Amend(r.id, r.side, r.level, price, qty)))
    news += [New(*t) for key, t in want.items() if key not in seen]
    # quotes moving away from the spread first: a bid moved up before the ask above it moved
    # up too would cross it (a post-only quote is then refused)
    return cancels + [a for _, a in sorted(amends, key=lambda x: x[0])] + news


def quote(
    p: QuoteParams, reference: int, inventory: int, resting: Iterable[Resting]
) -> list[Action]:
    """``plan`` towards ``targets``: the one call the bot makes per pair and round."""
    return plan(p, targets(p, reference, inventory), resting)


# -- the reference price ---------------------------------------------------------------------


class RandomWalk:
    """A pair's reference price as a seeded random walk in whole ticks: each ``step`` moves it
    by a whole number of basis points in ``-step_bps..step_bps`` (at least one tick when the
    draw is not zero), within ``1..max_price``. The same seed and symbol always give the same
    path (``random.Random`` seeded with a string is stable across runs and processes)."""

    def __init__(self, seed: int, symbol: str, start: int, step_bps: int, max_price: int) -> None:
        if not 1 <= start <= max_price:
            raise ParamsError(f"{symbol}: start price {start} ticks outside 1..{max_price}")
        self.rng = random.Random(f"shardex-mm:{seed}:{symbol}")
        self.ticks = start
        self.step_bps = max(0, step_bps)
        self.max_price = max_price

    def step(self) -> int:
        bps = self.rng.randint(-self.step_bps, self.step_bps)
        move = _trunc_div(self.ticks * bps, BPS)
        if move == 0 and bps:
            move = 1 if bps > 0 else -1
        self.ticks = min(self.max_price, max(1, self.ticks + move))
        return self.ticks


def others_mid(
    bids: Sequence[tuple[int, int]],
    asks: Sequence[tuple[int, int]],
    own: Mapping[tuple[str, int], int],
) -> int | None:
    """The mid (ticks, rounded down) of the book without the bot's own quotes: ``bids``/
    ``asks`` are (price, qty) levels best first, ``own`` the bot's open lots per (side,
    price). None when the others leave a side empty (the bot keeps its last reference)."""
    best: list[int] = []
    for side, levels in ((BUY, bids), (SELL, asks)):
        for price, qty in levels:
            if qty > own.get((side, price), 0):
                best.append(price)
                break
        else:
            return None
    return (best[0] + best[1]) // 2


# -- inventory and profit ----------------------------------------------------------------------


def inventory_lots(base_now: int, base_start: int, base_per_lot: int) -> int:
    """Lots bought (negative: sold) since the start, from the base asset's balance in units
    (fills move whole lots; anything else, e.g. a deposit, rounds towards zero)."""
    return _trunc_div(base_now - base_start, base_per_lot)


def pnl_units(
    base_delta: int, quote_delta: int, reference: int, base_per_lot: int, quote_per_tick_lot: int
) -> int:
    """Profit in units of the quote asset, marked at ``reference``: what the quote balance
    gained (fees included) plus the inventory valued at the reference. Exact integers."""
    lots = _trunc_div(base_delta, base_per_lot)
    return quote_delta + lots * reference * quote_per_tick_lot
