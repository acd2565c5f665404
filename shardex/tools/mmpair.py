"""One pair of the market maker: its quotes as the bot knows them, how they are brought in line
with what the cluster says (``reconcile``), and how one round's actions (``mmcore.quote``)
are sent and their answers read (``act``).

The bot quotes each pair from an account of its own (``<prefix>-<SYMBOL>``), so the pair's
inventory is simply that account's base balance against the one it started with, and its
profit that account's two balances marked at the reference: exact, fees included, and never
guessed from replies (with the account tier, an order's reply says it was held and forwarded,
not what it matched). What the bot knows of its quotes comes from the account's open orders:
a quote that shrank or vanished without the bot cancelling it was filled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shardex.accounts.assets import AssetTable, Pair
from shardex.engine import Market
from shardex.tools.mmcore import (
    Action,
    Amend,
    Cancel,
    New,
    QuoteParams,
    RandomWalk,
    Resting,
    inventory_lots,
    pnl_units,
    quote,
)

NOT_LIVE = "not_live"  # the stable code of a cancel/amend of an order that is not live


def units(market: Market, value: Decimal, what: str) -> int:
    """A price (``what`` "price") or quantity from the cluster → ticks or lots; ValueError
    when it is not on the market's grid (the cluster answered something it cannot mean)."""
    n = market.to_ticks(value) if what == "price" else market.to_lots(value)
    if type(n) is not int:
        raise ValueError(f"{market.symbol}: {what} {value} is off the market's grid")
    return n


@dataclass
class PairState:
    """What the bot knows and counted about one pair (see the module docstring)."""

    symbol: str
    market: Market
    pair: Pair
    params: QuoteParams
    account: str
    walk: RandomWalk
    reference: int
    resting: dict[str, Resting] = field(default_factory=dict)
    base_start: int = 0
    quote_start: int = 0
    inventory: int = 0  # lots
    pnl: int = 0  # units of the quote asset
    max_abs_inventory: int = 0  # the largest |inventory| seen (lots)
    quotes: int = 0  # new orders placed
    amends: int = 0
    cancels: int = 0
    fills: int = 0  # lots seen filled
    rejects: Counter[str] = field(default_factory=Counter)
    strays: list[str] = field(default_factory=list)  # open orders the bot did not place

    def own_levels(self) -> dict[tuple[str, int], int]:
        """The bot's open lots per (side, price): what ``others_mid`` leaves out."""
        out: Counter[tuple[str, int]] = Counter()
        for r in self.resting.values():
            out[(r.side, r.price)] += r.qty
        return dict(out)


def reconcile(st: PairState, rows: list[dict[str, Any]]) -> None:
    """Bring ``st.resting`` in line with the account's open orders ``rows`` (the SDK's
    ``open_orders``): a quote that shrank or vanished was filled (counted); an open order of
    the account the bot does not know (left by an earlier run, or a new order whose reply
    was lost) goes to ``st.strays`` to be cancelled. A quote with amends in flight keeps what
    the bot asked for until the account shard has the engine's answer."""
    seen: set[str] = set()
    st.strays = []
    for row in rows:
        if row.get("truncated") or row.get("symbol") != st.symbol:
            continue
        oid = row["id"]
        r = st.resting.get(oid)
        if r is None:
            st.strays.append(oid)
            continue
        seen.add(oid)
        if row.get("pending_amends"):
            continue
        qty = units(st.market, row["open"], "qty")
        price = r.price if row.get("price") is None else units(st.market, row["price"], "price")
        st.fills += max(0, r.qty - qty)
        st.resting[oid] = r._replace(price=price, qty=qty)
    for oid in [o for o in st.resting if o not in seen]:
        st.fills += st.resting.pop(oid).qty


def account_balances(st: PairState, table: AssetTable, bal: dict[str, Any]) -> tuple[int, int]:
    """The account's (base, quote) totals in units (available + held) from ``balance``."""
    out = []
    for asset in (st.pair.base, st.pair.quote):
        avail, held = bal.get(asset, (Decimal(0), Decimal(0)))
        out.append((table.to_units(asset, avail) or 0) + (table.to_units(asset, held) or 0))
    return out[0], out[1]


def mark(st: PairState, base: int, quote_: int) -> None:
    """Inventory and profit from the account's balances (units) at the current reference."""
    st.inventory = inventory_lots(base, st.base_start, st.pair.base_per_lot)
    st.max_abs_inventory = max(st.max_abs_inventory, abs(st.inventory))
    st.pnl = pnl_units(base - st.base_start, quote_ - st.quote_start, st.reference,
                       st.pair.base_per_lot, st.pair.quote_per_tick_lot)  # fmt: skip


def actions(st: PairState) -> list[Action]:
    """This round's actions for the pair: strays cancelled, then ``mmcore.quote``."""
    strays: list[Action] = [Cancel(oid, "", -1) for oid in st.strays]
    return strays + quote(st.params, st.reference, st.inventory, st.resting.values())


def command(st: PairState, a: Action, new_id: str) -> dict[str, Any]:
    """The SDK command dict of one action (quotes are post-only: the bot never takes)."""
    m = st.market
    base = {"symbol": st.symbol, "account": st.account}
    if isinstance(a, New):
        price, qty = m.price_str(a.price), m.qty_str(a.qty)
        return {**base, "op": "new", "id": new_id, "side": a.side, "type": "limit",
                "price": price, "qty": qty, "post_only": True}  # fmt: skip
    if isinstance(a, Amend):
        cmd = {**base, "op": "amend", "id": a.id}
        if a.price is not None:
            cmd["price"] = m.price_str(a.price)
        if a.qty is not None:
            cmd["qty"] = m.qty_str(a.qty)
        return cmd
    return {**base, "op": "cancel", "id": a.id}


def settle(st: PairState, a: Action, cmd: dict[str, Any], ok: bool, code: str | None) -> None:
    """Take one action's answer: what succeeded changes the bot's view of its quotes; a
    refusal is counted by its stable code (``not_live``: the quote was filled first, which
    ``reconcile`` will see). A command whose fate stayed open changes nothing: if it ran,
    the next ``reconcile`` finds it (a new order as a stray, cancelled then)."""
    if not ok:
        st.rejects[code or "unknown"] += 1
        return
    if isinstance(a, New):
        st.resting[cmd["id"]] = Resting(cmd["id"], a.side, a.level, a.price, a.qty)
        st.quotes += 1
    elif isinstance(a, Amend):
        r = st.resting.get(a.id)
        if r is not None:
            st.resting[a.id] = r._replace(price=r.price if a.price is None else a.price,
                                          qty=r.qty if a.qty is None else a.qty)  # fmt: skip
        st.amends += 1
    else:
        st.resting.pop(a.id, None)
        st.cancels += 1
