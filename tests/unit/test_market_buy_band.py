"""A market buy through the account tier on a pair with a price band or a maximum notional:
the account shard sends it on as an ioc/fok limit at the highest price its budget pays for
(so it cannot overspend), marked ``capped``; the engine checks it against the pair's rules as
the market order it is (no band: market orders are not banded; notional at the reference
price), then matches it as that limit. Before, a budget generous enough to cap the price
beyond the band was refused ``price_band`` (and a large one ``order_too_large``), while the
same market order without the account tier filled. Pure cores, the account shard's forward
fed to the engine as the link would."""

from __future__ import annotations

import pytest

from shardex.accounts import AccountCore, Fee
from shardex.accounts.codes import A_DEPOSIT, A_NEW, AE_FORWARD, AE_REJECTED
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    EV_REJECTED,
    EV_TRADE,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_MARKET_RULE,
    OP_NEW,
    SELL,
    STOP_LIMIT,
    STOP_MARKET,
    reject_name,
)
from shardex.wire.layouts import FWD_CMD

BTC = "BTC-USD"  # tick 0.01, lot 0.0001
USD6 = 1_000_000  # units per USD


def _engine(**rules) -> Engine:
    """A book that traded at 100.00 (the band's reference), asks at 100.50 and 130.00."""
    eng = Engine(DEFAULT_MARKETS)
    out: list = []
    for cmd in (
        (OP_NEW, BTC, "m0", "mm", SELL, LIMIT, 100_00, 10, GTC, False, 0),
        (OP_NEW, BTC, "t0", "tk", BUY, LIMIT, 100_00, 10, GTC, False, 0),
        (OP_NEW, BTC, "m1", "mm", SELL, LIMIT, 100_50, 100, GTC, False, 0),
        (OP_NEW, BTC, "m2", "mm", SELL, LIMIT, 130_00, 100, GTC, False, 0),
        (OP_MARKET_RULE, BTC, rules),
    ):
        eng.apply(cmd, out)
    assert not [e for e in out if e[0] == EV_REJECTED], out
    return eng


def _forward(cmd: tuple) -> tuple:
    """The engine command the account shard sends for client command ``cmd``."""
    acc = AccountCore(DEFAULT_MARKETS, fees={BTC: Fee(2, 5)})
    out: list = []
    acc.apply((A_DEPOSIT, "alice", "USD", 10_000 * USD6, "d1"), out)
    acc.apply(cmd, out)
    assert out[-1][0] == AE_FORWARD, out
    return out[-1][FWD_CMD]


def _run(eng: Engine, cmd: tuple) -> list:
    out: list = []
    eng.apply(cmd, out)
    eng.check_integrity()
    return out


@pytest.mark.parametrize("tif", [IOC, FOK])
@pytest.mark.parametrize(("rules", "budget"), [
    ({"band_bps": 100}, 5_000),  # a cap far beyond 1 % of 100.00
    ({"max_notional": 100_00 * 50}, 5_000),  # 50 USD at 100.00; the cap's notional is above
])  # fmt: skip
def test_a_market_buy_with_a_generous_budget_fills_at_the_ask(rules, budget, tif) -> None:
    fwd = _forward((A_NEW, BTC, "b1", "alice", BUY, MARKET, None, 20, tif, False, 0,
                    budget * USD6))  # fmt: skip
    assert fwd[5] == LIMIT and fwd[6] > 101_00  # (the cap: the most the budget pays)
    out = _run(_engine(**rules), fwd)
    assert [e[0] for e in out if e[0] == EV_REJECTED] == [], out
    trades = [e for e in out if e[0] == EV_TRADE]
    assert [(t[3], t[4]) for t in trades] == [(100_50, 20)]  # the best ask, within the band


def test_the_pair_rules_still_apply_to_it_as_to_a_market_order() -> None:
    eng = _engine(band_bps=100, max_qty=10)
    fwd = _forward((A_NEW, BTC, "b2", "alice", BUY, MARKET, None, 20, IOC, False, 0,
                    5_000 * USD6))  # fmt: skip
    (ev,) = _run(eng, fwd)
    assert ev[0] == EV_REJECTED and reject_name(ev[5]) == "order_too_large"


def test_a_stop_market_buy_with_a_budget_is_placed_on_a_banded_pair() -> None:
    eng = _engine(band_bps=100)
    fwd = _forward((A_NEW, BTC, "s1", "alice", BUY, STOP_MARKET, None, 20, IOC, False, 0,
                    5_000 * USD6, {"trigger": 100_40}))  # fmt: skip
    assert fwd[5] == STOP_LIMIT
    out = _run(eng, fwd)
    assert [e[0] for e in out] == [0], out  # accepted, pending
    fired = _run(eng, (OP_NEW, BTC, "t1", "tk", BUY, LIMIT, 100_50, 10, GTC, False, 0))
    trades = [e for e in fired if e[0] == EV_TRADE]
    assert [(t[5], t[3], t[4]) for t in trades] == [("t1", 100_50, 10), ("s1", 100_50, 20)]


def test_a_client_cannot_mark_its_own_limit_order_capped() -> None:
    acc = AccountCore(DEFAULT_MARKETS, fees={BTC: Fee(2, 5)})
    out: list = []
    acc.apply((A_DEPOSIT, "alice", "USD", 10_000 * USD6, "d1"), out)
    acc.apply((A_NEW, BTC, "x", "alice", BUY, LIMIT, 130_00, 1, IOC, False, 0, None,
               {"capped": 1}), out)  # fmt: skip
    assert out[-1][0] == AE_REJECTED and reject_name(out[-1][5]) == "invalid", out
    eng = _engine(band_bps=100)
    for cmd in ((OP_NEW, BTC, "g", "al", BUY, LIMIT, 130_00, 1, GTC, False, 0, None,
                 {"capped": 1}),
                (OP_NEW, BTC, "h", "al", BUY, LIMIT, 130_00, 1, IOC, False, 0, None,
                 {"capped": 2})):  # fmt: skip
        (ev,) = _run(eng, cmd)
        assert ev[0] == EV_REJECTED and reject_name(ev[5]) == "invalid", ev
