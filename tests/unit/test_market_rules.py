"""A pair's state and limits (``shardex.engine.admin``) and restricted accounts
(``shardex.accounts.restrict``), pure: every reject with its stable code, a delisting's
cancels, the rules in snapshots, live moves and replays, and their edge forms."""

from __future__ import annotations

from typing import Any

import pytest

from shardex.accounts.codes import A_DEPOSIT, A_NEW, A_RESTRICT, A_WITHDRAW, AE_RESTRICTED
from shardex.accounts.core import AccountCore
from shardex.auth import KeyInfo
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    EV_CANCELLED,
    EV_MARKET,
    EV_REJECTED,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    OP_ADOPT,
    OP_AMEND,
    OP_CANCEL,
    OP_HANDOFF,
    OP_MARKET_RULE,
    OP_NEW,
    SELL,
    reject_name,
)
from shardex.node.market_admin import admin_write
from shardex.node.restrict_service import restrict
from shardex.node.shard_core import ShardCore
from shardex.wire.codes import NOT_ALLOWED
from shardex.wire.market_rules import changes_from_json
from shardex.wire.protocol import OP_RESTRICT
from shardex.wire.pub import check_event
from shardex.wire.schema import event_to_json

P = "BTC-USD"  # tick 0.01, lot 0.0001


def _new(oid: str, side: int, price: int | None, qty: int, account: str = "a",
         otype: int = LIMIT, tif: int = GTC) -> tuple:  # fmt: skip
    return (OP_NEW, P, oid, account, side, otype, price, qty, tif, False, 0)


def _rule(**changes: Any) -> tuple:
    return (OP_MARKET_RULE, P, changes)


def _codes(events: list[tuple]) -> list[str]:
    return [reject_name(e[5]) for e in events if e[0] == EV_REJECTED]


def _traded() -> Engine:
    """An engine whose BTC-USD last traded at 1000.00 (100000 ticks), with a bid resting."""
    e = Engine(DEFAULT_MARKETS)
    e.apply_many([_new("s", SELL, 100000, 10), _new("b", BUY, 100000, 5, "b"),
                  _new("rest", BUY, 99000, 7, "c")])  # fmt: skip
    assert e.books[P].last == 100000
    return e


def test_an_open_pair_without_limits_has_no_gate() -> None:
    e = _traded()
    out = e.apply_many([_rule(band_bps=100), _rule(band_bps=0)])
    assert [ev[0] for ev in out] == [EV_MARKET, EV_MARKET]
    assert out[1][3:] == ("open", 0, 0, 0, 0) and e.books[P].gate is None


@pytest.mark.parametrize(
    ("state", "new", "amend", "cancel"),
    [("halted", "market_halted", "market_halted", "market_halted"),
     ("cancel_only", "cancel_only", "cancel_only", None)],
)  # fmt: skip
def test_halt_and_cancel_only(state: str, new: str, amend: str, cancel: str | None) -> None:
    e = _traded()
    (ev,) = e.apply_many([_rule(state=state)])
    assert ev[0] == EV_MARKET and ev[3] == state
    before = e.books[P].level_orders(0)
    out = e.apply_many([_new("n", BUY, 99500, 1), (OP_AMEND, P, "rest", "c", 3, None)])
    assert _codes(out) == [new, amend]
    assert e.books[P].level_orders(0) == before  # nothing changed
    out = e.apply_many([(OP_CANCEL, P, "rest", "c")])
    assert _codes(out) == ([cancel] if cancel else [])
    out = e.apply_many([_rule(state="open"), _new("n", BUY, 99500, 1), (OP_CANCEL, P, "n", "a")])
    assert [ev[0] for ev in out] == [EV_MARKET, 0, EV_CANCELLED]  # resumed: everything runs
    e.check_integrity()


def test_delist_cancels_every_order_in_priority_order_and_is_final() -> None:
    e = _traded()
    e.apply_many([_new("s2", SELL, 101000, 3, "d"), _new("b2", BUY, 99500, 2, "e")])
    out = e.apply_many([_rule(state="delisted")])
    assert out[0][:4] == (EV_MARKET, out[0][1], P, "delisted")
    assert [(ev[0], ev[3], ev[4], ev[5]) for ev in out[1:]] == [
        (EV_CANCELLED, "b2", "delist", 2), (EV_CANCELLED, "rest", "delist", 7),
        (EV_CANCELLED, "s", "delist", 5), (EV_CANCELLED, "s2", "delist", 3)]  # fmt: skip
    assert e.books[P].orders == {} and e.resting() == 0
    assert e.order_status(P, "d", "s2")["reason"] == "delist"
    out = e.apply_many([_new("x", BUY, 99000, 1), (OP_CANCEL, P, "rest", "c"),
                        _rule(state="open"), _rule(band_bps=5)])  # fmt: skip
    assert _codes(out) == ["delisted", "not_live", "delisted", "delisted"]
    e.check_integrity()


def test_price_band_around_the_last_trade() -> None:
    e = _traded()
    e.apply_many([_rule(band_bps=100)])  # 1 %: 990.00 .. 1010.00
    out = e.apply_many([_new("hi", BUY, 101001, 1), _new("lo", SELL, 98999, 1),
                        _new("ok1", BUY, 99000, 1), _new("ok2", SELL, 101000, 1),
                        _new("mkt", BUY, None, 1, otype=MARKET, tif=IOC)])  # fmt: skip
    assert _codes(out) == ["price_band", "price_band"]
    out = e.apply_many([(OP_AMEND, P, "rest", "c", None, 98000)])  # a new price: banded too
    assert _codes(out) == ["price_band"]
    e.apply_many([_rule(band_bps=50)])  # "rest" at 990.00 now lies outside the band: it may
    out = e.apply_many([(OP_AMEND, P, "rest", "c", 5, None), (OP_AMEND, P, "rest", "c", 4, 99000)])
    assert _codes(out) == [] and e.books[P].orders["rest"].qty == 4  # still shrink in place


def test_no_band_before_the_first_trade() -> None:
    e = Engine(DEFAULT_MARKETS)
    out = e.apply_many([_rule(band_bps=1), _new("far", BUY, 1, 1)])
    assert _codes(out) == [] and e.books[P].last == 0


def test_maximum_order_size_qty_and_notional() -> None:
    e = _traded()
    e.apply_many([_rule(max_qty=20, max_notional=100000 * 10)])  # 20 lots, 10 lots at 1000
    out = e.apply_many([_new("q", BUY, 90000, 21), _new("n", BUY, 99000, 11),
                        _new("m", BUY, None, 11, otype=MARKET, tif=IOC),  # at the last price
                        _new("ok", BUY, 90000, 11)])  # fmt: skip
    assert _codes(out) == ["order_too_large"] * 3


@pytest.mark.parametrize(
    ("changes", "code"),
    [({}, "malformed"), ({"state": "closed"}, "invalid"), ({"colour": 1}, "invalid"),
     ({"band_bps": "5"}, "malformed"), ({"max_qty": -1}, "invalid"),
     ({"band_bps": True}, "malformed"), ({"band_bps": 10**7}, "invalid")],
)  # fmt: skip
def test_bad_rules_are_rejected_and_change_nothing(changes: dict, code: str) -> None:
    e = _traded()
    out = e.apply_many([(OP_MARKET_RULE, P, changes)])
    assert _codes(out) == [code] and e.books[P].gate is None


def test_bad_rule_commands() -> None:
    e = Engine(DEFAULT_MARKETS)
    out = e.apply_many([(OP_MARKET_RULE, "NOPE-USD", {"state": "halted"}),
                        (OP_MARKET_RULE, P), (OP_MARKET_RULE, 7, {}), [OP_MARKET_RULE, P, []]])
    assert _codes(out) == ["unknown_symbol", "malformed", "unknown_symbol", "malformed"]


def test_rules_and_last_price_survive_a_snapshot_and_a_replay() -> None:
    cmds = [_new("s", SELL, 100000, 10), _new("b", BUY, 100000, 5, "b"),
            _rule(state="cancel_only", band_bps=50, max_qty=9), _new("x", BUY, 99000, 1)]
    e = Engine(DEFAULT_MARKETS)
    events = e.apply_many(cmds)
    assert Engine(DEFAULT_MARKETS).apply_many(cmds) == events  # a replay: the same events
    restored = Engine.restore(e.snapshot(), DEFAULT_MARKETS)
    book = restored.books[P]
    assert book.gate.to_wire() == {"state": "cancel_only", "band_bps": 50, "max_qty": 9,
                                   "max_notional": 0, "min_qty": 0} and book.last == 100000
    after = [_new("y", BUY, 99000, 1)]
    assert restored.apply_many(after) == e.apply_many(after)
    with pytest.raises(ValueError, match="bad rules"):
        Engine.restore({**e.snapshot(), "books": {P: {**e.snapshot_pair(P), "rules": [9]}}},
                       DEFAULT_MARKETS)  # fmt: skip


def test_a_live_move_carries_the_rules() -> None:
    src, dst = _traded(), Engine(DEFAULT_MARKETS)
    src.apply_many([_rule(state="halted", band_bps=200)])
    src.apply_many([(OP_HANDOFF, P, 1)])
    out = dst.apply_many([(OP_ADOPT, P, 0, src.moved[P][1], src.handed[P])])
    assert out[0][0] == 6  # adopted
    assert dst.books[P].gate.to_wire()["state"] == "halted" and dst.books[P].last == 100000
    assert _codes(dst.apply_many([_new("n", BUY, 99500, 1)])) == ["market_halted"]


def test_the_market_event_at_the_edge() -> None:
    e = _traded()
    (ev,) = e.apply_many([_rule(state="halted", max_qty=25000, max_notional=10**8)])
    assert check_event(ev, DEFAULT_MARKETS)
    assert event_to_json(ev, DEFAULT_MARKETS) == {
        "ev": "market", "symbol": P, "state": "halted", "band_bps": 0, "max_qty": "2.5000",
        "max_notional": "100.000000", "min_qty": "0", "seq": ev[1]}  # fmt: skip
    assert not check_event((EV_MARKET, 1, P, "open", "x", 0, 0, 0), DEFAULT_MARKETS)
    m = DEFAULT_MARKETS[P]
    assert changes_from_json(m, {"max_qty": "2.5", "max_notional": "100.0000009",
                                 "state": "halted", "band_bps": 3}) == {
        "max_qty": 25000, "max_notional": 10**8, "state": "halted", "band_bps": 3}  # fmt: skip
    for bad in ({"max_qty": "0.00001"}, {"max_qty": "-1"}, {"state": "x"}, {"band_bps": "1"},
                {"max_notional": "abc"}, {"other": 1}, {}):
        with pytest.raises(ValueError):
            changes_from_json(m, bad)


def test_a_restricted_account_cannot_add_risk_or_withdraw() -> None:
    core = AccountCore(DEFAULT_MARKETS)
    out = core.apply_many([(A_DEPOSIT, "al", "USD", 10**9, "d1"), (A_RESTRICT, "al", True)])
    assert out[-1][0] == AE_RESTRICTED and out[-1][2:] == ("al", True)
    new = (A_NEW, P, "o1", "al", BUY, LIMIT, 100000, 1, GTC, False, 0, None)
    out = core.apply_many([new, (A_WITHDRAW, "al", "USD", 1, "w1"),
                           (A_DEPOSIT, "al", "USD", 1, "d2")])  # fmt: skip
    assert [reject_name(e[5]) for e in out if e[0] == 2] == ["account_restricted"] * 2
    assert core.orders == {} and core.balances["al"]["USD"] == [10**9 + 1, 0]
    restored = AccountCore.restore(core.snapshot(), DEFAULT_MARKETS)
    assert restored.restricted == {"al"}
    out = restored.apply_many([(A_RESTRICT, "al", False), new])
    assert not [e for e in out if e[0] == 2] and restored.orders  # held, forwarded
    out = core.apply_many([(A_RESTRICT, "al", "yes"), (A_RESTRICT, "", True)])
    assert [reject_name(e[5]) for e in out] == ["malformed", "malformed"]


def test_rules_and_restrictions_need_an_admin_key() -> None:
    """A trader's key is refused ``not_allowed`` before anything is journaled: the engine
    shard's rule write (``node.market_admin``) and the account shard's restrict."""
    trader = KeyInfo("k" * 40, "t", "trader", frozenset({"al"}))
    core = ShardCore(0, 1, DEFAULT_MARKETS)
    core.key = trader
    out: list[tuple] = []
    refused = admin_write(core, _rule(state="halted"), out)
    assert refused["error"][0] == NOT_ALLOWED and out == [] and core.engine.seq == 0
    core.key = None  # (insecure: no keys) runs it
    assert admin_write(core, _rule(state="halted"), out)[0][0] == EV_MARKET

    class Handler:  # (the account shard's handler as ``restrict`` uses it)
        key = trader

        @staticmethod
        def _map_rej(reason: str, code: int) -> dict[str, Any]:
            return {"rejected": reason, "code": reject_name(code)}

        def journal_apply(self, cmd: tuple, out: list) -> int:
            raise AssertionError("journaled a refused command")

    assert restrict(Handler(), (OP_RESTRICT, "al", True), [])["code"] == "not_allowed"
    assert restrict(Handler(), (OP_RESTRICT, "al", 1), [])["code"] == "malformed"
