"""The minimum order size of a pair: the runtime rule ``min_qty`` (journaled ``OP_MARKET_RULE``,
kept in snapshots, in ``EV_MARKET`` and ``OP_MARKETS``' rules) and a markets file's ``min_qty``;
a new order below either is refused ``order_too_small`` (32), an amend that shrinks below it is
not (it only reduces an accepted order, like a partial fill)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shardex.config import load_markets
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    EV_AMENDED,
    EV_MARKET,
    EV_REJECTED,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_AMEND,
    OP_MARKET_RULE,
    OP_NEW,
    REJ_ORDER_TOO_SMALL,
    SELL,
    STOP_LIMIT,
    reject_name,
)
from shardex.engine.markets import MarketError, markets_from_table
from shardex.wire.layouts import MARKET_MIN_QTY
from shardex.wire.market_rules import changes_from_json
from shardex.wire.pub import check_event
from shardex.wire.schema import event_to_json

SYM = "BTC-USD"  # lot 0.0001


def new(oid, qty, price=100, side=BUY, otype=LIMIT, tif=GTC, account="al"):
    return (OP_NEW, SYM, oid, account, side, otype, None if otype == MARKET else price, qty,
            tif, False, 0)  # fmt: skip


def run(engine, *cmds):
    out: list = []
    for cmd in cmds:
        engine.apply(cmd, out)
    engine.check_integrity()
    return out


def codes(out):
    return [e[5] for e in out if e[0] == EV_REJECTED]


def test_the_rule_refuses_smaller_new_orders_only():
    eng = Engine(DEFAULT_MARKETS)
    changes = changes_from_json(DEFAULT_MARKETS[SYM], {"min_qty": "0.01"})
    assert changes == {"min_qty": 100}
    (ev,) = run(eng, (OP_MARKET_RULE, SYM, changes))
    assert ev[0] == EV_MARKET and ev[MARKET_MIN_QTY] == 100
    assert check_event(ev, DEFAULT_MARKETS)
    assert event_to_json(ev, DEFAULT_MARKETS)["min_qty"] == "0.0100"
    refused = run(eng, new("a", 99), new("m", 99, otype=MARKET, tif=IOC),
                  (OP_NEW, SYM, "s", "al", BUY, STOP_LIMIT, 120, 99, GTC, False, 0, None,
                   {"trigger": 110}))  # fmt: skip
    assert codes(refused) == [REJ_ORDER_TOO_SMALL] * 3
    assert reject_name(REJ_ORDER_TOO_SMALL) == "order_too_small"
    assert codes(run(eng, new("b", 100))) == []
    (amended,) = run(eng, (OP_AMEND, SYM, "b", "al", 10, None))  # shrinking is allowed
    assert amended[0] == EV_AMENDED
    restored = Engine.restore(eng.snapshot(), DEFAULT_MARKETS)
    assert codes(run(restored, new("c", 99, side=SELL, price=200))) == [REJ_ORDER_TOO_SMALL]
    (lifted,) = run(restored, (OP_MARKET_RULE, SYM, {"min_qty": 0}))
    assert lifted[MARKET_MIN_QTY] == 0
    assert codes(run(restored, new("c", 1, side=SELL, price=200))) == []


def test_a_min_qty_off_the_lot_grid_is_refused_at_the_edge():
    with pytest.raises(ValueError, match="lot grid"):
        changes_from_json(DEFAULT_MARKETS[SYM], {"min_qty": "0.00001"})


def test_a_markets_file_min_qty(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[markets.AAPL-USD]\ntick = "0.01"\nlot = "1"\nmin_qty = "10"\n')
    markets = load_markets(path)
    assert markets["AAPL-USD"].min_qty_lots == 10 and DEFAULT_MARKETS[SYM].min_qty_lots == 1
    eng = Engine(markets)
    cmd = (OP_NEW, "AAPL-USD", "x", "al", BUY, LIMIT, 100, 9, GTC, False, 0)
    assert codes(run(eng, cmd)) == [REJ_ORDER_TOO_SMALL]
    assert codes(run(eng, (*cmd[:2], "y", *cmd[3:7], 10, *cmd[8:]))) == []
    for bad in ("0.5", "-1", "x"):
        with pytest.raises((MarketError, ArithmeticError)):
            markets_from_table({"A-B": {"tick": "1", "lot": "1", "min_qty": bad}})
    assert markets_from_table({"A-B": {"tick": "1", "lot": "1"}})["A-B"].min_qty == Decimal(0)
