"""The account shard's half of perp margin moves (``shardex.accounts.margin``), pure: random
deposits and moves in and out, each answered by its engine shard in any order (moved or
refused), keep every balance >= 0 and the shard's books balanced at every step, and once all
are answered the margin recorded is exactly what the engine confirmed."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from shardex.accounts import AccountCore
from shardex.accounts.codes import (
    A_DEPOSIT,
    A_MARGIN,
    A_RESTRICT,
    A_WITHDRAW,
    AE_FORWARD,
    AE_REJECTED,
    S_MARGIN,
    S_REJECTED,
)
from shardex.accounts.machines import AccountMachineFactory
from shardex.engine import DEFAULT_MARKETS, Engine, Market
from shardex.engine import codes as ec
from shardex.engine.codes import (
    OP_MARGIN,
    REJ_ACCOUNT_RESTRICTED,
    REJ_INSUFFICIENT_MARGIN,
    REJ_UNKNOWN_ASSET,
)
from shardex.engine.perps import perp_from_spec
from shardex.node.account_service import AccountHandler
from shardex.node.nulljournal import NullJournal
from shardex.wire.layouts import AE_KIND, AREJ_CODE, AREJ_REASON
from shardex.wire.protocol import ERR_OVERLOADED, OP_DEPOSIT, decode_reply, encode_request

PERP = "BTCPERP-USD"
MARKETS = {**DEFAULT_MARKETS, PERP: Market(PERP, Decimal("0.1"), Decimal("0.001"),
                                           Decimal("1000000"), Decimal("1000"),
                                           perp=perp_from_spec(PERP, {}))}  # fmt: skip

step = st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 5)),
    st.tuples(st.just("move"), st.integers(-5, 5).filter(bool)),
    st.tuples(st.just("answer"), st.integers(0, 7), st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, max_size=40))
def test_margin_moves_answered_in_any_order_keep_the_books_balanced(steps) -> None:
    core = AccountCore(MARKETS)
    unit = core.table.pairs[PERP].quote_per_tick_lot  # (units of USD per tick × lot)
    flying: list[tuple[int, int]] = []  # (forward seq, engine units)
    confirmed = eseq = 0
    for refs, s in enumerate(steps):
        out: list[tuple] = []
        if s[0] == "deposit":
            core.apply((A_DEPOSIT, "alice", "USD", s[1] * 1000 * unit, f"d{refs}"), out)
        elif s[0] == "move":
            core.apply((A_MARGIN, "alice", PERP, s[1] * 100 * unit, f"m{refs}"), out)
            flying += [(ev[1], ev[4][3]) for ev in out if ev[0] == AE_FORWARD]
            assert all(ev[4][0] == OP_MARGIN for ev in out if ev[0] == AE_FORWARD)
        elif flying:
            cause, units = flying.pop(s[1] % len(flying))
            eseq += 1
            if s[2]:  # the engine moved it
                msg = (S_MARGIN, 0, eseq, eseq - 1, PERP, "alice", units, cause)
                confirmed += units
            else:
                msg = (S_REJECTED, 0, eseq, eseq - 1, PERP, "", "alice", OP_MARGIN,
                       REJ_INSUFFICIENT_MARGIN, cause)  # fmt: skip
            core.apply(msg, out)
        core.check_integrity()  # (balances >= 0; balances + in margin == deposits)
        assert core.anomalies == 0
    assert len(core.margin_moves) == len(flying)
    in_flight_in = sum(u for _, u in flying if u > 0)
    assert sum(core.margin.values()) == confirmed * unit
    assert core.in_margin().get("USD", 0) == (confirmed + in_flight_in) * unit


def test_what_may_leave_a_pair_is_settled_money_not_unrealized_profit() -> None:
    """The engine's rule for a move out (``positions.margin_free``): at most min(collateral +
    realized + funding, equity at the mark) less the initial margin at the mark. A long in
    profit at the mark may not take the unrealized profit out; a short at a loss keeps it
    covered."""
    eng = Engine(MARKETS)
    new = [(ec.OP_NEW, PERP, oid, who, side, ec.LIMIT, 300_000, 1000, ec.GTC, False, ec.STP_NONE)
           for oid, who, side in (("s", "b", ec.SELL), ("x", "a", ec.BUY))]  # fmt: skip
    funded = [(OP_MARGIN, PERP, who, 10**9) for who in "ab"]
    eng.apply_many([(ec.OP_TIME, 1_000), (ec.OP_INDEX, PERP, 300_000), *funded, *new,
                    (ec.OP_INDEX, PERP, 310_000)])  # fmt: skip
    assert eng.books[PERP].oracle.mark == 310_000
    initial = 1000 * 310_000 * 5 // 100  # (0.05 of 1 BTC at the mark, units of tick × lot)
    for who, free in (("a", 10**9 - initial), ("b", 10**9 - 10**7 - initial)):
        refused = eng.apply_many([(OP_MARGIN, PERP, who, -free - 1)])
        assert refused[-1][0] == ec.EV_REJECTED and refused[-1][5] == REJ_INSUFFICIENT_MARGIN
        moved = eng.apply_many([(OP_MARGIN, PERP, who, -free)])
        assert moved[-1][0] == ec.EV_MARGIN and moved[-1][5] == 10**9 - free


def _one_rejection(out: list[tuple]) -> int | None:
    """The code of the one ``AE_REJECTED`` event in ``out`` (None: nothing refused)."""
    codes = [ev[AREJ_CODE] for ev in out if ev[AE_KIND] == AE_REJECTED]
    assert len(codes) <= 1
    return codes[0] if codes else None


def test_a_restricted_account_may_move_margin_in_but_not_out() -> None:
    """Restricted: margin in is forwarded (more collateral under its position only lowers the
    venue's risk, as a deposit does); margin out is refused ``account_restricted`` (it would
    take collateral out from under the position of an account under review)."""
    core = AccountCore(MARKETS)
    unit = core.table.pairs[PERP].quote_per_tick_lot
    out: list[tuple] = []
    core.apply((A_DEPOSIT, "alice", "USD", 1000 * unit, "d"), out)
    core.apply((A_RESTRICT, "alice", True), out)
    out = []
    core.apply((A_MARGIN, "alice", PERP, 500 * unit, "in"), out)
    assert _one_rejection(out) is None and [ev[0] for ev in out].count(AE_FORWARD) == 1
    out = []
    core.apply((A_MARGIN, "alice", PERP, -100 * unit, "out"), out)
    assert _one_rejection(out) == REJ_ACCOUNT_RESTRICTED
    assert not any(ev[AE_KIND] == AE_FORWARD for ev in out) and len(core.margin_moves) == 1
    core.apply((A_RESTRICT, "alice", False), out)
    out = []
    core.apply((A_MARGIN, "alice", PERP, -100 * unit, "out"), out)
    assert _one_rejection(out) is None and len(core.margin_moves) == 2


def test_a_perp_pairs_base_is_no_asset_to_deposit_or_withdraw() -> None:
    """``BTCPERP`` is only the base of a perp pair's lots (a position is the engine's): a
    deposit or withdrawal of it is refused ``unknown_asset``; the settle asset still moves."""
    core = AccountCore(MARKETS)
    for op in (A_DEPOSIT, A_WITHDRAW):
        out: list[tuple] = []
        core.apply((op, "alice", "BTCPERP", 1000, f"x{op}"), out)
        assert _one_rejection(out) == REJ_UNKNOWN_ASSET
        assert "perp" in next(ev[AREJ_REASON] for ev in out if ev[AE_KIND] == AE_REJECTED)
    out = []
    core.apply((A_DEPOSIT, "alice", "USD", 1000, "usd"), out)
    assert _one_rejection(out) is None
    assert core.balance("alice", "USD")[0] == 1000 and core.balance("alice", "BTCPERP")[0] == 0


def test_a_margin_move_to_a_backed_up_engine_shard_is_shed_overloaded_like_an_order() -> None:
    """While the pair's engine shard lags (its link backed up), a margin move is refused
    ``overloaded`` before anything is journaled or taken, as a new order is; once it has
    caught up the same move runs."""
    h = AccountHandler(AccountMachineFactory(0, 1, lambda _s: 0).new(MARKETS), NullJournal())
    assert decode_reply(h.handle(encode_request([(OP_DEPOSIT, "alice", "USD", "100", "d")]),
                                 []))[0] is None  # fmt: skip
    move = encode_request([(OP_MARGIN, PERP, "alice", "40", "m")])
    h.full = {0}
    error, _ = decode_reply(h.handle(move, []))
    assert error == ERR_OVERLOADED and h.shed == 1
    assert h.core.balance("alice", "USD")[0] == h.table.to_units("USD", Decimal(100))
    assert not h.core.margin_moves
    h.full = set()
    error, results = decode_reply(h.handle(move, []))
    assert error is None and results[0]["forwarded"] and len(h.core.margin_moves) == 1
