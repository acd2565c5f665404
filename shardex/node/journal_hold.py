"""The engine shard's journal trouble (``JournalHold``, a mixin of ``ShardNode``): a journal
that cannot write holds its batch (replies and events) and makes ``ShardCore`` refuse writes
while reads go on; retried every ``JOURNAL_RETRY_S``; with the writer thread
(``SHARDEX_JOURNAL_WRITER=1``) batches wait in ``inflight`` until durable, in order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shardex.journal import JournalUnavailable
from shardex.node.sequenced import JOURNAL_RETRY_S

log = logging.getLogger("shardex.shard")


class JournalHold:
    """Methods of ``ShardNode`` (its state: ``held``, ``held_pending``, ``inflight``,
    ``writer_fd``, ``replies``, ``out``, set up in its ``__init__``)."""

    core: Any
    held: Any
    held_pending: int
    inflight: Any
    writer_fd: int | None
    replies: list[Any]
    out: list[Any]
    last_journal_try: float
    mono: Callable[[], float]  # the node's clock (``SequencedNode``)
    flush: Any
    _release: Any

    def journal_done(self) -> None:
        """The writer's news: release, in order, every batch now durable; on a failure hold
        the rest and refuse writes; when a retry succeeded, accept writes again."""
        journal = self.core.journal
        durable, failure = journal.completions()  # type: ignore[union-attr]
        inflight = self.inflight
        while inflight and inflight[0][0] <= durable:
            _, replies, events = inflight.popleft()
            self._release(replies, events)
        if failure is not None:
            self._journal_failed(JournalUnavailable(failure))
        elif self.held is not None and not journal.queued:  # type: ignore[union-attr]
            self.held = None
            self.core.journal_down = None
            log.warning("journal of shard %d writes again: held replies released",
                        self.core.index)  # fmt: skip

    def _journal_failed(self, exc: BaseException) -> None:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if self.core.journal_down is None:
            held = sum(len(r) for _, r, _ in self.inflight) if self.writer_fd else len(self.replies)
            log.error(
                "ALERT journal of shard %d cannot write (%s): holding %d replies, refusing "
                "writes and serving reads until it can; retrying every %.0fs",
                self.core.index, reason, held, JOURNAL_RETRY_S,
            )  # fmt: skip
            self.last_journal_try = self.mono()
        self.core.journal_down = reason
        if self.writer_fd is not None:
            self.held = ([], [])  # the held batches stay in ``inflight``, in order
            return
        self.held = (self.replies, self.out)
        self.held_pending = self.core.journal.pending
        self.replies = []
        self.out = []

    def retry_journal(self, now: float) -> None:
        self.last_journal_try = now
        if self.writer_fd is not None:
            self.core.journal.retry()  # type: ignore[union-attr]  # outcome: ``journal_done``
            return
        try:
            self.core.journal.commit()
        except JournalUnavailable as exc:
            self.core.journal_down = str(exc).splitlines()[0][:200] or type(exc).__name__
            return
        held_replies, held_events = self.held  # type: ignore[misc]
        self.held = None
        self.core.journal_down = None
        log.warning(
            "journal of shard %d writes again: releasing %d held replies", self.core.index,
            len(held_replies),
        )  # fmt: skip
        self.replies = held_replies + self.replies
        self.out = held_events + self.out
        self.flush()
