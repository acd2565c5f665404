"""The one endpoint of the engine ⇄ account link (``accounts.link.LinkEndpoint``), without
sockets: incoming dedupe and gap detection, outgoing re-sends on the peer's report, the unacked
window, and two endpoints (one per tier's layout) healing a lossy link to exactly once."""

from __future__ import annotations

import random

from shardex.accounts.link import (
    ALL,
    APPLY,
    FORWARD,
    GAP,
    MALFORMED,
    SETTLEMENT,
    Inbox,
    LinkEndpoint,
    sent_after,
)


def _engine_end(**kw) -> LinkEndpoint:
    """An engine shard's end: settlements out, forwards (seq, prev, cmd) in, answers SYNCs."""
    return LinkEndpoint(1, 0.0, {}, out=SETTLEMENT, incoming=FORWARD, width=3, answers=True, **kw)


def _account_end(**kw) -> LinkEndpoint:
    """An account shard's end: forwards out, settlements (kind, eshard, eseq, prev) in."""
    return LinkEndpoint(1, 0.0, {}, out=FORWARD, incoming=SETTLEMENT, in_sender=1, **kw)


class _Receiver:
    """The machine side of ``receive``: an ``Inbox`` and the messages applied, in order."""

    def __init__(self, seq_at: int, sender_at: int | None = None) -> None:
        self.inbox = Inbox()
        self.seq_at, self.sender_at = seq_at, sender_at
        self.applied: list[tuple] = []

    def apply(self, peer: int, msg: tuple) -> None:
        """Record it; a well-formed one of this link advances the inbox (as the machines do)."""
        if type(msg) is tuple and len(msg) > self.seq_at and type(msg[self.seq_at]) is int:
            if self.sender_at is None or msg[self.sender_at] == peer:
                self.inbox.applied(peer, msg[self.seq_at])
        self.applied.append(msg)


def test_receive_applies_the_chain_skips_duplicates_and_stops_at_a_gap():
    end, rx = _engine_end(), _Receiver(0)
    fwd = [(1, 0, "a"), (3, 1, "b"), (4, 3, "c")]
    assert end.receive(0, fwd, rx.inbox.check, rx.apply) == (3, 0, APPLY)
    assert rx.inbox.last == {0: 4} and end.take_owed() == []
    # seen again, then a message whose prev (6) is not the last applied (4): a gap
    again = [(3, 1, "b"), (4, 3, "c"), (7, 6, "e"), (8, 7, "f")]
    assert end.receive(0, again, rx.inbox.check, rx.apply) == (0, 2, GAP)
    assert [m[2] for m in rx.applied] == ["a", "b", "c"]
    assert end.take_owed() == [0] and end.take_owed() == []  # owed once


def test_receive_strict_stops_at_a_malformed_message_lenient_applies_it():
    end, rx = _engine_end(), _Receiver(0)
    bad = [(1, 0, "a"), (2, 1), ("3", 2, "c"), (3, 2, "d")]
    assert end.receive(0, bad, rx.inbox.check, rx.apply) == (1, 0, MALFORMED)
    assert rx.applied == [(1, 0, "a")]
    acc, rx2 = _account_end(), _Receiver(2, 1)
    msgs = [("s", 0, 5, 0), ("s", 9, 6, 5), "junk", ("s", 0, 7, 5)]  # another sender, junk
    assert acc.receive(0, msgs, rx2.inbox.check, rx2.apply) == (4, 0, APPLY)
    assert rx2.applied == msgs  # the machine gets the odd ones: its anomaly, not the link's


def test_a_report_is_answered_once_and_only_an_engine_end_owes_its_own():
    eng, acc = _engine_end(), _account_end()
    eng.reported(0, 5)
    acc.reported(0, 5)
    assert eng.take_owed() == [0] and acc.take_owed() == []  # SYNC → HAVE; HAVE → nothing
    assert eng.take_reports() == {0: 5} and eng.take_reports() == {}


def test_the_unacked_window_shrinks_with_each_report():
    acc = _account_end(unacked=True)
    acc.sent(0, [(1, 0, "a"), (2, 1, "b")])
    acc.sent(0, [(5, 2, "c")])
    assert list(acc.unacked[0]) == [1, 2, 5]
    assert acc.reported(0, 2) == 1 and acc.reported(0, 5) == 0
    assert _engine_end().reported(0, 3) == 0  # untracked


def _ring(msgs: list[tuple], seq_at: int):
    def ring(peer: int, after: int) -> tuple[list[tuple], bool]:
        got = [m for m in msgs if m[seq_at] > after]
        return got, not got or msgs[0][seq_at] <= after or got[0][seq_at + 1] == after

    return ring


def _never(peer: int, after: int) -> list[tuple]:
    raise AssertionError("the ring holds them: no journal read")


def test_resend_follows_the_gate_and_never_passes_the_high_watermark():
    acc = _account_end()
    sent = [(1, 0, "a"), (2, 1, "b"), (3, 2, "c")]
    acc.sent(0, sent)
    ring = _ring(sent, 0)
    acc.gates[0].read()
    # the first report: nothing is known, all after it; a replicated leader's: up to released
    assert acc.resend(0, 1, 0.0, 2, ring, _never) == [(2, 1, "b")]
    assert acc.resend(0, 2, 1.0, None, ring, _never) == []  # moved: in flight
    assert acc.resend(0, 2, 2.0, None, ring, _never) == [(3, 2, "c")]  # stuck: re-sent
    assert acc.resend(0, 3, 3.0, None, ring, _never) == []


def test_resend_past_the_ring_reads_the_journal_and_ends_the_repair_when_it_reaches_back():
    eng = _engine_end()
    settles = [("s", 0, 10, 0), ("s", 0, 20, 10), ("s", 0, 30, 20)]
    eng.sent(0, settles)
    asked: list[int] = []

    def journal(peer: int, after: int) -> list[tuple]:
        asked.append(after)
        eng.repairs[peer] = "a replay under way"
        return settles[:1]

    tail = _ring(settles[1:], 2)  # the ring lost the first one
    eng.reported(0, 0)
    assert eng.resend(0, 0, 0.0, None, tail, journal) == settles[:1] and asked == [0]
    eng.reported(0, 10)
    assert eng.resend(0, 10, 0.0, None, tail, journal) == settles[1:]  # moved, but repairing
    assert eng.repairs == {}  # the ring reaches back: the repair is over


def test_gate_starts_at_what_the_journal_sent():
    end = LinkEndpoint(2, 1.0, {1: 42}, out=FORWARD, incoming=SETTLEMENT)
    assert end.gates[0].sent == 0 and end.gates[1].sent == 42
    assert end.gates[0].answer(0, 0.0) == ALL  # the first report


def test_two_ends_heal_a_lossy_link_to_exactly_once():
    """An account shard's end sends forwards to an engine shard's end over a wire that drops
    a third of the messages and of the reports; SYNC/HAVE as the nodes drive them: every
    forward is applied once, in order, and every settlement the other way too."""
    rng = random.Random(7)
    acc, eng = _account_end(), _engine_end()
    fwd_rx, set_rx = _Receiver(0), _Receiver(2, 1)
    fwds: list[tuple] = []
    settles: list[tuple] = []
    to_eng: list[tuple] = []  # (kind, body)
    to_acc: list[tuple] = []

    def lossy(queue: list[tuple], item: tuple) -> None:
        if rng.random() > 0.33:  # a third of the messages and reports never arrive
            queue.append(item)

    for t in range(400):
        now = float(t)
        if t < 200:  # the account shard forwards an order; the engine shard settles one
            fwds.append((len(fwds) + 1, len(fwds), f"o{t}"))
            acc.sent(0, fwds[-1:])
            lossy(to_eng, ("data", fwds[-1:]))
            settles.append(("s", 0, 2 * t + 2, 2 * t if t else 0))
            eng.sent(0, settles[-1:])
            lossy(to_acc, ("data", settles[-1:]))
        for kind, body in to_eng:
            if kind == "data":
                eng.receive(0, body, fwd_rx.inbox.check, fwd_rx.apply)
            else:
                eng.reported(0, body)
        to_eng.clear()
        for peer, have in eng.take_reports().items():
            lossy(to_acc, ("data", eng.resend(peer, have, now, None, _ring(settles, 2), _never)))
        for peer in eng.take_owed():
            lossy(to_acc, ("report", fwd_rx.inbox.last.get(peer, 0)))
        for kind, body in to_acc:
            if kind == "data":
                acc.receive(0, body, set_rx.inbox.check, set_rx.apply)
            else:
                acc.reported(0, body)
        to_acc.clear()
        for peer, have in acc.take_reports().items():
            lossy(to_eng, ("data", acc.resend(peer, have, now, None, _ring(fwds, 0), _never)))
        if acc.take_owed() or t % 5 == 0:  # a gap, or the account shard's periodic SYNC
            lossy(to_eng, ("report", set_rx.inbox.last.get(0, 0)))
    assert fwd_rx.applied == fwds
    assert set_rx.applied == settles


def test_sent_after_says_whether_the_ring_reaches_back():
    """Both machines' rings of sent messages answer a re-send the same way (``sent_after``)."""
    fwds = [(5, 2, "a"), (7, 5, "b"), (9, 7, "c")]
    assert sent_after(fwds, 5, FORWARD) == ([(7, 5, "b"), (9, 7, "c")], True)
    assert sent_after(fwds, 2, FORWARD) == (fwds, True)  # the first one continues from 2
    assert sent_after(fwds, 1, FORWARD) == (fwds, False)  # 2 itself is only in the journal
    assert sent_after(fwds, 9, FORWARD) == ([], True) and sent_after([], 0, FORWARD) == ([], True)
    settles = [("s", 0, 10, 4), ("s", 0, 12, 10)]
    assert sent_after(settles, 3, SETTLEMENT) == (settles, False)
    assert sent_after(settles, 10, SETTLEMENT) == (settles[1:], True)
