"""The account shard's half of the sequenced engine ⇄ account link (``ForwardLink``): read
settlements and HAVEs from the engine shards, SYNC them, send forwards, judge each HAVE (what
to re-send, when the chains diverged, when a backed-up engine shard caught up). The other half
is the engine shard's ``settle_link.SettlementLink``; both follow ``accounts.link``."""

from __future__ import annotations

import logging
import time
from typing import Any

from shardex.accounts.link import APPLY, DUPLICATE
from shardex.wire.link import decode_link, encode_link
from shardex.wire.protocol import LINK_FWD, LINK_HAVE, LINK_SETTLE, LINK_SYNC
from shardex.wire.transport import send_frames

log = logging.getLogger("shardex.accounts")


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None


class ForwardLink:
    """Methods of ``AccountNode`` for its engine links (a mixin: the state — ``engines``,
    ``haves``, ``gates``, ``unconfirmed``, ``repairs``, ``counts`` — is the node's, set up in
    its ``__init__``)."""

    cfg: Any
    zmq: Any
    machine: Any
    handler: Any
    engines: list[Any]
    linked: set[int]
    haves: dict[int, int]
    gates: dict[int, Any]
    repairs: dict[int, Any]
    unconfirmed: dict[int, Any]
    syncs_due: set[int]
    counts: dict[str, int]
    out: list[tuple]
    _journal_forwards: Any  # (the node's: it reads a constant tests patch there)

    def from_engines(self) -> None:
        zmq = self.zmq
        core = self.machine.core
        for i, sock in enumerate(self.engines):
            for _ in range(1_000):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    kind, payload = frames
                    sender, body = decode_link(payload)
                    if sender != i:
                        raise ValueError
                except Exception:
                    self.counts["malformed"] += 1
                    continue
                self.linked.add(i)
                if kind == LINK_HAVE:
                    if type(body) is int and not self.diverged(i, body):
                        self.haves[i] = body
                        self.gates[i].read()  # (what was sent until now had a period more)
                        self.confirmed(i, body)
                    continue
                if kind != LINK_SETTLE or type(body) is not tuple:
                    self.counts["malformed"] += 1
                    continue
                if self.handler.journal_down is not None:
                    continue  # not journaled, not applied: re-sent on the next SYNC
                for msg in body:
                    eseq, prev = _at(msg, 2), _at(msg, 3)
                    if type(eseq) is int and type(prev) is int and _at(msg, 1) == i:
                        verdict = core.inbox.check(i, eseq, prev)
                        if verdict == DUPLICATE:
                            self.counts["duplicates"] += 1
                            continue
                        if verdict != APPLY:
                            self.syncs_due.add(i)  # a gap: ask for the rest (after the commit)
                            break
                    self.handler.apply(msg, self.out)  # a malformed one: the core's anomaly
                    self.counts["settlements"] += 1

    def answer_haves(self, released: int | None) -> None:
        """After the group commit: re-send what each HAVE read since the last one calls for
        (``_resend_due``), from the ring or, past it, the journal; ``released`` (a replicated
        leader's): never a forward the standby may not have yet (None: no standby)."""
        haves, self.haves = self.haves, {}
        now = time.monotonic()
        for i, have in haves.items():
            bound = self._resend_due(i, have, now)
            if bound is None:
                continue
            msgs, complete = self.machine.resend(i, have)
            if complete:
                self.repairs.pop(i, None)
            else:
                msgs = self._journal_forwards(i, have)
            if released is not None:
                bound = min(bound, released)
            msgs = [m for m in msgs if m[0] <= bound]
            if msgs:
                self.counts["resent"] += len(msgs)
                for k in range(0, len(msgs), 1000):
                    self._send_fwd(i, msgs[k : k + 1000])

    def sync(self, i: int) -> None:
        """Tell engine shard ``i`` the last settlement applied from it: it re-sends what
        follows and answers HAVE (the forwards it has), so both directions heal."""
        have = self.machine.core.inbox.last.get(i, 0)
        try:
            send_frames(self.engines[i], [LINK_SYNC, encode_link(self.cfg.index, have)])
        except self.zmq.ZMQError:
            pass  # not connected yet: the next SYNC

    def _resend_due(self, i: int, have: int, now: float) -> int | None:
        """Re-send the forwards to engine shard ``i`` after its HAVE's ``have`` up to the seq
        returned, or none (None): ``link.ResendGate``.

        Not while ``have`` advances: the forwards after it are then in flight (queued on the
        link, or in the engine shard's backlog), not lost, and re-sending them on every HAVE
        made a busy link carry each one again (46k of 148k forwards in an 8 s closed-loop run,
        nothing lost). A lost forward stops the engine shard at the one before it (the next
        one is a gap), so its HAVEs repeat ``have``; only what was sent before the previous
        HAVE was read is then re-sent (a HAVE read with a burst of orders is answered after
        the burst's forwards left, and names none of them). At most once per ``SYNC_EVERY_S``
        per engine shard (a journal-down engine shard repeats its HAVE and applies nothing);
        a re-send from the journal under way continues on every HAVE."""
        return self.gates[i].answer(have, now, i in self.repairs)

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

    def confirmed(self, i: int, have: int) -> None:
        """Engine shard ``i`` has applied every forward up to ``have``: they are no longer
        pending; below half the cap its symbols take new orders again."""
        pending = self.unconfirmed.get(i)
        if pending is None:
            return
        while pending and pending[0] <= have:
            pending.popleft()
        full = self.handler.full
        if i in full and len(pending) < self.cfg.max_unconfirmed // 2:
            full.discard(i)
            log.warning("engine shard %d caught up (%d forwards pending): orders taken again",
                        i, len(pending))  # fmt: skip

    def _send_fwd(self, i: int, fwds: list[tuple]) -> None:
        try:
            send_frames(self.engines[i], [LINK_FWD, encode_link(self.cfg.index, fwds)])
        except self.zmq.ZMQError:  # engine down or pipe full: its HAVE makes us re-send
            self.counts["unsent"] += len(fwds)
