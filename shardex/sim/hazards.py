"""The faults of machines' clocks and disks in a simulated run, drawn from the seed.

The network's faults are ``shardex.sim.faults.Network``'s and the crashes and pauses the
world's; these are the rest, each at a ``Faults`` rate per virtual second, from their own
``random.Random`` (so they never shift the other streams), each traced and replayable by
``shardex.sim.script``:

* ``step``: a node's wall clock jumps (``Faults.step_per_s``, by ``step_s``): its ``time()``
  only (``shardex.sim.skew.NodeClock``; needs a world with per-node clocks);
* ``trap``: a crash point (``Faults.trap_per_s``): an engine or account shard dies at its
  Nth journal write (after the write landed, unsynced) or sync (before it ran) from now --
  the one place a crash between a turn's journal write and its sync can land. The trap
  springs inside the node's turn (``SimDisk``'s ``CrashPoint``); the node then dies as
  drawn when the trap was set: a process crash (``kill -9``: the page cache keeps the
  write) or a power loss (``trap_power_p``: the unsynced write may be lost or torn). Nothing
  of the batch was acked (the ack follows the sync), so the client's fate is ``unknown``
  and the shard's recovery decides it. Traced ``trapped`` (a consequence: a replay re-arms
  the trap, and the crash follows from it);
* ``promote_trap``: a crash point inside a promotion (``Faults.trap_promote_p`` of the lease
  takes of a replicated world; ``PROMOTION_TRAPS``): the standby that just took its lease
  dies before its epoch is recorded (the epoch file's new copy written, unsynced), or with
  the epoch record renamed into place and its directory not synced, or once it is durable
  and the leader built, before it answered anything. Drawn from a stream of its own
  (``promote-SEED``), traced ``promote_trap`` with the point, then ``trapped`` and the death;
* ``full``: the disk is full for a spell (``full_per_s``, ``full_s``): ``SimDisk.space`` is
  set a few bytes above what is used, so writes fail with ENOSPC until it ends;
* ``eio``: a spell of failing I/O (``eio_per_s``, ``eio_s``): that share of writes, syncs and
  truncates fail with EIO (``SimDisk.eio_rate``).

The disk is one volume for the whole world (as if every shard's journal shared a device):
a spell hits whichever shards write during it. A journal that cannot write keeps its batch
and retries (``JournalUnavailable``), acking nothing meanwhile; what a node must never do is
ack what is not durable or die of it.
"""

from __future__ import annotations

import os
import random
from typing import Any

from shardex.sim.crash import Lifecycle
from shardex.sim.disk import CrashPoint, SimDisk
from shardex.sim.faults import PROMOTION_POINTS, Faults, fire
from shardex.sim.sched import Trace
from shardex.sim.skew import Clocks

KINDS = ("step", "trap", "full", "eio")  # what a replay applies (``trapped``: a consequence)
SLACK = (0, 4096)  # bytes left free when the disk fills up
# The crash points inside a promotion (``faults.PROMOTION_POINTS``), by what is done when the
# replica dies there, and the disk trap that stops it (None: the end of the turn it was
# promoted in, ``promoted``):
# ``lease_taken``: the lease is ours, the epoch record is not (its temporary copy written,
# not synced); ``epoch_unsynced``: the record renamed into place, its directory's sync not
# run (a power loss may take it back); ``before_first_reply``: the record durable, the leader
# built and its HELLO sent, no request answered yet.
PROMOTION_TRAPS: dict[str, tuple[str, int] | None] = {
    "lease_taken": ("write", 1),
    "epoch_unsynced": ("dirsync", 1),
    "before_first_reply": None,
}


class Hazards:
    """Clock steps, crash points and disk spells of one world (see the module)."""

    def __init__(self, seed: int, faults: Faults, life: Lifecycle, trace: Trace,
                 disk: SimDisk | None = None, clocks: Clocks | None = None) -> None:  # fmt: skip
        self.faults = faults
        self.life = life
        self.trace = trace
        self.disk = disk
        self.clocks = clocks
        self.rng = random.Random(f"hazards-{seed}")
        self.promote_rng = random.Random(f"promote-{seed}")  # (drawn only when asked for)
        self.traps: dict[str, tuple[str, bool]] = {}  # node -> (its journal dir, power?)
        self.after_promote: dict[str, str] = {}  # node -> its journal dir (``promoted``)
        self.healed = False
        life.on_take.append(self.promoting)
        life.on_promote.append(self.promoted)
        self.full_until: float | None = None
        self.eio_until: float | None = None
        self.last: float | None = None
        self.counts = {"step": 0, "trap": 0, "trapped": 0, "full": 0, "eio": 0}

    def _now(self) -> float:
        return self.life._now()

    # -- a scheduler tick ------------------------------------------------------------------

    def step(self, now: float) -> None:
        """Draw new faults for the time since the last step (after ``expire``)."""
        dt = 0.0 if self.last is None else now - self.last
        self.last = now
        f, rng = self.faults, self.rng
        names = sorted(self.life.named())
        if self.clocks is not None and names and fire(rng, f.step_per_s, dt):
            self.clock_step(names[rng.randrange(len(names))], rng.uniform(*f.step_s))
        if self.disk is None:
            return
        shards = [n for n in names if not n.startswith("router-") and n not in self.traps]
        if shards and fire(rng, f.trap_per_s, dt):
            name = shards[rng.randrange(len(shards))]
            self.trap(name, rng.choice(("write", "sync")), rng.randint(1, 3),
                      rng.random() < f.trap_power_p)  # fmt: skip
        if self.full_until is None and fire(rng, f.full_per_s, dt):
            self.full(rng.uniform(*f.full_s), rng.randint(*SLACK))
        if self.eio_until is None and fire(rng, f.eio_per_s, dt):
            self.eio(rng.uniform(*f.eio_s), f.eio_rate)

    def expire(self, now: float) -> None:
        """First thing in a tick, drawn or replayed: end the spells whose time is up and
        disarm the traps of nodes that went down."""
        disk = self.disk
        if disk is None:
            return
        if self.full_until is not None and self.full_until <= now:
            self.full_until, disk.space = None, None
            self.trace.add(now, "disk", "", "space again")
        if self.eio_until is not None and self.eio_until <= now:
            self.eio_until, disk.eio_rate = None, 0.0
            self.trace.add(now, "disk", "", "I/O healthy again")
        for name in [n for n in self.traps if n in self.life.down]:
            disk.untrap(self.traps.pop(name)[0])  # (it died of something else first)
            self.after_promote.pop(name, None)

    def heal(self) -> None:
        """No more faults: spells end, traps are disarmed (clock steps stay: time moved)."""
        self.expire(float("inf"))
        for root, _ in self.traps.values():
            if self.disk is not None:
                self.disk.untrap(root)
        self.traps.clear()
        self.after_promote.clear()
        self.healed = True  # (no promotion is trapped from now on either)

    # -- the faults, by hand or drawn ------------------------------------------------------

    def clock_step(self, name: str, seconds: float) -> None:
        assert self.clocks is not None, "a clock step needs a world with per-node clocks"
        self.clocks.step(name, seconds)
        self.counts["step"] += 1

    def trap(self, name: str, op: str, n: int, power: bool) -> bool:
        """Arm a crash point in ``name``'s journal dir: its ``n``-th ``op`` from now."""
        node = self.life.named().get(name)
        root = getattr(getattr(node, "cfg", None), "journal_dir", None)
        if self.disk is None or root is None:
            return False
        self.disk.trap(root, op, n)
        self.traps[name] = (root, power)
        self.counts["trap"] += 1
        self.trace.add(self._now(), "trap", name, f"{op} {n} {'power' if power else 'kill'}")
        return True

    def promoting(self, name: str) -> None:
        """Replica ``name`` just took its lease and records the epoch next: with
        ``Faults.trap_promote_p``, it dies at one of the ``PROMOTION_POINTS`` (seeded; one of
        ``Faults.trap_promote_at`` if it names some)."""
        f, rng = self.faults, self.promote_rng
        drawing = self.last is not None and not self.healed  # (faults run: the load phase)
        if not f.trap_promote_p or not drawing or rng.random() >= f.trap_promote_p:
            return
        points = f.trap_promote_at or PROMOTION_POINTS
        point = points[rng.randrange(len(points))]
        self.promote_trap(name, point, rng.random() < f.trap_power_p)

    def promote_trap(self, name: str, point: str, power: bool) -> bool:
        """Arm crash point ``point`` of ``PROMOTION_TRAPS`` in replica ``name``, which has
        just taken its lease (False: it has a trap already, or no simulated disk)."""
        node = self.life.named().get(name)
        root = getattr(getattr(node, "cfg", None), "journal_dir", None)
        if self.disk is None or root is None or name in self.traps:
            return False
        where = PROMOTION_TRAPS[point]
        if where is None:
            self.after_promote[name] = root
        else:
            self.disk.trap(root, *where)
        self.traps[name] = (root, power)
        key = f"promote:{point}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.trace.add(self._now(), "promote_trap", name,
                       f"{point} {'power' if power else 'kill'}")  # fmt: skip
        return True

    def promoted(self, name: str) -> None:
        """The end of the turn replica ``name`` was promoted in: its ``before_first_reply``
        crash point, if armed, springs (out of the turn, as a disk trap's does)."""
        root = self.after_promote.pop(name, None)
        if root is not None:
            raise CrashPoint("promoted", root, root)

    def full(self, seconds: float, slack: int) -> None:
        assert self.disk is not None
        self.disk.space = self.disk.used() + slack
        self.full_until = self._now() + seconds
        self.counts["full"] += 1
        self.trace.add(self._now(), "full", "", f"{seconds!r}s +{slack}")

    def eio(self, seconds: float, rate: float) -> None:
        assert self.disk is not None
        self.disk.eio_rate = rate
        self.eio_until = self._now() + seconds
        self.counts["eio"] += 1
        self.trace.add(self._now(), "eio", "", f"{seconds!r}s {rate!r}")

    def sprung(self, node: Any, exc: Exception) -> str | None:
        """If ``exc`` is one of our crash points, ``node`` dies of it as drawn (a crash or a
        power loss) and its name is returned; else None (a real failure)."""
        if not isinstance(exc, CrashPoint):
            return None
        name = next((n for n, live in self.life.named().items() if live is node), None)
        if name is None or name not in self.traps:
            return None
        _, power = self.traps.pop(name)
        self.counts["trapped"] += 1
        file = os.path.relpath(exc.path, exc.root)  # (the root is a temporary directory)
        self.trace.add(self._now(), "trapped", name,
                       exc.op if file == "." else f"{exc.op} of {file}")  # fmt: skip
        if power:
            self.life.power(name)
        else:
            self.life.crash(name)
        return name

    def excused(self, exc: BaseException) -> bool:
        """Whether a restart that failed (``StartFailed``, the last of ``life.failures``) did
        so because a disk spell is on (its cause an ``OSError``: EIO, ENOSPC): a process that
        cannot start on a failing disk exits, which is right, not a violation; the failure is
        taken back (traced ``disk``) and the supervisor tries again later."""
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, OSError):  # (a JournalError's own
            cause = cause.__cause__  # cause: recovery's write-back failed on the spell)
        spell = self.full_until is not None or self.eio_until is not None
        if not (spell and isinstance(cause, OSError) and self.life.failures):
            return False
        what = self.life.failures.pop()
        self.trace.add(self._now(), "disk", "", f"excused: {what}")
        return True

    def apply(self, kind: str, node: str, detail: str) -> bool:
        """Replay one traced event of ours (``shardex.sim.script``); False if it no longer
        applies."""
        words = detail.split()
        if kind == "step" and self.clocks is not None and node in self.life.named():
            self.clock_step(node, float(detail.rstrip("s")))
        elif kind == "trap" and node in self.life.named() and node not in self.traps:
            return self.trap(node, words[0], int(words[1]), words[2] == "power")
        elif kind == "full" and self.disk is not None and self.full_until is None:
            self.full(float(words[0].rstrip("s")), int(words[1]))
        elif kind == "eio" and self.disk is not None and self.eio_until is None:
            self.eio(float(words[0].rstrip("s")), float(words[1]))
        else:
            return False
        return True


assert set(PROMOTION_TRAPS) == set(PROMOTION_POINTS)

__all__ = ["KINDS", "PROMOTION_TRAPS", "Hazards"]
