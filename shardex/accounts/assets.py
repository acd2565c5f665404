"""Assets, their integer units, and fees — all derived from the market table, never from floats.

A market ``BASE-QUOTE`` trades ``BASE`` against ``QUOTE``. Every amount an account shard holds is
an integer number of its asset's *unit*, chosen so that every hold and every settlement of every
market is exact integer arithmetic:

* a quantity of ``q`` lots of a market is ``q * base_per_lot`` units of the base asset;
* a notional of ``p`` ticks × ``q`` lots is ``p * q * quote_per_tick_lot`` units of the quote.

So an asset's unit is the greatest common divisor of ``lot`` (of every market where it is the
base) and ``tick * lot`` (of every market where it is the quote). With the default table USD's
unit is 0.000001 (BTC-USD: 0.01 × 0.0001) and BTC's is 0.00000001 (ETH-BTC: 0.00001 × 0.001).

Fees are basis points of the notional, charged in the quote asset, rounded *up* to a whole unit
(the venue never under-collects) and computed cumulatively per order so that a hold of the
order's maximum fee always covers the sum of its fills' fees (see ``shardex.accounts.core``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, DecimalException, Inexact, Overflow, Underflow
from math import gcd
from typing import NamedTuple

from shardex.amounts import at_precision
from shardex.engine.markets import Market

MAX_FEE_BPS = 1000  # 10 %: above that a fee schedule is a typo, not a policy
DEFAULT_MAKER_BPS = 2
DEFAULT_TAKER_BPS = 5
# Per account shard, the total of one asset it may hold (deposits - withdrawals + inflow) is
# capped so that every balance, and the sum over up to 32 account shards, fits a signed 64-bit
# msgpack int (journals, snapshots, wire): 32 * 2**58 == 2**63.
MAX_UNITS = 2**58
# Exact arithmetic for amounts from the edge: a result that would need rounding (more digits
# than ``prec``, or a quotient that does not terminate) raises instead of being rounded, and so
# does an exponent out of range. The default context would round silently at 28 digits
# ("1.00000000000000000000000000000001" USD became exactly 1 USD) and raise ``Overflow`` out of
# the account shard's loop for "1e999999".
_EXACT = Context(prec=200, traps=[Inexact, Overflow, Underflow])


class Fee(NamedTuple):
    """A maker/taker rate in basis points of the notional.

    ``maker <= taker`` is required because a buy order holds its fee at the taker rate: a fill
    as maker must never cost more than what was held for it. Here (one rate per market, the
    ``fees`` of ``AssetTable``: the default tier) ``0 <= maker``; a tier of a fee schedule may
    give a negative maker rate, a rebate (``shardex.accounts.fees``).
    """

    maker_bps: int
    taker_bps: int


DEFAULT_FEE = Fee(DEFAULT_MAKER_BPS, DEFAULT_TAKER_BPS)


@dataclass(frozen=True)
class Pair:
    """How one market's ticks and lots map to integer units of its two assets."""

    symbol: str
    base: str
    quote: str
    base_per_lot: int  # units of base per lot
    quote_per_tick_lot: int  # units of quote per (1 tick × 1 lot) of notional
    max_price_ticks: int
    max_qty_lots: int
    fee: Fee
    # a perp pair (``market.perp``): its orders hold nothing here and its fills move no
    # balances (the engine's margin check is the gate; collateral moves by ``accounts.margin``)
    perp: bool = False


class AssetTable:
    """Assets (name → unit) and pairs (symbol → Pair) of a market table; immutable after init.

    Raises ValueError for a table it cannot use: a symbol that is not ``BASE-QUOTE``, a fee
    schedule out of bounds, or a fee for an unknown market.
    """

    def __init__(
        self, markets: Mapping[str, Market], fees: Mapping[str, Fee] | None = None
    ) -> None:
        fees = dict(fees or {})
        unknown = set(fees) - set(markets)
        if unknown:
            raise ValueError(f"fees for unknown markets {sorted(unknown)}")
        grains: dict[str, list[Decimal]] = {}
        split: dict[str, tuple[str, str]] = {}
        for symbol, market in markets.items():
            parts = symbol.split("-")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise ValueError(f"market {symbol}: symbol must be BASE-QUOTE")
            base, quote = parts
            split[symbol] = (base, quote)
            grains.setdefault(base, []).append(market.lot)
            grains.setdefault(quote, []).append(market.tick * market.lot)
        self.units: dict[str, Decimal] = {a: _decimal_gcd(g) for a, g in grains.items()}
        self.pairs: dict[str, Pair] = {}
        for symbol, market in markets.items():
            base, quote = split[symbol]
            fee = fees.get(symbol, DEFAULT_FEE)
            if (
                not isinstance(fee, tuple)
                or len(fee) != 2
                or not all(type(x) is int for x in fee)
                or not 0 <= fee[0] <= fee[1] <= MAX_FEE_BPS
            ):
                raise ValueError(
                    f"market {symbol}: fee must be (maker_bps, taker_bps) ints with "
                    f"0 <= maker <= taker <= {MAX_FEE_BPS}, got {fee!r}"
                )
            bpl = market.lot / self.units[base]
            qptl = market.tick * market.lot / self.units[quote]
            if bpl != bpl.to_integral_value() or qptl != qptl.to_integral_value():
                raise ValueError(f"market {symbol}: units do not divide its grid")  # unreachable
            self.pairs[symbol] = Pair(
                symbol,
                base,
                quote,
                int(bpl),
                int(qptl),
                market.max_price_ticks,
                market.max_qty_lots,
                Fee(*fee),
                market.perp is not None,
            )

    def perp_base(self, asset: str) -> bool:
        """Whether ``asset`` is only a perp pair's base (``BTCPERP``): it names the pair's lots,
        a position is the engine's, and there is nothing of it to hold, deposit or withdraw
        (unless a spot pair trades it). From the pairs each time: a pair listed at runtime
        counts at once (a deposit's check, off the order path)."""
        pairs = self.pairs.values()
        return any(p.perp and p.base == asset for p in pairs) and not any(
            not p.perp and asset in (p.base, p.quote) for p in pairs)  # fmt: skip

    def fmt(self, asset: str, units: int) -> str:
        """Units → a decimal string for humans: exact, trailing zeros cut, at least 2 decimals
        (``10000000`` USD units → ``"10.00"``; ``30007500`` → ``"30.0075"``)."""
        value = (units * self.units[asset]).normalize()
        if value == value.to_integral_value() or -value.as_tuple().exponent < 2:
            value = value.quantize(Decimal("0.01"))
        return f"{value:f}"

    def fixed(self, asset: str, units: int) -> str:
        """Units → a decimal string at the asset's precision (as many decimals as its unit),
        so every balance of one asset prints alike (``10.000000``, ``30.007500`` USD)."""
        unit = self.units[asset]
        return at_precision(units * unit, unit)

    def to_units(self, asset: str, amount: Decimal) -> int | None:
        """A decimal amount → units, or None when it is not exactly a whole number of units
        (the edge rejects it as off grid), the asset is unknown or the amount is beyond 10^60.
        Exact: never rounds, never raises."""
        unit = self.units.get(asset)
        if unit is None or not isinstance(amount, Decimal) or not amount.is_finite():
            return None
        if amount.adjusted() > 60:
            return None  # far beyond any balance (MAX_UNITS); never build a huge int for it
        try:
            n = _EXACT.divide(amount, unit)
        except DecimalException:
            return None  # not a whole number of units (or a tiny exponent): off grid
        return int(n) if n == n.to_integral_value() else None


def _decimal_gcd(values: list[Decimal]) -> Decimal:
    """Greatest common divisor of positive decimals (exact: scaled to integers first)."""
    places = max(max(0, -v.normalize().as_tuple().exponent) for v in values)
    scale = 10**places
    g = 0
    for v in values:
        g = gcd(g, int(v * scale))
    return Decimal(g) / scale
