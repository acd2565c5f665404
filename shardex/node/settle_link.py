"""The engine shard's socket side of the sequenced engine ⇄ account link (``SettlementLink``):
read forwards and SYNCs from the account shards on its ROUTER (each sender authenticated),
apply forwards through ``ShardCore.forward``, send each batch's settlements after its group
commit (at the high watermark when replicated), answer SYNCs with re-sends and HAVE. What to
apply, skip, re-send and report is the ``accounts.link.LinkEndpoint`` the account shard's
``forward_link.ForwardLink`` uses too; sending and answering is the shared ``LinkPort``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shardex.accounts.link import APPLY, FORWARD, GAP, MALFORMED, SETTLEMENT, LinkEndpoint
from shardex.accounts.machines import SettledEngine, SettlementRepair
from shardex.net.recv import messages_user
from shardex.node.link_port import LinkPort
from shardex.wire.layouts import LINK_CMD, LINK_PREV, LINK_SEQ
from shardex.wire.link import decode_link
from shardex.wire.protocol import LINK_FWD, LINK_HAVE, LINK_MARK, LINK_SETTLE, LINK_SYNC
from shardex.wire.transport import send_frames

log = logging.getLogger("shardex.shard")

MAX_RESEND = 20_000  # settlements one SYNC answer re-sends from the journal (then the next SYNC)


class SettlementLink:
    """Methods of ``ShardNode`` for its account link (a mixin: ``init_link`` makes its state,
    ``tier_link`` (the ``LinkPort``), ``account_peers``; ``link_counts`` and ``repl_settle`` are
    the node's)."""

    cfg: Any
    zmq: Any
    mono: Callable[[], float]  # the node's clock (``SequencedNode``)
    zap: Any
    core: Any
    alink: Any
    account_peers: dict[int, bytes]
    tier_link: LinkPort
    replica: Any  # a replicated leader's ``Replicator`` (its ``epoch``), else None
    repl_settle: Any
    link_counts: dict[str, int]
    malformed: int
    out: list[Any]
    reported: Callable[[Any], bool]  # whether this turn's poll reported a socket
    flush: Any  # the node's group commit (a forward burst past ``publish_every`` flushes)
    parked: Any  # the node's parked cancels (``node.parked.Parked``; None without accounts)

    def init_link(self, every: float, limit: int = MAX_RESEND) -> None:
        """The link's state: each account shard's SYNCs re-send its settlements at most every
        ``every`` seconds (``ResendGate``), at most ``limit`` from the journal per SYNC; what
        the journal put on each link before we started counts as sent."""
        cfg = self.cfg
        last = self.core.engine.feed.outbox.last if cfg.accounts else {}
        self.account_peers = {}  # account shard → its link's routing id
        end = LinkEndpoint(cfg.accounts, every, last, out=SETTLEMENT, incoming=FORWARD,
                           width=3, answers=True)  # fmt: skip
        self.tier_link = LinkPort(end, cfg.index, self._transmit, (LINK_SETTLE, LINK_HAVE),
                                  self.link_counts, SettlementRepair, limit,
                                  ("account shard", "settlements"),
                                  lambda: self.replica.epoch if self.replica else 0)  # fmt: skip

    @property
    def syncs(self) -> dict[int, int]:
        """Account shard → the have of its SYNC read and not yet answered."""
        return self.tier_link.end.reports

    @property
    def repairs(self) -> dict[int, Any]:
        """Account shard → its re-send from the journal under way."""
        return self.tier_link.end.repairs

    def from_accounts(self) -> None:
        """Forwards and SYNCs from the account shards, bounded per wake-up. A forward is
        applied when its (seq, prev) continue the link, skipped when seen, and a gap (or a
        journal that cannot write) makes us answer HAVE so the account shard re-sends."""
        sock = self.alink
        end = self.tier_link.end
        verdict = self.core.engine.forward_verdict
        counts = self.link_counts
        admit = self.tier_link.admit
        # (with the sender's key: ``_sender_ok``)
        for frames, user in messages_user(sock, 10_000, self.reported(sock)):
            try:
                if len(frames) != 3:
                    raise ValueError("frame count")
                ident, kind, payload = frames
                j, body, epoch = decode_link(payload)
                if type(j) is not int or not 0 <= j < self.cfg.accounts or type(epoch) is not int:
                    raise ValueError(f"account shard {j!r}")
            except Exception:
                self.malformed += 1
                continue
            if not self._sender_ok(j, ident, user) or not admit(j, epoch):
                continue  # (a deposed leader's: nor is its routing id where settlements go)
            self.account_peers[j] = ident
            if kind == LINK_SYNC:
                if type(body) is int and body >= 0:
                    end.reported(j, body)  # answered after this wake-up's group commit
                continue
            if kind == LINK_MARK:  # the answer to our MARK (``node.parked``)
                self._marked(j, body)
                continue
            if kind != LINK_FWD or type(body) is not tuple:
                self.malformed += 1
                continue
            check = verdict if self.core.journal_down is None else self._held_verdict
            applied, duplicates, ended = end.receive(j, body, check, self._forward)
            counts["forwards"] += applied
            counts["duplicates"] += duplicates
            if ended == GAP:
                counts["gaps"] += 1
            elif ended == MALFORMED:
                self.malformed += 1
            if len(self.out) >= self.cfg.publish_every:
                self.flush()

    def _marked(self, j: int, body: Any) -> None:
        """Account shard ``j`` answered our MARK: ``(token, last forward seq it sent us)``."""
        if (self.parked is None or type(body) is not tuple or len(body) != 2
                or not all(type(v) is int for v in body)):  # fmt: skip
            self.malformed += 1
            return
        self.parked.answered(j, *body)
        if body[1] > self.core.engine.inbox.last.get(j, 0):
            self.tier_link.end.owed.add(j)  # (forwards it sent that we lack: HAVE, it re-sends)

    def _held_verdict(self, j: int, seq: int, prev: int) -> int:
        """A forward's verdict while the journal cannot write: one that would apply is a gap
        (not applied, not journaled: the account shard re-sends it after our HAVE)."""
        verdict = self.core.engine.forward_verdict(j, seq, prev)
        return GAP if verdict == APPLY else verdict

    def _forward(self, j: int, msg: tuple) -> None:
        self.core.forward(j, msg[LINK_SEQ], msg[LINK_PREV], msg[LINK_CMD], self.out)

    def _sender_ok(self, j: int, ident: bytes, user: str | None) -> bool:
        """Whether a message that says it is account shard ``j``'s came from it: secure, J's
        key and a routing id libzmq generated (first byte 0: one a peer chose itself with
        IDENTITY must never be what settlements for J are sent to); insecure, IDENTITY
        ``accounts-J``. A refusal is an ALERT."""
        secure = self.zap is not None
        if secure:
            registry = self.core.registry
            key = registry.lookup(user) if registry else None
            ok = key is not None and key.role == "accounts" and key.shard == j
            ok = ok and ident[:1] == b"\x00"
        else:
            ok = ident == f"accounts-{j}".encode()
        if not ok:
            self.link_counts["refused"] += 1
            log.error("ALERT refused an account-link message as account shard %d (%s)", j,
                      "not its key, or a self-chosen IDENTITY" if secure else
                      "IDENTITY not accounts-J")  # fmt: skip
        return ok

    def send_settlements(self, upto: int | None = None) -> None:
        """After the group commit: the batch's settlements, then answers to SYNCs (re-sends
        from the ring and HAVE), each link's messages in seq order. A message that cannot be
        sent is dropped and counted: the account shard's next SYNC gets it again.

        ``upto`` (a replicated leader's high watermark): only the settlements of batches up to
        that seq leave (``repl_settle``), and a SYNC is re-sent only up to it, so an account
        shard never applies a settlement the standby has not made durable (if we die, the new
        leader re-sends from its own rings exactly what it has). None: no standby, all go."""
        engine: SettledEngine = self.core.engine  # type: ignore[assignment]
        if upto is None:
            if engine.outgoing:
                outgoing, engine.outgoing = engine.outgoing, []
                self._send_outgoing(outgoing)
        else:
            wait = self.repl_settle
            while wait and wait[0][0] <= upto:
                self._send_outgoing(wait.popleft()[1])
        port = self.tier_link
        if port.end.reports:
            port.answer(self.mono(), upto, engine.resend, self.core.journal)
        if port.end.owed:
            for j in port.end.take_owed():
                if j in self.account_peers and not port.report(j, engine.inbox.last.get(j, 0)):
                    self.link_counts["unsent"] += 1

    def _send_outgoing(self, outgoing: list[tuple[int, tuple]]) -> None:
        """One batch's settlements, one message per account shard, in seq order."""
        per: dict[int, list[tuple]] = {}
        for j, msg in outgoing:
            per.setdefault(j, []).append(msg)
        port = self.tier_link
        for j, msgs in per.items():
            self.link_counts["settlements"] += len(msgs)
            port.end.sent(j, msgs)
            port.send(j, msgs)

    def _transmit(self, j: int, frames: list[bytes]) -> bool:
        """``frames`` to account shard ``j`` on our ROUTER: to the routing id its messages came
        from (insecure: ``accounts-J`` before any came); False if it cannot leave."""
        peer = self.account_peers.get(j, f"accounts-{j}".encode() if self.zap is None else None)
        if peer is None:
            return False
        try:
            send_frames(self.alink, [peer, *frames])
        except self.zmq.ZMQError:  # not connected (yet) or its pipe is full: its SYNC repairs
            return False
        return True
