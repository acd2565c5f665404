"""Exactly-once on a one-way, sequenced link between two single-writer tiers (pure, no I/O).

Every message on a link (engine shard → account shard settlements; account shard → engine
shard forwarded orders) carries the sender's ``seq`` and ``prev``, the seq of the previous
message the sender put on *this* link (0 for the first). The sender's seqs are its own event or
output seqs, so they skip numbers that went to other links; ``prev`` makes the chain per link
explicit, so the receiver can tell a duplicate (``seq <= last``), a gap (``prev != last``: some
message before this one is missing; ask for ``(last, seq]`` again) and the next message
(``prev == last``) without any per-link counter on the sender beyond the last seq it sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

APPLY, DUPLICATE, GAP = 0, 1, 2


class Inbox:
    """The receiver's half: the last seq applied per sender. Part of the receiver's snapshot."""

    __slots__ = ("last",)

    def __init__(self, last: dict[int, int] | None = None) -> None:
        self.last: dict[int, int] = dict(last or {})

    def check(self, sender: int, seq: int, prev: int) -> int:
        """``APPLY`` (then call ``applied``), ``DUPLICATE`` (skip) or ``GAP`` (nothing applied)."""
        have = self.last.get(sender, 0)
        if seq <= have:
            return DUPLICATE
        return APPLY if prev == have else GAP

    def applied(self, sender: int, seq: int) -> None:
        self.last[sender] = seq


class Outbox:
    """The sender's half: the last seq put on each link (to fill ``prev``). Part of the
    sender's snapshot, so a sender rebuilt from its journal re-sends byte-identical messages."""

    __slots__ = ("last",)

    def __init__(self, last: dict[int, int] | None = None) -> None:
        self.last: dict[int, int] = dict(last or {})

    def put(self, link: int, seq: int) -> int:
        """Record that ``seq`` goes on ``link``; return its ``prev``."""
        prev = self.last.get(link, 0)
        self.last[link] = seq
        return prev


ALL = (1 << 63) - 1  # ``ResendGate.answer``: every message after ``have`` (nothing is known yet)


class ResendGate:
    """The sender's half of the repair of one link: which messages a report of the receiver
    calls for re-sending (an account shard's SYNC to an engine shard, for settlements; an
    engine shard's HAVE to an account shard, for forwards). Pure: the node says when a message
    went out (``put``), when a report was read (``read``) and when it answers it (``answer``).

    A report names ``have``, the last message the receiver applied from us. Being behind what
    was sent does not make the rest lost: it may be in flight (on the link, or unread in the
    receiver's backlog), and re-sending it makes a busy link carry it twice. A lost message
    stops the receiver at the one before it (the next is a gap), so its ``have`` stops moving:
    only a report whose ``have`` did not move past the previous report's re-sends, and only
    what was sent before that *previous* report was read. Those had a whole report period to
    arrive; newer ones may still be in flight: a report read in the same wake-up as a burst is
    answered after the burst's messages were sent, and may have been written before them.
    A lost message is so re-sent at the latest on the second report read after it was sent:
    nothing stalls. The first report (a sender or receiver that just started: nothing is known)
    re-sends everything after ``have``; ``sent``: the last seq the sender's journal put on the
    link before it started, which counts as sent before that report (so a re-send from the
    journal it starts goes on). At most one re-send every ``every`` seconds (gap reports come
    in bursts), except during a re-send from the journal (each report continues it).
    """

    __slots__ = ("every", "sent", "_mark", "_have", "_bound", "_at")

    def __init__(self, every: float, sent: int = 0) -> None:
        self.every = every
        self.sent = sent  # the newest seq put on the link
        self._mark = sent  # ``sent`` when the report now waiting for its answer was read
        self._have: int | None = None  # the ``have`` of the previous report answered
        self._bound = 0  # ``sent`` when that report was read
        self._at: float | None = None  # when we last re-sent

    def put(self, seq: int) -> None:
        """Messages up to ``seq`` went on the link (or were dropped trying: the same to us)."""
        if seq > self.sent:
            self.sent = seq

    def read(self) -> None:
        """A report was read; it is answered later (``answer``), after this wake-up's sends."""
        self._mark = self.sent

    def answer(self, have: int, now: float, repairing: bool = False) -> int | None:
        """Re-send the messages with seq in ``(have, bound]``: the ``bound`` returned (``ALL``:
        every one), or None for none. ``repairing``: a re-send from the journal is under way."""
        prev, bound = self._have, self._bound
        self._have, self._bound = have, self._mark
        if prev is None:
            bound = ALL
        if repairing:
            return bound
        if prev is not None and have > prev:
            return None  # moving: what follows is in flight
        if bound <= have:
            return None  # nothing sent early enough to count as lost
        if self._at is not None and now - self._at < self.every:
            return None
        self._at = now
        return bound


FORWARD = (0, 1)  # where a forward ``(seq, prev, cmd)`` carries its seq and prev
SETTLEMENT = (2, 3)  # ... and a settlement ``(kind, eshard, eseq, prev, ...)``
MALFORMED = 3  # ``LinkEndpoint.receive``: stopped at a message without int (seq, prev)


def sent_after(ring: Sequence[tuple], after: int, at: tuple[int, int]) -> tuple[list[tuple], bool]:
    """The messages of a sender's ring of one link (oldest first; ``at``: where they carry
    (seq, prev)) with seq > ``after``, and whether the ring reaches back to ``after`` (False:
    some are only in the journal). The machines keep these rings (in their snapshots);
    ``LinkEndpoint.resend`` draws re-sends from them."""
    seq, prev = at
    if not ring or ring[-1][seq] <= after:
        return [], True
    msgs = [m for m in ring if m[seq] > after]
    return msgs, ring[0][seq] <= after or msgs[0][prev] == after


class LinkEndpoint:
    """One node's end of the sequenced link to each peer of the other tier, both directions,
    without sockets: an engine shard's to its account shards (settlements out, forwards in)
    and an account shard's to its engine shards (forwards out, settlements in). The node reads
    and sends; this decides. What is journaled stays in the node's machine (its ``Inbox`` and
    ``Outbox``, the ring of sent messages a re-send is drawn from), so a restart rebuilds it.

    Outgoing: each message sent (``sent``) moves the peer's ``ResendGate``; with ``unacked``
    the seqs the peer has not yet reported applied are kept (an account shard sheds orders for
    an engine shard that falls too far behind). A report of the peer (``reported``: a SYNC at
    an engine shard, a HAVE at an account shard) waits in ``reports`` and is answered after
    the group commit (``resend``): the gate says which messages it calls for again.

    Incoming (``receive``): each message is checked against the machine's ``Inbox`` (the
    caller's ``check``): applied when it continues the link, skipped when seen, and at a gap
    the rest is left and the peer is owed our report (``owed``), so it re-sends. ``answers``:
    whether every report read is answered with ours too (the engine shard answers each SYNC
    with HAVE; the account shard SYNCs on its own clock instead).
    """

    __slots__ = ("gates", "reports", "owed", "repairs", "unacked", "out_seq", "in_seq",
                 "in_prev", "in_sender", "lengths", "answers")  # fmt: skip

    def __init__(
        self,
        peers: int,
        every: float,
        sent: dict[int, int],
        *,
        out: tuple[int, int],
        incoming: tuple[int, int],
        in_sender: int | None = None,
        width: int | None = None,
        answers: bool = False,
        unacked: bool = False,
    ) -> None:
        """``sent``: the last seq the journal put on each link before we started (counts as
        sent); ``out`` / ``incoming``: where outgoing / incoming messages carry (seq, prev)
        (``FORWARD``, ``SETTLEMENT``); ``in_sender``: where an incoming message names its
        sender (one naming another is not checked against the link: the machine's anomaly);
        ``width``: the number of fields an incoming message must have (None: any)."""
        self.gates = {p: ResendGate(every, sent.get(p, 0)) for p in range(peers)}
        self.reports: dict[int, int] = {}  # peer → its last report read, not yet answered
        self.owed: set[int] = set()  # peers owed our report after the commit
        self.repairs: dict[int, Any] = {}  # peer → its re-send from the journal under way
        self.unacked: dict[int, deque[int]] = {p: deque() for p in range(peers)} if unacked else {}
        self.out_seq = out[0]
        self.in_seq, self.in_prev = incoming
        self.in_sender = in_sender
        need = max(self.in_seq, self.in_prev, -1 if in_sender is None else in_sender) + 1
        self.lengths = (width, width) if width is not None else (need, 1 << 30)
        self.answers = answers

    # -- outgoing --------------------------------------------------------------------------

    def sent(self, peer: int, msgs: list[tuple]) -> None:
        """``msgs`` (in seq order) went to ``peer``, or were dropped trying: the same to us."""
        seq = self.out_seq
        self.gates[peer].put(msgs[-1][seq])
        pending = self.unacked.get(peer)
        if pending is not None:
            pending.extend(m[seq] for m in msgs)

    def reported(self, peer: int, have: int) -> int:
        """``peer`` reports it applied our messages up to ``have``: answered after the commit
        (``resend``). Returns how many sent messages it has not applied yet (0 untracked)."""
        self.gates[peer].read()  # (what was sent until now had a report period more)
        self.reports[peer] = have
        if self.answers:
            self.owed.add(peer)
        pending = self.unacked.get(peer)
        if pending is None:
            return 0
        while pending and pending[0] <= have:
            pending.popleft()
        return len(pending)

    def take_reports(self) -> dict[int, int]:
        """The reports read since the last call (each answered once)."""
        reports, self.reports = self.reports, {}
        return reports

    def resend(
        self,
        peer: int,
        have: int,
        now: float,
        released: int | None,
        ring: Callable[[int, int], tuple[list[tuple], bool]],
        journal: Callable[[int, int], list[tuple]],
    ) -> list[tuple]:
        """The messages to send ``peer`` again for its report ``have`` (``ResendGate``): from
        ``ring(peer, have)`` → (messages after ``have``, whether it reached back to it), else
        ``journal(peer, have)``; never past ``released`` (a replicated leader's high
        watermark: nothing the standby may lack; None: no standby)."""
        bound = self.gates[peer].answer(have, now, peer in self.repairs)
        if bound is None:
            return []
        msgs, complete = ring(peer, have)
        if complete:
            self.repairs.pop(peer, None)
        else:
            msgs = journal(peer, have)
        if released is not None:
            bound = min(bound, released)
        seq = self.out_seq
        if msgs and msgs[-1][seq] > bound:
            msgs = [m for m in msgs if m[seq] <= bound]  # (a prefix: seq order)
        return msgs

    # -- incoming --------------------------------------------------------------------------

    def receive(
        self,
        peer: int,
        msgs: Iterable[Any],
        check: Callable[[int, int, int], int],
        apply: Callable[[int, Any], Any],
    ) -> tuple[int, int, int]:
        """Apply, in order, the messages of ``msgs`` from ``peer`` that continue the link
        (``check(peer, seq, prev)``: ``APPLY``, ``DUPLICATE`` or ``GAP``; ``apply(peer, msg)``),
        skip those seen, and stop at a gap (then the peer is owed our report: it re-sends
        from there). Returns (applied, duplicates, how it ended: ``APPLY`` all read, ``GAP``,
        or ``MALFORMED``: a message not a tuple of ``width`` fields with int (seq, prev); with
        ``in_sender`` such a message, or one naming another sender, is applied instead: the
        machine records it as an anomaly)."""
        seq_at, prev_at, sender_at = self.in_seq, self.in_prev, self.in_sender
        lo, hi = self.lengths
        applied = duplicates = 0
        for msg in msgs:
            if type(msg) is tuple and lo <= len(msg) <= hi:
                seq, prev = msg[seq_at], msg[prev_at]
                if (type(seq) is int and type(prev) is int
                        and (sender_at is None or msg[sender_at] == peer)):  # fmt: skip
                    verdict = check(peer, seq, prev)
                    if verdict == APPLY:
                        apply(peer, msg)
                        applied += 1
                        continue
                    if verdict == DUPLICATE:
                        duplicates += 1
                        continue
                    self.owed.add(peer)
                    return applied, duplicates, GAP
            if sender_at is None:
                return applied, duplicates, MALFORMED
            apply(peer, msg)
            applied += 1
        return applied, duplicates, APPLY

    def take_owed(self) -> list[int]:
        """The peers owed our report now (each once, in peer order)."""
        owed, self.owed = self.owed, set()
        return sorted(owed)


class EpochFence:
    """The receiver's check of the sender's token (its lease epoch) on every link message: a
    leader paused between its lease-deadline check and its send (GC, SIGSTOP, a preempted
    thread) must not have its late messages applied once a newer leader of the same shard has
    been heard from. ``high``: the highest epoch seen per sender shard; a message with a lower
    one is refused, a higher one replaces it (0: a sender without replicas, or of an older
    version). Refusing loses nothing: the link is sequenced, and what the current leader has
    is re-sent on its next report. Not journaled (docs/account-link.md: the window left)."""

    __slots__ = ("high", "logged")

    def __init__(self) -> None:
        self.high: dict[int, int] = {}
        self.logged: set[tuple[int, int]] = set()  # (sender, epoch) refusals already logged

    def admit(self, sender: int, epoch: int) -> bool:
        """Whether a message of ``sender`` at ``epoch`` may be applied (one lookup and a
        compare when the epoch is the one seen last, as it is on every message but a
        leader change's)."""
        high = self.high.get(sender, 0)
        if epoch == high:
            return True
        if epoch > high:
            self.high[sender] = epoch
            return True
        return False

    def first_refusal(self, sender: int, epoch: int) -> bool:
        """Whether this refusal of ``sender``'s ``epoch`` is its first (logged once per epoch)."""
        key = (sender, epoch)
        if key in self.logged:
            return False
        self.logged.add(key)
        return True
