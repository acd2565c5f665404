"""The invariants on the simulated world: ``run`` (``runner.Runner``) over
``shardex.sim.world.World``, which ``runner.pick`` prefers to the stand-in once it exists.

``CheckedWorld`` is a ``World`` whose check hook (called every ``check_every_s`` of virtual
time) runs the continuous checks on the live cluster (``invariants.Monitor``; a violation is
an ``AssertionError`` there, so the world puts it in its trace and goes on), and which runs
every check on the healed cluster at the start of its ``collect`` phase, while the cluster and
its journals are still there. ``--faults`` names fault kinds, each at a preset rate
(``PRESETS``), or sets a ``Faults`` field directly (``crash_per_s=2``).

A subset of a seed's faults (``keep``, what the shrinker asks for) is replayed by letting
through only the faults fired with those indexes (``FaultFilter``): every draw still
happens, the others do nothing. The world draws its faults as it runs, from the time between
its ticks, so once a fault is left out the later ones may move: the replay of a subset is
best effort, and the shrinker keeps only subsets whose run did fail.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from shardex.sim.extract import cluster_state
from shardex.sim.faults import Faults
from shardex.sim.invariants import EXECUTED, Monitor, Order
from shardex.sim.mutations import applied
from shardex.sim.runner import RunResult, quiet
from shardex.sim.world import World

PRESETS: dict[str, dict[str, Any]] = {
    "delay": {"delay_p": 0.1},
    "cut": {"cut_per_s": 1.0},
    "partition": {"partition_per_s": 0.7, "partition_s": (0.05, 0.6)},
    "crash": {"crash_per_s": 0.7, "down_s": (0.05, 0.3)},
    "pause": {"pause_per_s": 0.7, "pause_s": (0.05, 1.2)},
}
PLAN = {"shards": 2, "accounts": 2}
INJECTED = ("partition", "cut", "crash", "pause")  # the trace kinds of a fault drawn


def faults_of(kinds: list[str]) -> Faults:
    """``Faults`` from ``--faults`` items: preset kinds and ``field=value`` settings."""
    kw: dict[str, Any] = {}
    settings = [k for k in kinds if "=" in k]
    for kind in (k for k in kinds if "=" not in k):
        if kind not in PRESETS:
            raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(PRESETS)}, "
                             "or a setting field=value")  # fmt: skip
        kw.update(PRESETS[kind])
    parsed = Faults.parse(",".join(settings)) if settings else Faults()
    explicit = {k.split("=", 1)[0] for k in settings}
    return Faults(**{**kw, **{k: getattr(parsed, k) for k in explicit}})


def orders_of(records: list[dict[str, Any]], accounts: bool) -> list[Order]:
    """The world's order records as the checks' ``Order``s: one the client learned ran
    (executed, no reject code) was forwarded by the account tier, or accepted by its engine
    shard without one."""
    out = []
    for o in records:
        ran = o.get("fate") == EXECUTED and o.get("code") is None
        out.append(Order(client=o["client"], symbol=o["symbol"], id=o["id"],
                         account=o.get("account"), fate=o.get("fate"),
                         accepted=ran and not accounts, forwarded=ran and accounts))  # fmt: skip
    return out


class FaultFilter:
    """Lets through only the faults whose index, in the order they fire, is in ``keep``."""

    def __init__(self, keep: list[int]) -> None:
        self.keep = set(keep)
        self.fired = 0

    def allow(self) -> bool:
        self.fired += 1
        return self.fired - 1 in self.keep

    def install(self, net: Any, life: Any) -> None:
        """Gate the network's partitions and cuts and the nodes' crashes and pauses; a
        restart of a node that did not crash does nothing."""
        for owner, name, none in ((net, "partition", None), (net, "cut", 0),
                                  (life, "crash", None), (life, "pause", None)):  # fmt: skip
            real = getattr(owner, name)

            def gate(*args: Any, _real: Any = real, _none: Any = none, **kw: Any) -> Any:
                return _real(*args, **kw) if self.allow() else _none

            setattr(owner, name, gate)
        restart = life.restart
        life.restart = lambda name: restart(name) if name in life.down else None


class CheckedWorld(World):
    """A ``World`` checked continuously and at its end (see the module docstring); with
    ``keep``, only those of its faults happen."""

    def __init__(self, seed: int, plan_kwargs: dict[str, Any], faults: Faults,
                 keep: list[int] | None = None) -> None:  # fmt: skip
        self.monitor = Monitor()
        self.filter = FaultFilter(keep) if keep is not None else None
        super().__init__(seed, plan_kwargs, faults, checks=[self._continuous])

    def _tick(self, now: float) -> None:
        if self.filter is not None and self.net is not None and self.life is not None:
            self.filter.install(self.net, self.life)  # (both exist from the first tick on)
            self.filter = None
        super()._tick(now)

    def _continuous(self, world: World) -> None:
        found = self.monitor.observe(cluster_state(self.cluster, replay=False))
        if found:
            raise AssertionError("; ".join(map(str, found)))

    def _phase(self, name: str) -> None:
        if name == "collect":
            self._final()
        super()._phase(name)

    def _final(self) -> None:
        cluster = self.cluster
        tiered = bool(cluster.accounts) or any(r.role == "accounts" for r in cluster.replicas)
        state = cluster_state(cluster, orders_of(self.result.orders, tiered))
        if self.ha is not None:  # (replicated: the leader losses the world caused)
            state.leader_losses = dict(self.ha.losses)
        net = self.net
        state.lossy = bool(net is not None and (net.counts.get("cut") or net.counts.get("lost")))
        state.lossy = state.lossy or bool(self.life is not None and self.life.crashes)
        for v in self.monitor.final(state):
            self.trace.add(self.clock.now, "violation", "", str(v))


def run(seed: int, faults: list[str], duration: float, mutation: str | None = None,
        keep: list[int] | None = None) -> RunResult:  # fmt: skip
    """One seed of the simulated world with every invariant checked (``runner.Runner``)."""
    world = CheckedWorld(seed, dict(PLAN), faults_of(faults), keep)
    with quiet(), applied(mutation):
        res = world.run(duration)
    schedule = [ev for ev in res.trace if ev[1] in INJECTED]
    return RunResult(seed, world.monitor.violations, list(res.trace), schedule,
                     world.monitor.checked, res.digest[:16], duration, False,
                     +Counter(res.counts))  # fmt: skip
