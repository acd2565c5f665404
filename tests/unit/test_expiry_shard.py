"""An engine shard's core (``ShardCore``, no sockets) with expiring orders: the leader journals
``(OP_EXPIRE, ts)`` right after a batch's ``OP_TIME`` when an order's time has come, and on an
idle shard by itself; replaying what it journaled gives the same events. Cancel-all obeys the
key: a trader only for its own accounts, an admin for any."""

from __future__ import annotations

from typing import Any

from shardex.auth import KeyInfo
from shardex.config import load_markets
from shardex.engine import Engine
from shardex.engine.codes import (
    EV_REJECTED,
    GTC,
    GTD,
    OP_CANCEL_ALL,
    OP_EXPIRE,
    OP_NEW,
    OP_TIME,
    REJ_NOT_ALLOWED,
)
from shardex.node.nulljournal import NullJournal
from shardex.node.shard_core import ShardCore
from shardex.wire.protocol import decode_reply, encode_request

MARKETS = load_markets(None)
SYM = "BTC-USD"
T0 = 1_765_000_000_000


class Recorded(NullJournal):
    """A journal that keeps the commands it is given, in order."""

    def __init__(self) -> None:
        self.cmds: list[Any] = []

    def add(self, seq_before: int, cmd: Any) -> None:
        self.cmds.append(cmd)


class _OneKey:
    def __init__(self, key: KeyInfo) -> None:
        self.key = key

    def lookup(self, user: str | None) -> KeyInfo | None:
        return self.key


def _new(oid: str, expire: int | None = None, account: str = "alice", price: int = 100):
    cmd = (OP_NEW, SYM, oid, account, 0, 0, price, 5, GTC if expire is None else GTD, False, 0)
    return cmd if expire is None else (*cmd, None, {"expire": expire})


def _send(core: ShardCore, out: list, *cmds: Any, user: str | None = None) -> Any:
    reply = decode_reply(core.handle(encode_request(list(cmds)), out, {}, user=user))
    core.new_batch()
    return reply


def test_the_leader_journals_the_sweep_and_a_replay_repeats_it():
    now = [T0]
    journal = Recorded()
    core = ShardCore(0, 1, MARKETS, journal=journal)
    core.set_wall(lambda: now[0])
    out: list = []
    _send(core, out, _new("a", T0 + 10), _new("b", T0 + 20, price=99), _new("g", price=98))
    assert not core.expire_due(out)  # nothing due yet
    now[0] = T0 + 10
    _send(core, out, _new("c", price=97))  # a write: its batch's time first, then the sweep
    assert [c[0] for c in journal.cmds[-3:]] == [OP_TIME, OP_EXPIRE, OP_NEW]
    assert out[-2][3:5] == ("a", "expired")
    now[0] = T0 + 25
    assert core.expire_due(out)  # idle: a batch of its own
    assert journal.cmds[-2:] == [(OP_TIME, T0 + 25), (OP_EXPIRE, T0 + 25)]
    assert out[-1][3:5] == ("b", "expired")
    assert not core.expire_due(out)
    again = Engine(MARKETS).apply_many(journal.cmds)
    assert again == out and core.engine.resting() == 2


def test_cancel_all_obeys_the_key():
    trader = KeyInfo("t" * 40, "t-alice", "trader", frozenset({"alice"}))
    admin = KeyInfo("a" * 40, "a-admin", "admin", frozenset())
    core = ShardCore(0, 1, MARKETS, registry=_OneKey(trader))  # type: ignore[arg-type]
    core.engine.apply_many([_new("a1"), _new("b1", account="bob", price=90)])
    out: list = []
    err, (evs,) = _send(core, out, (OP_CANCEL_ALL, SYM, "r", "bob"), user=trader.key)
    assert err is None and evs[0][0] == EV_REJECTED and evs[0][5] == REJ_NOT_ALLOWED
    err, (evs,) = _send(core, out, (OP_CANCEL_ALL, "", "r", "alice"), user=trader.key)
    assert [e[3:5] for e in evs] == [("a1", "cancel_all")]
    core.registry = _OneKey(admin)  # type: ignore[assignment]
    err, (evs,) = _send(core, out, (OP_CANCEL_ALL, SYM, "r", "bob"), user=admin.key)
    assert [e[3:5] for e in evs] == [("b1", "cancel_all")] and core.engine.resting() == 0
