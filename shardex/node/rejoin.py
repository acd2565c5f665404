"""A replica that comes back: what it does with a journal that ran past the next epoch's start
(cut it there: ``journal.truncate``, before its recovery when the lease already says where, or
once it meets the new leader), and the snapshot cadence that bounds its replay. Used by
``Standby`` and by the start-up of ``--role auto`` (``failover.recover_replica``); what cannot
be cut still starts over (``Standby.start_over``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shardex.journal import Disk, Journal, Plan, truncate_from
from shardex.lease import Lease
from shardex.node.replication import log, open_journal
from shardex.recovery import SNAPSHOT_EVERY, SNAPSHOT_INTERVAL

# Journaled commands between a standby's snapshots: a restart replays at most this many after
# loading the newest snapshot (~0.5 s of engine replay on a 2-core box).
STANDBY_SNAPSHOT_EVERY = SNAPSHOT_EVERY // 2


def snapshot_cadence(cfg: Any) -> dict[str, Any]:
    """A standby's snapshot cadence from its node's config: half the leader's commands
    between snapshots (``snapshot_every``, ``STANDBY_SNAPSHOT_EVERY`` by default), the same
    interval: ``Standby``'s keyword arguments."""
    every = getattr(cfg, "snapshot_every", SNAPSHOT_EVERY)
    return {"snapshot_every": max(1, every // 2),
            "snapshot_interval": getattr(cfg, "snapshot_interval", SNAPSHOT_INTERVAL)}


def cut_before_recovery(journal: Journal, lease: Lease) -> int | None:
    """Before a restarted replica's recovery: when the lease already records an epoch after
    the one its journal has seen (it led, was killed, and the next leader took over while it
    restarted), cut off its records from that epoch's start (``journal.truncate``) before
    they are replayed, instead of replaying them and recovering a second time to drop them.
    Safe without knowing where its records end: a record starting at or past that seq was
    never in the next leader's history. The seq cut at (None: nothing cut; an unreachable
    lease store cuts nothing: ``Standby.start`` checks again)."""
    try:
        first = later_epoch(journal, lease)
    except Exception:
        return None
    if first is None:
        return None
    plan = truncate_from(journal.dir, first[1], journal.disk)
    if plan.empty or plan.why is not None:
        return None
    log.error("ALERT %s: its journal ran past the start of epoch %d (seq %d): truncated its "
              "divergent tail before recovering", lease.node, first[0], plan.at)  # fmt: skip
    return plan.at


def later_epoch(journal: Journal, lease: Lease) -> tuple[int, int] | None:
    """(epoch, its start seq) of the first epoch after the one ``journal`` has seen, from the
    lease's per-epoch starts: the seq its history and the leaders' since may first differ at
    (None: no later epoch). Raises what the lease's store raises."""
    mine = journal.read_epoch()
    later = {e: s for e, s in lease.starts().items() if e > mine}
    return (min(later), later[min(later)]) if later else None


def cut_and_recover(journal_dir: str, markets: Any, fsync: str, machine: Any, disk: Disk,
                    at: int, end: int) -> tuple[Journal, Any, Plan]:  # fmt: skip
    """Truncate the (closed) journal in ``journal_dir`` at ``at`` (``end``: the seq its
    records reach), open it again and recover: (journal, state machine, the cut's plan).
    Settlements the replay regenerated are dropped from the machine's outgoing list (its
    rings keep them; a standby sends none)."""
    plan = truncate_from(Path(journal_dir), at, disk, end)
    journal = open_journal(journal_dir, markets, fsync, machine, disk)
    engine = journal.recover().engine
    outgoing = getattr(engine, "outgoing", None)
    if outgoing:
        outgoing.clear()
    return journal, engine, plan
