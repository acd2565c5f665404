"""Commands only the cluster itself creates are refused from every client, at every port.

An ``OP_REJECT`` (op 4) sent by a trader key was journaled and published as a ``rejected``
event naming any order id, with the sender's own text; a forward (op 40) or a registration
(op 20) sent by a client became journaled ``unknown_op`` records. Now such a request is refused
whole with ``ERR_INTERNAL_OP`` before anything of it runs: no seq, no journal record, no event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from shardex.accounts.machines import AccountMachineFactory
from shardex.auth import KeyFile, KeyStore, client_socket
from shardex.client import ClientCore
from shardex.engine import DEFAULT_MARKETS
from shardex.engine.codes import EV_REJECTED, OP_NEW, OP_REJECT, REJ_UNKNOWN_SYMBOL
from shardex.node.accounts import AccountHandler
from shardex.node.shard import NullJournal, ShardCore
from shardex.wire.protocol import (
    ERR_INTERNAL_OP,
    OP_FORWARD,
    OP_HELLO,
    OP_STATUS,
    VERSION,
    decode_reply,
    encode_request,
)
from tests.support.cluster import Cluster

VICTIM = "someone-elses-order"
FORGED = [
    [OP_REJECT, "BTC-USD", VICTIM, "forged by a trader", 0],
    [OP_REJECT, "BTC-USD", VICTIM, "forged, no code"],
    [OP_FORWARD, 0, 1, 0, [OP_NEW, "BTC-USD", VICTIM, "alice", 0, 0, 100, 1, 0, False, 0]],
    [OP_HELLO, {"shard": 0, "shards": 1}],
]


def _payload(cmd: list) -> bytes:
    return msgpack.packb([VERSION, [[OP_STATUS], cmd]])  # a harmless read first: all refused


def test_shard_core_refuses_internal_ops_before_anything_runs():
    core = ShardCore(0, 1, DEFAULT_MARKETS)
    for cmd in FORGED:
        out: list = []
        error, results = decode_reply(core.handle(_payload(cmd), out, {}))
        assert error is not None and error.startswith(ERR_INTERNAL_OP), (cmd, error)
        assert results is None and out == [] and core.engine.seq == 0


def test_account_handler_refuses_internal_ops_before_anything_runs():
    machine = AccountMachineFactory(0, 1, lambda _s: 0).new(DEFAULT_MARKETS)
    handler = AccountHandler(machine, NullJournal())
    for cmd in FORGED:
        out: list = []
        error, _ = decode_reply(handler.handle(_payload(cmd), out))
        assert error is not None and error.startswith(ERR_INTERNAL_OP), (cmd, error)
        assert out == [] and machine.seq == 0


def test_the_sdk_answers_its_own_undecodable_commands_without_sending_them():
    codec = ClientCore(markets=DEFAULT_MARKETS, key=False)
    codec.shards = 1
    tuples = [codec.command({"op": "new", "symbol": "NOPE-USD", "id": "x", "account": "a",
                             "side": "buy", "qty": "1", "price": "1"})]  # fmt: skip
    assert tuples[0][0] == OP_REJECT
    assert codec.plan(tuples, 10) == []  # nothing to send
    out: list = [None]
    codec.edge_rejects(tuples, out)
    (ev,) = out[0][1]
    assert ev[0] == EV_REJECTED and ev[1] == 0 and ev[3] == "x"
    assert ev[5] == REJ_UNKNOWN_SYMBOL
    ((err, (d,)),) = codec.decode(out)
    assert err is None and d["code"] == "unknown_symbol"


@pytest.fixture(scope="module")
def secure_tiers() -> Iterator[tuple[Cluster, KeyFile]]:
    cl = Cluster(1, accounts=1)
    try:
        store = KeyStore(cl.keys_dir)
        path = store.add("t-alice", "trader", accounts=["alice"], path=Path(cl.data_dir) / "t.key")
        with cl.client(key=path, timeout=10) as t:  # known to every process (they re-read keys)
            t.status()
        yield cl, KeyFile.read(path)
    finally:
        cl.stop()


def _dealer(endpoint: str, key: KeyFile) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    client_socket(s, key)
    s.connect(endpoint)
    return s


def _ask(sock: zmq.Socket, route: bytes, payload: bytes) -> tuple:
    sock.send_multipart([route, b"q", payload])
    assert sock.poll(10_000), "no reply"
    return decode_reply(sock.recv_multipart()[-1])


def _engine_seq(cl: Cluster) -> int:
    with cl.client() as admin:
        (st,) = admin.status()
    return st["seq"]


def test_a_trader_key_cannot_forge_internal_commands_at_any_port(secure_tiers):
    """Router (to the engine shard and to the account shard), engine shard direct port: every
    forged command is refused with ``ERR_INTERNAL_OP`` and the engine shard's seq (every
    journaled record and published event has one) does not move. The account shard's direct
    port refuses a trader key outright, and an admin key's forgery there too."""
    cl, trader = secure_tiers
    admin = KeyFile.read(cl.key)
    before = _engine_seq(cl)
    ports = [
        (cl.endpoint, trader, b"BTC-USD"),  # router → engine shard 0
        (cl.endpoint, trader, b"#0"),
        (cl.endpoint, trader, b"@alice"),  # router → alice's account shard
        (cl.layout.direct(0), trader, b"BTC-USD"),  # engine shard's direct port
        (cl.layout.account_direct(0), admin, b"x"),  # account shard's direct port (admin only)
    ]
    for endpoint, key, route in ports:
        sock = _dealer(endpoint, key)
        try:
            for cmd in FORGED:
                error, results = _ask(sock, route, encode_request([tuple(cmd)]))
                assert error is not None and error.startswith(ERR_INTERNAL_OP), (
                    endpoint, route, cmd, error, results)  # fmt: skip
        finally:
            sock.close(0)
    assert _engine_seq(cl) == before, "a forged command was sequenced (journaled, published)"
    with cl.client() as c:  # and nothing names the victim's id in the shard's event history
        if before:
            got = c._read(b"#0", (12, 1, before), 0)
            assert VICTIM not in repr(got)
