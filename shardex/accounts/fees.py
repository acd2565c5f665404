"""Fee schedules: maker/taker rates per fee tier × market, an account's tier, 30-day volume (pure).

A ``FeeSchedule`` is configuration, like the market table: tiers in rank order (the first is
the default tier, each later one better), each with a ``Fee`` per market. An account's tier is
the best of

* its **group**: a tier name an admin assigned to the account with a journaled command on its
  account shard (``A_FEE_GROUP``), so replay and standbys agree; and
* its **30-day volume**: a tier with a volume rule (``asset``, ``min`` units) is earned when
  the quote notional the account traded (maker and taker fills) in that asset over the UTC day
  of the exchange time supplied with the command and the 29 days before it reaches ``min``.

Rates are basis points of the notional, charged in the quote asset. ``0 <= taker <= 1000``,
``maker <= taker`` (a buy holds its fee at the taker rate), and a negative maker rate is a
**rebate**, bounded by the rule

    -maker <= the lowest taker rate of that market over every tier,

so the nominal rebate of a fill never exceeds the nominal taker fee of the same fill whoever
the taker is. Rounding is the venue's way: fees are rounded *up* (cumulatively per order, see
``shardex.accounts.ledger.required``), rebates *down* per fill (``rebate``). As a positive fee
charged cumulatively on a fill is at least ``floor(notional × taker / 10000)``, the rebate paid
on every fill is at most the taker fee collected on it, exactly in units: the venue never pays
out more than it takes.

An order's rates are fixed when its account shard takes it (its tier then); a tier earned or
assigned later applies to the orders placed after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shardex.accounts.assets import DEFAULT_FEE, MAX_FEE_BPS, MAX_UNITS, AssetTable, Fee

BPS = 10_000
DAY_MS = 86_400_000
WINDOW_DAYS = 30
MAX_TIERS = 64
MAX_TIER_NAME = 32


def rebate(notional: int, maker_bps: int) -> int:
    """Units paid back to a maker at a negative rate: ``floor(notional × -bps / 10000)`` (rounded
    down, per fill). 0 for a non-negative rate."""
    return notional * -maker_bps // BPS if maker_bps < 0 else 0


@dataclass(frozen=True)
class Tier:
    """One fee tier: a rate per market, and the 30-day volume that earns it (none: ``asset``
    None, earned only by group)."""

    name: str
    rates: Mapping[str, Fee]
    asset: str | None = None
    min_volume: int = 0  # units of ``asset``


@dataclass(frozen=True)
class FeeSchedule:
    """Tiers in rank order (``tiers[0]`` the default). Build with ``FeeSchedule.build`` or
    ``from_table``: both check every rate and the rebate rule (ValueError)."""

    tiers: tuple[Tier, ...]
    rank: Mapping[str, int] = field(default_factory=dict)  # tier name → index
    volume_assets: frozenset[str] = frozenset()  # assets some tier's volume rule counts

    @classmethod
    def build(cls, tiers: list[Tier], symbols: list[str]) -> FeeSchedule:
        """A checked schedule; every tier must name a rate for every symbol."""
        if not 0 < len(tiers) <= MAX_TIERS:
            raise ValueError(f"fee schedule: 1..{MAX_TIERS} tiers, got {len(tiers)}")
        rank: dict[str, int] = {}
        for i, t in enumerate(tiers):
            if not (type(t.name) is str and 0 < len(t.name) <= MAX_TIER_NAME) or t.name in rank:
                raise ValueError(f"fee tier {t.name!r}: names are unique, 1..{MAX_TIER_NAME} chars")
            rank[t.name] = i
            if t.asset is None and t.min_volume:
                raise ValueError(f"fee tier {t.name}: a volume needs an asset")
            if not 0 <= t.min_volume <= MAX_UNITS:
                raise ValueError(f"fee tier {t.name}: volume out of range")
        for s in symbols:
            low = min(_rate(t, s).taker_bps for t in tiers)
            for t in tiers:
                m, k = _rate(t, s)
                if not (type(m) is int and type(k) is int and -low <= m <= k <= MAX_FEE_BPS):
                    raise ValueError(
                        f"fee tier {t.name}, market {s}: need -{low} <= maker <= taker <= "
                        f"{MAX_FEE_BPS} (a rebate is at most the lowest taker rate of the "
                        f"market, {low}), got maker {m!r} taker {k!r}"
                    )
        assets = frozenset(t.asset for t in tiers if t.asset is not None)
        return cls(tuple(tiers), rank, assets)

    @classmethod
    def single(cls, fees: Mapping[str, Fee], symbols: list[str]) -> FeeSchedule:
        """One tier, ``default``: the per-market fees of ``AssetTable`` (what a cluster without
        a ``[fees]`` table charges)."""
        rates = {s: Fee(*fees.get(s, DEFAULT_FEE)) for s in symbols}
        return cls.build([Tier("default", rates)], symbols)

    @classmethod
    def from_table(cls, table: Any, assets: AssetTable) -> FeeSchedule:
        """The ``[fees]`` table of a markets file → a schedule (ValueError naming the entry)::

            [fees.tiers.base]          # tiers in rank order: the first is the default
            maker = 2                  # bps for every market of this tier...
            taker = 5
            markets = { "ETH-BTC" = { maker = 3, taker = 3 } }   # ...or per market
            [fees.tiers.vip]
            maker = -1                 # a rebate
            taker = 4
            volume = { asset = "USD", min = "1000000" }   # 30-day volume that earns it
        """
        symbols = sorted(assets.pairs)
        raw = table.get("tiers") if isinstance(table, Mapping) else None
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError("fees: expected one or more [fees.tiers.NAME] tables")
        return cls.build([_tier(name, spec, assets, symbols) for name, spec in raw.items()],
                         symbols)  # fmt: skip

    def rates(self, tier: int, symbol: str) -> Fee:
        return self.tiers[tier].rates[symbol]

    def tier_of(self, group: str | None, volume: Mapping[str, int] | None) -> int:
        """The best tier of an account in ``group`` (None: none, or a name this schedule lacks)
        with ``volume`` (asset → 30-day units; None: volumes unknown, not counted)."""
        best = self.rank.get(group, 0) if group is not None else 0
        if volume:
            for i in range(len(self.tiers) - 1, best, -1):
                t = self.tiers[i]
                if t.asset is not None and volume.get(t.asset, 0) >= t.min_volume:
                    return i
        return best


def _rate(t: Tier, symbol: str) -> Fee:
    fee = t.rates.get(symbol)
    if fee is None:
        raise ValueError(f"fee tier {t.name}: no rate for market {symbol}")
    return fee


def _bps(value: Any, where: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{where}: expected an integer number of basis points, got {value!r}")
    return value


def _tier(name: Any, spec: Any, assets: AssetTable, symbols: list[str]) -> Tier:
    where = f"fees.tiers.{name}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a table")
    unknown = set(spec) - {"maker", "taker", "markets", "volume"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    base = DEFAULT_FEE
    if "maker" in spec or "taker" in spec:
        base = Fee(_bps(spec.get("maker"), f"{where}.maker"),
                   _bps(spec.get("taker"), f"{where}.taker"))  # fmt: skip
    rates = dict.fromkeys(symbols, base)
    for symbol, fee in (spec.get("markets") or {}).items():
        if symbol not in rates or not isinstance(fee, Mapping):
            raise ValueError(f"{where}.markets.{symbol}: not a market of the table")
        rates[symbol] = Fee(_bps(fee.get("maker"), f"{where}.markets.{symbol}.maker"),
                            _bps(fee.get("taker"), f"{where}.markets.{symbol}.taker"))  # fmt: skip
    asset, least = None, 0
    vol = spec.get("volume")
    if vol is not None:
        if not isinstance(vol, Mapping) or set(vol) != {"asset", "min"}:
            raise ValueError(f"{where}.volume: expected {{asset, min}}")
        asset = vol["asset"]
        if asset not in assets.units:
            raise ValueError(f"{where}.volume: unknown asset {asset!r}")
        units = assets.to_units(asset, Decimal(str(vol["min"])))
        if units is None or units <= 0:
            raise ValueError(f"{where}.volume.min: not a positive amount of {asset}")
        least = units
    return Tier(str(name), rates, asset, least)


class Volumes:
    """Each account's traded quote notional per UTC day and asset, kept for 30 days (pure: the
    day comes from the exchange time the node loop supplies with each command, never a clock).

    Only the assets some tier's volume rule counts are kept."""

    def __init__(self, assets: frozenset[str]) -> None:
        self.assets = assets
        self.days: dict[str, dict[str, list[list[int]]]] = {}  # account → asset → [[day, units]]

    def add(self, account: str, asset: str, day: int, units: int) -> None:
        if asset not in self.assets:
            return
        rows = self.days.setdefault(account, {}).setdefault(asset, [])
        if rows and rows[-1][0] == day:
            rows[-1][1] += units
        elif not rows or rows[-1][0] < day:
            rows.append([day, units])
            _trim(rows, day)
        else:  # (time never goes back: kept correct anyway, in the newest day)
            rows[-1][1] += units

    def volume(self, account: str, day: int) -> dict[str, int]:
        """asset → units traded in days ``day - 29 .. day``. A read: it changes nothing (older
        days are dropped only as trades add new ones, so a snapshot is the same whether or not
        anyone read in between, and replay reaches it)."""
        first = day - WINDOW_DAYS + 1
        return {asset: sum(u for d, u in rows if d >= first)
                for asset, rows in self.days.get(account, {}).items()}  # fmt: skip

    def snapshot(self) -> list[list[Any]]:
        return [[a, asset, [list(r) for r in rows]]
                for a, per in sorted(self.days.items())
                for asset, rows in sorted(per.items())]  # fmt: skip

    def restore(self, rows: Any) -> None:
        for account, asset, days in rows:
            self.days.setdefault(account, {})[asset] = [[int(d), int(u)] for d, u in days]


def _trim(rows: list[list[int]], day: int) -> None:
    first = day - WINDOW_DAYS + 1
    while rows and rows[0][0] < first:
        rows.pop(0)
