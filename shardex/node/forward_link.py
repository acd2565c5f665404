"""The account shard's socket side of the sequenced engine ⇄ account link (``ForwardLink``):
read settlements and HAVEs from the engine shards (one DEALER each), apply settlements through
``AccountHandler.apply``, send forwards after the group commit, SYNC, and judge each HAVE (what
to re-send, when the chains diverged, when a backed-up engine shard caught up). What to apply,
skip, re-send and report is the ``accounts.link.LinkEndpoint`` the engine shard's
``settle_link.SettlementLink`` uses too; sending and answering is the shared ``LinkPort``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shardex.accounts.link import FORWARD, SETTLEMENT, LinkEndpoint
from shardex.accounts.machines import ForwardRepair
from shardex.net.recv import messages
from shardex.node.link_port import LinkPort
from shardex.wire.link import decode_link
from shardex.wire.protocol import LINK_FWD, LINK_HAVE, LINK_MARK, LINK_SETTLE, LINK_SYNC
from shardex.wire.transport import send_frames

log = logging.getLogger("shardex.accounts")


class ForwardLink:
    """Methods of ``AccountNode`` for its engine links (a mixin: ``init_link`` makes its
    state, ``tier_link`` (the ``LinkPort``); ``engines``, ``linked`` and ``counts`` are the
    node's)."""

    cfg: Any
    zmq: Any
    mono: Callable[[], float]  # the node's clock (``SequencedNode``)
    machine: Any
    handler: Any
    engines: list[Any]
    linked: set[int]
    tier_link: LinkPort
    replica: Any  # a replicated leader's ``Replicator`` (its ``epoch``), else None
    counts: dict[str, int]
    out: list[tuple]
    reported: Callable[[Any], bool]  # whether this turn's poll reported a socket

    def init_link(self, every: float, limit: int) -> None:
        """The link's state: each engine shard's HAVEs re-send its forwards at most every
        ``every`` seconds (``ResendGate``), at most ``limit`` from the journal per HAVE; what
        the journal put on each link before we started counts as sent. The forwards an engine
        shard has not confirmed are kept (``unconfirmed``: past the cap its orders are shed)."""
        cfg = self.cfg
        end = LinkEndpoint(cfg.engines, every, self.machine.core.outbox.last, out=FORWARD,
                           incoming=SETTLEMENT, in_sender=1, unacked=True)  # fmt: skip
        self.tier_link = LinkPort(end, cfg.index, self._transmit, (LINK_FWD, LINK_SYNC),
                                  self.counts, ForwardRepair, limit,
                                  ("engine shard", "forwards"),
                                  lambda: self.replica.epoch if self.replica else 0)  # fmt: skip

    @property
    def haves(self) -> dict[int, int]:
        """Engine shard → the have of its HAVE read and not yet answered."""
        return self.tier_link.end.reports

    @property
    def repairs(self) -> dict[int, Any]:
        """Engine shard → its re-send from the journal under way."""
        return self.tier_link.end.repairs

    @property
    def unconfirmed(self) -> dict[int, Any]:
        """Engine shard → seqs of the forwards sent that its HAVE has not confirmed yet."""
        return self.tier_link.end.unacked

    def from_engines(self) -> None:
        """Settlements, HAVEs and MARKs from each engine shard's DEALER, bounded per wake-up;
        a deposed leader's (an epoch below the highest seen from that shard) are dropped."""
        end = self.tier_link.end
        admit = self.tier_link.admit
        check = self.machine.core.inbox.check
        for i, sock in enumerate(self.engines):
            for frames in messages(sock, 1_000, self.reported(sock)):
                try:
                    kind, payload = frames
                    sender, body, epoch = decode_link(payload)
                    if sender != i or type(epoch) is not int:
                        raise ValueError
                except Exception:
                    self.counts["malformed"] += 1
                    continue
                if not admit(i, epoch):
                    continue
                self.linked.add(i)
                if kind == LINK_MARK:
                    self.mark(i, body)
                    continue
                if kind == LINK_HAVE:
                    if type(body) is int and not self.diverged(i, body):
                        self.confirmed(i, end.reported(i, body))
                    continue
                if kind != LINK_SETTLE or type(body) is not tuple:
                    self.counts["malformed"] += 1
                    continue
                if self.handler.journal_down is not None:
                    continue  # not journaled, not applied: re-sent on the next SYNC
                # a gap: a SYNC after the commit asks for the rest; a malformed one is applied
                # (the core's anomaly)
                applied, duplicates, _ = end.receive(i, body, check, self._settle)
                self.counts["settlements"] += applied
                self.counts["duplicates"] += duplicates

    def mark(self, i: int, token: Any) -> None:
        """Engine shard ``i`` parked a cancel for an order it does not know and MARKs: answer
        at once on the link, with the last forward put on it. Every forward whose order's
        "ok" left before this MARK was read went on this link before the answer (forwards
        leave before their replies, ``AccountNode._release``), and the link keeps order: once
        engine shard ``i`` reads the answer it has read them (``node.parked``)."""
        if type(token) is not int:
            self.counts["malformed"] += 1
            return
        sent = self.tier_link.end.gates[i].sent
        if not self._transmit(i, [LINK_MARK, self.tier_link.payload((token, sent))]):
            self.counts["unsent"] += 1

    def _settle(self, i: int, msg: tuple) -> None:
        self.handler.journal_apply(msg, self.out)

    def answer_haves(self, released: int | None) -> None:
        """After the group commit: re-send what each HAVE read since the last one calls for
        (``LinkEndpoint.resend``), from the ring or, past it, the journal; ``released`` (a
        replicated leader's): never a forward the standby may not have yet (None: no
        standby)."""
        self.tier_link.answer(self.mono(), released, self.machine.resend, self.handler.journal)

    def sync_owed(self) -> None:
        """SYNC the engine shards a gap was found on (on the link or in the core)."""
        if self.tier_link.end.owed:
            for i in self.tier_link.end.take_owed():
                if 0 <= i < self.cfg.engines:
                    self.sync(i)

    def sync(self, i: int) -> None:
        """Tell engine shard ``i`` the last settlement applied from it: it re-sends what
        follows and answers HAVE (the forwards it has), so both directions heal. Not sent:
        the next SYNC."""
        self.tier_link.report(i, self.machine.core.inbox.last.get(i, 0))

    def send_forwards(self, i: int, fwds: list[tuple]) -> None:
        """A committed batch's forwards to engine shard ``i`` (seq order); past
        ``max_unconfirmed`` of them unconfirmed, its symbols' new orders are shed."""
        end = self.tier_link.end
        end.sent(i, fwds)
        self.tier_link.send(i, fwds)
        pending = end.unacked.get(i)
        full = self.handler.full
        if pending is not None and len(pending) >= self.cfg.max_unconfirmed and i not in full:
            full.add(i)
            log.warning("engine shard %d has not confirmed %d forwards: new orders for its "
                        "symbols are shed (overloaded)", i, len(pending))  # fmt: skip

    def diverged(self, i: int, have: int) -> bool:
        """Whether engine shard ``i``'s HAVE says it applied forwards from this shard beyond
        the last one this shard's chain to it holds: then the chains were rebuilt under
        another routing than they were sent under (the data's shard count changed), and
        re-sending would place orders twice or on shards that do not hold their pairs. The
        shard halts: ALERT, no forward or re-send leaves, new orders and amends are refused."""
        last = self.machine.core.outbox.last.get(i, 0)
        if have <= last:
            return False
        if self.handler.halted is None:
            self.handler.halted = (
                f"engine shard {i} has forwards from account shard {self.cfg.index} up to seq "
                f"{have}, its chain to it ends at {last}: forward chains rebuilt under another "
                "routing (was the data written with another --shards?)"
            )
            log.error("ALERT account shard %d halted: %s", self.cfg.index, self.handler.halted)
        return True

    def confirmed(self, i: int, pending: int) -> None:
        """Engine shard ``i``'s HAVE left ``pending`` forwards unconfirmed: below half the cap
        its symbols take new orders again."""
        full = self.handler.full
        if i in full and pending < self.cfg.max_unconfirmed // 2:
            full.discard(i)
            log.warning("engine shard %d caught up (%d forwards pending): orders taken again",
                        i, pending)  # fmt: skip

    def _transmit(self, i: int, frames: list[bytes]) -> bool:
        """``frames`` on engine shard ``i``'s DEALER; False if it cannot leave (engine down or
        pipe full: its HAVE makes us re-send)."""
        try:
            send_frames(self.engines[i], frames)
        except self.zmq.ZMQError:
            return False
        return True
