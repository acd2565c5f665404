"""How much work one link or gap repair does per request, and how fast a long one goes on.

* An engine shard's gap-repair read (``OP_EVENTS`` for a range older than its ring) replays at
  most 20,000 journaled commands per request, then answers ``pending``: the loop is blocked
  while it replays, and 100,000 commands blocked it for seconds under load, past a replicated
  leader's lease (docs/accounts.md: "at most 20,000 journaled commands per request").
* An account shard re-sending forwards from its journal (an engine shard down for long, its
  ring long gone) sends the next part on every HAVE, also a HAVE that advanced: the rule that
  an advancing HAVE means "the rest is in flight, do not re-send" must not apply while a
  journal re-send is under way, or every other part waits for the next SYNC period.
"""

from __future__ import annotations

import time

import zmq

import shardex.node.accounts as accounts_node
from shardex.accounts.codes import A_DEPOSIT, A_NEW
from shardex.accounts.machines import AccountMachineFactory
from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import BUY, GTC, LIMIT, STP_NONE
from shardex.journal import Journal
from shardex.node.accounts import AccountNode, AccountsConfig
from shardex.node.shard import ShardCore
from shardex.tools.workload import Workload
from shardex.wire.protocol import (
    LINK_FWD,
    LINK_HAVE,
    OP_EVENTS,
    decode_reply,
    encode_request,
    packb,
    unpackb,
)

DOCUMENTED_READ_BUDGET = 20_000  # docs/accounts.md; not imported: the test states the rule


def test_a_gap_repair_read_replays_at_most_20k_journaled_commands_per_request(tmp_path):
    wl = Workload(symbols=("BTC-USD", "ETH-USD"), seed=5)
    journal = Journal(tmp_path / "shard-0", DEFAULT_MARKETS, fsync="none")
    engine = Engine(DEFAULT_MARKETS)
    out: list = []
    commands = 0
    first = None
    while commands < DOCUMENTED_READ_BUDGET + 3_000:
        for cmd in wl.take(1_000):
            journal.add(engine.seq, cmd)
            engine.apply(cmd, out)
        journal.commit()
        commands += 1_000
        if first is None and commands > DOCUMENTED_READ_BUDGET:
            first = engine.seq + 1  # the first event of a command past the budget
    assert first is not None
    last = first + 99
    assert engine.seq >= last
    core = ShardCore(0, 1, DEFAULT_MARKETS, engine=engine, journal=journal, ring_size=16)
    payload = encode_request([(OP_EVENTS, first, last)])
    answers = []
    while True:
        error, (reply,) = decode_reply(core.handle(payload, [], {}))
        assert error is None and "error" not in reply, (error, reply)
        answers.append(reply)
        if reply["events"]:
            break
        assert reply.get("pending") and len(answers) < 10, reply
    # the range lies past 20,000 commands: the first request stopped short of it (pending)
    assert answers[0].get("pending") is True and not answers[0]["events"], (
        "one request replayed past 20,000 journaled commands",
        answers[0],
    )
    assert [tuple(e) for e in answers[-1]["events"]] == [
        tuple(e) for e in out if first <= e[1] <= last
    ]
    journal.close()


ORDERS = 23  # forwards to engine shard 0, far more than its ring of 4 holds
PART = 5  # forwards per HAVE answer (MAX_FORWARD_RESEND, made small)


def _forwarding_account_shard(root) -> None:
    """accounts-0 (of 1, with 1 engine shard) that forwarded ``ORDERS`` orders."""
    factory = AccountMachineFactory(0, 1, lambda _symbol: 0)
    journal = Journal(root / "accounts-0", DEFAULT_MARKETS, machine=factory)
    machine = factory.new(DEFAULT_MARKETS)
    cmds = [(A_DEPOSIT, "alice", "USD", 10**12, "d1")]
    cmds += [(A_NEW, "BTC-USD", f"o{k}", "alice", BUY, LIMIT, 100, 1, GTC, False, STP_NONE, None)
             for k in range(ORDERS)]  # fmt: skip
    for cmd in cmds:
        journal.add(machine.seq, cmd)
        machine.apply(cmd, [])
        journal.commit()
    assert len(machine.core.orders) == ORDERS
    journal.close()


def test_a_forward_resend_from_the_journal_goes_on_at_every_have(tmp_path, monkeypatch):
    """Engine shard 0 lost every forward (it reports HAVE 0); the ring holds the last 4 only,
    so the account shard re-sends from its journal, ``PART`` forwards per answer. The engine
    shard applies each part and reports the new HAVE at once: each such HAVE (it advanced)
    gets the next part at once, until all ``ORDERS`` arrived, chained, in order. On the rule
    before the fix an advancing HAVE got nothing, and the re-send went on only at the next
    repeated HAVE, at most once per SYNC period: half the pace (or less)."""
    monkeypatch.setenv("SHARDEX_LINK_RING", "4")
    monkeypatch.setattr(accounts_node, "MAX_FORWARD_RESEND", PART)
    _forwarding_account_shard(tmp_path)
    ctx = zmq.Context.instance()
    engine = ctx.socket(zmq.ROUTER)
    engine.setsockopt(zmq.ROUTER_MANDATORY, 1)
    engine.setsockopt(zmq.LINGER, 0)
    port = engine.bind_to_random_port("tcp://127.0.0.1")
    cfg = AccountsConfig(0, 1, 1, "tcp://127.0.0.1:1", [f"tcp://127.0.0.1:{port}"],
                         DEFAULT_MARKETS, journal_dir=str(tmp_path / "accounts-0"))  # fmt: skip
    node = AccountNode(cfg)

    def have(seq: int) -> list[tuple]:
        """Report HAVE ``seq`` as engine shard 0 does; the forwards the answer carries."""
        deadline = time.monotonic() + 10
        while True:  # (ROUTER_MANDATORY: refused until the account shard connected)
            try:
                engine.send_multipart([b"accounts-0", LINK_HAVE, packb((0, seq))])
                break
            except zmq.ZMQError:
                assert time.monotonic() < deadline, "account shard never connected"
                time.sleep(0.01)
        while 0 not in node.haves:
            assert time.monotonic() < deadline, "HAVE never read"
            node.from_engines()
            time.sleep(0.005)
        node.flush()
        fwds: list[tuple] = []
        deadline = time.monotonic() + 3  # a flush sends at once: this only bounds a failure
        while time.monotonic() < deadline:
            if not engine.poll(50):
                if fwds:
                    break
                continue
            _peer, kind, payload = engine.recv_multipart()
            if kind == LINK_FWD:
                sender, msgs = unpackb(payload)
                assert sender == 0
                fwds.extend(tuple(m) for m in msgs)
        return fwds

    try:
        got: list[tuple] = []
        at = 0
        answers = 0
        while len(got) < ORDERS:
            part = have(at)
            answers += 1
            assert part, f"HAVE {at} (advanced: {answers > 1}) got no forward; {len(got)} so far"
            assert answers <= ORDERS, "no progress"
            assert part[0][1] == at, f"a part must start right after HAVE {at}: {part[0][:2]}"
            for prev, nxt in zip(part, part[1:], strict=False):
                assert nxt[1] == prev[0], "a part is one chain"
            got.extend(part)
            at = part[-1][0]
        assert [cmd[2] for _seq, _prev, cmd in got] == [f"o{k}" for k in range(ORDERS)]
        assert answers >= ORDERS // PART  # it really went in parts, from the journal
    finally:
        node.close()
        engine.close(0)
