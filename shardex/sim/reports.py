"""Link reports judged as they leave: an account shard's SYNC must say what it was given.

A SYNC tells an engine shard ``have``, the last of its settlements the account shard applied;
the engine shard takes a ``have`` that did not move since the previous SYNC for a lost
settlement and re-sends (``accounts.link.ResendGate``). So a SYNC is worth what its ``have``
is current: it must leave after the account shard read what its link had delivered. A SYNC
sent at the top of a loop turn, before the link is read, carries the ``have`` of the turn
before: after a long turn it lags by every settlement that came meanwhile (the bug 698b19a
fixed; ``--mutation late_sync`` puts it back).

Its cost is not what a check of the result can see in this world: since 666b555 the engine
shard re-sends only on a repeated ``have``, and only what it had sent before it read the
first of the two, so a stale SYNC wastes a few settlements only when the account shard then
applies nothing for a whole SYNC period (``docs/simulator-checks.md``). The report itself is
wrong all the same, whatever its reader does with it: this watch judges the report, not its
consequences.

``ReportWatch`` is a ``MemHub.on_send`` tap: when an account shard's engine DEALER sends a
SYNC it looks at that socket's inbox (nothing lands in it during the shard's own turn, so what
waits there came before the turn began) and records a ``StaleReport`` when reading what
waits would have moved the ``have`` (``unread_upto``: a settlement that continues the link;
duplicates and messages behind a gap do not count). The check ``reports_current``
(``shardex.sim.invariants``) turns each record into a violation.

A node reads at most ``READ_PER_TURN`` messages of one engine link per turn
(``ForwardLink.from_engines``): with that many or more waiting, what is left after the read
is not a stale report, and the watch does not judge it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import zmq

from shardex.accounts.link import SETTLEMENT
from shardex.sim.state import StaleReport
from shardex.wire.link import decode_link
from shardex.wire.protocol import LINK_SETTLE, LINK_SYNC

READ_PER_TURN = 1_000  # messages ``ForwardLink.from_engines`` reads from one engine per turn

Tap = Callable[[Any, list[bytes]], None]


def unread_upto(have: int, bodies: Iterable[Any]) -> int:
    """The ``have`` after applying ``bodies`` (settlement lists, in arrival order) from
    ``have``, as ``LinkEndpoint.receive`` would: a settlement whose ``prev`` is the current
    ``have`` continues the link, one at or below it is a duplicate, and a gap ends that
    message (the rest of it is not applied; the next message is read again). Anything not a
    list of settlement tuples moves nothing."""
    seq_at, prev_at = SETTLEMENT
    width = max(seq_at, prev_at) + 1
    for body in bodies:
        if not isinstance(body, (list, tuple)):
            continue
        for msg in body:
            if not isinstance(msg, (list, tuple)) or len(msg) < width:
                break
            seq, prev = msg[seq_at], msg[prev_at]
            if type(seq) is not int or type(prev) is not int:
                break
            if seq <= have:
                continue
            if prev != have:
                break
            have = seq
    return have


def _settlements(inbox: Iterable[tuple[Any, list[bytes]]]) -> tuple[int | None, list[Any]]:
    """The engine shard named by the settlement messages waiting in ``inbox`` (a DEALER's:
    ``(pipe, [kind, payload])``) and their bodies, in order (malformed ones left out)."""
    engine, bodies = None, []
    for _, frames in inbox:
        if len(frames) != 2 or frames[0] != LINK_SETTLE:
            continue
        try:
            sender, body, _ = decode_link(frames[1])
        except Exception:  # noqa: BLE001, S112 - malformed: the node counts it, we skip it
            continue
        if type(sender) is int:
            engine = sender if engine is None else engine
            if sender == engine:
                bodies.append(body)
    return engine, bodies


class ReportWatch:
    """Records every SYNC that leaves stale (see the module). ``stale``: the records, in
    order; ``sent``: SYNCs seen. ``now``: the virtual time to stamp them with."""

    def __init__(self, now: Callable[[], float], trace: Any = None) -> None:
        """``trace``: a ``sched.Trace`` that gets a ``stale`` event per record (the lead-up
        of a violation shows the SYNC itself), or None."""
        self.now = now
        self.trace = trace
        self.stale: list[StaleReport] = []
        self.sent = 0
        self._next: Tap | None = None

    def install(self, hub: Any) -> None:
        """Tap ``hub``'s sends (after any tap already there)."""
        self._next = hub.on_send
        hub.on_send = self.on_send

    def on_send(self, sock: Any, msg: list[bytes]) -> None:
        if self._next is not None:
            self._next(sock, msg)
        if len(msg) != 2 or msg[0] != LINK_SYNC or sock.kind != zmq.DEALER:
            return
        try:
            _, have, _ = decode_link(msg[1])
        except Exception:  # noqa: BLE001 - not a SYNC we can read: the engine shard judges it
            return
        if type(have) is not int:
            return
        self.sent += 1
        inbox = sock.inbox
        if not inbox or len(inbox) >= READ_PER_TURN:
            return
        engine, bodies = _settlements(inbox)
        unread = unread_upto(have, bodies)
        if engine is not None and unread > have:
            r = StaleReport(sock.owner, engine, have, unread, self.now())
            self.stale.append(r)
            if self.trace is not None:
                self.trace.add(r.t, "stale", r.node, f"SYNC to engine shard {engine}: have "
                               f"{have}, settlements to {unread} unread")  # fmt: skip


__all__ = ["READ_PER_TURN", "ReportWatch", "unread_upto"]
