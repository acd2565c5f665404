"""Shared pieces of the perp engine tests (liquidation, ADL, the property tests): one perp
pair with 10 % initial and 5 % maintenance margin, its commands, and the pair's conservation
identities checked against the journaled margin moves (docs/perps.md)."""

from __future__ import annotations

import json

from shardex.engine.codes import (
    BUY,
    EV_LIQUIDATION,
    EV_MARGIN,
    GTC,
    LIMIT,
    OP_INDEX,
    OP_MARGIN,
    OP_NEW,
    OP_TIME,
    SELL,
    STP_NONE,
)
from shardex.engine.engine import Engine
from shardex.engine.markets import DEFAULT_MARKETS, markets_from_table
from shardex.engine.positions import COLLATERAL, FUNDING, SIZE, equity

PERP = "BTCPERP-USD"
SPEC = {"kind": "perp", "tick": "0.1", "lot": "0.001", "initial_margin": "0.1",
        "maintenance_margin": "0.05"}  # fmt: skip
OPEN = 300_000  # ticks: where the long opens
LOTS = 10


def markets(**extra: object) -> dict:
    """The default spot pairs and the perp pair (``extra``: keys of its spec changed)."""
    return {**DEFAULT_MARKETS, **markets_from_table({PERP: {**SPEC, **extra}})}


def markets_toml(**extra: object) -> str:
    """The perp pair as a markets file entry (strings quoted, whole numbers bare)."""
    spec = {**SPEC, **extra}
    lines = [f"{k} = {v if type(v) is int else json.dumps(str(v))}" for k, v in spec.items()]
    return "\n".join([f"[markets.{PERP}]", *lines, ""])


def order(oid: str, account: str, side: int, price: int, qty: int, tif: int = GTC) -> tuple:
    return (OP_NEW, PERP, oid, account, side, LIMIT, price, qty, tif, False, STP_NONE)


def opened(long: str, collateral: int, n: int = 0, lots: int = LOTS) -> list[tuple]:
    """``long`` (``collateral`` units) buys ``lots`` at ``OPEN`` from the well-funded short."""
    return [
        (OP_MARGIN, PERP, long, collateral),
        (OP_INDEX, PERP, OPEN),
        order(f"s{n}", "short", SELL, OPEN, lots),
        order(f"b{n}", long, BUY, OPEN, lots),
    ]


def start() -> list[tuple]:
    return [(OP_TIME, 1_000), (OP_INDEX, PERP, OPEN), (OP_MARGIN, PERP, "short", 10**9),
            (OP_MARGIN, PERP, "mm", 10**9)]  # fmt: skip


def liquidations(events: list) -> list[tuple]:
    return [ev for ev in events if ev[0] == EV_LIQUIDATION]


def check_conservation(eng: Engine, events: list) -> None:
    """At the mark: Σ equity + fund = Σ margin moved in, and Σ collateral + Σ funding + fund
    = the same (the funding remainder is in the fund); the sizes sum to zero."""
    book = eng.books[PERP]
    pos, mark = book.positions, book.oracle.mark
    rows = pos.accounts.values()
    moved_in = sum(ev[4] for ev in events if ev[0] == EV_MARGIN)
    assert sum(equity(r, mark) for r in rows) + pos.fund == moved_in
    assert sum(r[COLLATERAL] + r[FUNDING] for r in rows) + pos.fund == moved_in
    assert sum(r[SIZE] for r in rows) == 0
