"""Listing a pair at runtime, the pure parts: the definition's validation and the engine's
journaled ``OP_LIST`` (snapshots, a listed pair's own state), and the account tier's unit rule
(``shardex.accounts.listing``): new assets allowed, an existing asset's unit never changes."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from shardex.accounts.codes import A_DEPOSIT, A_LIST, AE_LISTED, AE_REJECTED
from shardex.accounts.core import AccountCore
from shardex.accounts.listing import new_units
from shardex.engine import Engine
from shardex.engine.codes import (
    EV_LISTED,
    EV_REJECTED,
    OP_LIST,
    OP_NEW,
    REJ_INVALID,
    REJ_MALFORMED,
    REJ_UNIT_CONFLICT,
    reject_name,
)
from shardex.engine.listing import parse_definition
from shardex.engine.markets import DEFAULT_MARKETS, Market
from shardex.wire.layouts import AREJ_CODE, EV_KIND, REJECTED_CODE

DEF = ["0.01", "0.001", "100000", "100000"]


@pytest.mark.parametrize(
    ("symbol", "spec", "code"),
    [
        ("aapl-usd", DEF, REJ_INVALID),  # lower case: not an asset name
        ("AAPLUSD", DEF, REJ_INVALID),
        ("USD-USD", DEF, REJ_INVALID),
        (7, DEF, REJ_INVALID),
        ("AAPL-USD", DEF[:3], REJ_MALFORMED),
        ("AAPL-USD", [0.01, "0.001", "1", "1"], REJ_MALFORMED),  # a float: never
        ("AAPL-USD", ["x", "0.001", "1", "1"], REJ_INVALID),
        ("AAPL-USD", ["-0.01", "0.001", "1", "1"], REJ_INVALID),
        ("AAPL-USD", ["NaN", "0.001", "1", "1"], REJ_INVALID),
        ("AAPL-USD", ["1e-19", "0.001", "1", "1"], REJ_INVALID),  # finer than 18 places
        ("AAPL-USD", ["0.03", "0.001", "100", "1"], REJ_INVALID),  # max_price off the grid
    ],
)
def test_a_bad_definition_is_refused_with_a_stable_code(symbol, spec, code) -> None:
    refused = parse_definition(symbol, spec)
    assert type(refused) is tuple and refused[1] == code, refused
    eng = Engine(DEFAULT_MARKETS)
    out: list = []
    eng.apply((OP_LIST, symbol, spec), out)
    assert out[0][EV_KIND] == EV_REJECTED and out[0][REJECTED_CODE] == code
    assert set(eng.markets) == set(DEFAULT_MARKETS) and eng.seq == 1


def test_the_engine_lists_a_pair_and_keeps_it_in_its_snapshots() -> None:
    eng = Engine(DEFAULT_MARKETS)
    out: list = []
    eng.apply((OP_LIST, "AAPL-USD", DEF), out)
    assert out == [(EV_LISTED, 1, "AAPL-USD", *DEF)]
    assert "AAPL-USD" not in DEFAULT_MARKETS  # (the engine's table is its own)
    eng.apply((OP_NEW, "AAPL-USD", "o1", "al", 0, 0, 15025, 1500, 0, False, 0), out)
    eng.apply((OP_LIST, "AAPL-USD", ["0.010", "0.0010", "1E5", "100000"]), out)  # same grid
    eng.apply((OP_LIST, "AAPL-USD", ["0.1", "0.001", "100000", "100000"]), out)
    kinds = [(e[EV_KIND], e[REJECTED_CODE] if e[EV_KIND] == EV_REJECTED else None) for e in out]
    assert kinds[1:] == [(0, None), (EV_LISTED, None), (EV_REJECTED, REJ_INVALID)]
    state = eng.snapshot()
    assert state["listed"] == {"AAPL-USD": DEF}
    again = Engine.restore(state, DEFAULT_MARKETS)  # (the original markets file)
    assert again.snapshot() == state and "o1" in again.books["AAPL-USD"].orders
    # a listed pair's own state carries its definition: a shard that never saw the listing
    # (a move's target) adopts it with the pair
    pair = eng.snapshot_pair("AAPL-USD")
    assert pair["market"] == DEF
    target = Engine(DEFAULT_MARKETS)
    target.restore_pair("AAPL-USD", pair)
    assert "o1" in target.books["AAPL-USD"].orders and target.listed == {"AAPL-USD": DEF}
    # the markets file defining the symbol otherwise: the state does not fit it
    other = {**DEFAULT_MARKETS, "AAPL-USD": Market("AAPL-USD", D("1"), D("1"), D("100"), D("1"))}
    with pytest.raises(ValueError, match="differs"):
        Engine.restore(state, other)


def test_new_units_keep_every_existing_unit() -> None:
    core = AccountCore(DEFAULT_MARKETS)
    table = core.table
    units = new_units(table, Market("AAPL-USD", D("0.01"), D("0.001"), D("100"), D("100")))
    assert units == {**table.units, "AAPL": D("0.001")}  # a new base asset: its lot
    # USD's unit is 0.000001: 0.01 × 0.0001 (BTC-USD's tick × lot) fits, 0.001 × 0.0001 not
    assert type(new_units(table, Market("ZZ-USD", D("0.01"), D("0.0001"), D(1), D(1)))) is dict
    refused = new_units(table, Market("ZZ-USD", D("0.001"), D("0.0001"), D(1), D(1)))
    assert type(refused) is tuple and refused[1] == REJ_UNIT_CONFLICT and "USD" in refused[0]
    refused = new_units(table, Market("BTC-ZZ", D("1"), D("0.000000001"), D(1), D(1)))
    assert type(refused) is tuple and "BTC's unit 0.00000001" in refused[0]


def test_an_account_shard_lists_holds_and_restores_a_pair() -> None:
    core = AccountCore(DEFAULT_MARKETS)
    units = dict(core.table.units)
    out: list = []
    core.apply((A_LIST, "FOO-USD", ["0.001", "0.0001", "100", "100"], [2, 5]), out)
    assert out[-1][EV_KIND] == AE_REJECTED and out[-1][AREJ_CODE] == REJ_UNIT_CONFLICT
    assert reject_name(REJ_UNIT_CONFLICT) == "unit_conflict"
    core.apply((A_LIST, "AAPL-USD", DEF, [7, 3]), out)  # maker above taker
    core.apply((A_LIST, "AAPL-USD", DEF, [1]), out)
    assert [e[AREJ_CODE] for e in out[-2:]] == [REJ_INVALID, REJ_MALFORMED]
    assert core.table.units == units and "AAPL-USD" not in core.table.pairs  # nothing changed
    core.apply((A_LIST, "AAPL-USD", DEF, [1, 3]), out)
    assert out[-1] == (AE_LISTED, core.seq, "AAPL-USD", "AAPL", "USD", "0.001", "0.000001",
                       [1, 3])  # fmt: skip
    assert {a: u for a, u in core.table.units.items() if a != "AAPL"} == units
    assert core.schedule.rates(0, "AAPL-USD") == (1, 3)
    core.apply((A_DEPOSIT, "al", "AAPL", 2500, "d1"), out)
    state = core.snapshot()
    again = AccountCore.restore(state, DEFAULT_MARKETS)
    assert again.snapshot() == state and again.table.pairs["AAPL-USD"] == core.table.pairs[
        "AAPL-USD"]  # fmt: skip
