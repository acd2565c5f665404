"""The simulated store's own faults: drawn from the seed, traced, kept by index, replayed.

One ``SimStore`` (``sim/store.py``) holds the standbys' leases and the bridge's streams, as one
Redis does. ``StoreChaos`` is what happens to it in a world, from ``StoreFaults`` rates:

* ``store_down`` (``down_per_s`` for ``down_s``): an outage, every call fails, nothing is
  lost; it ends by itself (``store_up``, a consequence, not a fault of its own);
* ``store_cut`` (``cut_per_s`` for ``cut_s``): one replica cut off from the store while the
  others reach it (only a replicated world has replicas to cut); ``store_reach`` ends it;
* ``store_failover`` (``failover_per_s``): the store's asynchronous replica is promoted and
  every write since its last sync is gone, as after a Redis Sentinel failover. The detail
  says how many keys were written since and the new replica's lag, so a replay is the run.

These three are ordinary faults of a run's schedule: each is one trace event, so a run's
schedule lists them (``worldrun.schedule_of``), ``--keep`` lets them through by index like a
crash (``worldrun.FaultFilter`` gates ``down``/``cut``/``failover``), a replayed schedule
applies them (``script.Script`` through ``apply``), and the shrinker can keep or drop them.
Draws never depend on what was let through: a fault left out is still drawn (the stream of
draws, shared with the replicated world's supervisor, stays the same), it just does nothing;
with ``scripted`` set the draws do nothing and the script's events are what happens.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardex.sim.faults import fire, settings
from shardex.sim.sched import Trace

# the store's faults as a schedule names them (drawn, kept by index, replayed)
STORE_KINDS = ("store_down", "store_cut", "store_failover")


@dataclass(frozen=True)
class StoreFaults:
    """Rates of the store's faults (virtual seconds; all zero: a perfect Redis)."""

    down_per_s: float = 0.0  # outages per second ...
    down_s: tuple[float, float] = (0.05, 1.2)  # ... lasting this long
    failover_per_s: float = 0.0  # failovers to the replica (loses unsynced writes): opt-in
    cut_per_s: float = 0.0  # one replica cut off from the store (the store answers the rest)
    cut_s: tuple[float, float] = (0.1, 1.5)  # ... this long

    @classmethod
    def parse(cls, text: str) -> StoreFaults:
        """``"down_per_s=1,down_s=0.8:1.5,cut_per_s=0.5"`` (the command line's
        ``--store-faults``; ``failover_per_s`` breaks the lease's one-Redis assumption)."""
        return cls(**settings(text, cls.__dataclass_fields__, "store fault"))


def _none(name: str, until: float) -> None:
    """(No one to tell that ``name`` is impaired: a world without replicas.)"""


class StoreChaos:
    """The store's faults in one world (see the module). ``rng``: the draws' stream (the
    replicated world shares its own with its supervisor, so runs stay what they were);
    ``cuttable``: the names a cut may hit; ``on_impair(name, until)``: told of every fault
    (``""``: every node, the store itself) so a failover it causes is explained."""

    def __init__(self, store: Any, clock: Any, trace: Trace, faults: StoreFaults,
                 rng: random.Random, cuttable: Callable[[], list[str]] = list,
                 on_impair: Callable[[str, float], None] = _none) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.trace = trace
        self.faults = faults
        self.rng = rng
        self.cuttable = cuttable
        self.on_impair = on_impair
        self.counts: Counter[str] = Counter()
        self.scripted = False  # draws happen but do nothing: a script's events happen instead
        self.up_at: float | None = None
        self.cut_until: dict[str, float] = {}  # name -> when it reaches the store again
        self._last: float | None = None

    def tick(self, now: float, loading: bool, script: Any = None) -> None:
        """An outage that is over ends; while ``loading`` the faults are drawn (and a
        ``script``'s store events applied); cuts that are over end."""
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        if self.up_at is not None and now >= self.up_at:
            self.up_at = None
            self.store.up()
            self.trace.add(now, "store_up", "store")
        if loading:
            self._draw(now, dt)
            if script is not None:
                script.step_store(now, self)
        for name, until in list(self.cut_until.items()):
            if now >= until:
                del self.cut_until[name]
                self.trace.add(now, "store_reach", name)

    def _draw(self, now: float, dt: float) -> None:
        """One tick's draws (the order and number of draws are those of earlier commits, so
        a seed without a kept subset is the run it was)."""
        f, rng, act = self.faults, self.rng, not self.scripted
        if self.up_at is None and fire(rng, f.down_per_s, dt):
            seconds = rng.uniform(*f.down_s)
            if act:
                self.down(seconds)
        if fire(rng, f.cut_per_s, dt):
            names = sorted(self.cuttable())
            if names:
                name = names[rng.randrange(len(names))]
                seconds = rng.uniform(*f.cut_s)
                if act:
                    self.cut(name, seconds)
        if fire(rng, f.failover_per_s, dt):
            lag = rng.uniform(*self.store.lag) if self.store.lag else None
            if act:
                self.failover(lag)

    # -- the faults (what ``FaultFilter`` gates and a script applies) --------------------------

    def down(self, seconds: float) -> None:
        """The store is down for ``seconds`` (an outage already on is extended)."""
        now = self.clock.now
        self.up_at = max(self.up_at or 0.0, now + seconds)
        self.store.down()
        self.counts["store_down"] += 1
        self.on_impair("", now + seconds)
        self.trace.add(now, "store_down", "store", f"{seconds!r}s")

    def cut(self, name: str, seconds: float) -> None:
        """``name`` cannot reach the store for ``seconds``."""
        now = self.clock.now
        self.cut_until[name] = max(self.cut_until.get(name, 0.0), now + seconds)
        self.counts["store_cut"] += 1
        self.on_impair(name, now + seconds)
        self.trace.add(now, "store_cut", name, f"{seconds!r}s")

    def failover(self, lag: float | None) -> None:
        """The replica is promoted (the writes since its last sync are lost); ``lag``: how
        far its own new replica trails it at first."""
        now = self.clock.now
        lost = self.store.failover(next_lag=lag)
        self.counts["store_failover"] += 1
        self.on_impair("", now)
        self.trace.add(now, "store_failover", "store", f"{len(lost)} keys lost, lag {lag!r}")

    def apply(self, kind: str, node: str, detail: str) -> bool:
        """A schedule's store event, replayed (False: it no longer applies)."""
        if kind == "store_down":
            self.down(float(detail.rstrip("s")))
        elif kind == "store_cut":
            if node not in self.cuttable():
                return False
            self.cut(node, float(detail.rstrip("s")))
        elif kind == "store_failover":
            lag = detail.rsplit(" ", 1)[-1]
            self.failover(None if lag == "None" else float(lag))
        else:
            return False
        return True

    def heal(self) -> None:
        """No more store faults: an outage ends now, every node reaches the store."""
        now = self.clock.now
        if self.up_at is not None:
            self.up_at = None
            self.store.up()
            self.trace.add(now, "store_up", "store")
        for name in sorted(self.cut_until):
            self.trace.add(now, "store_reach", name)
        self.cut_until.clear()


__all__ = ["STORE_KINDS", "StoreChaos", "StoreFaults"]
