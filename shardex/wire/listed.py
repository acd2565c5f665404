"""A listed pair in the event streams: its JSON form, and what a reader of the events learns
from it (pure). ``(EV_LISTED, seq, symbol, tick, lot, max_price, max_qty)`` comes before any
other event of the pair on its engine shard's stream, so a reader that checks events in order
(the bridge, ``shardex.wire.pub.check_events``) learns the market from it and keeps the pair's
events that follow, instead of dropping them as events of an unknown symbol. An account shard's
``(AE_LISTED, seq, symbol, base, quote, base unit, quote unit, fee)`` does the same for the
assets (balances in a new asset)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.engine.listing import parse_definition, same_grid
from shardex.engine.markets import Market
from shardex.wire.layouts import EV_SEQ, EV_SYMBOL, LISTED_DEFINITION, LISTED_WIDTH

AE_LISTED_WIDTH = 8
_ASSETS = slice(3, 7)  # (AE_LISTED, seq, symbol, base, quote, base unit, quote unit, fee)


def learn_listed(ev: tuple, markets: Mapping[str, Market]) -> bool:
    """True if ``ev`` is a well-formed ``EV_LISTED``; its market is added to ``markets`` when
    that is a mutable table lacking the symbol (a known one must have the same grid)."""
    if len(ev) != LISTED_WIDTH:
        return False
    market = parse_definition(ev[EV_SYMBOL], list(ev[LISTED_DEFINITION:]))
    if not isinstance(market, Market):
        return False
    known = markets.get(market.symbol)
    if known is None and isinstance(markets, MutableMapping):
        markets[market.symbol] = market
        return True
    return known is not None and same_grid(known, market)


def listed_json(ev: tuple) -> dict[str, Any]:
    """``EV_LISTED`` → its JSON form (decimal strings, as listed)."""
    tick, lot, max_price, max_qty = ev[LISTED_DEFINITION:]
    return {"ev": "listed", "symbol": ev[EV_SYMBOL], "tick": tick, "lot": lot,
            "max_price": max_price, "max_qty": max_qty, "seq": ev[EV_SEQ]}  # fmt: skip


def learn_account_listed(ev: tuple, assets: AssetTable) -> bool:
    """True if ``ev`` is a well-formed ``AE_LISTED``; a new asset's unit is added to
    ``assets`` (an existing asset's unit never changes: a different one is refused)."""
    if len(ev) != AE_LISTED_WIDTH:
        return False
    base, quote, base_unit, quote_unit = ev[_ASSETS]
    found: dict[str, Decimal] = {}
    for asset, raw in ((base, base_unit), (quote, quote_unit)):
        if type(asset) is not str or type(raw) is not str or not 0 < len(raw) <= 40:
            return False
        try:
            unit = Decimal(raw)
        except InvalidOperation:
            return False
        if not unit.is_finite() or unit <= 0:
            return False
        known = assets.units.get(asset)
        if known is not None and known != unit:
            return False
        found[asset] = unit
    for asset, unit in found.items():
        assets.units.setdefault(asset, unit)
    return True


def shard_tables(topology: Any) -> list[Any]:
    """Each engine shard's market table (wire form) in a ``Client.topology()`` answer; []
    when it has none (a malformed answer gives nothing)."""
    shards = topology.get("topology") if isinstance(topology, dict) else None
    if not isinstance(shards, list):
        return []
    return [t.get("markets") for t in shards if isinstance(t, dict)]


def learn_tables(markets: Mapping[str, Market], assets: AssetTable, tables: list[Any]) -> None:
    """Add the pairs that the engine shards' market tables (``markets_to_wire`` form, from
    their HELLOs) name and ``markets`` lacks, and their new assets' units (as ``AssetTable``
    gives them over every pair: an existing unit never changes). Unreadable tables, and
    pairs that do not parse, are skipped."""
    if not isinstance(markets, MutableMapping):
        return
    added = False
    for table in tables:
        if not isinstance(table, Mapping):
            continue
        for symbol, spec in table.items():
            if symbol in markets or not isinstance(spec, list | tuple):
                continue
            market = parse_definition(symbol, list(spec))
            if isinstance(market, Market):
                markets[symbol] = market
                added = True
    if added:
        for asset, unit in AssetTable(markets).units.items():
            assets.units.setdefault(asset, unit)
