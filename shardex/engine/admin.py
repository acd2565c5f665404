"""A pair's trading state and order limits, set at runtime by a journaled admin command (pure).

``(OP_MARKET_RULE, symbol, changes)`` is journaled and applied by ``Engine.apply`` like any
other command, so a replay (recovery, a standby, the simulator) rebuilds the same rules, and the
rules travel with the pair's state in snapshots and live moves (``Book.snapshot``).

States (what a venue does; Binance's TRADING/HALT/BREAK, Coinbase's cancel_only/delisted):

* ``open``: everything runs.
* ``halted``: the book is frozen for an incident: new orders, amends *and* cancels are refused
  (``market_halted``) until ``resume``; nothing in the book changes meanwhile.
* ``cancel_only``: only cancels run (``cancel_only`` refuses new orders and amends): traders
  can take risk off, nobody can add it.
* ``delisted``: final. Applying it cancels every resting order in priority order (bids best
  first, then asks), then every pending stop / take-profit order in arrival order, each with a
  ``cancelled`` event of reason ``delist`` (so the account tier releases every hold); afterwards
  the pair refuses everything (``delisted``).

Limits (0 lifts one): ``band_bps``: a limit price further than ``band_bps``/10000 of the
reference price from it is refused (``price_band``); ``max_qty`` (lots) and ``max_notional``
(price ticks × lots) bound one order (``order_too_large``); ``min_qty`` (lots) is the smallest
new order (``order_too_small``; an amend only shrinks an order already accepted, so it is not
held to it, like a partial fill). The reference price is
``reference_price``: the pair's last trade price (no trade yet: no band). It is the one hook an
index price feed replaces.

A book carries ``gate``: None while the pair is open with no limits, so the engine's hot path
pays one attribute test per command; otherwise the ``Rules`` consulted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shardex.engine.book import Side
from shardex.engine.codes import (
    EV_CANCELLED,
    EV_MARKET,
    LIMIT,
    REJ_CANCEL_ONLY,
    REJ_DELISTED,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_MARKET_HALTED,
    REJ_ORDER_TOO_LARGE,
    REJ_ORDER_TOO_SMALL,
    REJ_PRICE_BAND,
    REJ_UNKNOWN_SYMBOL,
    STATE_CANCELLED,
    Event,
)
from shardex.engine.stops import drop_pending

OPEN, HALTED, CANCEL_ONLY, DELISTED = 0, 1, 2, 3
STATES = ("open", "halted", "cancel_only", "delisted")
LIMIT_KEYS = ("band_bps", "max_qty", "max_notional", "min_qty")
RULE_KEYS = frozenset(("state", *LIMIT_KEYS))
MAX_BAND_BPS = 1_000_000  # 10000 %: anything above is a typo
_MAX_LIMIT = 1 << 62
DELIST_REASON = "delist"
# (reason, code) of a command refused by a pair's state, by state
_STATE_REFUSALS = {
    HALTED: ("pair {} is halted", REJ_MARKET_HALTED),
    CANCEL_ONLY: ("pair {} is in cancel-only mode: only cancels run", REJ_CANCEL_ONLY),
    DELISTED: ("pair {} is delisted", REJ_DELISTED),
}
# ``eng`` is an ``EngineState`` (``state.py`` imports this module: typed loosely, no cycle)
EngineState = Any
Refusal = tuple[str, int]


class Rules:
    """One pair's state and limits (see the module docstring); plain ints."""

    __slots__ = ("state", "band_bps", "max_qty", "max_notional", "min_qty")

    def __init__(self, state: int = OPEN, band_bps: int = 0, max_qty: int = 0,
                 max_notional: int = 0, min_qty: int = 0) -> None:  # fmt: skip
        self.state = state
        self.band_bps = band_bps
        self.max_qty = max_qty
        self.max_notional = max_notional
        self.min_qty = min_qty

    def plain(self) -> bool:
        """Open with no limit: the book needs no gate."""
        return not (self.state or self.band_bps or self.max_qty or self.max_notional
                    or self.min_qty)  # fmt: skip

    def refuses_new(self, book: Any, otype: int, price: Any, qty: int) -> Refusal | None:
        """``new_refusal`` as a method: for the modules this one imports (``stops``), which
        reach the rules through ``book.gate`` without importing this module."""
        return new_refusal(book, self, otype, price, qty)

    def refuses_cancel(self, book: Any) -> Refusal | None:
        """``cancel_refusal`` as a method (see ``refuses_new``)."""
        return cancel_refusal(book, self)

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": STATES[self.state],
            "band_bps": self.band_bps,
            "max_qty": self.max_qty,
            "max_notional": self.max_notional,
            "min_qty": self.min_qty,
        }


def rules_of(book: Any) -> Rules:
    """The rules a book runs by (a fresh open ``Rules`` for a book without a gate)."""
    gate = book.gate if book is not None else None
    return gate if gate is not None else Rules()


def reference_price(book: Any) -> int:
    """The price a band is measured from, in ticks (0: none, no band applies). The pair's last
    trade price today; an index price feed replaces this function's answer."""
    return book.last


def new_refusal(book: Any, gate: Rules, otype: int, price: Any, qty: int) -> Refusal | None:
    """Why a new order is refused by its pair's rules (reason, code), or None."""
    symbol = book.symbol
    if gate.state:
        reason, code = _STATE_REFUSALS[gate.state]
        return reason.format(symbol), code
    if qty < gate.min_qty:  # (a new order only: see the module docstring)
        m = book.market
        return f"qty {m.qty_str(qty)} below the pair's min order size {m.qty_str(gate.min_qty)}", \
            REJ_ORDER_TOO_SMALL  # fmt: skip
    return _limits(book, gate, price if otype == LIMIT else None, qty)


def amend_refusal(book: Any, gate: Rules, qty: int, old: int, price: Any) -> Refusal | None:
    """Why an amend of an order at price ``old`` to ``qty`` open (and ``price``, None: kept) is
    refused by its pair's rules, or None. An amend may only shrink the qty, so the limits apply
    only to a new price: an order that rests outside a band set after it may still shrink."""
    if gate.state:
        reason, code = _STATE_REFUSALS[gate.state]
        return reason.format(book.symbol), code
    if price is None or price == old:
        return None
    return _limits(book, gate, price, qty)


def cancel_refusal(book: Any, gate: Rules) -> Refusal | None:
    """Why a cancel is refused by its pair's rules: only a halt refuses cancels (a delisted
    pair has no live order to cancel)."""
    if gate.state == HALTED or gate.state == DELISTED:
        reason, code = _STATE_REFUSALS[gate.state]
        return reason.format(book.symbol), code
    return None


def _limits(book: Any, gate: Rules, price: Any, qty: int) -> Refusal | None:
    """The size and band checks: ``price`` None for a market order (its notional is measured
    at the reference price; no band applies to it)."""
    if gate.max_qty and qty > gate.max_qty:
        shown = book.market.qty_str(qty)
        return f"qty {shown} above the pair's max order size", REJ_ORDER_TOO_LARGE
    ref = reference_price(book)
    at = price if price is not None else ref
    if gate.max_notional and at and at * qty > gate.max_notional:
        return "notional above the pair's max order notional", REJ_ORDER_TOO_LARGE
    if gate.band_bps and ref and price is not None:
        if abs(price - ref) * 10_000 > gate.band_bps * ref:
            m = book.market
            return (
                f"price {m.price_str(price)} outside the band of {gate.band_bps} bps around "
                f"{m.price_str(ref)}",
                REJ_PRICE_BAND,
            )
    return None


def parse_changes(changes: Any, rules: Rules) -> Rules | Refusal:
    """``changes`` (a map of ``RULE_KEYS``) applied to a copy of ``rules``, or a refusal."""
    if not isinstance(changes, Mapping) or not changes:
        return "market rule: expected a map of changes", REJ_MALFORMED
    unknown = [k for k in changes if k not in RULE_KEYS]
    if unknown:
        return f"market rule: unknown keys {sorted(map(str, unknown))[:4]}", REJ_INVALID
    new = Rules(rules.state, rules.band_bps, rules.max_qty, rules.max_notional, rules.min_qty)
    if "state" in changes:
        state = changes["state"]
        if state not in STATES:
            return f"market rule: unknown state {str(state)[:32]}", REJ_INVALID
        new.state = STATES.index(state)
    for key in LIMIT_KEYS:
        if key in changes:
            value = changes[key]
            if type(value) is not int:
                return f"market rule: {key} must be an int", REJ_MALFORMED
            top = MAX_BAND_BPS if key == "band_bps" else _MAX_LIMIT
            if not 0 <= value <= top:
                return f"market rule: {key} must be 0..{top}", REJ_INVALID
            setattr(new, key, value)
    return new


def set_rules(eng: EngineState, cmd: Any, out: list[Event]) -> Refusal | None:
    """Apply ``(OP_MARKET_RULE, symbol, changes)``: append ``EV_MARKET`` (then a delisting's
    cancels), or return (reason, code) for the caller to reject with (nothing changed)."""
    if len(cmd) != 3:
        return "market rule: expected (op, symbol, changes)", REJ_MALFORMED
    symbol = cmd[1]
    if type(symbol) is not str or symbol not in eng.markets:
        return f"market rule: unknown symbol {str(symbol)[:64]}", REJ_UNKNOWN_SYMBOL
    book = eng.book(symbol)
    if book is None:  # (handed off: its rules travelled with it)
        return eng.no_book(symbol)
    old = rules_of(book)
    if old.state == DELISTED:
        return f"pair {symbol} is delisted: its rules are final", REJ_DELISTED
    new = parse_changes(cmd[2], old)
    if type(new) is tuple:
        return new
    assert isinstance(new, Rules)
    book.gate = None if new.plain() else new
    eng.seq = seq = eng.seq + 1
    out.append((EV_MARKET, seq, symbol, STATES[new.state], new.band_bps, new.max_qty,
                new.max_notional, new.min_qty))  # fmt: skip
    if new.state == DELISTED:
        _cancel_all(eng, book, out)
    return None


def _cancel_all(eng: EngineState, book: Any, out: list[Event]) -> None:
    """Cancel every live order of ``book`` in priority order (bids best first, then asks),
    each with its ``cancelled`` event and its recent result, and leave the book empty."""
    symbol = book.symbol
    for side in book.sides:
        for key in sorted(side.levels):
            for o in side.levels[key].orders:
                if not o.qty:
                    continue
                qty, o.qty = o.qty, 0
                eng.seq = seq = eng.seq + 1
                out.append((EV_CANCELLED, seq, symbol, o.id, DELIST_REASON, qty))
                book.cancelled += 1
                eng._finish(
                    book, o.id, (o.account, STATE_CANCELLED, o.filled, DELIST_REASON, o.seq, seq)
                )
    book.sides = (Side(), Side())
    book.orders = {}
    drop_pending(eng, book, None, DELIST_REASON, out)


def rules_snapshot(book: Any) -> list[int] | None:
    """A book's rules for its pair state (None: open, no limits: the key is left out)."""
    gate = book.gate
    if gate is None:
        return None
    return [gate.state, gate.band_bps, gate.max_qty, gate.max_notional, gate.min_qty]


def restore_rules(book: Any, state: Any) -> None:
    """Install ``rules_snapshot``'s list on a restored book (4 long: a state from before
    ``min_qty``); ValueError when it does not fit."""
    if state is None:
        return
    if (
        not isinstance(state, (list, tuple))
        or len(state) not in (4, 5)
        or any(type(v) is not int or v < 0 for v in state)
        or state[0] >= len(STATES)
    ):
        raise ValueError(f"book {book.symbol}: bad rules {state!r:.100}")
    rules = Rules(*state)
    book.gate = None if rules.plain() else rules
