"""The fates of a load run's open outcomes, asked until known or a deadline (no I/O here).

A command whose reply leaves its outcome open (no reply within the timeout, the router's "it
may have run: ask its fate" answer after a failover, an unreadable reply) may or may not have
run. ``FateTracker`` asks its order's fate with the SDK's own decision
(``ClientCore.fate_steps``: with the account tier, new/amend ask their account shard first), and
keeps asking, with back-off, what that leaves open: a question refused as ``overloaded``, one
that timed out, a shard without a leader yet, an amend still in flight. Only when the deadline
set at the end of the load passes (``finish``) does an open one count as ``unknown``, with the
reason of its last answer, so a report never says "unknown" where asking again would have told.

The load generator does the I/O: ``due`` and ``answer`` hand it ``Step``s (questions for one
dialogue step, sent as frames grouped by target), and it feeds each frame's outcome back with
``answer`` (a frame that timed out: its error text).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from shardex.client import EXECUTED, NOT_EXECUTED, ClientCore, FateSteps
from shardex.client.fatesteps import askable
from shardex.wire import codes
from shardex.wire.errors import code_of

FATES = ("executed", "not_executed", "unknown")  # report keys
_KEY = {EXECUTED: "executed", NOT_EXECUTED: "not_executed"}
FIRST_RETRY_S = 0.25  # back-off of the second question; doubled per question after that
MAX_RETRY_S = 2.0
# Why a fate stayed unknown (stable report keys), from the code of the last answer's error.
WHY_TIMEOUT = "timeout"  # the question got no answer in time
WHY_OVERLOADED = "overloaded"  # the shard shed the question
WHY_UNAVAILABLE = "shard_unavailable"  # the router had no leader for the shard
WHY_NOT_LEADER = "not_leader"  # a standby or fenced leader answered
WHY_JOURNAL = "journal_unavailable"
WHY_RECOVERING = "recovering"  # the shard was replaying its journal
WHY_UNREACHABLE = "cannot_reach"
WHY_MALFORMED = "malformed_reply"
WHY_IN_FLIGHT = "amend_in_flight"  # the account shard forwarded it; the engine may not have it
WHY_UNREADABLE = "unreadable_state"  # an answer whose state the client cannot read
WHY_OTHER = "other_error"
WHY_NOT_ASKED = "not_asked_over_limit"  # past ``limit`` questions per process
WHY_INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM before it could be asked (again)
WHY_NO_TIME = "not_asked_before_deadline"  # queued behind the window until the deadline
# asked again (with back-off) until the deadline: the next answer may tell; the others are
# answers that will not change (a shard's unreadable or refused answer): unknown at once
RETRIED = frozenset((WHY_TIMEOUT, WHY_OVERLOADED, WHY_UNAVAILABLE, WHY_NOT_LEADER, WHY_JOURNAL,
                     WHY_RECOVERING, WHY_UNREACHABLE, WHY_IN_FLIGHT))  # fmt: skip
_WHY = {
    codes.TIMEOUT: WHY_TIMEOUT,
    codes.LEADER_CHANGED: WHY_TIMEOUT,  # the router's "timed out" answer after a failover
    codes.OVERLOADED: WHY_OVERLOADED,
    codes.UNAVAILABLE: WHY_UNAVAILABLE,
    codes.NOT_LEADER: WHY_NOT_LEADER,
    codes.JOURNAL_UNAVAILABLE: WHY_JOURNAL,
    codes.RECOVERING: WHY_RECOVERING,
    codes.UNREACHABLE: WHY_UNREACHABLE,
    codes.MALFORMED_REPLY: WHY_MALFORMED,
}


def why_unknown(status: Mapping[str, Any] | None) -> str:
    """The stable reason key of an ``unknown`` fate from its ``fate_steps`` status."""
    if not isinstance(status, Mapping):
        return WHY_UNREADABLE
    if status.get("state") == "held" and status.get("pending"):
        return WHY_IN_FLIGHT
    error = status.get("error")
    if not isinstance(error, str):
        return WHY_UNREADABLE
    return _WHY.get(code_of(error), WHY_OTHER)


class Step(NamedTuple):
    """Questions to send: ``queries[k]`` is the fate query of ``positions[k]`` of dialogue
    ``token``; ``via_accounts``: to the account's shard (``@account``), else the symbol's."""

    token: int
    positions: list[int]
    queries: list[tuple]
    via_accounts: bool


@dataclass
class _Dialogue:
    cmds: list[tuple]
    attempts: list[int]
    steps: FateSteps
    out: list = field(default_factory=list)
    waiting: int = 0  # positions of the current step still unanswered


class FateTracker:
    """Asks the fates of open commands in dialogues of at most ``batch`` commands (at most
    ``window`` dialogues in flight: the questions must not add to an overload), again with
    back-off while they stay open, until ``finish(deadline)``'s deadline; counts the results."""

    def __init__(self, core: ClientCore, batch: int, limit: int = 200_000, window: int = 8) -> None:
        self.core = core
        self.batch = max(1, batch)
        self.window = max(1, window)  # dialogues in flight at once: never a flood of questions
        self.limit = limit
        self.asked = 0  # commands taken (each at most ``limit`` per tracker)
        self.fates: Counter[str] = Counter(dict.fromkeys(FATES, 0))
        self.why: Counter[str] = Counter()  # unknown fates by reason
        self.questions = 0  # fate queries sent (retries included)
        self.deadline: float | None = None  # set by ``finish``: no question after it
        self._queue: list[tuple[float, int, tuple, int, str]] = []  # (due, n, cmd, attempt, why)
        self._n = itertools.count()
        self._tokens = itertools.count()
        self._open: dict[int, _Dialogue] = {}

    # -- intake and scheduling --------------------------------------------------------------

    def add(self, cmd: tuple, now: float) -> None:
        """A command whose outcome is open: its fate will be asked (now)."""
        if not askable(cmd):
            self._unknown(WHY_UNREADABLE)
        elif self.asked >= self.limit:
            self._unknown(WHY_NOT_ASKED)
        else:
            self.asked += 1
            heapq.heappush(self._queue, (now, next(self._n), cmd, 0, WHY_NO_TIME))

    @property
    def open(self) -> int:
        """Commands whose fate is not settled yet (queued or being asked)."""
        return len(self._queue) + sum(len(d.cmds) for d in self._open.values())

    @property
    def done(self) -> bool:
        return not self._queue and not self._open

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def due(self, now: float) -> list[Step]:
        """Start dialogues for the commands due by ``now`` (≤ ``batch`` each); after the
        deadline every queued one is settled ``unknown`` with its last reason instead."""
        if self.deadline is not None and now >= self.deadline:
            while self._queue:
                self._unknown(heapq.heappop(self._queue)[4])
            return []
        steps: list[Step] = []
        while self._queue and self._queue[0][0] <= now and len(self._open) < self.window:
            cmds: list[tuple] = []
            attempts: list[int] = []
            while self._queue and self._queue[0][0] <= now and len(cmds) < self.batch:
                _, _, cmd, attempt, _ = heapq.heappop(self._queue)
                cmds.append(cmd)
                attempts.append(attempt)
            token = next(self._tokens)
            d = _Dialogue(cmds, attempts, self.core.fate_steps(cmds, list(range(len(cmds)))))
            self._open[token] = d
            steps += self._advance(token, d, None, now)
        return steps

    def finish(self, deadline: float) -> None:
        """The load stopped: ask what is open until ``deadline``, then call it unknown."""
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    def abandon(self, why: str = WHY_INTERRUPTED) -> None:
        """Stop now (interrupted): everything still open is unknown for ``why``."""
        while self._queue:
            heapq.heappop(self._queue)
            self._unknown(why)
        for d in self._open.values():
            for _ in d.cmds:
                self._unknown(why)
        self._open.clear()

    # -- answers -----------------------------------------------------------------------------

    def answer(self, token: int, positions: list[int], error: Any, results: Any,
               now: float) -> list[Step]:  # fmt: skip
        """One frame's outcome for ``positions`` of dialogue ``token`` (``error``: its batch
        error, or the local timeout text); returns the questions of the next step, if any."""
        d = self._open.get(token)
        if d is None:
            return []
        try:
            ClientCore.store(positions, error, results, d.out)
        except (IndexError, ValueError):
            return []
        d.waiting -= len(positions)
        if d.waiting > 0:
            return []
        return self._advance(token, d, d.out, now)

    def _advance(self, token: int, d: _Dialogue, out: list | None, now: float) -> list[Step]:
        try:
            queries, via = d.steps.send(out) if out is not None else next(d.steps)
        except StopIteration as stop:
            del self._open[token]
            self._settle(d, stop.value[0], now)
            return []
        positions = list(range(len(queries)))
        d.out = [None] * len(queries)
        d.waiting = len(queries)
        self.questions += len(queries)
        return [Step(token, positions, queries, via)]

    def _settle(self, d: _Dialogue, fates: Mapping[int, tuple[str, Any]], now: float) -> None:
        for i, cmd in enumerate(d.cmds):
            fate, status = fates.get(i, ("unknown", None))
            key = _KEY.get(fate)
            if key is not None:
                self.fates[key] += 1
                continue
            why = why_unknown(status)
            if why not in RETRIED or (self.deadline is not None and now >= self.deadline):
                self._unknown(why)
                continue
            wait = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** d.attempts[i])
            heapq.heappush(self._queue, (now + wait, next(self._n), cmd, d.attempts[i] + 1, why))

    def _unknown(self, why: str) -> None:
        self.fates["unknown"] += 1
        self.why[why] += 1
