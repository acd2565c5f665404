"""``LinkPort``: what both tiers do the same way on their end of the engine ⇄ account link,
around the socket-free ``accounts.link.LinkEndpoint``: pack and send messages and reports,
answer the peers' reports after the group commit (re-sends from the ring or, past it, the
journal), and count what happened. The node supplies ``transmit(peer, frames)``: how frames
reach one peer (an engine shard's ROUTER names the peer's routing id; an account shard has one
DEALER per engine shard). ``settle_link.SettlementLink`` (engine shard) and
``forward_link.ForwardLink`` (account shard) read their sockets and say what to apply."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shardex.accounts.link import EpochFence, LinkEndpoint
from shardex.journal import Journal, JournalError
from shardex.node.ring import JOURNAL_READ_BUDGET
from shardex.wire.link import encode_link

log = logging.getLogger("shardex.link")

CHUNK = 1000  # messages in one re-send message (a fresh batch goes as one message)

Transmit = Callable[[int, list[bytes]], bool]  # (peer, [kind, payload]) → sent
Ring = Callable[[int, int], tuple[list[tuple], bool]]  # the machine's ``resend(peer, after)``


class LinkPort:
    """One node's end of the link: its ``LinkEndpoint`` (``end``) plus sending. ``data`` /
    ``report``: the kinds of its messages (``LINK_SETTLE`` / ``LINK_HAVE`` from an engine
    shard, ``LINK_FWD`` / ``LINK_SYNC`` from an account shard); ``repair``: the
    ``machines.LinkRepair`` that regenerates its messages from its journal, at most ``limit``
    per answer; ``counts``: the node's link counters (``resent``, ``unsent``, ``journal``)."""

    def __init__(
        self,
        end: LinkEndpoint,
        index: int,
        transmit: Transmit,
        kinds: tuple[bytes, bytes],
        counts: dict[str, int],
        repair: Callable[[int, Callable[[int], Any]], Any],
        limit: int,
        names: tuple[str, str],
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        """``kinds``: (data, report); ``names``: how logs name a peer and its messages
        (``("account shard", "settlements")``); ``epoch``: our lease epoch, stamped on every
        message (0: not replicated). ``fence`` judges the peers' epochs (``admit``)."""
        self.end = end
        self.epoch = epoch
        self.fence = EpochFence()
        counts["stale_epoch"] = 0
        self.index = index
        self.transmit = transmit
        self.data, self.report_kind = kinds
        self.counts = counts
        self.repair = repair
        self.limit = limit
        self.peer_name, self.what = names

    def send(self, peer: int, msgs: list[tuple]) -> None:
        """``msgs`` (seq order) to ``peer`` as one message (``messages`` counts them: with
        the forwards or settlements counted, how well the link batches); dropped and counted
        ``unsent`` when it cannot leave (peer unknown, not connected, pipe full): its next
        report repairs."""
        if self.transmit(peer, [self.data, self.payload(msgs)]):
            self.counts["messages"] += 1
        else:
            self.counts["unsent"] += len(msgs)

    def report(self, peer: int, have: int) -> bool:
        """Tell ``peer`` the last of its messages we applied (``have``); False: not sent."""
        return self.transmit(peer, [self.report_kind, self.payload(have)])

    def payload(self, body: Any) -> bytes:
        """A link message's payload from us: our shard, ``body`` and our epoch."""
        return encode_link(self.index, body, self.epoch())

    def admit(self, peer: int, epoch: int) -> bool:
        """Whether ``peer``'s message at ``epoch`` may be read (``EpochFence``); one of a
        deposed leader of ``peer`` is dropped, counted ``stale_epoch`` and logged once per
        epoch."""
        if self.fence.admit(peer, epoch):
            return True
        self.counts["stale_epoch"] += 1
        if self.fence.first_refusal(peer, epoch):
            log.warning("refused link messages of %s %d at epoch %d: a newer leader of it "
                        "(epoch %d) was heard from", self.peer_name, peer, epoch,
                        self.fence.high[peer])  # fmt: skip
        return False

    def answer(self, now: float, released: int | None, ring: Ring, journal: Any) -> None:
        """After the group commit: re-send what each report read since the last answer calls
        for (``LinkEndpoint.resend``), from ``ring`` or, past it, ``journal``; ``released``:
        a replicated leader's high watermark (None: no standby)."""
        end = self.end

        def from_journal(peer: int, after: int) -> list[tuple]:
            return self._journal(journal, peer, after)

        for peer, have in end.take_reports().items():
            msgs = end.resend(peer, have, now, released, ring, from_journal)
            if msgs:
                self.counts["resent"] += len(msgs)
                for k in range(0, len(msgs), CHUNK):
                    self.send(peer, msgs[k : k + CHUNK])

    def _journal(self, journal: Any, peer: int, after: int) -> list[tuple]:
        """``peer``'s messages after ``after`` that the ring no longer holds, regenerated from
        ``journal`` (bounded work per answer; the cursor is kept, so the next report goes on).
        [] while replaying towards them; ALERT when the journal lost them."""
        if not isinstance(journal, Journal):
            log.error("ALERT %s %d needs %s after seq %d that the ring no longer holds, and "
                      "there is no journal", self.peer_name, peer, self.what, after)  # fmt: skip
            return []
        repairs = self.end.repairs
        repair = repairs.get(peer)
        if repair is None:
            repair = repairs[peer] = self.repair(peer, journal.replay_from)
        try:
            msgs = repair.take(after, JOURNAL_READ_BUDGET, self.limit)
        except JournalError as exc:
            repairs.pop(peer, None)
            log.error("ALERT %s %d needs %s after seq %d: %s", self.peer_name, peer, self.what,
                      after, exc)  # fmt: skip
            return []
        self.counts["journal"] += len(msgs)
        return msgs
