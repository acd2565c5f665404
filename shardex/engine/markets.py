"""Market definitions: the only place that knows how a symbol's decimals map to integer ticks/lots.

The engine works in integers only (ticks of price, lots of quantity) so that matching is exact and
cheap. Conversion from/to decimal strings happens at the edge (``shardex.wire.protocol``) with the
helpers here, never with floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from shardex.engine.codes import REJ_INVALID, REJ_OFF_GRID, REJ_ORDER_TOO_SMALL, REJ_OUT_OF_RANGE
from shardex.engine.perps import KINDS, PERP_KEYS, Perp, perp_from_spec


class MarketError(ValueError):
    """A markets file or definition that cannot be used; the message says which entry and why."""


class Refusal(NamedTuple):
    """Why a decimal cannot become ticks/lots: the reject reason and its ``REJ_*`` code."""

    reason: str
    code: int


@dataclass(frozen=True)
class Market:
    """One tradable pair. ``tick``/``lot`` are the grids; ``max_price``/``max_qty`` bound inputs;
    ``min_qty`` (a markets file's, 0: one lot) is the smallest new order (``order_too_small``;
    not part of the wire definition: the runtime rule ``min_qty`` is, ``engine.admin``)."""

    symbol: str
    tick: Decimal
    lot: Decimal
    max_price: Decimal
    max_qty: Decimal
    min_qty: Decimal = Decimal(0)
    # Derived integer bounds, computed once so the hot path compares ints only.
    max_price_ticks: int = field(init=False)
    max_qty_lots: int = field(init=False)
    min_qty_lots: int = field(init=False)  # at least 1
    # a perpetual-futures market's risk parameters (``shardex.engine.perps``); None: spot
    perp: Perp | None = None

    def __post_init__(self) -> None:
        for name in ("tick", "lot", "max_price", "max_qty"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise MarketError(f"market {self.symbol}: {name} must be a positive decimal")
        if self.max_price % self.tick or self.max_qty % self.lot:
            raise MarketError(f"market {self.symbol}: max_price/max_qty must lie on tick/lot grid")
        low = self.min_qty
        if not isinstance(low, Decimal) or not low.is_finite() or not 0 <= low <= self.max_qty \
                or low % self.lot:  # fmt: skip
            raise MarketError(f"market {self.symbol}: min_qty must be 0..max_qty on the lot grid")
        object.__setattr__(self, "max_price_ticks", int(self.max_price / self.tick))
        object.__setattr__(self, "max_qty_lots", int(self.max_qty / self.lot))
        object.__setattr__(self, "min_qty_lots", max(1, int(low / self.lot)))

    def price_str(self, ticks: int) -> str:
        """Ticks → decimal string with the market's tick precision (e.g. 3000050 → '30000.50')."""
        return str(ticks * self.tick)

    def qty_str(self, lots: int) -> str:
        """Lots → decimal string with the market's lot precision (e.g. 2500 → '0.2500')."""
        return str(lots * self.lot)

    def qty_refusal(self, lots: int) -> Refusal:
        """Why ``lots`` (outside ``min_qty_lots..max_qty_lots``) is refused as a new order's."""
        if lots <= 0:
            return Refusal("qty must be > 0", REJ_OUT_OF_RANGE)
        if lots > self.max_qty_lots:
            return Refusal(f"qty above max {self.max_qty}", REJ_OUT_OF_RANGE)
        return Refusal(f"qty below the pair's min order size {self.min_qty}", REJ_ORDER_TOO_SMALL)

    def to_ticks(self, value: Decimal) -> int | Refusal:
        """Decimal price → ticks, or a ``Refusal`` when it is out of range or off the grid."""
        return _to_units(value, self.tick, self.max_price, "price", "tick")

    def to_lots(self, value: Decimal) -> int | Refusal:
        """Decimal quantity → lots, or a ``Refusal`` when it is out of range or off the grid."""
        return _to_units(value, self.lot, self.max_qty, "qty", "lot")


def _to_units(
    value: Decimal, unit: Decimal, bound: Decimal, what: str, grid: str
) -> int | Refusal:
    if not value.is_finite():
        return Refusal(f"{what} must be a finite decimal", REJ_INVALID)
    if value <= 0:
        return Refusal(f"{what} must be > 0", REJ_OUT_OF_RANGE)
    if value > bound:
        return Refusal(f"{what} {value} above max {bound}", REJ_OUT_OF_RANGE)
    try:
        if value % unit:
            return Refusal(f"{what} not on {grid} grid {unit}", REJ_OFF_GRID)
        return int(value / unit)
    except InvalidOperation:  # pragma: no cover - bounded above, kept as a guard
        return Refusal(f"{what} {value} cannot be represented", REJ_OUT_OF_RANGE)


def _m(symbol: str, tick: str, lot: str, max_price: str, max_qty: str) -> Market:
    return Market(symbol, Decimal(tick), Decimal(lot), Decimal(max_price), Decimal(max_qty))


DEFAULT_MARKETS: dict[str, Market] = {
    m.symbol: m
    for m in (
        _m("BTC-USD", "0.01", "0.0001", "10000000", "10000"),
        _m("ETH-USD", "0.01", "0.001", "1000000", "100000"),
        _m("SOL-USD", "0.001", "0.01", "100000", "1000000"),
        _m("XRP-USD", "0.0001", "1", "1000", "100000000"),
        _m("DOGE-USD", "0.00001", "1", "1000", "1000000000"),
        _m("ADA-USD", "0.0001", "1", "1000", "100000000"),
        _m("LTC-USD", "0.01", "0.001", "100000", "1000000"),
        _m("ETH-BTC", "0.00001", "0.001", "100", "100000"),
    )
}


MARKET_KEYS = frozenset(("tick", "lot", "max_price", "max_qty", "min_qty", "kind"))


def markets_from_table(table: Any, where: str = "markets") -> dict[str, Market]:
    """``{symbol: {tick, lot[, max_price, max_qty, min_qty, kind, perp keys]}}`` (decimal
    strings or numbers) → Markets.

    Pure (no I/O): the parsed ``[markets]`` table of a TOML file (``shardex.config`` reads the
    file), or the same shape from anywhere else. ``where`` prefixes every error (e.g. "markets
    file m.toml"). ``kind`` is ``spot`` (the default) or ``perp`` (then the ``PERP_KEYS`` of
    ``shardex.engine.perps`` apply, and only then).
    """
    if not isinstance(table, Mapping) or not table:
        raise MarketError(f"{where}: expected one or more [markets.SYMBOL] tables")
    out: dict[str, Market] = {}
    for symbol, spec in table.items():
        if not isinstance(spec, Mapping):
            raise MarketError(f"{where}: markets.{symbol} must be a table")
        kind = spec.get("kind", "spot")
        if kind not in KINDS:
            raise MarketError(f"{where}: markets.{symbol}: kind must be one of {list(KINDS)}")
        unknown = set(spec) - MARKET_KEYS - (PERP_KEYS if kind == "perp" else frozenset())
        if unknown:
            raise MarketError(f"{where}: markets.{symbol}: unknown keys {sorted(unknown)}")
        try:
            values = {k: Decimal(str(spec[k])) for k in ("tick", "lot") if k in spec}
            if set(values) != {"tick", "lot"}:
                raise MarketError(f"{where}: markets.{symbol} needs tick and lot")
            values["max_price"] = Decimal(str(spec.get("max_price", "1000000")))
            values["max_qty"] = Decimal(str(spec.get("max_qty", "1000000000")))
            values["min_qty"] = Decimal(str(spec.get("min_qty", "0")))
        except InvalidOperation as exc:
            raise MarketError(f"{where}: markets.{symbol}: bad decimal") from exc
        try:
            perp = perp_from_spec(str(symbol), spec) if kind == "perp" else None
        except ValueError as exc:
            raise MarketError(f"{where}: markets.{symbol}: {exc}") from None
        out[symbol] = Market(symbol, **values, perp=perp)
    return out
