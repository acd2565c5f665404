"""Fee schedules in the account core (pure): tiers × markets, groups by a journaled command,
30-day volume, maker rebates bounded by the taker fee of the same fill, the rounding rule, holds
that cover every fill's fee, and the state in snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.accounts import AccountCore, AssetTable, Fee
from shardex.accounts.codes import (
    A_DEPOSIT,
    A_FEE_GROUP,
    A_NEW,
    AE_FEE_GROUP,
    AE_FEES,
    AE_FILL,
    AE_REJECTED,
    S_TRADE,
)
from shardex.accounts.fees import DAY_MS, FeeSchedule, Tier, rebate
from shardex.accounts.machines import AccountMachineFactory
from shardex.auth import KeyInfo
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import BUY, GTC, LIMIT, REJ_INVALID, SELL
from shardex.node.account_service import AccountHandler
from shardex.node.fee_service import fee_group, fee_read
from shardex.node.nulljournal import NullJournal
from shardex.wire.layouts import FILL_ACCOUNT, FILL_BPS, FILL_FEE
from shardex.wire.protocol import OP_FEE_GROUP, OP_FEES, decode_reply, encode_request

BTC = "BTC-USD"
USD6 = 1_000_000  # units per USD
SYMBOLS = sorted(DEFAULT_MARKETS)
TABLE = {
    "tiers": {
        "base": {"maker": 2, "taker": 5},
        "mm": {"maker": -3, "taker": 4, "markets": {"ETH-BTC": {"maker": 0, "taker": 3}}},
        "vip": {"maker": -1, "taker": 3, "volume": {"asset": "USD", "min": "1000"}},
    }
}


def schedule(table=TABLE) -> FeeSchedule:
    return FeeSchedule.from_table(table, AssetTable(DEFAULT_MARKETS))


def core(sch: FeeSchedule | None = None) -> AccountCore:
    return AccountCore(DEFAULT_MARKETS, schedule=sch or schedule())


def run(c: AccountCore, *cmds) -> list[tuple]:
    out: list[tuple] = []
    for cmd in cmds:
        c.apply(cmd, out)
    c.check_integrity()
    return out


def fills(out: list[tuple]) -> dict[str, tuple]:
    return {ev[FILL_ACCOUNT]: ev for ev in out if ev[0] == AE_FILL}


def test_the_schedule_is_read_and_checked() -> None:
    s = schedule()
    assert [t.name for t in s.tiers] == ["base", "mm", "vip"]
    assert s.rates(1, BTC) == Fee(-3, 4) and s.rates(1, "ETH-BTC") == Fee(0, 3)
    assert s.tiers[2].asset == "USD" and s.tiers[2].min_volume == 1000 * USD6
    assert s.tier_of(None, None) == 0 and s.tier_of("mm", None) == 1
    assert s.tier_of(None, {"USD": 1000 * USD6}) == 2 and s.tier_of("mm", {"USD": 1}) == 1
    assert s.tier_of("gone", None) == 0  # a group the schedule no longer has: the default
    bad = [
        ({"tiers": {"a": {"maker": -4, "taker": 5}, "b": {"maker": 0, "taker": 3}}}, "rebate"),
        ({"tiers": {"a": {"maker": 6, "taker": 5}}}, "maker <= taker"),
        ({"tiers": {"a": {"maker": 1, "taker": 1001}}}, "1000"),
        ({"tiers": {"a": {"maker": 1.5, "taker": 2}}}, "integer"),
        ({"tiers": {"a": {"markets": {"NOPE-USD": {"maker": 1, "taker": 1}}}}}, "NOPE"),
        ({"tiers": {"a": {"volume": {"asset": "EUR", "min": "1"}}}}, "EUR"),
        ({"tiers": {"a": {"volume": {"asset": "USD", "min": "0.0000001"}}}}, "positive"),
        ({"tiers": {}}, "one or more"),
    ]
    for table, why in bad:
        with pytest.raises(ValueError, match=why):
            schedule(table)


def test_the_rebate_rule_is_the_lowest_taker_rate_of_the_market() -> None:
    """-maker may reach the lowest taker rate of the market over every tier, not beyond."""
    def tier(name: str, fee: Fee) -> Tier:
        return Tier(name, dict.fromkeys(SYMBOLS, fee))

    ok = [tier("a", Fee(2, 5)), tier("b", Fee(-5, 5))]
    assert FeeSchedule.build(ok, SYMBOLS).rates(1, BTC) == Fee(-5, 5)
    low = [tier("a", Fee(0, 4)), tier("b", Fee(-5, 5))]
    with pytest.raises(ValueError, match="-4 <= maker"):
        FeeSchedule.build(low, SYMBOLS)


def _cross(c: AccountCore, maker_acct: str, taker_acct: str, price: int, qty: int) -> list:
    """A sell of ``maker_acct`` resting, bought by ``taker_acct`` (both funded)."""
    return run(
        c,
        (A_DEPOSIT, maker_acct, "BTC", 10**8, f"d-{maker_acct}"),
        (A_DEPOSIT, taker_acct, "USD", 10**6 * USD6, f"d-{taker_acct}"),
        (A_NEW, BTC, "s1", maker_acct, SELL, LIMIT, price, qty, GTC, False, 0, None),
        (A_NEW, BTC, "b1", taker_acct, BUY, LIMIT, price, qty, GTC, False, 0, None),
        (S_TRADE, 0, 1, 0, BTC, price, qty, taker_acct, "b1", maker_acct, "s1", BUY, 1),
    )


def test_a_group_is_a_journaled_command_and_sets_the_rates_of_new_orders() -> None:
    c = core()
    out = run(c, (A_FEE_GROUP, "mia", "mm"))
    assert out == [(AE_FEE_GROUP, 1, "mia", "mm", "mm")]
    assert c.fee_info("mia")["tier"] == "mm" and c.fee_info("tom")["tier"] == "base"
    out = _cross(c, "mia", "tom", 3_000_000, 10)  # 30000.00 × 0.0010 = 30 USD
    f = fills(out)
    assert f["mia"][FILL_BPS] == -3 and f["mia"][FILL_FEE] == -9_000  # rebate 0.009 USD
    assert f["tom"][FILL_BPS] == 5 and f["tom"][FILL_FEE] == 15_000  # fee 0.015 USD
    assert c.fees["USD"] == 6_000 and c.rebates["USD"] == 9_000
    assert c.balance("mia", "USD") == (30 * USD6 + 9_000, 0)  # proceeds + rebate
    # unknown group: refused with a stable code, nothing changed; "" clears
    out = run(c, (A_FEE_GROUP, "mia", "gold"))
    assert out[0][0] == AE_REJECTED and out[0][5] == REJ_INVALID and "gold" in out[0][4]
    assert run(c, (A_FEE_GROUP, "mia", ""))[0][3:] == ("", "base")
    for bad in [(A_FEE_GROUP, "mia"), (A_FEE_GROUP, 7, "mm"), (A_FEE_GROUP, "mia", b"mm")]:
        assert run(c, bad)[0][0] == AE_REJECTED


def test_an_order_keeps_the_rates_it_was_placed_with() -> None:
    c = core()
    run(c, (A_DEPOSIT, "tom", "USD", 100 * USD6, "d"),
        (A_NEW, BTC, "b1", "tom", BUY, LIMIT, 100_00, 10, GTC, False, 0, None),
        (A_FEE_GROUP, "tom", "mm"))  # fmt: skip
    assert c.orders[("tom", BTC, "b1")].taker_bps == 5  # placed in tier base


def test_volume_over_30_days_earns_a_tier_and_expires() -> None:
    c = core()
    c.now_ms = 100 * DAY_MS + 5
    _cross(c, "mia", "tom", 10_000_000, 10_000)  # 100000.00 × 1 = 100,000 USD each side
    assert c.fee_info("tom")["tier"] == "vip" and c.fee_info("mia")["tier"] == "vip"
    assert c.fee_info("tom")["volume"] == {"USD": 100_000 * USD6}
    c.now_ms = (100 + 29) * DAY_MS  # still inside the window
    assert c.fee_info("tom")["tier"] == "vip"
    c.now_ms = (100 + 30) * DAY_MS  # day 100 has left the window
    before = c.snapshot()
    assert c.fee_info("tom")["tier"] == "base" and c.fee_info("tom")["volume"] == {"USD": 0}
    assert c.snapshot() == before  # a read changes nothing (replay reaches the same state)
    run(c, (A_DEPOSIT, "mia", "BTC", 10**8, "d-mia-2"),  # a new day's trade drops the old day
        (A_NEW, BTC, "s2", "mia", SELL, LIMIT, 10_000_000, 1, GTC, False, 0, None),
        (A_NEW, BTC, "b2", "tom", BUY, LIMIT, 10_000_000, 1, GTC, False, 0, None),
        (S_TRADE, 0, 2, 1, BTC, 10_000_000, 1, "tom", "b2", "mia", "s2", BUY, 2))  # fmt: skip
    assert [rows for a, _, rows in c.snapshot()["volumes"] if a == "tom"] == [[[130, 10 * USD6]]]
    c.now_ms = None  # no exchange time: volume is not counted
    assert c.fee_info("tom")["tier"] == "base"


def test_state_survives_a_snapshot() -> None:
    c = core()
    c.now_ms = 3 * DAY_MS
    run(c, (A_FEE_GROUP, "mia", "mm"))
    _cross(c, "mia", "tom", 3_000_000, 10)
    state = c.snapshot()
    assert state["groups"] == [("mia", "mm")] and state["rebates"] == [("USD", 9_000)]
    back = AccountCore.restore(state, DEFAULT_MARKETS, schedule=schedule())
    assert back.snapshot() == state and back.groups == {"mia": "mm"}
    old = {k: v for k, v in state.items() if k not in ("groups", "rebates", "volumes")}
    old["orders"] = []  # (an older snapshot: no groups, rebates, volumes)
    AccountCore.restore(old | {"balances": [], "fees": [], "flow": [], "deposited": []},
                        DEFAULT_MARKETS)  # fmt: skip


def test_rebate_rounds_down_and_fee_rounds_up() -> None:
    assert rebate(9_999, -1) == 0 and rebate(10_000, -1) == 1 and rebate(19_999, -1) == 1
    assert rebate(10_000, 0) == 0 and rebate(10_000, 3) == 0


@settings(max_examples=80, deadline=None)
@given(
    low=st.integers(0, 10),
    maker=st.integers(-10, 10),
    taker=st.integers(0, 10),
    buy_maker=st.booleans(),
    steps=st.lists(st.tuples(st.integers(1, 4_000_000), st.integers(1, 7)), min_size=1, max_size=8),
)
def test_holds_cover_every_fee_and_no_rebate_exceeds_the_taker_fee_of_its_fill(
    low: int, maker: int, taker: int, buy_maker: bool, steps: list[tuple[int, int]]
) -> None:
    """Random tiers (the maker in a tier with a rebate or a fee, the taker in the tier with
    the market's lowest taker rate) and fills at random prices up to the buy's limit: after
    every fill the hold is exactly what the rest can cost (check_integrity: held == required,
    nothing negative), the rebate paid on a fill is at most the fee its taker paid, and the
    venue's net fee ledger never goes below 0."""
    taker = max(taker, low)
    maker = min(max(maker, -low), taker)
    tiers = [Tier(n, dict.fromkeys(SYMBOLS, f)) for n, f in (("low", Fee(0, low)),
                                                              ("mm", Fee(maker, taker)))]
    c = core(FeeSchedule.build(tiers, SYMBOLS))
    cap, qty = 4_000_000, sum(q for _, q in steps)
    buyer, seller = ("b", "s")
    m_acct = buyer if buy_maker else seller
    run(c, (A_DEPOSIT, buyer, "USD", 10**6 * USD6, "d1"), (A_DEPOSIT, seller, "BTC", 10**8, "d2"),
        (A_FEE_GROUP, m_acct, "mm"),
        (A_NEW, BTC, "B", buyer, BUY, LIMIT, cap, qty, GTC, False, 0, None),
        (A_NEW, BTC, "S", seller, SELL, LIMIT, 1, qty, GTC, False, 0, None))  # fmt: skip
    if buy_maker:
        trade = (seller, "S", buyer, "B", SELL)
    else:
        trade = (buyer, "B", seller, "S", BUY)
    for k, (price, q) in enumerate(steps, 1):
        out = run(c, (S_TRADE, 0, k, k - 1, BTC, price, q, *trade[:4], trade[4], k))
        f = fills(out)
        paid = max(0, -f[m_acct][FILL_FEE])
        assert paid <= f[trade[0]][FILL_FEE]
        assert c.fees.get("USD", 0) >= 0
        ledger = [ev[3] for ev in out if ev[0] == AE_FEES]
        assert ledger[-1:] in ([], [c.fees.get("USD")])
    assert not c.orders  # both filled: every hold released
    assert c.balance(buyer, "USD")[1] == 0


def test_fee_requests_are_bounded_checked_and_admin_only() -> None:
    """The account shard's ``OP_FEE_GROUP`` / ``OP_FEES``: a clear reject with a stable code for
    bad input or the wrong key, nothing journaled or applied for it."""
    m = AccountMachineFactory(0, 1, lambda _s: 0, schedule=schedule()).new(DEFAULT_MARKETS)
    h = AccountHandler(m, NullJournal())
    out: list[tuple] = []
    h.key = KeyInfo("k" * 40, "tina", "trader", frozenset({"mia"}))
    assert fee_group(h, (OP_FEE_GROUP, "mia", "mm"), out) == {
        "rejected": "setting a fee group needs an admin key", "code": "not_allowed"}
    assert fee_read(h, (OP_FEES, "tom"))["error"]  # another account's rates: not hers to read
    h.key = None
    for bad in [(OP_FEE_GROUP, "x" * 100_000, "mm"), (OP_FEE_GROUP, "mia", "g" * 33),
                (OP_FEE_GROUP, "mia"), (OP_FEE_GROUP, "mia", 3)]:  # fmt: skip
        assert fee_group(h, bad, out)["code"] == "malformed", bad
    assert m.seq == 0 and not out  # refused before the journal
    assert fee_group(h, (OP_FEE_GROUP, "mia", "mm"), out) == {
        "ok": True, "account": "mia", "group": "mm", "tier": "mm"}
    error, results = decode_reply(h.handle(encode_request([(OP_FEES, "mia"), (OP_FEES, 5)]), out))
    assert error is None and results[1]["error"]
    mine = results[0]
    assert (mine["group"], mine["tier"], mine["volume"]) == ("mm", "mm", {})
    assert mine["rates"][BTC] == {"maker_bps": -3, "taker_bps": 4}
    assert mine["tiers"][2] == {"name": "vip", "volume_asset": "USD", "volume_min": "1000.000000"}
