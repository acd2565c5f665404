"""``journal.truncate_from``: cutting a journal back to a seq (a deposed leader's divergent
tail), on the simulated disk. A crash at every step of the cut -- a process crash (the page
cache kept) or a power loss (only what was synced, plus a seeded prefix of the rest) -- leaves
a journal that recovery accepts, whose state is one the uncut history had (never a mix), and
that claims no record it no longer holds; the next cut (the replica's next start) finishes it.
What a cut cannot repair is refused with nothing touched. Each test well under a second."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from shardex.engine import DEFAULT_MARKETS, Engine
from shardex.engine.codes import OP_NEW
from shardex.journal import Journal, read_commands, recover, truncate_from
from shardex.journal.disk import _seq_of
from shardex.journal.records import iter_records, segment_paths
from shardex.sim.disk import SimDisk

DIR = Path("/j")


def _cmd(k: int) -> tuple:
    """Orders on both sides around one price: some rest, some trade."""
    return (OP_NEW, "BTC-USD", f"o{k}", "acct", k % 2, 0, 100 + (k * 7) % 5, 1 + k % 3, 0,
            False, 0)  # fmt: skip


def _build(disk: SimDisk, keep: int = 10) -> dict[int, Any]:
    """A journal of 180 orders in records of 3, rolled every ~2 KB, snapshots after 60 and
    150; the engine's state at every record boundary (seq → snapshot)."""
    j = Journal(DIR, DEFAULT_MARKETS, segment_bytes=2048, keep_snapshots=keep, disk=disk)
    engine = j.recover().engine
    states = {0: engine.snapshot()}
    for k in range(180):
        before = engine.seq
        engine.apply(_cmd(k), [])
        j.add(before, _cmd(k))
        if k % 3 == 2:
            j.commit()
            states[engine.seq] = engine.snapshot()
        if k in (59, 149):
            j.snapshot(engine)
    j.close()
    return states


def _starts(disk: SimDisk) -> list[int]:
    return [s for p in segment_paths(DIR, disk) for s, _ in iter_records(p, disk=disk)]


def _mid_segment_cut(disk: SimDisk, states: dict[int, Any]) -> int:
    """A record boundary between the two snapshots that is not a segment's first record."""
    snaps = sorted(_seq_of(p) for p in disk_snapshots(disk))
    firsts = {_seq_of(p) for p in segment_paths(DIR, disk)}
    return next(s for s in _starts(disk) if snaps[0] < s < snaps[1] and s not in firsts
                and s in states and s > snaps[0] + 20)  # fmt: skip


def disk_snapshots(disk: SimDisk) -> list[Path]:
    return [DIR / n for n in disk.listdir(DIR) if n.startswith("snapshot-")]


class _Crash(Exception):
    pass


class _CrashingDisk:
    """A ``SimDisk`` whose ``n``-th durable change (unlink, directory sync, truncate, file
    sync) does not happen: the process dies just before it."""

    def __init__(self, disk: SimDisk, n: int) -> None:
        self.disk, self.left = disk, n

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.disk, name)
        if name not in ("unlink", "fsync_dir", "ftruncate", "fsync", "replace"):
            return attr

        def call(*args: Any) -> Any:
            self.left -= 1
            if self.left == 0:
                raise _Crash(name)
            return attr(*args)

        return call


def _replayed(disk: SimDisk) -> Engine:
    """A fresh engine through every record on disk from seq 0: what the records hold."""
    engine = Engine(DEFAULT_MARKETS)
    for _, cmd in read_commands(DIR, disk):
        engine.apply(cmd, [])
    return engine


def _check(disk: SimDisk, states: dict[int, Any], at: int) -> int:
    """Recovery accepts the journal, its state is one of the uncut history's, and the records
    on disk reach it (no snapshot past what they hold); the next cut lands exactly at ``at``.
    The seq recovered before that next cut."""
    rec = recover(DIR, DEFAULT_MARKETS, disk=disk)
    seq = rec.engine.seq
    assert seq in states and rec.engine.snapshot() == states[seq], "a state the history never had"
    assert seq >= at
    assert _replayed(disk).seq == seq, "recovery claims records the journal no longer holds"
    plan = truncate_from(DIR, at, disk)
    assert plan.why is None
    again = recover(DIR, DEFAULT_MARKETS, disk=disk).engine
    assert again.seq == at and again.snapshot() == states[at]
    return seq


def test_a_cut_keeps_the_prefix_and_drops_the_tail() -> None:
    disk = SimDisk()
    states = _build(disk)
    at = _mid_segment_cut(disk, states)
    plan = truncate_from(DIR, at, disk)
    assert plan.why is None and plan.snapshots and plan.segments and plan.cut
    engine = recover(DIR, DEFAULT_MARKETS, disk=disk).engine
    assert engine.seq == at and engine.snapshot() == states[at]
    assert max(_starts(disk)) < at and all(_seq_of(p) <= at for p in disk_snapshots(disk))
    assert truncate_from(DIR, at, disk).empty  # (again: nothing left to cut)


def _crashed_cut(n: int, seed: int, power: bool) -> tuple[SimDisk, dict[int, Any], int] | None:
    """The journal after a crash just before the ``n``-th durable change of its cut (then a
    power loss drawing from ``seed``, or a process crash); None when the cut has fewer."""
    disk = SimDisk(random.Random(seed))
    states = _build(disk)
    at = _mid_segment_cut(disk, states)
    try:
        truncate_from(DIR, at, _CrashingDisk(disk, n))  # type: ignore[arg-type]
    except _Crash:
        if power:
            disk.crash()
        else:
            disk.kill()
        return disk, states, at
    return None


@pytest.mark.parametrize("power", [False, True])
def test_a_crash_at_every_step_of_a_cut_leaves_a_journal_recovery_accepts(power: bool) -> None:
    seen = set()
    n = 0
    while True:
        n += 1
        crashed = [_crashed_cut(n, seed, power) for seed in range(3 if power else 1)]
        if crashed[0] is None:
            break
        for disk, states, at in filter(None, crashed):
            seen.add(_check(disk, states, at))
    assert n > 5, "the cut took fewer steps than its snapshots, segments and truncate"
    assert len(seen) >= 3, f"the crashes left too few distinct states: {seen}"


def test_what_a_cut_cannot_repair_is_refused_untouched() -> None:
    """One snapshot kept, past the cut, and the segments before it trimmed: no base to
    recover from below the cut; nothing is removed."""
    disk = SimDisk()
    states = _build(disk, keep=1)
    snap = _seq_of(disk_snapshots(disk)[0])
    at = max(s for s in _starts(disk) if s < snap and s in states) if any(
        s < snap for s in _starts(disk)) else snap - 1  # fmt: skip
    before = sorted(disk.listdir(DIR)), [disk.read_bytes(DIR / n) for n in disk.listdir(DIR)]
    plan = truncate_from(DIR, at, disk)
    assert plan.why is not None
    assert (sorted(disk.listdir(DIR)), [disk.read_bytes(DIR / n) for n in disk.listdir(DIR)]
            ) == before  # fmt: skip


def test_a_record_that_straddles_the_cut_goes_too() -> None:
    """A standby journals what it drained as one record, which can span the leader's batch
    boundaries: cut inside a record (in the middle of the journal, and in its last record,
    whose end only the journal's seq says), the journal ends at that record's start."""
    disk = SimDisk()
    states = _build(disk)
    starts = _starts(disk)
    inside = _mid_segment_cut(disk, states)
    plan = truncate_from(DIR, inside + 1, disk)
    assert plan.why is None and plan.at == inside
    engine = recover(DIR, DEFAULT_MARKETS, disk=disk).engine
    assert engine.seq == inside and engine.snapshot() == states[inside]
    last = max(s for s in _starts(disk))
    end = engine.seq
    assert truncate_from(DIR, last + 1, disk).empty  # (without the end: nothing to tell)
    plan = truncate_from(DIR, last + 1, disk, end=end)
    assert plan.at == last and last in starts
    engine = recover(DIR, DEFAULT_MARKETS, disk=disk).engine
    assert engine.seq == last and engine.snapshot() == states[last]
