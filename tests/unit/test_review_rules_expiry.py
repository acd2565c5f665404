"""Attacks on markets at runtime and expiring orders that once got through: each test names
the hole it closes (the pure engine and the data dir check; no process, no socket)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shardex.datadir import DataDirError, check_data_dir, scan
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    DAY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    GTC,
    GTD,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_MARKET_RULE,
    OP_NEW,
    OP_TIME,
    REJ_MALFORMED,
    REJ_MARKET_HALTED,
    STOP_LIMIT,
    reject_name,
)
from shardex.engine.expiry import day_end
from shardex.journal import Journal
from shardex.wire.market_rules import changes_from_json
from shardex.wire.protocol import shard_for

SYM, OTHER = "BTC-USD", "ETH-USD"
T0 = 1_765_000_000_000  # some exchange time (ms)


def _new(oid: str, symbol: Any = SYM, tif: int = GTC, expire: int | None = None) -> tuple:
    cmd = (OP_NEW, symbol, oid, "al", 0, 0, 100, 5, tif, False, 0)
    return cmd if expire is None else cmd + (None, {"expire": expire})


def _run(engine: Engine, *cmds: Any) -> list:
    out: list = []
    for cmd in cmds:
        engine.apply(cmd, out)
    return out


def _engine() -> Engine:
    engine = Engine(DEFAULT_MARKETS)
    _run(engine, (OP_TIME, T0))
    return engine


def test_cancel_all_of_a_halted_pair_is_refused_like_a_cancel() -> None:
    """A halt freezes the book, cancels included: cancel-all (a trader's) must not empty it.
    Without a pair it skips the halted ones and still cancels in the open ones."""
    eng = _engine()
    _run(eng, _new("a"), _new("g", tif=GTD, expire=T0 + 10), _new("o", OTHER))
    _run(eng, (OP_MARKET_RULE, SYM, {"state": "halted"}))
    out = _run(eng, (OP_CANCEL_ALL, SYM, "r1", "al"))
    assert [(e[0], e[5]) for e in out] == [(EV_REJECTED, REJ_MARKET_HALTED)], out
    out = _run(eng, (OP_CANCEL_ALL, "", "r2", "al"))
    assert [(e[0], e[2], e[3]) for e in out] == [(EV_CANCELLED, OTHER, "o")], out
    assert set(eng.books[SYM].orders) == {"a", "g"}
    out = _run(eng, (OP_CANCEL_ALL, SYM, "r3", "al", 5_000))  # arming changes no book
    assert out == [] and eng.expiry.switches == {(SYM, "al"): T0 + 5_000}
    _run(eng, (OP_MARKET_RULE, SYM, {"state": "open"}))
    out = _run(eng, (OP_CANCEL_ALL, SYM, "r4", "al"))
    assert [(e[0], e[3]) for e in out] == [(EV_CANCELLED, "a"), (EV_CANCELLED, "g")]


@pytest.mark.parametrize("bad", [["x"], {}], ids=["list", "map"])
@pytest.mark.parametrize("where", [1, 2], ids=["symbol", "id"])
def test_a_new_order_with_options_and_an_unhashable_field_is_rejected(where: int, bad: Any) -> None:
    """``Engine.apply`` turns anything into a ``rejected`` event: a 13-field new order whose
    symbol or id is unhashable raised TypeError out of it (the options path ran unguarded)."""
    eng = _engine()
    for cmd in (_new("x", tif=GTD, expire=T0 + 5), _new("y", tif=GTC) + (None, {})):
        cmd = cmd[:where] + (bad,) + cmd[where + 1 :]
        out = _run(eng, cmd)
        assert [(e[0], e[5]) for e in out] == [(EV_REJECTED, REJ_MALFORMED)], out
    assert [e[0] for e in _run(eng, _new("z"))] == [EV_ACCEPTED]  # still sound


def _journal(root: Path, index: int, cmds: list[tuple]) -> Engine:
    j = Journal(root / f"shard-{index}", DEFAULT_MARKETS)
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    for cmd in cmds:
        j.add(engine.seq, cmd)
        engine.apply(cmd, out)
        j.commit()
    j.close()
    return engine


@pytest.mark.parametrize(
    "cmd",
    [(OP_MARKET_RULE, OTHER, {"state": "delisted"}), (OP_CANCEL_ALL, OTHER, "r", "al", 9_000)],
    ids=["market-rule", "dead-man"],
)
def test_a_pair_only_a_rule_or_a_switch_touched_still_blocks_a_shard_count_change(
    tmp_path: Path, cmd: tuple
) -> None:
    """A pair delisted (or banded, halted, given a dead-man switch) before it ever had an order
    holds a book with that state: a shard count that routes it elsewhere would start it fresh
    there (a delisted pair open again), so the data dir check must see it."""
    assert shard_for(OTHER, 2) == 1
    engine = _journal(tmp_path, 0, [cmd])
    assert OTHER in engine.books
    (d,) = scan(tmp_path, DEFAULT_MARKETS)
    assert d.pairs == {OTHER}
    check_data_dir(tmp_path, 1, DEFAULT_MARKETS)
    with pytest.raises(DataDirError, match=r"ETH-USD \(→ shard 1\)"):
        check_data_dir(tmp_path, 2, DEFAULT_MARKETS)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_qty": "1e40"},
        {"max_qty": "1e999999"},
        {"max_notional": "1e999999"},
        {"max_notional": "0.0000001"},
        {"max_qty": "1e-99999999"},
    ],  # fmt: skip
    ids=["qty-huge", "qty-vast", "notional-vast", "notional-below-grid", "qty-underflow"],
)
def test_a_limit_that_cannot_be_kept_is_a_value_error_never_a_lifted_limit(changes: dict) -> None:
    """The admin's decimal limits (SDK ``set_market``, ``shardex market set-max``): a value
    the decimal context cannot divide raised ``decimal.InvalidOperation`` (a traceback, not a
    usage error), and a positive limit below one tick x lot became 0 -- no limit at all."""
    market = DEFAULT_MARKETS[SYM]
    with pytest.raises(ValueError, match="max_"):
        changes_from_json(market, changes)
    # what a limit on the grid gives, exactly (ticks x lots, lots)
    assert changes_from_json(market, {"max_notional": "0.000001", "max_qty": "0.0001"}) == {
        "max_notional": 1, "max_qty": 1}  # fmt: skip


def test_the_expiry_index_does_not_grow_with_cancelled_orders() -> None:
    """A maker churning day (or gtd) orders -- place, cancel, place -- while an order that
    expires sooner rests: each cancelled order's index entry stayed (lazy deletion drops one
    only when it reaches the top, behind the live earlier one), so memory grew without bound.
    Compaction keeps the index within a constant factor of the live expiring orders, and the
    sweep still cancels exactly the live ones, in order."""
    eng = _engine()
    _run(eng, _new("early", tif=GTD, expire=T0 + 3_600_000))
    for i in range(3_000):
        _run(eng, (OP_NEW, SYM, f"c{i}", "mm", 1, 0, 200, 5, DAY, False, 0),
             (OP_CANCEL, SYM, f"c{i}", "mm"))  # fmt: skip
    _run(eng, (OP_NEW, SYM, "kept", "mm", 1, 0, 200, 5, DAY, False, 0))
    index = eng.expiry  # (3,002 entries without compaction; with it, at most 2 x 1024)
    assert len(index.heap) <= 2048 and sum(map(len, index.by_pair.values())) <= 2048
    out = _run(eng, (OP_TIME, day_end(T0)), (OP_EXPIRE, day_end(T0)))
    assert [(e[0], e[3], e[4]) for e in out] == [
        (EV_CANCELLED, "early", "expired"), (EV_CANCELLED, "kept", "expired")]  # fmt: skip
    assert eng.resting() == 0


def _stop(oid: str, account: str = "al") -> tuple:
    """A pending stop-limit buy (trigger 110, limit 120): waits, off the order book."""
    return (OP_NEW, SYM, oid, account, 0, STOP_LIMIT, 120, 5, GTC, False, 0, None,
            {"trigger": 110})  # fmt: skip


@pytest.mark.parametrize(
    ("cmds", "reason"),
    [
        ([(OP_CANCEL_ALL, SYM, "r", "al")], "cancel_all"),
        ([(OP_CANCEL_ALL, "", "r", "al")], "cancel_all"),
        ([(OP_CANCEL_ALL, SYM, "r", "al", 5), (OP_TIME, T0 + 5), (OP_EXPIRE, T0 + 5)], "deadman"),
        ([(OP_MARKET_RULE, SYM, {"state": "delisted"})], "delist"),
    ],
    ids=["cancel-all", "cancel-all-every-pair", "dead-man", "delist"],
)
def test_pending_stop_orders_go_with_cancel_all_dead_man_and_delist(cmds: list, reason: str):
    """A pending stop order is an open order of its account (its hold is taken on the account
    tier): cancel-all, a dead-man switch firing and a delisting cancel it too (after the
    resting ones), or a dead session's stop fires later and a delisted pair's hold is stuck."""
    eng = _engine()
    _run(eng, _new("a"), _stop("s1"), _stop("s2", "bo"))
    out = _run(eng, *cmds)
    gone = [(e[3], e[4]) for e in out if e[0] == EV_CANCELLED]
    mine = [("a", reason), ("s1", reason)]
    assert gone == (mine + [("s2", reason)] if reason == "delist" else mine), out
    assert eng.order_status(SYM, "al", "s1")["state"] == "cancelled"
    if reason != "delist":
        assert eng.order_status(SYM, "bo", "s2")["state"] == "pending"  # another account's


@pytest.mark.parametrize(
    ("rule", "code"),
    [({"state": "halted"}, "market_halted"), ({"state": "cancel_only"}, "cancel_only"),
     ({"state": "delisted"}, "delisted"), ({"max_qty": 1}, "order_too_large")],  # fmt: skip
    ids=["halted", "cancel-only", "delisted", "max-qty"],
)
def test_a_stop_order_obeys_its_pairs_state_and_limits(rule: dict, code: str) -> None:
    """A stop order is a new order: a halted, cancel-only or delisted pair refuses it, and so
    does a maximum order size it exceeds (it was accepted and waited, holding funds)."""
    eng = _engine()
    _run(eng, (OP_MARKET_RULE, SYM, rule))
    out = _run(eng, _stop("s1"))
    assert [(e[0], reject_name(e[5])) for e in out] == [(EV_REJECTED, code)], out


def test_a_halt_freezes_pending_stop_orders_too() -> None:
    """A halt refuses cancels: a pending stop order's cancel was run by its own path."""
    eng = _engine()
    _run(eng, _stop("s1"), (OP_MARKET_RULE, SYM, {"state": "halted"}))
    out = _run(eng, (OP_CANCEL, SYM, "s1", "al"))
    assert [(e[0], e[5]) for e in out] == [(EV_REJECTED, REJ_MARKET_HALTED)], out
    _run(eng, (OP_MARKET_RULE, SYM, {"state": "open"}))
    out = _run(eng, (OP_CANCEL, SYM, "s1", "al"))
    assert [(e[0], e[3], e[4]) for e in out] == [(EV_CANCELLED, "s1", "user")], out
