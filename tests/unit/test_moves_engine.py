"""A live move of one pair at the engine: the source's hand-off and the target's adoption are
journaled commands (``shardex.engine.moves``), so the pair's book on the target equals one
engine's replay of the pair's whole history, each journal replays to its engine's state, and
the settlement records travel with the pair (``shardex.accounts.moves``)."""

from __future__ import annotations

import random

import msgpack
import pytest

from shardex.accounts.codes import S_TRADE
from shardex.accounts.core import account_shard_for
from shardex.accounts.machines import SettledEngineFactory
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import (
    BUY,
    EV_ADOPTED,
    EV_MOVED,
    EV_REJECTED,
    EV_TRADE,
    GTC,
    LIMIT,
    OP_ADOPT,
    OP_AMEND,
    OP_CANCEL,
    OP_HANDOFF,
    OP_NEW,
    REJ_MOVING,
    SELL,
)
from shardex.wire.layouts import (
    ADOPTED_TRADE_ID,
    EV_KIND,
    EV_SEQ,
    MOVED_TO,
    MOVED_TRADE_ID,
    REJECTED_CODE,
    S_ESHARD,
    S_KIND,
    TRADE_ID,
)
from shardex.wire.protocol import OP_FORWARD

P, Q = "BTC-USD", "ETH-USD"


def _orders(symbol: str, n: int, seed: int, tag: str) -> list[tuple]:
    """A reproducible stream of news, cancels and amends on ``symbol`` (crossing often)."""
    rnd = random.Random(seed)
    cmds: list[tuple] = []
    for k in range(n):
        roll = rnd.random()
        acct = f"a{rnd.randrange(4)}"
        if roll < 0.15 and k:
            cmds.append((OP_CANCEL, symbol, f"{tag}{rnd.randrange(k)}", acct))
        elif roll < 0.25 and k:
            cmds.append((OP_AMEND, symbol, f"{tag}{rnd.randrange(k)}", acct, None,
                         rnd.randrange(990, 1010)))  # fmt: skip
        else:
            side = BUY if rnd.random() < 0.5 else SELL
            cmds.append((OP_NEW, symbol, f"{tag}{k}", acct, side, LIMIT, rnd.randrange(990, 1010),
                         rnd.randrange(1, 6), GTC, False, 0))  # fmt: skip
    return cmds


def _wire(obj: object) -> object:
    """``obj`` as the journal and the wire give it back (msgpack: tuples, no lists)."""
    return msgpack.unpackb(msgpack.packb(obj), use_list=False)


def _book_view(engine: Engine, symbol: str) -> tuple:
    """A pair's book without the engine-local seqs: trade-id counter and orders in priority."""
    state = engine.snapshot_pair(symbol)
    side = lambda rows: [tuple(r[:7]) for r in rows]  # noqa: E731 - (id..filled, not the seq)
    return state["trade_id"], side(state["bids"]), side(state["asks"])


def _run(engine: Engine, cmds: list[tuple], journal: list[tuple]) -> list[tuple]:
    out: list[tuple] = []
    for cmd in cmds:
        engine.apply(cmd, out)
        journal.append(cmd)
    return out


def test_the_moved_book_equals_a_replay_of_the_pairs_whole_history() -> None:
    before, after = _orders(P, 600, 1, "x"), _orders(P, 400, 2, "x")[100:]
    after = [c[:2] + (f"y{c[2]}",) + c[3:] if c[0] == OP_NEW else c for c in after]
    after += [(OP_CANCEL, P, c[2], c[3]) for c in before[::7] if c[0] == OP_NEW]
    src, dst, ja, jb = Engine(DEFAULT_MARKETS), Engine(DEFAULT_MARKETS), [], []
    _run(src, _orders(Q, 200, 3, "q"), ja)
    _run(dst, _orders(Q, 50, 4, "r"), jb)
    ev_src = _run(src, before, ja)
    (moved,) = _run(src, [(OP_HANDOFF, P, 1)], ja)
    assert moved[EV_KIND] == EV_MOVED and moved[MOVED_TO] == 1
    assert P not in src.books and src.moved[P] == (1, moved[EV_SEQ])
    state = _wire(src.handed[P])
    (adopted,) = _run(dst, [(OP_ADOPT, P, 0, moved[EV_SEQ], state)], jb)
    assert adopted[EV_KIND] == EV_ADOPTED
    assert adopted[ADOPTED_TRADE_ID] == moved[MOVED_TRADE_ID] == src.handed[P]["trade_id"]
    ev_dst = _run(dst, after, jb)

    reference, jr = Engine(DEFAULT_MARKETS), []
    ev_ref = _run(reference, before + after, jr)
    assert _book_view(dst, P) == _book_view(reference, P)
    trades = lambda evs: [e[3:] for e in evs if e[EV_KIND] == EV_TRADE]  # noqa: E731
    assert trades(ev_src) + trades(ev_dst) == trades(ev_ref)  # same fills, same trade ids
    ids = [e[TRADE_ID] for e in ev_src + ev_dst if e[EV_KIND] == EV_TRADE]
    assert ids == list(range(1, len(ids) + 1))  # contiguous across the move

    for engine, journal in ((src, ja), (dst, jb)):  # each journal replays to its engine
        again = Engine(DEFAULT_MARKETS)
        again.apply_many(_wire(journal))
        again.check_integrity()
        assert again.snapshot() == engine.snapshot()
        restored = Engine.restore(_wire(engine.snapshot()), DEFAULT_MARKETS)
        assert _wire(restored.snapshot()) == _wire(engine.snapshot())


def test_after_the_handoff_the_source_answers_moving_and_never_makes_a_book_again() -> None:
    src = Engine(DEFAULT_MARKETS)
    src.apply_many(_orders(P, 50, 5, "x"))
    src.apply_many([(OP_HANDOFF, P, 3)])
    out = src.apply_many([
        (OP_NEW, P, "late", "a1", BUY, LIMIT, 1000, 1, GTC, False, 0),
        (OP_CANCEL, P, "x1", "a1"),
        (OP_AMEND, P, "x2", "a2", 1, None),
        (OP_HANDOFF, P, 3),  # again: refused, nothing changes
    ])  # fmt: skip
    assert [(e[EV_KIND], e[REJECTED_CODE]) for e in out] == [(EV_REJECTED, REJ_MOVING)] * 4
    assert P not in src.books and "shard 3" in out[0][4]
    src.check_integrity()


def test_on_the_target_resting_orders_amend_cancel_and_older_orders_answer_their_status() -> None:
    src, dst = Engine(DEFAULT_MARKETS), Engine(DEFAULT_MARKETS)
    src.apply_many([
        (OP_NEW, P, "rest", "al", BUY, LIMIT, 1000, 5, GTC, False, 0),
        (OP_NEW, P, "gone", "bo", SELL, LIMIT, 1000, 2, GTC, False, 0),  # fills 2 of "rest"
        (OP_NEW, P, "ask", "bo", SELL, LIMIT, 1010, 4, GTC, False, 0),
    ])  # fmt: skip
    (moved,) = src.apply_many([(OP_HANDOFF, P, 1)])
    dst.apply_many([(OP_ADOPT, P, 0, moved[EV_SEQ], _wire(src.handed[P]))])
    assert dst.order_status(P, "bo", "gone")["state"] == "filled"
    live = dst.order_status(P, "al", "rest")
    assert (live["state"], live["qty"], live["filled"]) == ("live", 3, 2)
    out = dst.apply_many([(OP_AMEND, P, "rest", "al", 1, None), (OP_CANCEL, P, "ask", "bo"),
                          (OP_NEW, P, "t", "cy", SELL, LIMIT, 1000, 1, GTC, False, 0)])  # fmt: skip
    assert [e[EV_KIND] for e in out] == [4, 2, 0, EV_TRADE]
    assert out[-1][TRADE_ID] == 2  # the pair's trade-id counter continued
    assert dst.order_status(P, "al", "rest")["state"] == "filled"
    out = dst.apply_many([(OP_NEW, P, "gone", "bo", BUY, LIMIT, 900, 1, GTC, False, 0)])
    assert out[0][REJECTED_CODE] == 6  # duplicate_id: the recent window came along


@pytest.mark.parametrize("bad", [
    (OP_ADOPT, P, 0, 5),  # no state
    (OP_ADOPT, P, 0, 0, {"trade_id": 0, "bids": (), "asks": ()}),  # seq 0
    (OP_ADOPT, "NOPE-USD", 0, 5, {"trade_id": 0, "bids": (), "asks": ()}),
    (OP_ADOPT, P, 0, 5, {"trade_id": -1, "bids": (), "asks": ()}),
    (OP_HANDOFF, P, "one"),
    (OP_HANDOFF, P),
])  # fmt: skip
def test_a_bad_move_command_is_one_rejected_event_and_changes_nothing(bad: tuple) -> None:
    engine = Engine(DEFAULT_MARKETS)
    engine.apply_many([(OP_NEW, P, "o", "al", BUY, LIMIT, 1000, 5, GTC, False, 0)])
    before = engine.snapshot()
    (ev,) = engine.apply_many([bad])
    assert ev[EV_KIND] == EV_REJECTED
    assert {**engine.snapshot(), "seq": before["seq"]} == before


def test_the_adoption_of_an_already_trading_pair_is_refused() -> None:
    a, b = Engine(DEFAULT_MARKETS), Engine(DEFAULT_MARKETS)
    a.apply_many([(OP_NEW, P, "o", "al", BUY, LIMIT, 1000, 5, GTC, False, 0), (OP_HANDOFF, P, 1)])
    b.apply_many([(OP_NEW, P, "z", "bo", BUY, LIMIT, 990, 1, GTC, False, 0)])
    (ev,) = b.apply_many([(OP_ADOPT, P, 0, 2, _wire(a.handed[P]))])
    assert ev[EV_KIND] == EV_REJECTED and list(b.books[P].orders) == ["z"]


def test_settlement_records_travel_with_the_pair_and_fills_on_the_target_settle() -> None:
    """With the account tier on, a fill on the target settles to the maker's account shard
    with the maker's account (the feed record came along) on the target's own chain, and the
    target takes forwards for the adopted pair although the hash names the source."""
    src = SettledEngineFactory(0, 2, engines=2).new(DEFAULT_MARKETS)
    dst = SettledEngineFactory(1, 2, engines=2).new(DEFAULT_MARKETS)
    maker = (OP_NEW, P, "m1", "maker", BUY, LIMIT, 1000, 3, GTC, False, 0)
    src.apply(maker, [])
    src.outgoing.clear()
    out: list[tuple] = []
    src.apply((OP_HANDOFF, P, 1), out)
    assert out[0][EV_KIND] == EV_MOVED and not src.feed.live and not src.outgoing
    assert src.handed[P]["feed"] == [["m1", "maker", 3]]
    dst.apply((OP_ADOPT, P, 0, out[0][EV_SEQ], _wire(src.handed[P])), [])
    assert dst.feed.live == {(P, "m1"): ["maker", 3]}
    taker = (OP_NEW, P, "t1", "taker", SELL, LIMIT, 1000, 1, GTC, False, 0)
    j = account_shard_for("taker", 2)
    events: list[tuple] = []
    dst.apply((OP_FORWARD, j, 1, 0, taker), events)  # shard_for(P, 2) is 0: taken all the same
    assert [e[EV_KIND] for e in events] == [0, EV_TRADE]
    settled = [msg for _, msg in dst.outgoing if msg[S_KIND] == S_TRADE]
    assert settled and all(m[S_ESHARD] == 1 and m[9] == "maker" for m in settled)
    refused: list[tuple] = []
    src.apply((OP_FORWARD, j, 1, 0, taker), refused)  # the source refuses it: moving
    assert refused[0][REJECTED_CODE] == REJ_MOVING
