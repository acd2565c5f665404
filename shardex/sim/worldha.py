"""Standbys, leases and their store inside the simulated world (``World`` with ``replicas`` 2).

A plan with ``replicas=2`` gives every engine and account shard two replicas
(``shardex.inproc_replicas``: a standby that leads once it holds the lease, the lease renewed
by its own turns), named ``engine-0a``/``engine-0b``, ``accounts-0a``/``accounts-0b``
(``sim.crash.replica_name``): the world crashes, restarts, powers off, pauses and partitions
them like any node, leader or standby. Their lease lives on a ``SimStore`` (``sim.store``: an
in-memory Redis on the virtual clock, with an asynchronous replica). What ``HA`` adds to a
world:

* **the store's faults** (``StoreFaults``, drawn from a stream of their own, ``store-SEED``):
  an *outage* (``down_per_s``, for ``down_s``: every lease call fails, nothing is lost: the
  leaders cannot renew and fence at their deadline, the standbys cannot take over) and a
  *failover* to its replica (``failover_per_s``; OFF by default): the writes since the
  replica's last sync are lost, lease keys included. A failover breaks the lease's documented
  assumption (ONE Redis, ``shardex.lease``): a seed that finds two writers after one is the
  danger shown, not a bug of the cluster;
* **a supervisor**: a replica that exits because it lost its lease (``FailoverNode.exited``,
  a process's exit code 3) or because its journal could not write (a standby's fail-stop on
  a disk spell, ``node.failstop``: exit code 4, counted ``fail_stop``; not a violation, the
  checks go on -- unless the error was not one the world injected: check ``fail_stop``) is
  restarted after ``down_s`` and rejoins as a standby;
* **what the checks need**: ``losses`` per (tier, shard), the failovers the world caused
  (the old leader was crashed, powered off, paused, slowed or cut off from the store during
  its term, or the store was down or failed over) for ``no_needless_failover``;
  ``cold_failover`` (a replica that just started and never followed a leader takes a free
  lease while another in-sync member exists); and ``stale_writes``,
  a continuous check of its own: no leader writes under an epoch once a later epoch of its
  shard was seen granted (a deposed leader must stop at its deadline, before the lease can
  expire: a write after that is a second writer, whatever its epoch says).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from shardex.node.failstop import EXIT_JOURNAL_FAILED
from shardex.node.replication import EXIT_LEASE_LOST, START_GRACE_S
from shardex.sim.crash import Lifecycle, StartFailed, replica_name
from shardex.sim.sched import Trace
from shardex.sim.storefaults import StoreChaos, StoreFaults

FOREVER = float("inf")


def tier_of(name: str) -> str:
    """``engine-0a`` -> ``engine``; ``accounts-1b`` -> ``accounts``."""
    return name.rsplit("-", 1)[0]


def shard_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1].rstrip("ab"))


class HA:
    """The replicated part of one world: its store, store faults, supervisor and checks."""

    def __init__(self, seed: int, clock: Any, trace: Trace, faults: StoreFaults,
                 store: Any) -> None:  # fmt: skip
        """``store``: the world's ``SimStore`` (the leases', and the bridge's if it runs)."""
        self.store = store
        self.clock = clock
        self.trace = trace
        self.rng = random.Random(f"store-{seed}")
        self.life: Lifecycle | None = None
        self.losses: Counter[tuple[str, int]] = Counter()
        self.violations: list[str] = []
        # the store's faults (``sim.storefaults``: drawn from this stream, kept, replayed)
        self.chaos = StoreChaos(store, clock, trace, faults, self.rng, self._replicas,
                                self._impair)  # fmt: skip
        self.counts = self.chaos.counts
        self._cut = self.chaos.cut_until  # replica name -> when it reaches the store again
        # name ("": all) -> spans of virtual time it was impaired; (tier, shard) -> its leader
        self._impaired: dict[str, list[tuple[float, float]]] = {}
        self._leader_of: dict[tuple[str, int], tuple[str, float]] = {}  # (name, since)
        self._granted: dict[tuple[str, int], int] = {}  # the newest epoch seen per shard
        # id(leader node) -> (epoch, seq, lease deadline, when) at the last tick
        self._seqs: dict[int, tuple[int, int, float, float]] = {}
        self._reported: set[tuple[str, int, int]] = set()

    @property
    def faults(self) -> StoreFaults:
        return self.chaos.faults

    @faults.setter
    def faults(self, faults: StoreFaults) -> None:
        self.chaos.faults = faults

    def _replicas(self) -> list[str]:
        """The names a store cut may hit: every replica, leader or standby."""
        life = self.life
        return [] if life is None else [n for n, node in life.named().items()
                                         if hasattr(node, "standby")]  # fmt: skip

    def attach(self, life: Lifecycle) -> None:
        """Watch ``life``'s crashes, power losses and pauses of leaders (``losses``)."""
        self.life = life
        crash, pause, restart = life.crash, life.pause, life.restart

        def on_crash(name: str) -> None:  # (a power loss crashes through this too)
            self._impair(name, FOREVER)
            crash(name)

        def on_pause(name: str, seconds: float, kind: str = "pause") -> None:
            self._impair(name, self.clock.now + seconds)
            pause(name, seconds, kind)

        def on_restart(name: str) -> Any:
            self._impair(name, self.clock.now)  # (down until now)
            try:
                node = restart(name)
            except StartFailed:
                if not self.store.is_up or name in self._cut:  # (its standby asks the lease
                    life.failures.pop()  # store as it starts: a process exits and is retried)
                    self.trace.add(self.clock.now, "retry", name, "the lease store is down")
                raise
            self._watch_acquire(name, node)
            return node

        life.crash, life.pause, life.restart = (  # type: ignore[method-assign]
            on_crash, on_pause, on_restart)
        for name, node in life.named().items():
            self._watch_acquire(name, node)

    def _watch_acquire(self, name: str, node: Any) -> None:
        """Replica ``node``'s lease takes are checked (``cold_failover``)."""
        if not hasattr(node, "standby"):
            return
        lease = node.lease
        acquire = lease.try_acquire

        def try_acquire(floor: int, start_seq: int) -> tuple[int, str]:
            isr = lease.isr()  # (what the take's script reads: whom the lease may go to)
            never_followed = node.standby.leader is None
            epoch, why = acquire(floor, start_seq)
            if epoch:
                self._failover(name, epoch)
                for hook in self.life.on_take if self.life is not None else ():
                    hook(name)  # (arms a promotion crash point: ``sim.hazards``)
            up = self.clock.monotonic() - node.standby.started
            others = [m for m in isr if m != lease.node]
            if epoch and up < START_GRACE_S and others and never_followed:
                what = (f"cold_failover: {name} took the lease of {lease.label} (epoch "
                        f"{epoch}) {up:.3f}s after it started, before the in-sync "
                        f"{','.join(others)} had {START_GRACE_S}s to")  # fmt: skip
                self.violations.append(what)
                self.trace.add(self.clock.now, "violation", name, what)
            return epoch, why

        lease.try_acquire = try_acquire  # type: ignore[method-assign]

    def _impair(self, name: str, until: float) -> None:
        """``name`` (``""``: every node, the store being down) is impaired from now until
        ``until``: a failover from it meanwhile, or within ``CAUSE_S`` after, has a cause."""
        now = self.clock.now
        spans = self._impaired.setdefault(name, [])
        if spans and spans[-1][1] == FOREVER and until != FOREVER:
            spans[-1] = (spans[-1][0], until)  # (a crash ends at the restart)
        else:
            spans.append((now, until))

    def _explained(self, name: str | None, since: float, now: float) -> bool:
        """Whether a failover now from ``name``, leader since ``since``, has a cause the world
        made: it was impaired at some time in its term. (Not only just before: a lost leader's
        lease may stay free for a while, e.g. both replicas down, or the restarted one leaving
        it to an in-sync member that is down too for ``START_GRACE_S``.)"""
        if name is None:
            return False
        return any(start <= now and end >= since
                   for who in (name, "") for start, end in self._impaired.get(who, ()))  # fmt: skip

    def _failover(self, name: str, epoch: int) -> None:
        """Replica ``name`` took its shard's lease at ``epoch``: a leader loss the world
        caused when the previous leader was impaired (``no_needless_failover`` counts them)."""
        key, now = (tier_of(name), shard_of(name)), self.clock.now
        before, since = self._leader_of.get(key, (None, now))
        if self._explained(before, since, now):
            self.losses[key] += 1
        self._leader_of[key] = (name, now)

    # -- a scheduler tick ----------------------------------------------------------------------

    def tick(self, now: float, loading: bool, restart_at: dict[str, float],
             down_s: tuple[float, float], script: Any = None) -> None:  # fmt: skip
        """Store faults (while ``loading``; a ``script``'s, replayed), the supervisor's
        restarts, the stale-write check."""
        self.chaos.tick(now, loading, script)
        life = self.life
        assert life is not None
        self._apply_cuts(life)
        for name, node in life.named().items():
            code = getattr(node, "exited", None)
            if code in (EXIT_LEASE_LOST, EXIT_JOURNAL_FAILED):
                if code == EXIT_JOURNAL_FAILED:
                    self._fail_stopped(now, name, node.exit_reason)
                life.exited(name)
                restart_at[name] = now + self.rng.uniform(*down_s)
        self._stale_writes(now, life)

    def _fail_stopped(self, now: float, name: str, reason: str | None) -> None:
        """A standby exited on a journal error: what it should do on a disk fault the world
        injected (``SimDisk``'s errors say "(simulated"), a violation on any other error (a
        bug that a fail-stop must not hide, e.g. a write on a closed journal)."""
        self.counts["fail_stop"] += 1
        if "(simulated" not in (reason or ""):
            self._report(now, (name, -1, EXIT_JOURNAL_FAILED), f"fail_stop: {name} exited "
                         f"on a journal error no fault injected: {reason}")  # fmt: skip

    def _apply_cuts(self, life: Lifecycle) -> None:
        """Each live replica's lease client reaches the store unless its node is cut (a
        restarted replica's new client too)."""
        for name, node in life.named().items():
            if hasattr(node, "standby"):
                node.lease.r.cut = name in self._cut

    def heal(self) -> None:
        """No more store faults: an outage ends now, every node reaches the store."""
        self.chaos.heal()
        if self.life is not None:
            self._apply_cuts(self.life)

    # -- the heal ---------------------------------------------------------------------------

    def leaders(self) -> tuple[dict[int, Any], dict[int, Any]]:
        """The engine and the account shards leading now, by shard (the nodes the heal
        waits on: ``World._unconfirmed``)."""
        life = self.life
        assert life is not None
        found: dict[str, dict[int, Any]] = {"engine": {}, "accounts": {}}
        for name, n in life.named().items():
            if getattr(n, "leader", None) is not None and n.exited is None:
                found[tier_of(name)][shard_of(name)] = n.leader
        return found["engine"], found["accounts"]

    # -- the stale-write check -------------------------------------------------------------

    def _stale_writes(self, now: float, life: Lifecycle) -> None:
        """A leader whose seq moved since the last tick under an epoch older than one already
        seen granted for its shard (at an earlier tick) wrote after it was deposed."""
        leading = [(name, n) for name, n in life.named().items()
                   if getattr(n, "leader", None) is not None and n.exited is None]  # fmt: skip
        seen: dict[int, tuple[int, int, float, float]] = {}
        for name, n in leading:
            key = (tier_of(name), shard_of(name))
            epoch, seq, deadline = n.lease.epoch, n.machine.seq, n.lease.deadline
            seen[id(n.leader)] = (epoch, seq, deadline, now)
            before = self._seqs.get(id(n.leader))
            if before is None or seq <= before[1]:
                continue
            newest = self._granted.get(key, 0)
            wrote = f"{name} ({n.node}) wrote seq {before[1] + 1}..{seq} under epoch {epoch}"
            if epoch < newest:
                self._report(now, (name, epoch, newest), f"stale_writes: {wrote} after epoch "
                             f"{newest} of {key[0]} shard {key[1]} was granted")  # fmt: skip
            elif before[2] <= before[3] and deadline == before[2]:  # (expired, not renewed)
                self._report(now, (name, epoch, -1), f"stale_writes: {wrote} past its lease "
                             f"deadline ({before[2]:.3f}; not renewed since)")  # fmt: skip
        for name, n in leading:  # (granted epochs count from the next tick on)
            key = (tier_of(name), shard_of(name))
            self._granted[key] = max(self._granted.get(key, 0), n.lease.epoch)
        self._seqs = seen

    def _report(self, now: float, tag: tuple[str, int, int], what: str) -> None:
        if tag not in self._reported:  # (once per node, epoch and kind)
            self._reported.add(tag)
            self.violations.append(what)
            self.trace.add(now, "violation", tag[0], what)


def is_replicated(plan_kwargs: dict[str, Any]) -> bool:
    return int(plan_kwargs.get("replicas", 1)) > 1


__all__ = ["HA", "StoreFaults", "is_replicated", "replica_name"]
