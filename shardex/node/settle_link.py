"""The engine shard's half of the sequenced engine ⇄ account link (``SettlementLink``): read
forwards and SYNCs from the account shards (applied through ``ShardCore.forward``), send each
batch's settlements after its group commit (at the high watermark when replicated), answer
SYNCs with HAVE and re-sends from the ring or, past it, the journal. The other half is the
account shard's ``forward_link.ForwardLink``; both follow ``accounts.link``."""

from __future__ import annotations

import logging
import time
from typing import Any

from shardex.accounts.link import APPLY, GAP
from shardex.accounts.machines import SettledEngine, SettlementRepair
from shardex.auth import user_of
from shardex.journal import Journal, JournalError
from shardex.node.ring import JOURNAL_READ_BUDGET
from shardex.wire.link import decode_link, encode_link
from shardex.wire.protocol import LINK_FWD, LINK_HAVE, LINK_SETTLE, LINK_SYNC
from shardex.wire.transport import send_frames

log = logging.getLogger("shardex.shard")

MAX_RESEND = 20_000  # settlements one SYNC answer re-sends from the journal (then the next SYNC)


class SettlementLink:
    """Methods of ``ShardNode`` for its account link (a mixin: the state — ``alink``,
    ``account_peers``, ``syncs``, ``gates``, ``repairs``, ``repl_settle``, ``link_counts`` — is
    the node's, set up in its ``__init__``)."""

    cfg: Any
    zmq: Any
    zap: Any
    core: Any
    alink: Any
    account_peers: dict[int, bytes]
    syncs: dict[int, int]
    gates: dict[int, Any]
    repairs: dict[int, SettlementRepair]
    repl_settle: Any
    link_counts: dict[str, int]
    malformed: int
    out: list[Any]
    flush: Any  # the node's group commit (a forward burst past ``publish_every`` flushes)

    def from_accounts(self) -> None:
        """Forwards and SYNCs from the account shards, bounded per wake-up. A forward is
        applied when its (seq, prev) continue the link, skipped when seen, and a gap (or a
        journal that cannot write) makes us answer HAVE so the account shard re-sends."""
        zmq, sock, core = self.zmq, self.alink, self.core
        engine: SettledEngine = core.engine  # type: ignore[assignment]
        counts = self.link_counts
        for _ in range(10_000):
            try:
                raw = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            frames = [f.bytes for f in raw]
            try:
                if len(frames) != 3:
                    raise ValueError("frame count")
                ident, kind, payload = frames
                j, body = decode_link(payload)
                if type(j) is not int or not 0 <= j < self.cfg.accounts:
                    raise ValueError(f"account shard {j!r}")
            except Exception:
                self.malformed += 1
                continue
            if not self._sender_ok(j, ident, raw[-1]):
                continue
            self.account_peers[j] = ident
            if kind == LINK_SYNC:
                if type(body) is int and body >= 0:
                    self.syncs[j] = body  # answered after this wake-up's group commit
                    self.gates[j].read()  # (what was sent until now had a SYNC period more)
                continue
            if kind != LINK_FWD or type(body) is not tuple:
                self.malformed += 1
                continue
            for item in body:
                if type(item) is not tuple or len(item) != 3:
                    self.malformed += 1
                    break
                seq, prev, cmd = item
                if type(seq) is not int or type(prev) is not int:
                    self.malformed += 1
                    break
                verdict = engine.forward_verdict(j, seq, prev)
                if verdict == APPLY and core.journal_down is None:
                    core.forward(j, seq, prev, cmd, self.out)
                    counts["forwards"] += 1
                elif verdict in (GAP, APPLY):
                    counts["gaps"] += 1
                    self.syncs.setdefault(j, -1)  # -1: only tell them what we have
                    break
                else:
                    counts["duplicates"] += 1
            if len(self.out) >= self.cfg.publish_every:
                self.flush()

    def _sender_ok(self, j: int, ident: bytes, last: Any) -> bool:
        """Whether a message that says it is account shard ``j``'s came from it: secure, J's
        key and a routing id libzmq generated (first byte 0: one a peer chose itself with
        IDENTITY must never be what settlements for J are sent to); insecure, IDENTITY
        ``accounts-J``. A refusal is an ALERT."""
        secure = self.zap is not None
        if secure:
            registry = self.core.registry
            key = registry.lookup(user_of(last)) if registry else None
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
        counts = self.link_counts
        index = self.core.index
        if upto is None:
            if engine.outgoing:
                outgoing, engine.outgoing = engine.outgoing, []
                self._send_outgoing(outgoing)
        else:
            wait = self.repl_settle
            while wait and wait[0][0] <= upto:
                self._send_outgoing(wait.popleft()[1])
        if self.syncs:
            syncs, self.syncs = self.syncs, {}
            now = time.monotonic()
            for j, after in syncs.items():
                bound = self._resend_due(j, after, now) if after >= 0 else None
                if bound is not None:
                    msgs, complete = engine.resend(j, after)
                    if complete:
                        self.repairs.pop(j, None)
                    else:
                        msgs = self._journal_settlements(j, after)
                    if upto is not None:
                        bound = min(bound, upto)
                    if msgs and msgs[-1][2] > bound:
                        msgs = [m for m in msgs if m[2] <= bound]  # (a prefix: seq order)
                    counts["resent"] += len(msgs)
                    for k in range(0, len(msgs), 1000):
                        self._link_send(j, LINK_SETTLE, msgs[k : k + 1000])
                peer = self.account_peers.get(j)
                if peer is not None:
                    have = encode_link(index, engine.inbox.last.get(j, 0))
                    try:
                        send_frames(self.alink, [peer, LINK_HAVE, have])
                    except self.zmq.ZMQError:
                        counts["unsent"] += 1

    def _resend_due(self, j: int, after: int, now: float) -> int | None:
        """Re-send the settlements for account shard ``j`` after ``after`` up to the seq
        returned, or none (None): ``link.ResendGate``. Not while ``after`` advances: what
        follows is then in flight (on the link or in its backlog), not lost; re-sending on
        every SYNC made ~30% of a busy link's settlements duplicates (skipped there, but
        carried and checked twice). A lost one stops the account shard at the one before it
        (the next is a gap), so its SYNCs repeat ``after``; only what was sent before the
        previous SYNC was read is then re-sent (a SYNC read with a burst of forwards is
        answered after the burst's settlements left, and may be older than them), at most
        every ``RESEND_EVERY_S`` per link (gap SYNCs come in bursts); a journal re-send under
        way continues every SYNC. (The account shard applies the same rule to its forwards.)"""
        return self.gates[j].answer(after, now, j in self.repairs)

    def _send_outgoing(self, outgoing: list[tuple[int, tuple]]) -> None:
        """One batch's settlements, one message per account shard, in seq order."""
        per: dict[int, list[tuple]] = {}
        for j, msg in outgoing:
            per.setdefault(j, []).append(msg)
        for j, msgs in per.items():
            self.link_counts["settlements"] += len(msgs)
            self.gates[j].put(msgs[-1][2])
            self._link_send(j, LINK_SETTLE, msgs)

    def _journal_settlements(self, j: int, after: int) -> list[tuple]:
        """Settlements for account shard ``j`` after ``after`` that the ring no longer holds,
        regenerated from the journal (bounded work per SYNC; the cursor is kept, so the next
        SYNC continues). [] while replaying towards them; ALERT when the journal lost them."""
        journal = self.core.journal
        if not isinstance(journal, Journal):
            log.error("ALERT account shard %d needs settlements after eseq %d that the ring "
                      "no longer holds, and this shard has no journal", j, after)  # fmt: skip
            return []
        repair = self.repairs.get(j)
        if repair is None:
            repair = self.repairs[j] = SettlementRepair(j, journal.replay_from)
        try:
            msgs = repair.take(after, JOURNAL_READ_BUDGET, MAX_RESEND)
        except JournalError as exc:
            self.repairs.pop(j, None)
            log.error("ALERT account shard %d needs settlements after eseq %d: %s", j, after, exc)
            return []
        self.link_counts["journal"] += len(msgs)
        return msgs

    def _link_send(self, j: int, kind: bytes, msgs: list[tuple]) -> None:
        peer = self.account_peers.get(j, f"accounts-{j}".encode() if self.zap is None else None)
        if peer is None:
            self.link_counts["unsent"] += len(msgs)
            return
        try:
            send_frames(self.alink, [peer, kind, encode_link(self.core.index, msgs)])
        except self.zmq.ZMQError:  # not connected (yet) or its pipe is full: its SYNC repairs
            self.link_counts["unsent"] += len(msgs)
