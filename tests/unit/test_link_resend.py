"""Which messages a link's sender re-sends on a report of its receiver (``link.ResendGate``):
an engine shard's settlements on an account shard's SYNC, an account shard's forwards on an
engine shard's HAVE. Pure: reports and sends are fed in order, and the re-sent seqs are
checked exactly.

Regression: a report read in the same wake-up as a burst was answered after the burst was
sent, and when its ``have`` had not moved since the previous report (the link was quiet, or
the receiver was behind), everything after ``have`` was re-sent, the burst just sent
included: 3,258 of 61,009 settlements re-sent on a busy link under CPU contention, nothing
lost. Now a repeated ``have`` re-sends only what was sent before the previous report was read.
"""

from __future__ import annotations

import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import zmq

from shardex.accounts.link import ALL, ResendGate
from shardex.engine.codes import OP_NEW
from shardex.engine.markets import DEFAULT_MARKETS
from shardex.node.accounts import AccountNode, AccountsConfig
from shardex.node.shard import ShardConfig, ShardNode
from shardex.wire.protocol import (
    BATCH,
    LINK_FWD,
    LINK_HAVE,
    LINK_SETTLE,
    LINK_SYNC,
    OP_DEPOSIT,
    VERSION,
    encode_batch,
    packb,
    unpackb,
)
from tests.support.ports import free_port


class Sender:
    """One link's sender around a ``ResendGate``, in the order the nodes drive it: a report is
    read, this wake-up's burst is sent, then the report is answered."""

    def __init__(self, every: float = 0.5) -> None:
        self.gate = ResendGate(every)
        self.sent: list[int] = []

    def send(self, *seqs: int) -> None:
        for seq in seqs:
            self.sent.append(seq)
            self.gate.put(seq)

    def report(self, have: int, now: float, burst: tuple[int, ...] = (),
               repairing: bool = False) -> list[int]:  # fmt: skip
        """The seqs this report re-sends."""
        self.gate.read()
        self.send(*burst)
        bound = self.gate.answer(have, now, repairing)
        return [] if bound is None else [s for s in self.sent if have < s <= bound]


def test_a_report_read_with_a_burst_does_not_resend_the_burst():
    """The race: the link was quiet (``have`` 10 twice), then a burst and a report arrive in
    the same wake-up; the burst is sent before the report is answered. On the old rule (a
    repeated ``have`` re-sends everything after it) 11..20 went out twice, and again 11..30 on
    the next report that the receiver (behind, reading its backlog) wrote before they came."""
    s = Sender()
    s.send(*range(1, 11))
    assert s.report(10, 0.0) == []  # the first report: everything after 10 (none)
    assert s.report(10, 1.0) == []  # quiet
    assert s.report(10, 2.0, burst=tuple(range(11, 21))) == []  # the burst is in flight
    assert s.report(10, 3.0, burst=tuple(range(21, 31))) == []  # still in flight (receiver behind)
    assert s.report(30, 4.0) == []  # it all arrived: nothing was lost


def test_a_lost_message_is_resent_on_the_second_report_after_it_was_sent():
    """6 is lost, 7 and 8 arrive (gaps: the receiver stays at 5). The first report read after
    they were sent re-sends nothing (they may be in flight), the second re-sends exactly 6..8."""
    s = Sender()
    assert s.report(0, 0.0) == []
    s.send(1, 2, 3, 4, 5)
    assert s.report(5, 1.0) == []  # moving
    s.send(6, 7, 8)  # 6 lost
    assert s.report(5, 1.2) == []  # the gap report: 6..8 were sent after the previous report
    assert s.report(5, 2.0) == [6, 7, 8]  # sent before the previous report was read: lost
    assert s.report(8, 3.0) == []


def test_an_idle_link_still_resends_its_last_lost_message():
    """The last message is lost and nothing follows (no gap to see): the periodic reports
    repeat ``have``, and the second one after the send re-sends it; if that copy is lost too,
    the next report (past ``every``) sends it again. Nothing stalls."""
    s = Sender(every=0.5)
    s.send(1, 2, 3)
    assert s.report(3, 0.0) == []
    s.send(4)  # lost
    assert s.report(3, 1.0) == []
    assert s.report(3, 2.0) == [4]
    assert s.report(3, 2.2) == []  # (a gap report burst: at most one re-send every 0.5 s)
    assert s.report(3, 3.0) == [4]  # that copy was lost too
    assert s.report(4, 4.0) == []
    assert s.report(4, 5.0) == []


def test_the_first_report_resends_everything_after_have():
    """A sender or receiver that just started knows nothing of what is in flight: the first
    report re-sends everything after ``have`` (what a restarted engine shard rebuilt into its
    ring from its journal may never have left the old process)."""
    s = Sender()
    s.send(*range(1, 8))
    assert s.gate.answer(3, 0.0) == ALL
    s2 = Sender()
    s2.send(*range(1, 8))
    assert s2.report(3, 0.0, burst=(8, 9)) == [4, 5, 6, 7, 8, 9]


def test_a_have_that_goes_back_resends_up_to_the_previous_mark():
    """A receiver that lost what it had applied (an account shard restarted from its journal
    behind its last SYNC) reports a smaller ``have``: like a repeated one, it re-sends what was
    sent before the previous report was read, then the rest on the report after."""
    s = Sender()
    s.send(*range(1, 11))
    assert s.report(10, 0.0) == [] and s.report(10, 1.0) == []
    s.send(11, 12)
    assert s.report(6, 2.0) == [7, 8, 9, 10]
    assert s.report(10, 3.0) == []  # moving
    assert s.report(10, 4.0) == [11, 12]


def test_a_journal_repair_continues_on_every_report():
    """While a re-send from the journal is under way each report continues it, moving or not
    and whatever the rate limit, up to what was sent before the previous report was read."""
    s = Sender(every=10.0)
    s.send(*range(1, 101))
    assert s.report(0, 0.0) == list(range(1, 101))  # first: all (the node starts a repair)
    assert s.report(20, 0.1, burst=(101,), repairing=True) == list(range(21, 101))
    assert s.report(40, 0.2, repairing=True) == list(range(41, 101))  # (101: in flight)


def test_a_restarted_sender_repairs_from_its_journal_past_the_first_report():
    """A sender restarted from its journal sent nothing yet, but its journal put 1..100 on the
    link (the old process sent them, or died first): they count as sent before the first
    report, so the journal re-send it starts continues on the next reports (bounded by 0, it
    would stall with the receiver at 40)."""
    gate = ResendGate(every=10.0, sent=100)
    gate.read()
    assert gate.answer(0, 0.0) == ALL  # the first report: the node starts a journal re-send
    gate.read()
    assert gate.answer(40, 0.1, repairing=True) == 100
    gate.read()
    assert gate.answer(80, 0.2, repairing=True) == 100
    gate.read()
    assert gate.answer(100, 0.3) is None  # (the node ends the repair: the ring reaches back)


@pytest.mark.parametrize("seed", range(8))
def test_a_simulated_link_loses_nothing_and_resends_only_what_was_lost(seed: int):
    """A FIFO link with delays below half a report period, bursts and quiet spells, and a
    receiver that reports every second and on every gap. Without losses nothing is re-sent
    (the old rule re-sent bursts on every quiet-to-busy report). With 2% of first sends lost,
    every message arrives, each lost one within three report periods of its send."""
    for loss in (0.0, 0.02):
        rng = random.Random(seed * 100 + int(loss * 100))
        resent, late = _simulate(rng, loss)
        if loss == 0.0:
            assert resent == 0
        else:
            assert late <= 3 * PERIOD + MAX_DELAY + STEP, late


PERIOD, STEP, MAX_DELAY = 1.0, 0.1, 0.45


def _simulate(rng: random.Random, loss: float) -> tuple[int, float]:
    """Re-sent messages, and the longest time from a lost message's send to its arrival."""
    s = Sender(every=0.5)
    wire: deque[tuple[float, int]] = deque()  # (arrival time, seq): FIFO
    reports: deque[tuple[float, int]] = deque()  # (time the sender reads it, have)
    have, seq, resent, t, next_report = 0, 0, 0, 0.0, 0.0
    lost: dict[int, float] = {}
    busy = True

    def put(m: int, now: float) -> None:
        arrival = max(now + rng.uniform(0, MAX_DELAY), wire[-1][0] if wire else 0.0)
        wire.append((arrival, m))

    for step in range(400):  # 40 s: 30 s of traffic, then quiet
        t = step * STEP
        if step % 20 == 0:
            busy = rng.random() < 0.6  # quiet spells of 2 s, several report periods
        burst: list[int] = []
        if 2 < step < 300 and busy and rng.random() < 0.7:  # (after the link's first report)
            for _ in range(rng.randint(1, 5)):
                seq += 1
                burst.append(seq)
        # the sender's wake-up: the reports due are read (the latest one counts, as in the
        # nodes), this wake-up's burst is sent, then the report is answered
        rhave = None
        while reports and reports[0][0] <= t:
            s.gate.read()
            rhave = reports.popleft()[1]
        for m in burst:
            s.send(m)
            if rng.random() < loss:
                lost[m] = t
            else:
                put(m, t)
        bound = None if rhave is None else s.gate.answer(rhave, t)
        if bound is not None:
            for m in s.sent:
                if rhave < m <= bound:
                    resent += 1
                    put(m, t)
        # the receiver: applies what arrived in order; a gap makes it report at once
        gap = False
        while wire and wire[0][0] <= t:
            _, m = wire.popleft()
            if m == have + 1:
                have = m
                if m in lost:
                    lost[m] = t - lost[m]  # its delay, send to arrival
            elif m > have + 1:
                gap = True
        if gap or t >= next_report:
            if not gap:
                next_report = t + PERIOD
            reports.append((t + STEP, have))  # read by the sender in its next wake-up
    assert have == seq, f"stalled at {have} of {seq}"
    return resent, max(lost.values(), default=0.0)


# ---------------------------------------------------------------------------------------------
# the wiring: a real engine shard node, its account link driven by a DEALER playing account
# shard 0 (the node's own methods called in the order of its loop, so nothing is timing)
# ---------------------------------------------------------------------------------------------


def _port() -> int:
    return free_port()


MARKER = -1  # the ``have`` of the report a rig asks the node for after its turn


def _until_marker(sock: Any, node: Any, data: bytes, report: bytes, recv: Any) -> list[tuple]:
    """What the node sent in its turn: the node is asked for one more report (``have`` =
    ``MARKER``) after it, and the same connection keeps order, so everything the turn sent has
    arrived once the marker has: no quiet period to wait out (a 2 s poll per turn before)."""
    assert node.tier_link.report(0, MARKER), "the node could not send its report"
    got: list[tuple] = []
    deadline = time.monotonic() + 10
    while True:
        assert sock.poll(max(0, int((deadline - time.monotonic()) * 1000))), "no marker came"
        kind, payload = recv()
        if kind == data:
            got.extend(unpackb(payload)[1])
        elif kind == report and unpackb(payload)[1] == MARKER:
            return got


class _EngineRig:
    """An engine shard node with accounts (no router) and a DEALER as account shard 0."""

    def __init__(self, tmp_path: Path) -> None:
        link = f"tcp://127.0.0.1:{_port()}"
        cfg = ShardConfig(
            index=0, shards=1, router=None, direct=None, pub=f"tcp://127.0.0.1:{_port()}",
            markets=DEFAULT_MARKETS, pin=False, journal_dir=str(tmp_path / "shard-0"),
            fsync="none", accounts=1, account_link=link,
        )  # fmt: skip
        self.node = ShardNode(cfg)
        self.ctx = zmq.Context()
        self.acc = self.ctx.socket(zmq.DEALER)
        self.acc.setsockopt(zmq.LINGER, 0)
        self.acc.setsockopt(zmq.IDENTITY, b"accounts-0")
        self.acc.connect(link)
        self.seq = 0

    def turn(self, orders: int = 0, sync: int | None = None) -> list[tuple]:
        """One wake-up of the node: ``orders`` crossing pairs forwarded and a SYNC naming
        ``sync`` (None: none) are read, then the group commit sends the settlements and
        answers the SYNC; the settlements account shard 0 receives (in order)."""
        node = self.node
        want = node.link_counts["forwards"] + 2 * orders
        for _ in range(orders):
            for side, who in ((1, "alice"), (0, "bob")):  # a resting sell, then a crossing buy
                self.seq += 1
                cmd = (OP_NEW, "BTC-USD", f"o{self.seq}", who, side, 0, 10_000, 100, 0, False, 0)
                fwd = [(self.seq, self.seq - 1, cmd)]
                self.acc.send_multipart([LINK_FWD, packb((0, fwd))])
        if sync is not None:
            self.acc.send_multipart([LINK_SYNC, packb((0, sync))])
        deadline = time.monotonic() + 10
        while node.link_counts["forwards"] < want or (sync is not None and 0 not in node.syncs):
            assert time.monotonic() < deadline, "the engine shard never read them"
            if node.alink.poll(100):
                node.from_accounts()
        node.flush()
        return _until_marker(self.acc, node, LINK_SETTLE, LINK_HAVE, self.acc.recv_multipart)

    def close(self) -> None:
        self.acc.close(0)
        self.ctx.term()
        self.node.close()


def test_engine_shard_resends_no_settlement_of_a_burst_read_with_a_sync(tmp_path, monkeypatch):
    """Regression, end to end in one engine shard process: a SYNC read in the same wake-up as
    a burst of forwards, with the same ``have`` as the SYNC before it, re-sent the burst's
    settlements right after sending them (duplicates). Now none; and a settlement that does go
    missing is re-sent on the second SYNC after it was sent. (No rate limit here, so each SYNC
    is judged on its own.)"""
    monkeypatch.setattr("shardex.node.shard.RESEND_EVERY_S", 0.0)
    rig = _EngineRig(tmp_path)
    try:
        assert rig.turn(sync=0) == []  # the link's first SYNC: nothing to re-send
        assert rig.turn(sync=0) == []  # quiet
        burst = rig.turn(orders=3, sync=0)  # the burst and a SYNC that predates it
        assert burst and len({m[2] for m in burst}) == len(burst), burst  # each once
        assert rig.node.link_counts["resent"] == 0, burst
        # account shard 0 "lost" the burst: its SYNCs stay at 0
        assert rig.turn(sync=0) == []  # sent after the previous SYNC was read: in flight
        assert rig.turn(sync=0) == burst  # now overdue: re-sent, exactly those
        have = burst[-1][2]
        assert rig.turn(sync=have) == [] and rig.turn(sync=have) == []  # caught up
    finally:
        rig.close()


class _AccountRig:
    """An account shard node (0 of 1, one engine shard) with the test's sockets in the other
    seats: the router (a ROUTER it connects to) and engine shard 0's link (a ROUTER)."""

    def __init__(self, tmp_path: Path) -> None:
        self.ctx = zmq.Context()
        router_ep, link_ep = (f"tcp://127.0.0.1:{_port()}" for _ in range(2))
        self.router, self.link = (self._bind(ep) for ep in (router_ep, link_ep))
        self.link.setsockopt(zmq.ROUTER_MANDATORY, 1)
        cfg = AccountsConfig(
            index=0, shards=1, engines=1, router=router_ep, engine_links=[link_ep],
            markets=DEFAULT_MARKETS, journal_dir=str(tmp_path / "accounts-0"), fsync="none",
            pub=f"tcp://127.0.0.1:{_port()}", direct=None,
        )  # fmt: skip
        self.node = AccountNode(cfg)
        self.node.hello(time.monotonic())
        assert self.router.poll(5000), "no HELLO from the account shard"
        self.ident = self.router.recv_multipart()[0]
        self.req = 0

    def _bind(self, ep: str) -> Any:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(ep)
        return s

    def turn(self, cmds: tuple[tuple, ...] = (), have: int | None = None) -> list[tuple]:
        """One wake-up of the node in its loop's order: engine shard 0's HAVE naming ``have``
        (None: none) read, then the requests ``cmds``, then the group commit sends their
        forwards and answers the HAVE; the forwards engine shard 0 receives (in order)."""
        node = self.node
        deadline = time.monotonic() + 10
        while have is not None:
            try:  # (ROUTER_MANDATORY: until the node's DEALER is connected, it is unreachable)
                self.link.send_multipart([b"accounts-0", LINK_HAVE, packb((0, have))])
                break
            except zmq.ZMQError:
                assert time.monotonic() < deadline, "the account shard never connected"
                time.sleep(0.01)
        items = []
        for cmd in cmds:
            self.req += 1
            items += [b"client", str(self.req).encode(), b"", packb([VERSION, [list(cmd)]])]
        if items:
            self.router.send_multipart([self.ident, BATCH, encode_batch(items)])
        want = node.handler.commands + len(cmds)
        while have is not None and 0 not in node.haves:
            assert time.monotonic() < deadline, "the HAVE never arrived"
            node.poller.poll(100)
            node.from_engines()
        while node.handler.commands < want:
            assert time.monotonic() < deadline, "the requests never arrived"
            node.poller.poll(100)
            node.from_routers()
        node.flush()
        return _until_marker(self.link, node, LINK_FWD, LINK_SYNC,
                             lambda: self.link.recv_multipart()[1:])  # fmt: skip

    def close(self) -> None:
        self.router.close(0)
        self.link.close(0)
        self.ctx.term()
        self.node.close()


def test_account_shard_resends_no_forward_of_a_burst_read_with_a_have(tmp_path, monkeypatch):
    """The mirror on the account shard: a HAVE read in the same wake-up as a burst of orders,
    with the same ``have`` as the HAVE before it, re-sent the burst's forwards right after
    sending them. Now none; and a forward that does go missing is re-sent on the second HAVE
    after it was sent. (No rate limit here, so each HAVE is judged on its own.)"""
    monkeypatch.setattr("shardex.node.accounts.SYNC_EVERY_S", 0.0)
    rig = _AccountRig(tmp_path)
    try:
        assert rig.turn(((OP_DEPOSIT, "alice", "USD", "100000000", "d1"),), have=0) == []
        assert rig.turn(have=0) == []  # quiet
        orders = tuple((OP_NEW, "BTC-USD", f"o{k}", "alice", 0, 0, 10_000, 10, 0, False, 0)
                       for k in range(3))  # fmt: skip
        burst = rig.turn(orders, have=0)  # the burst and a HAVE that predates it
        assert [f[2][2] for f in burst] == ["o0", "o1", "o2"], burst  # each once
        assert rig.node.counts["resent"] == 0, burst
        # engine shard 0 "lost" them: its HAVEs stay at 0
        assert rig.turn(have=0) == []  # sent after the previous HAVE was read: in flight
        assert rig.turn(have=0) == burst  # now overdue: re-sent, exactly those
        have = burst[-1][0]
        assert rig.turn(have=have) == [] and rig.turn(have=have) == []  # caught up
    finally:
        rig.close()


def test_account_shard_journal_repair_sends_its_next_part_on_every_have(tmp_path, monkeypatch):
    """Regression: a re-send of forwards from the journal (the ring no longer reaches back)
    went on only on a HAVE that did not move, so each part was followed by a pause: the
    in-flight rule (a moving HAVE means what follows is in flight) halved the repair's pace.
    Now every HAVE, moving or not, gets the next part while the repair is under way."""
    monkeypatch.setattr("shardex.node.accounts.SYNC_EVERY_S", 0.0)
    monkeypatch.setattr("shardex.node.accounts.MAX_FORWARD_RESEND", 2)  # parts of 2
    rig = _AccountRig(tmp_path)
    try:
        assert rig.turn(((OP_DEPOSIT, "alice", "USD", "100000000", "d1"),), have=0) == []
        orders = tuple((OP_NEW, "BTC-USD", f"o{k}", "alice", 0, 0, 10_000, 10, 0, False, 0)
                       for k in range(6))  # fmt: skip
        burst = rig.turn(orders, have=0)
        assert [f[2][2] for f in burst] == [f"o{k}" for k in range(6)], burst
        ring = rig.node.machine.rings[0]
        while len(ring) > 1:  # the ring keeps only the newest: the rest is in the journal only
            ring.popleft()
        # engine shard 0 lost them all: its HAVE stays at 0, then moves with each part
        assert rig.turn(have=0) == []  # sent after the previous HAVE was read: in flight
        part = rig.turn(have=0)  # overdue: the repair starts, from the journal
        assert [f[2][2] for f in part] == ["o0", "o1"], part
        assert rig.node.counts["journal"] == 2
        for want in (["o2", "o3"], ["o4", "o5"]):  # the HAVE moved past each part: the next
            have = part[-1][0]
            part = rig.turn(have=have)
            assert [f[2][2] for f in part] == want, (have, part)
        assert rig.turn(have=burst[-1][0]) == [] and 0 not in rig.node.repairs  # repair over
    finally:
        rig.close()
