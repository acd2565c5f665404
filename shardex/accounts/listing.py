"""A pair listed at runtime, on an account shard: its assets, units and fee (pure).

``(A_LIST, symbol, [tick, lot, max_price, max_qty], [maker_bps, taker_bps])`` is an admin's
command, journaled on every account shard (the engine shard journals its own ``OP_LIST``,
``shardex.engine.listing``). It adds the pair to the shard's ``AssetTable`` and its rate to
every tier of the fee schedule, so holds, settlements and the audit work for it.

The unit rule: an asset's unit never changes once it exists (every balance, hold, journal
entry and snapshot is a count of it). ``AssetTable`` makes each unit the GCD over the
markets file; a listing keeps every existing unit and needs

* the pair's ``lot`` to be a whole number of its base asset's units, and
* its ``tick × lot`` to be a whole number of its quote asset's units,

or it is refused ``unit_conflict`` (nothing changes, the message names the asset and the
unit). An asset no market had before takes the pair's grain as its unit (``lot`` for the base,
``tick × lot`` for the quote), exactly what ``AssetTable`` would give it.

The same definition again succeeds and changes nothing (a retried listing, or one replayed
after the pair was added to the markets file with the same grid); another definition of a
known symbol is refused ``invalid``. The shard's ``AssetTable`` grows in place (its readers
hold it); nothing in it that existed before changes. Listed pairs are state: ``listed`` in
snapshots, re-applied before balances on restore, so a restart with the original markets file
keeps them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shardex.accounts.assets import MAX_FEE_BPS, AssetTable, Fee, Pair
from shardex.accounts.codes import AE_LISTED
from shardex.accounts.fees import FeeSchedule, Tier
from shardex.accounts.ledger import Ledger
from shardex.engine.codes import REJ_INVALID, REJ_MALFORMED, REJ_UNIT_CONFLICT
from shardex.engine.listing import definition_of, parse_definition, same_grid
from shardex.engine.markets import Market

Refusal = tuple[str, int]


def check_fee(fee: Any) -> Fee | Refusal:
    """``[maker_bps, taker_bps]`` → a ``Fee`` (0 <= maker <= taker <= MAX_FEE_BPS)."""
    if not isinstance(fee, (list, tuple)) or len(fee) != 2 or not all(type(x) is int for x in fee):
        return "listing: fee must be [maker_bps, taker_bps] ints", REJ_MALFORMED
    if not 0 <= fee[0] <= fee[1] <= MAX_FEE_BPS:
        return f"listing: fee needs 0 <= maker <= taker <= {MAX_FEE_BPS} bps", REJ_INVALID
    return Fee(fee[0], fee[1])


def new_units(table: AssetTable, market: Market) -> dict[str, Decimal] | Refusal:
    """The asset units once ``market`` is listed: the table's own, plus a unit for each new
    asset; ``unit_conflict`` when an existing asset's unit does not divide the pair's grain."""
    base, quote = market.symbol.split("-")
    units = dict(table.units)
    for asset, grain, what in ((base, market.lot, "lot"), (quote, market.tick * market.lot,
                                                           "tick × lot")):  # fmt: skip
        unit = units.get(asset)
        if unit is None:
            units[asset] = grain.normalize()
        elif grain % unit:
            return (
                f"listing {market.symbol}: its {what} {grain.normalize():f} is not a whole "
                f"number of {asset}'s unit {unit.normalize():f} (an asset's unit never "
                f"changes: choose a {what} that is a multiple of it)",
                REJ_UNIT_CONFLICT,
            )
    return units


def extend(
    table: AssetTable, schedule: FeeSchedule, market: Market, fee: Fee
) -> tuple[Pair, dict[str, Decimal], FeeSchedule] | Refusal:
    """What listing ``market`` adds: its ``Pair``, the new units and the new schedule (nothing
    is changed here), or a refusal (the unit rule, a fee the schedule's rebate rule refuses)."""
    units = new_units(table, market)
    if type(units) is tuple:
        return units
    assert isinstance(units, dict)
    symbol = market.symbol
    base, quote = symbol.split("-")
    pair = Pair(symbol, base, quote, int(market.lot / units[base]),
                int(market.tick * market.lot / units[quote]), market.max_price_ticks,
                market.max_qty_lots, fee, market.perp is not None)  # fmt: skip
    tiers = [Tier(t.name, {**t.rates, symbol: fee}, t.asset, t.min_volume)
             for t in schedule.tiers]  # fmt: skip
    try:
        grown = FeeSchedule.build(tiers, sorted([*table.pairs, symbol]))
    except ValueError as exc:
        return f"listing {symbol}: {exc}", REJ_INVALID
    return pair, units, grown


class Listings(Ledger):
    """The ``list`` command of ``AccountCore`` and the restore of listed pairs."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # pairs listed at runtime, in listing order: symbol → [definition, [maker, taker]]
        # (state: the journaled ``A_LIST``, in snapshots)
        self.listed: dict[str, list[Any]] = {}

    def _list(self, cmd: Any, out: list[tuple]) -> None:
        refused = self.list_pair(cmd, out)
        if refused is not None:
            self._reject("", "", refused[0], refused[1], out)

    def list_pair(self, cmd: Any, out: list[tuple] | None) -> Refusal | None:
        """Apply ``(A_LIST, symbol, definition, fee)``: ``AE_LISTED`` appended to ``out`` (when
        given), or (reason, code) with nothing changed."""
        if type(cmd) not in (tuple, list) or len(cmd) != 4:
            return "listing: expected (op, symbol, definition, [maker, taker])", REJ_MALFORMED
        market = parse_definition(cmd[1], cmd[2])
        if type(market) is tuple:
            return market
        fee = check_fee(cmd[3])
        if not isinstance(fee, Fee):
            return fee
        assert isinstance(market, Market)
        symbol = market.symbol
        pair = self.table.pairs.get(symbol)
        if pair is None:
            grown = extend(self.table, self.schedule, market, fee)
            if isinstance(grown[0], str):
                return grown  # type: ignore[return-value]
            # in place: the node's handler holds this table; the old units are all kept
            self.table.pairs[symbol], units, self.schedule = grown  # type: ignore[misc]
            self.table.units.update(units)
            self.listed[symbol] = [definition_of(market), [fee.maker_bps, fee.taker_bps]]
        elif not _same_pair(self.table, pair, market):
            return f"listing: {symbol} is already listed with another grid", REJ_INVALID
        if out is not None:
            p = self.table.pairs[symbol]
            self.seq += 1
            out.append((AE_LISTED, self.seq, symbol, p.base, p.quote,
                        f"{self.table.units[p.base]:f}", f"{self.table.units[p.quote]:f}",
                        [p.fee.maker_bps, p.fee.taker_bps]))  # fmt: skip
        return None

    def restore_listed(self, rows: Any) -> None:
        """Re-list a snapshot's ``listed`` rows (``[symbol, definition, fee]``, in listing
        order) before its balances; ValueError for a row that does not fit."""
        for row in rows or ():
            symbol, definition, fee = row
            refused = self.list_pair((0, symbol, definition, fee), None)
            if refused is not None:
                raise ValueError(f"listed pair {str(symbol)[:40]}: {refused[0]}")

    def listed_rows(self) -> list[list[Any]]:
        """The listed pairs for a snapshot, in listing order (units depend on it)."""
        return [[s, list(d), list(f)] for s, (d, f) in self.listed.items()]


def _same_pair(table: AssetTable, pair: Pair, market: Market) -> bool:
    """Whether a known pair has ``market``'s grid (a repeated listing changes nothing)."""
    lot = pair.base_per_lot * table.units[pair.base]
    tick = pair.quote_per_tick_lot * table.units[pair.quote] / lot
    known = Market(market.symbol, tick, lot, pair.max_price_ticks * tick,
                   pair.max_qty_lots * lot)  # fmt: skip
    return same_grid(known, market)
