"""Cancels that arrive before their order's forward: parked until the account link is read
past the moment the cancel was read, then run.

An account shard sends an order's forward on its link before it answers ``place``, but the
link and the router are two connections into the engine shard, and nothing orders messages
across connections: under CPU starvation libzmq's I/O thread can hand the engine shard a
cancel from the router before a forward that was sent earlier on the link. Reading the link
first each turn (``ShardNode.read_links``) does not help when the forward is not there yet.

What is exact instead: the link is one FIFO connection. An engine shard that reads a cancel
for an order it does not know (of a pair it owns, on a cluster with the account tier) parks
the request and sends the account shard that owns the cancel's account a MARK (a token). The
account shard answers each MARK at once on the link with the token and the seq of the last
forward it put on the link to us. The MARK left after the cancel was read, so after the
client's "ok", so after the account shard sent that order's forward: its answer follows the
forward on the same connection. Once the answer is read and every forward up to the seq it
names is applied (a forward dropped on the way comes back by the link's repair), the parked
request runs, and finds its order if it was ever placed. A request also runs, as it did
before, when its deadline passes (an account shard down or not answering) or when the queue
is full (each bounded), and then a cancel of an unknown order is refused as unknown.

Determinism: nothing is journaled when a request is parked; it is journaled when it runs, like
any request (the journal's order of commands is the order they ran in, so replay is
unchanged). A parked request is lost with a leader that dies: the client gets no answer and
asks the order's fate, as for any request in flight.

``Parked`` is the pure part (no socket, no clock: ``now`` is given); ``ParkedCancels`` is the
``ShardNode`` mixin around it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from shardex.accounts.ledger import account_shard_for
from shardex.engine.codes import OP_CANCEL, STATE_UNKNOWN
from shardex.wire.protocol import LINK_MARK

MAX_PARKED = 10_000  # requests parked at once; past it a cancel runs (and is refused) at once
# A parked request runs after this long even without the MARK's answer, or when the forwards it
# names do not arrive: long enough for the link to repair a dropped forward (re-sent at the
# latest on the second SYNC after it, ~2 s: docs/account-link.md), short of a client's timeout.
PARK_DEADLINE_S = 2.5


class Parked:
    """The queue of parked requests (oldest first) and what the account shards answered.

    ``counts`` (the node's link counters): ``parked`` requests parked, ``park_late`` run at
    their deadline, ``park_full`` not parked (queue full), ``unfound`` cancels that ran while
    their order was still unknown here (after parking or with the queue full: refused)."""

    def __init__(self, accounts: int, counts: dict[str, int], limit: int = MAX_PARKED,
                 wait: float = PARK_DEADLINE_S) -> None:  # fmt: skip
        self.accounts = accounts
        self.counts = counts
        for what in ("parked", "park_late", "park_full", "unfound"):
            counts.setdefault(what, 0)
        self.limit = limit
        self.wait = wait
        self.token = 0  # the last MARK token sent
        self.ask: set[int] = set()  # account shards owed a MARK (parked this turn)
        self.answers: dict[int, tuple[int, int]] = {}  # account shard → (token, sent) answered
        self.queue: deque[tuple[int, float, frozenset[int], Any]] = deque()
        self.owners: frozenset[int] = frozenset()  # (``check`` → ``park``)

    def unknown_owners(self, engine: Any, owns: Callable[[str], bool], cmds: Any) -> frozenset[int]:
        """The account shards owning the accounts of ``cmds``' cancels whose order ``engine``
        does not know (live, finished or pending), of pairs it ``owns`` (listed here)."""
        owners: set[int] = set()
        for cmd in cmds:
            if type(cmd) is not tuple or len(cmd) != 4 or cmd[0] != OP_CANCEL:
                continue
            _, symbol, oid, account = cmd
            if type(symbol) is not str or type(account) is not str or not owns(symbol):
                continue
            if engine.order_status(symbol, account, oid)["state"] == STATE_UNKNOWN:
                owners.add(account_shard_for(account, self.accounts))
        return frozenset(owners)

    def check(self, owners: frozenset[int], park: bool) -> bool:
        """Whether to park the request whose unknown cancels' owners are ``owners`` (then
        ``park`` it): ``park`` False (it was parked already) runs it, as does a full queue."""
        if not owners:
            return False
        if park and len(self.queue) < self.limit:
            self.owners = owners
            return True
        if park:
            self.counts["park_full"] += 1
        self.counts["unfound"] += 1
        return False

    def park(self, item: Any, now: float) -> None:
        """Park ``item`` (after ``check`` said so): it waits for the answer to the next MARK
        of each owner of its unknown cancels."""
        self.queue.append((self.token + 1, now + self.wait, self.owners, item))
        self.ask |= self.owners
        self.counts["parked"] += 1

    def take_ask(self) -> tuple[int, list[int]]:
        """The token of the MARK to send now and the account shards to send it to (none:
        nothing parked since the last)."""
        if not self.ask:
            return self.token, []
        self.token += 1
        ask, self.ask = sorted(self.ask), set()
        return self.token, ask

    def answered(self, peer: int, token: int, sent: int) -> None:
        """Account shard ``peer`` answered MARK ``token``: it had put forwards up to ``sent``
        on the link before (an older token's answer, late, changes nothing)."""
        if token <= self.token and token > self.answers.get(peer, (0, 0))[0]:
            self.answers[peer] = (token, sent)

    def ready(self, now: float, have: Callable[[int], int]) -> list[Any]:
        """The parked requests to run now, oldest first: each whose owners answered its MARK
        (and whose forwards up to what they named are applied: ``have(peer)``), or whose
        deadline passed. (Tokens and deadlines grow along the queue: the first that must
        wait stops the scan.)"""
        out = []
        queue, answers = self.queue, self.answers
        while queue:
            token, deadline, owners, item = queue[0]
            for peer in owners:
                got = answers.get(peer)
                if got is None or got[0] < token or have(peer) < got[1]:
                    break
            else:
                out.append(queue.popleft()[3])
                continue
            if now < deadline:
                break
            self.counts["park_late"] += 1
            out.append(queue.popleft()[3])
        return out


class ParkedCancels:
    """Methods of ``ShardNode`` for its parked cancels (a mixin: ``init_parked`` makes its
    state; ``core``, ``cfg``, ``tier_link``, ``link_counts`` and ``dispatch`` are the node's)."""

    cfg: Any
    core: Any
    alink: Any
    tier_link: Any
    link_counts: dict[str, int]
    parked: Parked | None
    dispatch: Callable[..., None]

    def init_parked(self) -> None:
        """With the account tier: a ``Parked`` queue, and the core asks it about each
        request's cancels (``ShardCore.park_check``)."""
        self.parked = None
        if self.alink is None:
            return
        parked = self.parked = Parked(self.cfg.accounts, self.link_counts)
        core = self.core

        def owns(symbol: str) -> bool:
            return symbol in core.markets and core.owner(symbol) == core.index

        def park_check(cmds: Any, park: bool) -> bool:
            return parked.check(parked.unknown_owners(core.engine, owns, cmds), park)

        core.park_check = park_check

    def run_parked(self, now: float) -> bool:
        """Run the parked requests that may run now (``Parked.ready``), never parked again;
        whether any ran (their replies wait for the group commit)."""
        parked = self.parked
        if parked is None or not parked.queue:
            return False
        inbox = self.core.engine.inbox.last
        items = parked.ready(now, lambda j: inbox.get(j, 0))
        if items:
            self.dispatch(items, now, park=False)
        return bool(items)

    def park(self, item: Any, now: float) -> None:
        """``item`` (a request ``ShardCore.handle`` did not run) waits (``Parked.park``)."""
        self.parked.park(item, now)  # type: ignore[union-attr]

    def send_marks(self) -> None:
        """MARK the account shards owed one (after a dispatch that parked requests); one
        that cannot leave is answered by no one: those requests run at their deadline."""
        parked = self.parked
        if parked is None or not parked.ask:
            return
        token, peers = parked.take_ask()
        payload = self.tier_link.payload(token)  # (stamped with our epoch)
        for j in peers:
            if not self.tier_link.transmit(j, [LINK_MARK, payload]):
                self.link_counts["unsent"] += 1
