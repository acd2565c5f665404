"""Link reports judged as they leave (``shardex.sim.reports``), the check that reads them
(``invariants.reports_current``) and turns that cost virtual time (``shardex.sim.turns``):
on the in-memory transport's own sockets, no node, no process. (The late SYNC caught in the
world is ``test_sim_mutations.py``.) About 1 s of CPU in all."""

from __future__ import annotations

import pytest
import zmq

from shardex.net.mem import MemContext, MemHub
from shardex.sim import worldrun
from shardex.sim.faults import Faults
from shardex.sim.invariants import CONTINUOUS, reports_current
from shardex.sim.reports import ReportWatch, unread_upto
from shardex.sim.sched import Trace
from shardex.sim.state import ClusterState, StaleReport
from shardex.sim.turns import TurnCost
from shardex.wire.link import encode_link
from shardex.wire.protocol import LINK_HAVE, LINK_SETTLE, LINK_SYNC


def _s(seq: int, prev: int) -> tuple:
    """A settlement as the link carries it: (kind, eshard, eseq, prev, ...)."""
    return (1, 0, seq, prev, "payload")


def test_unread_upto_applies_as_the_link_would() -> None:
    assert unread_upto(3, []) == 3
    assert unread_upto(3, [[_s(4, 3), _s(5, 4)], [_s(6, 5)]]) == 6  # continues
    assert unread_upto(5, [[_s(4, 3), _s(5, 4)]]) == 5  # duplicates move nothing
    # a gap ends its message (the rest is not applied); the next message is read again
    assert unread_upto(3, [[_s(5, 4), _s(6, 5)], [_s(4, 3)]]) == 4
    assert unread_upto(3, [None, [("x",)], [(1, 0, "4", 3)], 7]) == 3  # malformed: nothing


def _link(hub: MemHub) -> tuple:
    """An account shard's DEALER (``accounts-0``) to an engine shard's ROUTER (``engine-0``)."""
    engine = MemContext(hub, "engine-0").socket(zmq.ROUTER)
    engine.bind("mem://engine-0/accounts")
    account = MemContext(hub, "accounts-0").socket(zmq.DEALER)
    account.setsockopt(zmq.IDENTITY, b"accounts-0")
    account.connect("mem://engine-0/accounts")
    return engine, account


def _settle(engine, msgs: list[tuple]) -> None:
    engine.send_multipart([b"accounts-0", LINK_SETTLE, encode_link(0, msgs)])


def test_a_sync_sent_before_reading_what_waits_is_stale() -> None:
    hub = MemHub()
    trace = Trace()
    watch = ReportWatch(lambda: 1.5, trace)
    watch.install(hub)
    engine, account = _link(hub)
    _settle(engine, [_s(1, 0), _s(2, 1)])
    account.send_multipart([LINK_SYNC, encode_link(0, 0)])  # settlements 1-2 unread: stale
    assert watch.stale == [StaleReport("accounts-0", 0, 0, 2, 1.5)]
    assert trace.events[-1][1:3] == ("stale", "accounts-0")
    account.recv_multipart()  # read, then applied: have 2
    account.send_multipart([LINK_SYNC, encode_link(0, 2)])
    _settle(engine, [_s(1, 0), _s(2, 1)])  # a re-send of what it has: not news
    engine.send_multipart([b"accounts-0", LINK_HAVE, encode_link(0, 5)])
    account.send_multipart([LINK_SYNC, encode_link(0, 2)])
    account.send_multipart([b"FWD", encode_link(0, [])])  # not a report
    assert len(watch.stale) == 1 and watch.sent == 3


def test_the_watch_chains_a_tap_already_there() -> None:
    hub = MemHub()
    seen: list[list[bytes]] = []
    hub.on_send = lambda sock, msg: seen.append(msg)
    ReportWatch(lambda: 0.0).install(hub)
    _, account = _link(hub)
    account.send_multipart([LINK_SYNC, encode_link(0, 0)])
    assert seen == [[LINK_SYNC, encode_link(0, 0)]]


def test_reports_current_names_each_node_and_skips_without_a_watch() -> None:
    assert "reports_current" in CONTINUOUS
    assert reports_current(ClusterState()) == []
    assert reports_current(ClusterState(stale_reports=[])) == []
    found = reports_current(ClusterState(stale_reports=[
        StaleReport("accounts-1", 0, 28, 32, 1.003), StaleReport("accounts-1", 1, 9, 10, 2.0),
    ]))  # fmt: skip
    assert len(found) == 1 and found[0].check == "reports_current"
    assert found[0].message.startswith("accounts-1: 2 SYNCs left stale")
    assert "engine shard 0 with have 28, 32 unread" in found[0].message


class _Cluster:
    def __init__(self) -> None:
        self._frozen: dict[int, float] = {}
        self.froze: list[tuple[object, float]] = []

    def freeze(self, node: object, seconds: float) -> None:
        self._frozen[id(node)] = 10.0 + seconds  # (``now`` is 10.0 below)
        self.froze.append((node, seconds))


class _Life:
    def __init__(self, nodes: dict[str, object]) -> None:
        self.cluster = _Cluster()
        self.nodes = nodes

    def named(self) -> dict[str, object]:
        return dict(self.nodes)


def test_a_turn_costs_its_reads_and_keeps_a_longer_freeze() -> None:
    assert TurnCost.of(1, Faults(), _Life({}), MemHub()) is None  # (turns free by default)
    one = TurnCost.of(1, Faults.parse("turn_s=0.003"), _Life({}), MemHub())  # (one number)
    assert one is not None and one.per_msg == (0.003, 0.003)
    hub = MemHub()
    router, engine = object(), object()
    life = _Life({"router-0": router, "engine-0": engine})
    cost = TurnCost.of(1, Faults(turn_s=(0.001, 0.002)), life, hub)
    assert cost is not None
    a = MemContext(hub, "router-0").socket(zmq.DEALER)
    b = MemContext(hub, "engine-0").socket(zmq.ROUTER)
    c = MemContext(hub, "client-0").socket(zmq.DEALER)
    b.bind("mem://e")
    a.connect("mem://e")
    c.connect("mem://e")
    for _ in range(3):
        a.send_multipart([b"x"])
    c.send_multipart([b"y"])
    got = [b.recv_multipart() for _ in range(4)]  # engine-0 reads 4 (one a client's)
    b.send_multipart([got[0][0], b"reply"])
    a.recv_multipart()  # router-0 reads 1 ...
    life.cluster._frozen[id(router)] = 99.0  # ... while paused longer: that freeze is kept
    cost.step(10.0)
    ((node, seconds),) = life.cluster.froze
    assert node is engine and 4 * 0.001 <= seconds <= 4 * 0.002
    assert life.cluster._frozen[id(router)] == 99.0
    cost.step(10.0)  # nothing read since: nothing charged
    assert cost.turns == 1 and len(life.cluster.froze) == 1


@pytest.mark.timeout(60)
def test_a_world_with_turn_costs_is_the_same_run_twice() -> None:
    faults = ["delay", "slow", "turn"]
    assert "turn" not in worldrun.SAFE and worldrun.faults_of(faults).turn_s[1] > 0
    first = worldrun.run(3, faults, 0.3)
    again = worldrun.run(3, faults, 0.3)
    assert first.violations == [] and first.faults["turn"] > 0
    assert (first.digest, first.faults) == (again.digest, again.faults)
