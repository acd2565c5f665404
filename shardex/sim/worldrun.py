"""The invariants on the simulated world: ``run`` (``runner.Runner``) over
``shardex.sim.world.World``: what ``python -m shardex.sim`` runs.

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

from shardex.sim.extract import cluster_state, read_streams
from shardex.sim.faults import Faults
from shardex.sim.invariants import EXECUTED, Monitor, Order, Violation
from shardex.sim.mutations import applied
from shardex.sim.reports import ReportWatch
from shardex.sim.runner import RunResult, quiet
from shardex.sim.storefaults import STORE_KINDS, StoreFaults
from shardex.sim.workload import TIMED
from shardex.sim.world import Result, SimulationFailed, World

PRESETS: dict[str, dict[str, Any]] = {
    "delay": {"delay_p": 0.1},
    "cut": {"cut_per_s": 1.0},
    "partition": {"partition_per_s": 0.7, "partition_s": (0.05, 0.6)},
    "crash": {"crash_per_s": 0.7, "down_s": (0.05, 0.3)},
    "pause": {"pause_per_s": 0.7, "pause_s": (0.05, 1.2)},
    "slow": {"slow_per_s": 2.0, "slow_s": (0.01, 0.2)},
    "power": {"power_per_s": 0.5, "down_s": (0.05, 0.3)},
    # turns that cost virtual time per message read (``shardex.sim.turns``): busy nodes find a
    # backlog at the top of their next turn; not in ``SAFE`` (it moves every seed's timing)
    "turn": {"turn_s": (0.0005, 0.005)},
}
# every kind a correct cluster must survive: the command line's default ``--faults``
SAFE = tuple(k for k in PRESETS if k != "turn")
PLAN = {"shards": 2, "accounts": 2}
PLAN_REPLICATED = {"shards": 1, "accounts": 1, "replicas": 2}  # (two replicas of each shard)
# the trace kinds of a fault drawn (what ``keep`` indexes)
INJECTED = ("partition", "cut", "crash", "pause", "slow", "power", *STORE_KINDS)
WORLD_CHECK = "world"  # the check named by the world's own violations (a node raised ...)
# the replicated world's own checks (``worldha``): their violations keep their name, so a
# shrinker's "still fails the same check" means that check, not any failure of the world
NAMED_WORLD_CHECKS = ("stale_writes", "cold_failover")


def faults_of(kinds: list[str]) -> Faults:
    """``Faults`` from ``--faults`` items: preset kinds (``safe``: every one of ``SAFE``)
    and ``field=value`` settings."""
    kw: dict[str, Any] = {}
    kinds = [k for kind in kinds for k in (SAFE if kind == "safe" else (kind,))]
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

    def install(self, net: Any, life: Any, chaos: Any = None) -> None:
        """Gate the network's partitions and cuts, the nodes' crashes, power losses and
        pauses (slow turns too) and the store's outages, cuts and failovers (``chaos``,
        ``sim.storefaults``); a restart of a node that did not crash does nothing. A
        heartbeat's ``drop`` (a cut ``during`` a partition) is a consequence, not a fault: it
        passes and takes no index; so does the crash inside a power loss."""
        cut, crash, power = net.cut, life.crash, life.power
        store = [(chaos, name, None) for name in ("down", "cut", "failover")] if chaos else []
        for owner, name, none in ((net, "partition", None), (life, "crash", None),
                                  (life, "pause", None), *store):  # fmt: skip
            real = getattr(owner, name)

            def gate(*args: Any, _real: Any = real, _none: Any = none, **kw: Any) -> Any:
                return _real(*args, **kw) if self.allow() else _none

            setattr(owner, name, gate)

        def gate_cut(pipe: Any, during: Any = None) -> int:
            return cut(pipe, during) if during is not None or self.allow() else 0

        def gate_power(name: str, rng: Any = None) -> None:
            if self.allow():
                gated, life.crash = life.crash, crash
                try:
                    power(name, rng)
                finally:
                    life.crash = gated

        net.cut, life.power = gate_cut, gate_power
        restart = life.restart
        life.restart = lambda name: restart(name) if name in life.down else None


def schedule_of(trace: list[tuple[float, str, str, str]]) -> list[tuple[float, str, str, str]]:
    """The faults a run drew, one per ``FaultFilter`` index: the trace's ``INJECTED`` events,
    less the ``crash`` that a ``power`` loss of the same node at the same time traces first."""
    out: list[tuple[float, str, str, str]] = []
    for ev in trace:
        if ev[1] not in INJECTED:
            continue
        if ev[1] == "power" and out and out[-1][1] == "crash" and out[-1][::2] == ev[::2]:
            out.pop()
        out.append(ev)
    return out


class CheckedWorld(World):
    """A ``World`` checked continuously and at its end (see the module docstring); with
    ``keep``, only those of its faults happen."""

    def __init__(self, seed: int, plan_kwargs: dict[str, Any], faults: Faults,
                 keep: list[int] | None = None, bridge: bool = False,
                 workload: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.monitor = Monitor()
        self.filter = FaultFilter(keep) if keep is not None else None
        super().__init__(seed, plan_kwargs, faults, checks=[self._continuous], bridge=bridge,
                         workload=workload)  # fmt: skip
        self.reports = ReportWatch(lambda: self.clock.now, self.trace)  # (on the hub from
        # the first tick: before any node's first turn)
        self._watching = False

    def _tick(self, now: float) -> None:
        if self.filter is not None and self.net is not None and self.life is not None:
            self.filter.install(self.net, self.life, self.chaos)  # (from the first tick on)
            self.filter = None
        if not self._watching and self.cluster is not None:
            self.reports.install(self.cluster.net.hub)
            self._watching = True
        super()._tick(now)

    def _continuous(self, world: World) -> None:
        state = cluster_state(self.cluster, replay=False)
        state.stale_reports = self.reports.stale
        found = self.monitor.observe(state)
        if found:
            raise AssertionError("; ".join(map(str, found)))

    def _phase(self, name: str) -> None:
        if name == "collect":
            self._final()
        super()._phase(name)

    def _final(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        streams = None
        if self.bridge and self.store is not None:  # (the bridge's streams, as healed)
            lay = cluster.plan.layout  # (replicated: the shards are not in cluster.engines)
            streams = read_streams(self.store.client(), lay.shards, lay.accounts)
        tiered = bool(cluster.accounts) or any(r.role == "accounts" for r in cluster.replicas)
        state = cluster_state(cluster, orders_of(self.result.orders, tiered), streams)
        if self.ha is not None:  # (replicated: the leader losses the world caused)
            state.leader_losses = dict(self.ha.losses)
        net = self.net
        state.lossy = bool(net is not None and (net.counts.get("cut") or net.counts.get("lost")))
        state.lossy = state.lossy or bool(self.life is not None and self.life.crashes)
        state.stale_reports = self.reports.stale
        for v in self.monitor.final(state):
            self.trace.add(self.clock.now, "violation", "", str(v))


def world_violations(world: CheckedWorld, res: Result) -> list[Violation]:
    """The world's own violations (a node's turn raised, a node failed to start) as
    ``Violation``s of check ``WORLD_CHECK`` (the replicated world's ``stale_writes`` and
    ``cold_failover`` under their own names); the continuous checks' (which the world
    records too) are the monitor's already."""
    ours = f"{world._continuous.__name__}: "
    out = []
    for v in res.violations:
        name, _, rest = v.partition(": ")
        if name in NAMED_WORLD_CHECKS:
            out.append(Violation(name, rest))
        elif not v.startswith(ours):
            out.append(Violation(WORLD_CHECK, v))
    return out


def run(seed: int, faults: list[str], duration: float, mutation: str | None = None,
        keep: list[int] | None = None, bridge: bool = False, replicas: bool = False,
        store_faults: str | None = None, durability: str = "both",
        timed: bool = False) -> RunResult:  # fmt: skip
    """One seed of the simulated world with every invariant checked (``runner.Runner``):
    the monitor's violations, then the world's own; a run that could not go on (a bug of the
    simulator, ``SimulationFailed``; or a phase that failed, e.g. funding when a node raised
    meanwhile) is a violation of check ``simulation``. ``bridge``: the
    bridge runs too, on a ``SimStore``, and ``stream_exact`` checks its streams.
    ``replicas``: every shard has a standby, leases on the simulated store, the leaders
    releasing by ``durability`` (``--durability``). ``store_faults`` (``StoreFaults.parse``):
    that store's own faults, with the bridge or replicas; they are faults of the schedule like
    the others (``keep`` indexes them). ``timed``: the clients' mix has gtd orders and
    cancel-alls too (``workload.TIMED``)."""
    plan = dict(PLAN_REPLICATED, durability=durability) if replicas else dict(PLAN)
    world = CheckedWorld(seed, plan, faults_of(faults), keep, bridge, TIMED if timed else None)
    if store_faults:
        if world.chaos is None:
            raise ValueError("store faults need a store: the bridge (--bridge) or replicas "
                             "(--replicas)")  # fmt: skip
        world.chaos.faults = StoreFaults.parse(store_faults)
    died: list[Violation] = []
    with quiet(), applied(mutation):
        try:
            res = world.run(duration)
        except Exception as exc:  # (SimulationFailed, or a phase that could not go on)
            what = str(exc) if isinstance(exc, SimulationFailed) else (
                f"seed {seed}: the run stopped at virtual t={world.clock.now:.6f}: {exc!r}")
            died.append(Violation("simulation", what))
            res = world.result
            res.trace, res.digest, res.end_s = list(world.trace.events), world.trace.digest, \
                world.clock.now
    violations = world.monitor.violations + world_violations(world, res) + died
    return RunResult(seed, violations, list(res.trace), schedule_of(res.trace),
                     world.monitor.checked, res.digest[:16], res.end_s,
                     +Counter(res.counts), res.cpu_s)  # fmt: skip
