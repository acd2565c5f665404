"""Listing a new pair on a running engine shard: a journaled admin command (pure).

``(OP_LIST, symbol, [tick, lot, max_price, max_qty])`` (decimal strings, the form of
``markets_to_wire``) is journaled and applied by ``Engine.apply`` like any other command: it
adds the market to the engine's table and appends ``(EV_LISTED, seq, symbol, tick, lot,
max_price, max_qty)``. Listed pairs are part of the engine's state: ``listed`` in snapshots
(restored before the books, so a book of a listed pair finds its market) and ``market`` in a
listed pair's own state (so a live move carries the definition to a shard that never saw the
listing). Recovery, standbys and the simulator replay the command, so a restart with the
original markets file keeps the pair.

Listing is idempotent: the same definition again (a retried command, or the pair added to the
markets file later with the same grid) succeeds and changes nothing; another definition for a
known symbol is refused ``invalid``. Whether the account tier can hold the pair's assets
without changing an existing asset's unit is the account shards' question
(``shardex.accounts.listing``): an admin lists there first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from shardex.engine.codes import EV_LISTED, REJ_INVALID, REJ_MALFORMED, Event
from shardex.engine.markets import Market, MarketError

# BASE-QUOTE, each an upper-case asset name: what the account tier can split into its assets
SYMBOL_RE = re.compile(r"[A-Z0-9]{1,12}-[A-Z0-9]{1,12}")
MAX_PLACES = 18  # a tick or lot finer than 1e-18 is a typo, and keeps every unit an exact int
_MAX_DIGITS = 40
Refusal = tuple[str, int]
EngineState = Any  # (``state.py`` imports this module: typed loosely, no cycle)


def definition_of(market: Market) -> list[str]:
    """A market as its listing definition: ``[tick, lot, max_price, max_qty]`` strings."""
    return [str(market.tick), str(market.lot), str(market.max_price), str(market.max_qty)]


def parse_definition(symbol: Any, spec: Any) -> Market | Refusal:
    """``symbol`` and ``[tick, lot, max_price, max_qty]`` (decimal strings) → a ``Market``, or
    (reason, code). Strings only (never floats), each a positive finite decimal of at most
    ``MAX_PLACES`` places, max_price/max_qty on the tick/lot grid."""
    if type(symbol) is not str or not SYMBOL_RE.fullmatch(symbol):
        return f"listing: symbol must be BASE-QUOTE (A-Z, 0-9), got {str(symbol)[:40]!r}", (
            REJ_INVALID
        )
    base, quote = symbol.split("-")
    if base == quote:
        return f"listing {symbol}: base and quote are the same asset", REJ_INVALID
    if not isinstance(spec, (list, tuple)) or len(spec) != 4:
        return "listing: expected [tick, lot, max_price, max_qty]", REJ_MALFORMED
    values: list[Decimal] = []
    for name, raw in zip(("tick", "lot", "max_price", "max_qty"), spec, strict=True):
        if type(raw) is not str or not 0 < len(raw) <= _MAX_DIGITS:
            return f"listing {symbol}: {name} must be a decimal string", REJ_MALFORMED
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return f"listing {symbol}: {name} {raw[:20]!r} is not a decimal", REJ_INVALID
        if not value.is_finite() or value <= 0:
            return f"listing {symbol}: {name} must be a positive decimal", REJ_INVALID
        exponent = value.normalize().as_tuple().exponent
        if type(exponent) is int and -exponent > MAX_PLACES:
            return f"listing {symbol}: {name} has more than {MAX_PLACES} places", REJ_INVALID
        values.append(value)
    try:
        return Market(symbol, values[0], values[1], values[2], values[3])
    except MarketError as exc:
        return f"listing: {exc}", REJ_INVALID


def same_grid(a: Market, b: Market) -> bool:
    """Two definitions of one symbol that a listing treats as the same (numerically equal)."""
    return (a.tick, a.lot, a.max_price, a.max_qty) == (b.tick, b.lot, b.max_price, b.max_qty)


def list_pair(eng: EngineState, cmd: Any, out: list[Event]) -> Refusal | None:
    """Apply ``(OP_LIST, symbol, definition)``: append ``EV_LISTED`` (the pair is known from
    here on), or return (reason, code) for the caller to reject with (nothing changed)."""
    if len(cmd) != 3:
        return "listing: expected (op, symbol, [tick, lot, max_price, max_qty])", REJ_MALFORMED
    market = parse_definition(cmd[1], cmd[2])
    if type(market) is tuple:
        return market
    assert isinstance(market, Market)
    symbol = market.symbol
    known = eng.markets.get(symbol)
    if known is not None and not same_grid(known, market):
        return (
            f"listing: {symbol} is already listed as {definition_of(known)}",
            REJ_INVALID,
        )
    if known is None:
        install(eng, market)
    eng.seq = seq = eng.seq + 1
    out.append((EV_LISTED, seq, symbol, *definition_of(eng.markets[symbol])))
    return None


def install(eng: EngineState, market: Market) -> None:
    """Add a listed market to the engine's table and its ``listed`` record."""
    eng.markets[market.symbol] = market
    eng.listed[market.symbol] = definition_of(market)


def listed_snapshot(eng: EngineState) -> dict[str, list[str]] | None:
    """The listed pairs' definitions for a snapshot (None: none listed, the key is left out)."""
    return {s: list(d) for s, d in sorted(eng.listed.items())} or None


def restore_listed(eng: EngineState, state: Any) -> None:
    """Install a snapshot's ``listed`` map before its books; ValueError when it does not fit
    (a definition that does not parse, or a symbol the markets file defines otherwise)."""
    if state is None:
        return
    if not isinstance(state, Mapping):
        raise ValueError("snapshot: listed must be a map")
    for symbol, spec in state.items():
        adopt_definition(eng, symbol, spec)


def adopt_definition(eng: EngineState, symbol: Any, spec: Any) -> Market:
    """The market of ``symbol`` once ``spec`` (a listing definition) is installed: the known
    one when it has the same grid; ValueError for a definition that does not fit."""
    market = parse_definition(symbol, spec)
    if type(market) is tuple:
        raise ValueError(f"listed pair {str(symbol)[:40]}: {market[0]}")
    assert isinstance(market, Market)
    known = eng.markets.get(symbol)
    if known is None:
        install(eng, market)
        return market
    if not same_grid(known, market):
        raise ValueError(f"listed pair {symbol} differs from the markets file's definition")
    if symbol not in eng.listed and symbol in eng.markets:
        eng.listed[symbol] = definition_of(known)
    return known


def pair_definition(eng: EngineState, symbol: str) -> list[str] | None:
    """A listed pair's definition for its own state (a move carries it), None otherwise."""
    spec = eng.listed.get(symbol)
    return list(spec) if spec is not None else None
