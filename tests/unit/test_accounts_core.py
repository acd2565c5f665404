"""Unit tests of the account tier's pure core: units, holds, fees, settlement, links, state."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.accounts import AccountCore, AssetTable, Fee, SettlementFeed, account_shard_for
from shardex.accounts.codes import (
    A_AMEND,
    A_DEPOSIT,
    A_NEW,
    A_WITHDRAW,
    ACCOUNT_REJECT_NAMES,
    AE_BALANCE,
    AE_FORWARD,
    AE_GAP,
    AE_REJECTED,
    AE_REPEATED,
    REJ_DUPLICATE_REF,
    REJ_INSUFFICIENT_FUNDS,
    S_CANCELLED,
    S_TRADE,
)
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_NEW,
    REJ_WRONG_SHARD,
    REJECT_NAMES,
    SELL,
)
from tests.support.depth import examples

BTC = "BTC-USD"
USD6 = 1_000_000  # units per USD (unit 0.000001)


def core(**kw) -> AccountCore:
    return AccountCore(DEFAULT_MARKETS, fees={BTC: Fee(2, 5)}, **kw)


def run(c: AccountCore, *cmds) -> list[tuple]:
    out: list[tuple] = []
    for cmd in cmds:
        c.apply(cmd, out)
    c.check_integrity()
    return out


def test_units_make_every_grid_exact() -> None:
    t = AssetTable(DEFAULT_MARKETS)
    assert t.units["USD"] == Decimal("0.000001")  # BTC-USD: tick 0.01 × lot 0.0001
    assert t.units["BTC"] == Decimal("0.00000001")  # ETH-BTC: tick 0.00001 × lot 0.001
    assert t.units["XRP"] == Decimal("1")
    for symbol, m in DEFAULT_MARKETS.items():
        p = t.pairs[symbol]
        assert p.base_per_lot * t.units[p.base] == m.lot
        assert p.quote_per_tick_lot * t.units[p.quote] == m.tick * m.lot
    assert t.fmt("USD", 10 * USD6) == "10.00"
    assert t.fmt("USD", 30_007_500) == "30.0075"
    assert t.to_units("USD", Decimal("30.01")) == 30_010_000
    assert t.to_units("USD", Decimal("0.0000001")) is None


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        AssetTable({"BTCUSD": DEFAULT_MARKETS[BTC]})
    with pytest.raises(ValueError, match="maker <= taker"):
        AssetTable(DEFAULT_MARKETS, {BTC: Fee(6, 5)})
    with pytest.raises(ValueError, match="unknown markets"):
        AssetTable(DEFAULT_MARKETS, {"NOPE-USD": Fee(0, 0)})


def test_insufficient_funds_says_how_much_in_decimals() -> None:
    c = core()
    out = run(
        c,
        (A_DEPOSIT, "alice", "USD", 10 * USD6, "d1"),
        # buy 0.001 BTC at 30000.00 = 30.00 USD + 5 bps taker fee 0.015
        (A_NEW, BTC, "o1", "alice", BUY, LIMIT, 3_000_000, 10, GTC, False, 0, None),
    )
    rej = out[-1]
    assert rej[0] == AE_REJECTED and rej[5] == REJ_INSUFFICIENT_FUNDS
    assert rej[4] == "insufficient USD: available 10.00, needed 30.015"
    assert c.balance("alice", "USD") == (10 * USD6, 0)


def test_buy_holds_price_qty_fee_and_trade_returns_price_improvement() -> None:
    c = core()
    out = run(
        c,
        (A_DEPOSIT, "alice", "USD", 100 * USD6, "d1"),
        (A_DEPOSIT, "bob", "BTC", 10_000_000, "d2"),  # 0.1 BTC
        (A_NEW, BTC, "ask", "bob", SELL, LIMIT, 2_900_000, 4, GTC, False, 0, None),
        (A_NEW, BTC, "b1", "alice", BUY, LIMIT, 3_000_000, 10, GTC, False, 0, None),
    )
    assert c.balance("alice", "USD") == (100 * USD6 - 30_015_000, 30_015_000)
    fwd = out[-1]
    assert fwd[0] == AE_FORWARD and fwd[4][0] == OP_NEW and fwd[3] == out[-3][1]
    # Alice's order trades as taker for 4 lots at 29000.00 (price improvement 1000.00/BTC).
    out = run(c, (S_TRADE, 0, 5, 0, BTC, 2_900_000, 4, "alice", "b1", "bob", "ask", BUY, 1))
    notional = 2_900_000 * 4  # 11.60 USD
    fee = -(-notional * 5 // 10_000)  # ceil: 0.0058 USD
    left = 3_000_000 * 6 + -(-(notional * 5 + 3_000_000 * 6 * 5) // 10_000) - fee
    assert c.balance("alice", "USD") == (100 * USD6 - notional - fee - left, left)
    assert c.balance("alice", "BTC") == (4 * 10_000, 0)
    bob_fee = -(-notional * 2 // 10_000)  # maker rate
    assert c.fees["USD"] == fee + bob_fee
    assert c.balance("bob", "USD") == (notional - bob_fee, 0)
    assert (
        c.balance("bob", "BTC") == (10_000_000 - 40_000, 0) and ("bob", BTC, "ask") not in c.orders
    )
    # The rest is cancelled: everything still held comes back.
    run(c, (S_CANCELLED, 0, 6, 5, BTC, "alice", "b1", "user", 6))
    assert c.balance("alice", "USD") == (100 * USD6 - notional - fee, 0)
    assert not c.orders


def test_fee_rounds_up_per_order_not_per_fill() -> None:
    """Many tiny fills: the fee is ceil of the cumulative notional, so the venue never
    under-collects and never charges more than the hold took."""
    c = core()
    run(
        c,
        (A_DEPOSIT, "alice", "USD", 100 * USD6, "d1"),
        (A_DEPOSIT, "bob", "BTC", 50_000, "d2"),
        (A_NEW, BTC, "a", "bob", SELL, LIMIT, 1_001, 5, GTC, False, 0, None),
        (A_NEW, BTC, "b1", "alice", BUY, LIMIT, 1_001, 5, GTC, False, 0, None),
    )
    held = c.balance("alice", "USD")[1]
    for k in range(5):  # 5 fills of 1 lot at 10.01 USD/BTC → 1001 units each, fee 0.5005 each
        run(c, (S_TRADE, 0, k + 1, k, BTC, 1_001, 1, "alice", "b1", "bob", "a", BUY, k))
    # taker: ceil(5005 × 5 / 10000) = 3 (per fill it would be 5); maker: ceil(5005 × 2 / 10000) = 2
    assert c.fees["USD"] == 3 + 2
    assert c.balance("alice", "USD") == (100 * USD6 - 5 * 1_001 - 3, 0)
    assert held == 5 * 1_001 + 3


def test_market_buy_budget_becomes_a_capped_ioc_limit() -> None:
    c = core()
    out = run(
        c,
        (A_DEPOSIT, "alice", "USD", 100 * USD6, "d1"),
        (A_NEW, BTC, "m1", "alice", BUY, MARKET, None, 10, IOC, False, 0, 50 * USD6),
    )
    cmd = out[-1][4]
    assert cmd[5] == LIMIT and cmd[8] == IOC
    cap = cmd[6]
    cost = lambda p: p * 10 + -(-p * 10 * 5 // 10_000)  # noqa: E731
    assert cost(cap) <= 50 * USD6 < cost(cap + 1)
    assert c.balance("alice", "USD")[1] == cost(cap)
    out = run(c, (A_NEW, BTC, "m2", "alice", BUY, MARKET, None, 10, GTC, False, 0, 5 * USD6))
    assert out[-1][0] == AE_REJECTED  # market orders need ioc/fok
    out = run(c, (A_NEW, BTC, "m3", "alice", BUY, MARKET, None, 10, FOK, False, 0, None))
    assert out[-1][0] == AE_REJECTED and "budget" in out[-1][4]


def test_transfers_are_idempotent_by_ref_and_withdraw_is_bounded() -> None:
    c = core()
    out = run(
        c,
        (A_DEPOSIT, "alice", "USD", 5 * USD6, "r1"),
        (A_DEPOSIT, "alice", "USD", 5 * USD6, "r1"),  # a retry
        (A_DEPOSIT, "alice", "USD", 6 * USD6, "r1"),  # another transfer reusing the ref
        (A_WITHDRAW, "alice", "USD", 6 * USD6, "w1"),
        (A_WITHDRAW, "alice", "USD", 5 * USD6, "w2"),
        (A_WITHDRAW, "alice", "DOGE", 1, "w3"),
        (A_WITHDRAW, "alice", "USD", 0, "w4"),
    )
    kinds = [(e[0], e[5] if e[0] == AE_REJECTED else None) for e in out]
    assert kinds[:4] == [
        (AE_BALANCE, None),
        (AE_REPEATED, None),
        (AE_REJECTED, REJ_DUPLICATE_REF),
        (AE_REJECTED, REJ_INSUFFICIENT_FUNDS),
    ]
    assert out[4][0] == AE_BALANCE and c.balance("alice", "USD") == (0, 0)
    assert [e[0] for e in out[5:]] == [AE_REJECTED, AE_REJECTED]
    assert c.deposited == {"USD": 5 * USD6} and c.withdrawn == {"USD": 5 * USD6}


def test_accounts_of_other_shards_are_refused() -> None:
    c = core(shard=0, shards=3)
    other = next(a for a in ("a", "b", "c", "d", "e") if account_shard_for(a, 3) != 0)
    out = run(c, (A_DEPOSIT, other, "USD", 1, "r"))
    assert out[0][0] == AE_REJECTED and out[0][5] == REJ_WRONG_SHARD


def test_settlement_link_skips_duplicates_and_reports_gaps() -> None:
    c = core(shard=account_shard_for("bob", 2), shards=2)
    x = next(a for a in ("a", "b", "c", "d") if not c.owns(a))  # the takers' account
    run(
        c,
        (A_DEPOSIT, "bob", "BTC", 10_000_000, "d"),
        (A_NEW, BTC, "s1", "bob", SELL, LIMIT, 3_000_000, 5, GTC, False, 0, None),
    )
    t1 = (S_TRADE, 0, 7, 0, BTC, 3_000_000, 1, x, "t", "bob", "s1", BUY, 1)
    t2 = (S_TRADE, 0, 9, 7, BTC, 3_000_000, 1, x, "t2", "bob", "s1", BUY, 2)
    gap = run(c, t2)
    assert gap == [(AE_GAP, gap[0][1], 0, 0, 7, 9)] and c.orders[("bob", BTC, "s1")].rem == 5
    run(c, t1)
    state = c.snapshot()
    assert run(c, t1) == [] and c.snapshot() == state and c.duplicates == 1
    run(c, t2)
    assert c.orders[("bob", BTC, "s1")].rem == 3


def test_amend_raising_a_buy_price_holds_the_difference_first() -> None:
    c = core()
    run(
        c,
        (A_DEPOSIT, "alice", "USD", 40 * USD6, "d"),
        (A_NEW, BTC, "b1", "alice", BUY, LIMIT, 3_000_000, 10, GTC, False, 0, None),
    )
    out = run(c, (A_AMEND, BTC, "b1", "alice", None, 5_000_000))
    assert out[-1][0] == AE_REJECTED and out[-1][5] == REJ_INSUFFICIENT_FUNDS
    out = run(c, (A_AMEND, BTC, "b1", "alice", None, 3_500_000))
    assert out[-1][0] == AE_FORWARD
    assert c.balance("alice", "USD")[1] == 35_000_000 + 17_500


def test_reject_codes_extend_the_engines_without_collision() -> None:
    """The account codes continue the engine's numbering; if codes.py grows differently this
    fails and the numbers here must move (they are not on any wire yet)."""
    for code, name in ACCOUNT_REJECT_NAMES.items():
        assert code >= len(REJECT_NAMES) or REJECT_NAMES[code] == name
        assert name not in REJECT_NAMES[: min(code, len(REJECT_NAMES))]


def test_restore_refuses_a_state_that_does_not_balance() -> None:
    c = core()
    run(c, (A_DEPOSIT, "alice", "USD", 5, "r"))
    state = c.snapshot()
    assert AccountCore.restore(state, DEFAULT_MARKETS, {BTC: Fee(2, 5)}).snapshot() == state
    state["balances"][0][2] += 1  # money from nowhere
    with pytest.raises(ValueError, match="deposits - withdrawals"):
        AccountCore.restore(state, DEFAULT_MARKETS)
    with pytest.raises(ValueError, match="version"):
        AccountCore.restore({"version": 9}, DEFAULT_MARKETS)


_leaf = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=70)
    | st.sampled_from(["alice", "USD", BTC, "o1"])
)  # fmt: skip
# A field: a scalar, or a small nested tuple (what a handler could index or recurse into).
_field = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=6)
# What follows the op: a bare scalar, or up to 14 fields (the longest command, a trade, has 12). One
# 30-leaf recursive value for the whole rest cost ~5x the CPU to draw (a draw past its 30
# leaves was thrown away and drawn again) and nested no deeper where it matters.
_rest = _leaf | st.lists(_field, max_size=14).map(tuple)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 10, 11, 12, 13, 99]), _rest), max_size=20))
def test_no_input_raises_and_garbage_changes_nothing_that_does_not_balance(cmds) -> None:
    """Random tuples (right op, any fields): never an exception, the books always balance."""
    c = core(shards=2)
    run(c, (A_DEPOSIT, "alice", "USD", 5 * USD6, "r0"))
    for op, rest in cmds:
        run(c, (op, *rest) if isinstance(rest, tuple) else (op, rest))


def test_feed_addresses_both_sides_and_chains_prev_per_link() -> None:
    eng = Engine(DEFAULT_MARKETS)
    feed = SettlementFeed(0, 3)
    sell = (OP_NEW, BTC, "s1", "bob", SELL, LIMIT, 3_000_000, 5, GTC, False, 0)
    buy = (OP_NEW, BTC, "b1", "alice", BUY, LIMIT, 3_000_000, 2, GTC, False, 0)
    for k, cmd in enumerate((sell, buy), 1):
        out: list[tuple] = []
        eng.apply(cmd, out)
        msgs = feed.route(cmd, out, cause=k)
    shards = {account_shard_for(a, 3) for a in ("alice", "bob")}
    assert {j for j, _ in msgs} == shards
    for _, m in msgs:
        assert m[0] == S_TRADE and m[3] == 0 and m[7] == "alice" and m[9] == "bob"
    assert feed.live[(BTC, "s1")] == ["bob", 3]


def test_a_settlement_that_does_not_fit_is_an_anomaly_and_changes_nothing() -> None:
    c = core()
    run(c, (A_DEPOSIT, "bob", "BTC", 10_000_000, "d"))
    state = c.snapshot()
    out = run(c, (S_TRADE, 0, 3, 0, BTC, 3_000_000, 1, "alice", "nope", "bob", "nope2", BUY, 1))
    assert [e[0] for e in out] == [6] and "no open order" in out[0][4]  # AE_ANOMALY
    assert c.anomalies == 1 and c.inbox.last == {0: 3}  # consumed: the link goes on
    after = c.snapshot()
    assert {k: v for k, v in after.items() if k not in ("seq", "inbox")} == {
        k: v for k, v in state.items() if k not in ("seq", "inbox")
    }
