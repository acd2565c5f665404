"""The in-memory transport behaves as ZeroMQ does where the node loops depend on it: each
scenario runs twice, on real libzmq sockets (``inproc://``, no port) and on the twin, and must
give the same observable result (routing ids, EHOSTUNREACH, Again, HWM bounds, prefix
subscriptions, handover). What the twin leaves out on purpose is listed in its docstring."""

from __future__ import annotations

import errno
import itertools
import time

import pytest
import zmq

from shardex.net import ZMQ, mem_transport
from shardex.wire.transport import send_frames

_n = itertools.count()


@pytest.fixture(params=["zmq", "mem"])
def net(request):
    """(transport, context, a fresh endpoint per call) for either implementation."""
    t = ZMQ if request.param == "zmq" else mem_transport()
    ctx = t.Context()
    socks: list = []

    def sock(kind: int, **opts):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        for name, value in opts.items():
            s.setsockopt(getattr(zmq, name), value)
        socks.append(s)
        return s

    yield t, sock, lambda: f"inproc://net-test-{next(_n)}"
    for s in socks:
        s.close(0)
    if request.param == "zmq":
        ctx.term()


def _recv(sock, tries: int = 200) -> list[bytes]:
    """Receive one message, waiting a little for libzmq's I/O (the twin delivers at once)."""
    for _ in range(tries):
        try:
            return sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(0.005)
    raise AssertionError("no message arrived")


def test_dealer_connected_before_the_bind_reaches_the_router_by_its_identity(net):
    _, sock, ep = net
    e = ep()
    d = sock(zmq.DEALER, IDENTITY=b"shard-0")
    d.connect(e)
    r = sock(zmq.ROUTER, ROUTER_MANDATORY=1)
    r.bind(e)
    send_frames(d, [b"", b"HELLO"])
    assert _recv(r) == [b"shard-0", b"", b"HELLO"]
    send_frames(r, [b"shard-0", b"reply"])
    assert _recv(d) == [b"reply"]


def test_router_to_an_unknown_peer_fails_when_mandatory_and_drops_otherwise(net):
    _, sock, ep = net
    e = ep()
    strict = sock(zmq.ROUTER, ROUTER_MANDATORY=1)
    strict.bind(e)
    with pytest.raises(zmq.ZMQError) as exc:
        send_frames(strict, [b"nobody", b"x"])
    assert exc.value.errno == errno.EHOSTUNREACH
    lax = sock(zmq.ROUTER)
    lax.bind(ep())
    send_frames(lax, [b"nobody", b"x"])  # silently dropped, as libzmq does


def test_immediate_dealer_without_a_peer_would_block(net):
    _, sock, _ = net
    d = sock(zmq.DEALER, IMMEDIATE=1)
    # (over TCP: libzmq's inproc has no handshake for IMMEDIATE to wait for; nothing listens
    # on port 1 and nothing is bound here)
    d.connect("tcp://127.0.0.1:1")
    with pytest.raises(zmq.Again):
        send_frames(d, [b"x"])


def test_a_pipe_is_bounded_by_both_high_water_marks(net):
    _, sock, ep = net
    e = ep()
    r = sock(zmq.ROUTER, RCVHWM=2)
    r.bind(e)
    d = sock(zmq.DEALER, SNDHWM=2, IMMEDIATE=1)
    d.connect(e)
    sent = 0
    for _ in range(100):
        try:
            send_frames(d, [b"m%d" % sent])
            sent += 1
        except zmq.Again:
            if sent:
                break
            time.sleep(0.005)  # (libzmq: the connection is still being set up)
    assert 2 <= sent <= 4  # SNDHWM + RCVHWM at most; never unbounded
    got = [_recv(r)[1] for _ in range(sent)]
    assert got == [b"m%d" % i for i in range(sent)]  # in order, none lost


def test_sub_gets_only_its_prefixes(net):
    _, sock, ep = net
    e = ep()
    pub = sock(zmq.PUB)
    pub.bind(e)
    sub = sock(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"a")
    sub.connect(e)
    for _ in range(200):  # (libzmq: until the subscription reached the PUB)
        send_frames(pub, [b"a-probe"])
        try:
            if sub.recv_multipart(zmq.NOBLOCK) == [b"a-probe"]:
                break
        except zmq.Again:
            time.sleep(0.005)
    while True:  # drain the probes
        try:
            sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
    send_frames(pub, [b"b-1"])
    send_frames(pub, [b"a-2"])
    assert _recv(sub) == [b"a-2"]


def test_handover_gives_the_routing_id_to_the_newest_connection(net):
    _, sock, ep = net
    e = ep()
    r = sock(zmq.ROUTER, ROUTER_MANDATORY=1, ROUTER_HANDOVER=1)
    r.bind(e)
    old = sock(zmq.DEALER, IDENTITY=b"acct-0")
    old.connect(e)
    send_frames(old, [b"hi"])
    assert _recv(r) == [b"acct-0", b"hi"]
    new = sock(zmq.DEALER, IDENTITY=b"acct-0")
    new.connect(e)
    send_frames(new, [b"me now"])
    assert _recv(r) == [b"acct-0", b"me now"]
    send_frames(r, [b"acct-0", b"to the newest"])
    assert _recv(new) == [b"to the newest"]


def test_twin_reconnects_when_the_endpoint_is_bound_again():
    """A node restarted in memory (its sockets closed, the endpoint bound again) is reached
    by the peers that had connected, as libzmq's reconnect does over TCP."""
    t = mem_transport()
    ctx = t.Context()
    d = ctx.socket(zmq.DEALER)
    d.connect("tcp://shard:1")
    first = ctx.socket(zmq.ROUTER)
    first.bind("tcp://shard:1")
    send_frames(d, [b"one"])
    assert first.recv_multipart()[1:] == [b"one"]
    first.close()
    second = ctx.socket(zmq.ROUTER)
    second.bind("tcp://shard:1")
    send_frames(d, [b"two"])
    assert second.recv_multipart()[1:] == [b"two"]
    with pytest.raises(zmq.ZMQError) as exc:
        ctx.socket(zmq.ROUTER).bind("tcp://shard:1")
    assert exc.value.errno == errno.EADDRINUSE


def test_twin_poll_reports_without_waiting():
    t = mem_transport()
    ctx = t.Context()
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    b.bind("x")
    a.connect("x")
    poller = t.Poller()
    poller.register(b, zmq.POLLIN)
    assert poller.poll(10_000) == []  # (would be 10 s on libzmq)
    send_frames(a, [b"m"])
    assert poller.poll(10_000) == [(b, zmq.POLLIN)]
    moved = t.hub.moved
    send_frames(a, [b"n"])
    assert t.hub.moved == moved + 1
