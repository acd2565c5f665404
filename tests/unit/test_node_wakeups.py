"""What one wake-up of a node's loop does, turn by turn, on the in-memory transport: replies
leave in the turn that read their request, and a turn reads only the sockets its poll
reported (and the link to the other tier, whatever the poll said). The cluster is built but
its scheduler never runs: the test calls ``turn()`` itself, so each assertion is about one
wake-up. (CPU: well under a second.)"""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from shardex.inproc import InProcCluster
from shardex.wire.protocol import OP_BALANCE, decode_reply, encode_request
from tests.support.inproc import plan

pytestmark = pytest.mark.timeout(30)


def _cluster() -> InProcCluster:
    cluster = InProcCluster(plan(1, 1))
    for node in cluster.nodes:
        node.start()
    return cluster


def _client(cluster: InProcCluster, endpoint: str) -> Any:
    sock = cluster.net.Context().socket(zmq.DEALER)
    sock.connect(endpoint)
    return sock


def test_a_direct_request_to_an_account_shard_is_answered_in_the_turn_that_read_it():
    """A client's read on the account shard's direct port is answered after the group commit
    of the turn that read it, not left waiting for the next turn that finds a message (which,
    with nothing else arriving, is the next SYNC's HAVE: up to a second later)."""
    cluster = _cluster()
    acc = cluster.accounts[0]
    cl = _client(cluster, acc.cfg.direct)
    cl.send_multipart([b"%0", b"r1", encode_request([(OP_BALANCE, "alice")])])
    acc.turn()
    assert cl.inbox, "the reply waited for a later wake-up"
    req, payload = cl.recv_multipart()
    assert req == b"r1"
    assert decode_reply(payload)[0] is None
    acc.turn()  # nothing more for it
    assert not cl.inbox


class _Counting:
    """Counts the reads (``recv_multipart``, empty ones included) of one in-memory socket."""

    def __init__(self, sock: Any) -> None:
        self.reads = 0
        orig = sock.recv_multipart

        def counted(*a: Any, **kw: Any) -> Any:
            self.reads += 1
            return orig(*a, **kw)

        sock.recv_multipart = counted


def test_a_turn_tries_no_read_of_an_empty_socket():
    """With a HAVE waiting on the engine link only, the account shard's turn reads it and
    tries no read of its empty router link and direct port (each such read was an
    exception, ``zmq.Again``, per socket per wake-up)."""
    cluster = _cluster()
    acc = cluster.accounts[0]
    for _ in range(3):  # HELLOs, the first SYNC and its HAVE: settle
        for node in cluster.nodes:
            node.turn()
    router_link, direct = _Counting(acc.links[0].sock), _Counting(acc.direct)
    engine_link = _Counting(acc.engines[0])
    acc.last_sync = float("-inf")  # a SYNC now: the engine shard answers HAVE on the link
    acc.turn()
    cluster.engines[0].turn()
    assert acc.engines[0].inbox, "the engine shard's HAVE is waiting"
    acc.turn()
    assert not acc.engines[0].inbox and engine_link.reads >= 1
    assert (router_link.reads, direct.reads) == (0, 0)


def test_a_turn_reads_the_request_sockets_its_poll_reported_and_a_test_any():
    """In a turn, a request socket is read only if the turn's poll reported it (``ready``):
    what lands after the poll waits for the next turn, whose poll returns at once. Outside a
    turn (``ready`` None: a test driving a reader) it is read."""
    cluster = _cluster()
    acc = cluster.accounts[0]
    cl = _client(cluster, acc.cfg.direct)
    cl.send_multipart([b"%0", b"r1", encode_request([(OP_BALANCE, "alice")])])
    acc.ready = {}  # a poll that reported nothing
    acc.from_direct()
    assert len(acc.direct.inbox) == 1, "read a socket the poll did not report"
    acc.ready = None
    acc.from_direct()
    assert not acc.direct.inbox
