"""Fail-stop of a standby whose journal cannot write or sync (docs/failover.md, "A replica's
disk fails").

A leader whose journal fails holds the batch and retries (``journal_hold``): it is the only
copy clients are waiting on, it has the batch in memory, and a retry re-writes it from there
(never trusting a page cache that a failed fsync may have marked clean). A standby does not:

* it must never ack what is not durable (the leader would release replies for a batch no
  replica holds), and it has already *applied* the batch its journal could not write: held,
  its state machine would run ahead of its disk, and a promotion in that state would lead
  from a tail that a crash could still erase;
* nothing is lost by stopping: the leader has every batch, its in-sync set drops a member
  that stops acking (``ISR_TIMEOUT_S``) and goes on alone, and a restarted standby recovers
  what is durable (recovery writes back and syncs every segment it replays before the node
  serves, ``journal.recovery``) and catches up from the leader;
* a disk that fails keeps failing more often than not: a process that exits and is
  restarted (``shardex up`` restarts with back-off, loudly) shows it, where a standby that
  quietly stopped acking would not.

So it exits with ``EXIT_JOURNAL_FAILED`` after one ALERT line: ``JournalFailStop`` is a
``SystemExit`` (no traceback, and no ``except Exception`` on the way out swallows it),
caught only by the in-process ``FailoverNode``, which ends the way the process would. The
same for a standby that took the lease and cannot record the new epoch: nothing of that
epoch exists yet, so it gives the lease back first (the other in-sync replica need not wait
for its expiry), as PostgreSQL panics and etcd exits on a failed WAL sync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from shardex.journal import JournalUnavailable
from shardex.journal.disk import _reason

log = logging.getLogger("shardex.replica")

EXIT_JOURNAL_FAILED = 4  # exit code of a replica whose journal could not write (restarted)


class JournalFailStop(SystemExit):
    """A standby's journal failed: the process exits (``code`` ``EXIT_JOURNAL_FAILED``).
    ``reason``: the one-line cause, for the log and the simulator's trace."""

    def __init__(self, node: str, what: str, reason: str) -> None:
        super().__init__(EXIT_JOURNAL_FAILED)
        self.node, self.what, self.reason = node, what, reason

    def __str__(self) -> str:
        return f"{self.node} could not {self.what}: {self.reason}"


@contextmanager
def fail_stop(node: str, what: str) -> Iterator[None]:
    """Turn a journal failure (``JournalUnavailable``, or an ``OSError`` of the epoch file)
    inside the block into ``JournalFailStop``, with the ALERT line that says why."""
    try:
        yield
    except (JournalUnavailable, OSError) as exc:
        reason = str(exc) if isinstance(exc, JournalUnavailable) else _reason(exc)
        log.error("ALERT %s cannot %s (%s): it acks nothing more and exits (code %d); "
                  "restarted, it recovers what is durable and catches up from the leader",
                  node, what, reason, EXIT_JOURNAL_FAILED)  # fmt: skip
        raise JournalFailStop(node, what, reason) from exc


__all__ = ["EXIT_JOURNAL_FAILED", "JournalFailStop", "fail_stop"]
