"""``shardex.sim.faults`` on raw sockets of the in-memory twin: delays never reorder a pipe,
reorder across peers; partitions (both ways, one way) hold messages in the air, which fills
the pipe's HWM (then a DEALER gets ``Again`` and a PUB drops, as libzmq does), and a heal
lands them in order; a cut connection loses what was in the air and unread on the binding
side and reconnects; faults drawn from the seed are the same for the same seed."""

from __future__ import annotations

import errno

import pytest
import zmq

from shardex.clock import VirtualClock
from shardex.net.mem import MemContext, MemHub
from shardex.sim.faults import Faults, Network, Partition
from shardex.sim.sched import Trace


class Net:
    """A hub, a virtual clock, a ``Network`` and one context per named node."""

    def __init__(self, seed: int = 1, **faults: object) -> None:
        self.hub = MemHub()
        self.clock = VirtualClock()
        self.trace = Trace()
        self.net = Network(self.hub, self.clock, seed, Faults(**faults), self.trace)  # type: ignore[arg-type]
        self.ctxs: dict[str, MemContext] = {}

    def sock(self, owner: str, kind: int, **opts: object):
        ctx = self.ctxs.setdefault(owner, MemContext(self.hub, owner))
        s = ctx.socket(kind)
        for name, value in opts.items():
            s.setsockopt(getattr(zmq, name), value)
        return s

    def advance(self, seconds: float) -> int:
        self.clock.advance(seconds)
        self.net.step(self.clock.now)
        return self.hub.release(self.clock.now)


def _drain(sock) -> list[list[bytes]]:
    out = []
    while sock.poll():
        out.append(sock.recv_multipart())
    return out


def _pair(n: Net, rcvhwm: int = 1000, **dealer_opts: object):
    r = n.sock("server", zmq.ROUTER, ROUTER_MANDATORY=1, RCVHWM=rcvhwm)
    r.bind("inproc://server")
    d = n.sock("client", zmq.DEALER, IDENTITY=b"c1", **dealer_opts)
    d.connect("inproc://server")
    return r, d


def test_delays_hold_messages_until_due_and_never_reorder_a_pipe():
    n = Net(seed=4, delay_p=0.5, delay_s=(0.001, 0.05))
    r, d = _pair(n)
    for k in range(100):
        d.send_multipart([b"%d" % k])
    early = _drain(r)
    assert len(early) < 100  # some were delayed (and held what came after them)
    got = [m[1] for m in early]
    while len(got) < 100:
        n.advance(0.005)
        got += [m[1] for m in _drain(r)]
    assert got == [b"%d" % k for k in range(100)]  # in order, none lost
    assert n.net.counts["delayed"] > 0 and not n.hub.airborne


def test_delays_reorder_across_peers_only():
    n = Net(seed=9, delay_p=0.7, delay_s=(0.001, 0.03))
    r = n.sock("server", zmq.ROUTER)
    r.bind("inproc://server")
    peers = [n.sock(f"p{i}", zmq.DEALER, IDENTITY=b"p%d" % i) for i in range(2)]
    for p in peers:
        p.connect("inproc://server")
    sent = []
    for k in range(40):
        p = peers[k % 2]
        p.send_multipart([b"%d" % k])
        sent.append((b"p%d" % (k % 2), b"%d" % k))
    got = [tuple(m) for m in _drain(r)]
    while len(got) < 40:
        n.advance(0.002)
        got += [tuple(m) for m in _drain(r)]
    assert got != sent  # the two peers' messages interleave differently ...
    for ident in (b"p0", b"p1"):  # ... but each peer's arrive in the order it sent them
        assert [m for m in got if m[0] == ident] == [m for m in sent if m[0] == ident]


def test_a_partition_holds_both_ways_and_a_heal_lands_in_order():
    n = Net()
    r, d = _pair(n)
    p = n.net.partition({"client"})
    d.send_multipart([b"one"])
    d.send_multipart([b"two"])
    assert n.advance(1.0) == 0 and _drain(r) == []
    n.net.heal(p)
    n.advance(0.0)
    assert _drain(r) == [[b"c1", b"one"], [b"c1", b"two"]]
    n.net.partition({"server"}, seconds=0.5)  # healed by time, at the step past 0.5 s
    r.send_multipart([b"c1", b"back"])
    n.advance(0.2)
    assert _drain(d) == []
    n.advance(0.4)
    assert _drain(d) == [[b"back"]]
    kinds = [ev[1] for ev in n.trace.events]
    assert kinds == ["partition", "heal", "partition", "heal"]


def test_a_one_way_partition_blocks_one_direction():
    n = Net()
    r, d = _pair(n)
    n.net.partition({"client"}, {"server"}, one_way=True)
    d.send_multipart([b"lost in the air"])
    r.send_multipart([b"c1", b"reply"])
    n.advance(0.1)
    assert _drain(r) == [] and _drain(d) == [[b"reply"]]


def test_a_partition_fills_the_hwm_then_a_dealer_gets_again_and_a_pub_drops():
    n = Net()
    r, d = _pair(n, rcvhwm=2, SNDHWM=3)
    n.net.partition({"client"})
    sent = 0
    with pytest.raises(zmq.Again):
        for _ in range(100):
            d.send_multipart([b"x"], zmq.NOBLOCK)
            sent += 1
    assert sent == 5  # SNDHWM + RCVHWM: the air counts against the pipe
    pub = n.sock("feed", zmq.PUB, SNDHWM=2)
    pub.bind("inproc://feed")
    sub = n.sock("reader", zmq.SUB, RCVHWM=2)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect("inproc://feed")
    n.net.partition({"reader"})
    for k in range(10):
        pub.send_multipart([b"%d" % k])  # never blocks: past the HWM it drops
    n.net.heal()
    n.advance(0.0)
    assert _drain(sub) == [[b"0"], [b"1"], [b"2"], [b"3"]]
    assert len(_drain(r)) == 5


def test_a_cut_loses_the_air_and_the_unread_and_the_dealer_reconnects():
    n = Net()
    r, d = _pair(n)
    d.send_multipart([b"read-before"])
    assert _drain(r) == [[b"c1", b"read-before"]]
    d.send_multipart([b"unread"])  # in the router's inbox, unread
    r.send_multipart([b"c1", b"to-client"])  # in the dealer's inbox: its session keeps it
    p = n.net.partition({"client"})
    d.send_multipart([b"in-the-air"])
    n.net.heal(p)  # (still in the air: it lands at the next release)
    lost = n.net.cut(d.pipes[0])
    assert lost == 2
    n.advance(0.1)
    assert _drain(r) == []
    assert _drain(d) == [[b"to-client"]]
    d.send_multipart([b"after"])
    r.send_multipart([b"c1", b"again"])  # the routing id is known again: no EHOSTUNREACH
    assert _drain(r) == [[b"c1", b"after"]] and _drain(d) == [[b"again"]]
    assert n.trace.events[-1][1] == "cut"


def test_a_closed_peer_takes_its_air_with_it():
    n = Net()
    r, d = _pair(n, RCVHWM=1)
    n.net.partition({"server"})
    r.send_multipart([b"c1", b"never"])  # in the air toward the dealer, counted in its pipe
    r.close()
    assert not n.hub.airborne
    n.net.heal()
    r2 = n.sock("server", zmq.ROUTER, ROUTER_MANDATORY=1, SNDHWM=1)
    r2.bind("inproc://server")
    for k in range(2):  # SNDHWM + RCVHWM = 2: nothing of the old air still counts
        r2.send_multipart([b"c1", b"%d" % k])
    assert _drain(d) == [[b"0"], [b"1"]]


def _drawn(seed: int) -> list:
    n = Net(seed=seed, cut_per_s=5.0, partition_per_s=3.0, partition_s=(0.1, 0.4))
    _pair(n)
    for i in range(3):
        n.sock(f"node{i}", zmq.DEALER).connect("inproc://server")
    for _ in range(400):
        n.advance(0.01)
    return n.trace.events


def test_faults_drawn_from_the_seed_are_the_same_for_the_same_seed():
    first = _drawn(21)
    assert first == _drawn(21)
    assert first != _drawn(22)
    kinds = {ev[1] for ev in first}
    assert {"cut", "partition", "heal"} <= kinds


def test_partition_rules_and_fault_settings():
    p = Partition(frozenset({"a", "b"}), frozenset({"c"}))
    assert p.blocks("a", "c") and p.blocks("c", "b")
    assert not p.blocks("a", "b") and not p.blocks("a", "d") and not p.blocks("", "c")
    one = Partition(frozenset({"a"}), one_way=True)
    assert one.blocks("a", "x") and not one.blocks("x", "a")
    f = Faults.parse("delay_p=0.2, delay_s=0.001:0.01,cut_per_s=1,crashable=engine:accounts")
    assert (f.delay_p, f.delay_s, f.cut_per_s) == (0.2, (0.001, 0.01), 1.0)
    assert f.crashable == ("engine", "accounts")
    with pytest.raises(ValueError, match="bad fault setting 'nope=1'"):
        Faults.parse("nope=1")
    with pytest.raises(ValueError, match="bad fault setting"):
        Faults.parse("delay_p=lots")


def test_a_heartbeat_drops_a_connection_silent_across_a_partition_until_the_heal():
    n = Net()
    r = n.sock("server", zmq.ROUTER, ROUTER_MANDATORY=1)
    r.bind("inproc://server")
    d = n.sock("client", zmq.DEALER, IDENTITY=b"c1", HEARTBEAT_IVL=100, HEARTBEAT_TIMEOUT=300)
    d.connect("inproc://server")
    quiet = n.sock("other", zmq.DEALER, IDENTITY=b"q1")  # no heartbeats: never dropped
    quiet.connect("inproc://server")
    n.net.partition({"client", "other"})
    d.send_multipart([b"in-the-air"])
    n.advance(0.2)
    assert n.net.counts["drop"] == 0
    n.advance(0.15)  # past the 300 ms heartbeat timeout: the client's connection drops
    assert n.net.counts["drop"] == 1 and n.net.counts["lost"] == 1
    assert [ev[1:3] for ev in n.trace.events][-1] == ("drop", "client")
    with pytest.raises(zmq.ZMQError) as err:  # the router no longer knows the peer ...
        r.send_multipart([b"c1", b"lost"])
    assert err.value.errno == errno.EHOSTUNREACH
    r.send_multipart([b"q1", b"held"])  # ... but still knows the one without heartbeats
    d.send_multipart([b"queued"])  # the dealer queues while it cannot reconnect
    n.advance(2.0)
    assert _drain(r) == [] and n.net.counts["drop"] == 1  # dropped once, stays down
    n.net.heal()
    n.advance(0.0)
    assert _drain(r) == [[b"c1", b"queued"]]
    assert _drain(quiet) == [[b"held"]]
    r.send_multipart([b"c1", b"back"])
    assert _drain(d) == [[b"back"]]


# -- reconnect interval (Faults.reconnect): libzmq's RECONNECT_IVL, jitter and backoff ------


def _attached(d) -> bool:
    return d.pipes[0].b is not None


def _advance_until(n: Net, pred, step: float = 0.005, limit: float = 5.0) -> float:
    """Move virtual time until ``pred()``; how long it took (fails past ``limit``)."""
    t0 = n.clock.now
    while not pred():
        assert n.clock.now - t0 < limit, "never happened"
        n.advance(step)
    return n.clock.now - t0


def test_a_cut_connection_comes_back_after_the_reconnect_interval_and_queues_meanwhile():
    n = Net(reconnect=1.0)
    r, d = _pair(n)  # (RECONNECT_IVL: libzmq's default, 100 ms)
    n.net.cut(d.pipes[0])
    assert not _attached(d)
    d.send_multipart([b"queued"])  # a DEALER queues on a detached pipe (no IMMEDIATE)
    n.advance(0.05)
    assert not _attached(d) and _drain(r) == []
    took = _advance_until(n, lambda: _attached(d))
    assert 0.1 <= took <= 0.2 + 0.005  # the interval plus a jitter below it
    assert _drain(r) == [[b"c1", b"queued"]]
    assert n.net.counts["redial"] == 1


def test_without_the_reconnect_fault_a_cut_reconnects_at_once():
    n = Net()
    r, d = _pair(n)
    n.net.cut(d.pipes[0])
    assert _attached(d)


def test_a_restarted_peer_is_reached_after_the_interval_backed_off_while_it_was_gone():
    n = Net(reconnect=1.0)
    r, d = _pair(n, RECONNECT_IVL=50, RECONNECT_IVL_MAX=400)
    r.close()
    n.advance(2.0)  # gone for 2 s: the retries backed off to the 400 ms maximum
    r2 = n.sock("server", zmq.ROUTER, ROUTER_MANDATORY=1)
    r2.bind("inproc://server")
    assert not _attached(d)
    took = _advance_until(n, lambda: _attached(d))
    assert 0.4 <= took <= 0.45 + 0.005
    d.send_multipart([b"hello again"])
    assert _drain(r2) == [[b"c1", b"hello again"]]


def test_reconnect_delays_are_seeded():
    def delays(seed: int) -> list[float]:
        n = Net(seed=seed, reconnect=1.0)
        _, d = _pair(n)
        out = []
        for _ in range(5):
            n.net.cut(d.pipes[0])
            out.append(_advance_until(n, lambda: _attached(d), step=0.001))
        return out

    assert delays(3) == delays(3) != delays(4)
