"""The per-order work of the account tier's hot path, cut without changing a verdict.

An engine shard node checked every forward's shape twice (``ShardCore.forward``, to bound
what it journals, then ``SettledEngine.refusal``); the second check now trusts the first when
it passed the very same command. A replay (no node in front) still checks, and gets the same
events. One account shard owns every account without hashing it.
"""

from __future__ import annotations

import zlib

import pytest

import shardex.accounts.machines as machines
import shardex.node.shard_core as shard_core
from shardex.accounts.ledger import Ledger, account_shard_for
from shardex.accounts.machines import SettledEngine
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import EV_ACCEPTED, EV_REJECTED, GTC, LIMIT, OP_NEW, SELL, STP_NONE
from shardex.node.shard_core import ShardCore
from shardex.wire.protocol import OP_FORWARD, edge_command


def _order(oid: str) -> tuple:
    return (OP_NEW, "BTC-USD", oid, "a1", SELL, LIMIT, 100, 1, GTC, False, STP_NONE)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every command ``edge_command`` is asked about, on the engine shard's path."""
    seen: list[tuple] = []

    def counting(cmd: tuple) -> tuple:
        seen.append(cmd)
        return edge_command(cmd)

    monkeypatch.setattr(machines, "edge_command", counting)
    monkeypatch.setattr(shard_core, "edge_command", counting)
    return seen


def _core() -> tuple[ShardCore, SettledEngine]:
    engine = SettledEngine(Engine(DEFAULT_MARKETS), 0, 1)
    core = ShardCore(0, 1, DEFAULT_MARKETS, engine=engine)  # type: ignore[arg-type]
    core.accounts = 1
    return core, engine


def test_a_forward_of_the_wire_shape_is_checked_once_and_replays_the_same(checks):
    core, engine = _core()
    out: list[tuple] = []
    core.forward(0, 1, 0, _order("o1"), out)
    assert len(checks) == 1  # before: twice (the node's bound, then the engine's refusal)
    assert engine.vetted is None  # (nothing carried to the next command)
    assert [ev[0] for ev in out] == [EV_ACCEPTED]
    replayed: list[tuple] = []
    fresh = SettledEngine(Engine(DEFAULT_MARKETS), 0, 1)
    fresh.apply((OP_FORWARD, 0, 1, 0, _order("o1")), replayed)  # a replay: no node in front
    assert replayed == out
    assert fresh.outgoing == engine.outgoing


def test_a_malformed_forward_is_still_refused_and_settled_back(checks):
    core, engine = _core()
    engine.vetted = _order("o2")  # a stale hint about another object changes nothing
    bad = _order("x" * 100)  # an id longer than the wire allows
    out: list[tuple] = []
    core.forward(0, 1, 0, bad, out)
    assert [ev[0] for ev in out] == [EV_REJECTED]
    assert engine.refusals == 1
    assert [j for j, _ in engine.outgoing] == [0]  # settled back: the hold is released


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_account_ownership_is_the_hash_of_the_account(shards):
    for k in range(200):
        account = f"acct-{k}"
        want = zlib.crc32(account.encode()) % shards
        assert account_shard_for(account, shards) == want
        for shard in range(shards):
            ledger = Ledger.__new__(Ledger)
            ledger.shard, ledger.shards = shard, shards
            assert ledger.owns(account) == (want == shard)
    ledger = Ledger.__new__(Ledger)
    ledger.shard, ledger.shards = 0, shards
    assert not ledger.owns(b"acct-1") and not ledger.owns(None)  # only a string is an account


def test_a_forward_asks_the_link_once_and_a_replay_still_refuses_a_duplicate(monkeypatch):
    """The node's link already found the forward's verdict APPLY (``forward_verdict``), so the
    engine shard's machine does not ask its inbox again for that very record; a replay (no node
    in front) and any other record still ask, so a duplicate is never applied twice."""
    asked: list[tuple] = []
    check = machines.Inbox.check

    def counting(self, sender: int, seq: int, prev: int) -> int:
        asked.append((sender, seq, prev))
        return check(self, sender, seq, prev)

    monkeypatch.setattr(machines.Inbox, "check", counting)
    core, engine = _core()
    out: list[tuple] = []
    core.forward(0, 1, 0, _order("o1"), out)
    assert asked == [] and engine.linked is None  # (nothing carried to the next command)
    engine.apply((OP_FORWARD, 0, 1, 0, _order("o1")), out)  # the same forward again
    assert asked == [(0, 1, 0)] and [ev[0] for ev in out] == [EV_ACCEPTED]  # skipped
    fresh = SettledEngine(Engine(DEFAULT_MARKETS), 0, 1)
    replayed: list[tuple] = []
    for _ in range(2):  # a journal that holds it twice replays it once
        fresh.apply((OP_FORWARD, 0, 1, 0, _order("o1")), replayed)
    assert replayed == out[:1] and fresh.outgoing == engine.outgoing
