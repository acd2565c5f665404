"""A journal replays only with the routing (engine shard count N) it was written under.

Before, an engine shard replayed its forwarded orders under a new N and turned orders it had
accepted into refusals (`symbol belongs to engine shard 1`), and an account shard rebuilt its
forward chains per engine shard under the new N and re-sent them to the new owners. Both tiers'
recovery now refuses a journal whose data dir records another N, and their snapshots carry N.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from shardex.accounts.machines import AccountMachineFactory, SettledEngineFactory
from shardex.clock import REAL
from shardex.datadir import SHARDS_FILE, check_shard_count, recorded_shards
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import GTC, LIMIT, OP_NEW, SELL, STP_NONE
from shardex.journal import Journal, JournalError
from shardex.net import ZMQ
from shardex.node.accounts import AccountNode, AccountsConfig
from shardex.node.shard import ShardConfig, ShardNode
from shardex.wire.protocol import OP_FORWARD, shard_for
from tests.support.journals import _account_dir, _forwarded_journal, _order


def _engine_recover(data: Path, shards: int):
    cfg = ShardConfig(0, shards, None, None, "inproc://x", DEFAULT_MARKETS, accounts=1,
                      journal_dir=str(data / "shard-0"))  # fmt: skip
    return ShardNode.recover(SimpleNamespace(cfg=cfg, ctx=None, key=None, clock=REAL, zmq=ZMQ))  # type: ignore[arg-type]


def _accounts_recover(data: Path, engines: int):
    cfg = AccountsConfig(0, 1, engines, "inproc://r", ["inproc://e"] * engines, DEFAULT_MARKETS,
                         journal_dir=str(data / "accounts-0"))  # fmt: skip
    return AccountNode.recover(SimpleNamespace(cfg=cfg, ctx=None, key=None, clock=REAL, zmq=ZMQ))  # type: ignore[arg-type]


def test_engine_shard_never_replays_accepted_forwards_as_refusals(tmp_path):
    # 1 shard, tier on: shard 0 accepted ETH-USD (shard 1's under N = 2) and it rests
    _forwarded_journal(tmp_path, 0, 1, ["ETH-USD", "BTC-USD"])
    check_shard_count(tmp_path, 1, DEFAULT_MARKETS)
    assert recorded_shards(tmp_path) == 1
    engine, journal = _engine_recover(tmp_path, 1)
    assert engine.resting() == 2
    journal.close()
    with pytest.raises(JournalError, match=r"written with 1 engine shard\(s\), not 2"):
        _engine_recover(tmp_path, 2)  # before: started with ETH-USD's order refused on replay


def test_engine_snapshot_carries_its_routing(tmp_path):
    _forwarded_journal(tmp_path, 0, 1, ["ETH-USD"])
    factory = SettledEngineFactory(0, 1, 1)
    j = Journal(tmp_path / "shard-0", DEFAULT_MARKETS, machine=factory)
    j.snapshot(j.recover().engine)
    j.close()
    assert not (tmp_path / SHARDS_FILE).exists()  # no record: the snapshot still tells
    with pytest.raises(JournalError, match="written with 1 engine shards, not 2"):
        Journal(tmp_path / "shard-0", DEFAULT_MARKETS, machine=SettledEngineFactory(0, 1, 2)
                ).recover()  # fmt: skip


def test_account_shard_never_rebuilds_its_forward_chains_under_another_routing(tmp_path):
    _account_dir(tmp_path, 2, ["BTC-USD", "ETH-USD"], snapshot=False)
    (tmp_path / SHARDS_FILE).write_text('{"shards": 2}\n')
    machine, journal = _accounts_recover(tmp_path, 2)
    assert machine.core.outbox.last == {0: 3, 1: 5}  # one chain per engine shard of 2
    journal.snapshot(machine)
    journal.close()
    with pytest.raises(JournalError, match=r"written with 2 engine shard\(s\), not 1"):
        _accounts_recover(tmp_path, 1)  # before: one chain to shard 0, re-sent from its have
    (tmp_path / SHARDS_FILE).unlink()
    with pytest.raises(JournalError, match="written with 2 engine shards, not 3"):
        _accounts_recover(tmp_path, 3)  # no record: its snapshot tells
    factory = AccountMachineFactory(0, 1, lambda s: shard_for(s, 2), engines=2)
    assert Journal(tmp_path / "accounts-0", DEFAULT_MARKETS, machine=factory).recover().engine


def test_account_shard_halts_when_an_engine_shard_holds_more_of_its_chain(tmp_path):
    """The last line of defence: an engine shard whose HAVE says it applied forwards beyond
    this account shard's chain to it (chains rebuilt under another routing, however that came
    about) halts the account shard: no re-send, no forward, new orders refused, ALERT. Before,
    it re-sent everything after the engine's HAVE on the rebuilt chains."""
    import time

    import zmq

    from shardex.wire.protocol import LINK_HAVE, decode_reply, encode_request, packb

    _account_dir(tmp_path, 1, ["BTC-USD"], snapshot=False)  # its chain to engine 0 ends at 3
    ctx = zmq.Context.instance()
    engine = ctx.socket(zmq.ROUTER)
    engine.setsockopt(zmq.ROUTER_MANDATORY, 1)
    engine.setsockopt(zmq.LINGER, 0)
    port = engine.bind_to_random_port("tcp://127.0.0.1")
    cfg = AccountsConfig(0, 1, 1, "tcp://127.0.0.1:1", [f"tcp://127.0.0.1:{port}"],
                         DEFAULT_MARKETS, journal_dir=str(tmp_path / "accounts-0"))  # fmt: skip
    node = AccountNode(cfg)
    try:
        assert node.machine.core.outbox.last == {0: 3}

        def have(seq: int) -> None:
            deadline = time.monotonic() + 10
            while True:  # (ROUTER_MANDATORY: refused until the account shard connected)
                try:
                    engine.send_multipart([b"accounts-0", LINK_HAVE, packb((0, seq))])
                    break
                except zmq.ZMQError:
                    assert time.monotonic() < deadline, "account shard never connected"
                    time.sleep(0.01)
            deadline = time.monotonic() + 10
            while 0 not in node.haves and node.handler.halted is None:
                assert time.monotonic() < deadline, "HAVE never read"
                node.from_engines()
                time.sleep(0.01)

        have(3)
        assert node.handler.halted is None and node.haves == {0: 3}
        node.haves.clear()
        have(50)
        assert "up to seq 50, its chain to it ends at 3" in (node.handler.halted or "")
        assert node.haves == {}  # nothing is re-sent on it
        order = _order("BTC-USD", "o9")
        error, _ = decode_reply(node.handler.handle(encode_request([order]), []))
        assert error is not None and error.startswith("halted: engine shard 0"), error
        assert node.handler.status()["halted"] == node.handler.halted
    finally:
        node.close()
        engine.close(0)


def test_engine_shard_recovery_sends_no_replayed_settlement_blindly(tmp_path):
    """A trade's settlements regenerated by the replay stay in the rings (the account shard's
    first SYNC asks for what it lacks); before, the restarted node sent them all at once before
    any account shard's link id was known and counted every one ``unsent`` (7,120 on a
    dashboard after a crash restart), holding them in memory meanwhile."""
    factory = SettledEngineFactory(0, 1, 1)
    j = Journal(tmp_path / "shard-0", DEFAULT_MARKETS, machine=factory)
    engine = factory.new(DEFAULT_MARKETS)
    sell = (OP_NEW, "BTC-USD", "s1", "bob", SELL, LIMIT, 100, 1, GTC, False, STP_NONE)
    out: list = []
    for k, cmd in enumerate((_order("BTC-USD", "b1"), sell), start=1):
        fwd = (OP_FORWARD, 0, k, k - 1, cmd)
        j.add(engine.seq, fwd)
        engine.apply(fwd, out)
        j.commit()
    j.close()
    assert engine.outgoing, "the trade settles: the live engine had settlements to send"
    recovered, journal = _engine_recover(tmp_path, 1)
    try:
        assert recovered.outgoing == []
        msgs, complete = recovered.resend(0, 0)  # what a SYNC with have 0 gets: all of them
        assert complete and [m for _, m in engine.outgoing] == msgs
    finally:
        journal.close()
