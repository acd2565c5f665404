"""A simulated run: the whole cluster, its clients and its faults, on virtual time, from a seed.

``World(seed, plan_kwargs, faults).run(duration_s)`` builds an ``InProcCluster`` of
``shardex.kinds.Plan(**plan_kwargs)`` (journals on a ``SimDisk`` with ``fsync=batch``, so a
power loss keeps what was synced; ``real_disk=True``: files in a temporary directory with
``fsync=none``, where a process crash keeps what the OS has) on a ``VirtualLoop``, under a seeded
``Scheduler`` with a ``Network`` of seeded faults on its hub and a ``Lifecycle`` that crashes,
restarts and pauses nodes at the ``Faults`` rates, and runs SDK clients (``AsyncClient``,
each on its own named context) placing orders from a seeded workload. The phases:

1. **fund**: every account deposits, on a clean network;
2. **load** (``duration_s`` virtual seconds): the clients place orders while faults are drawn;
3. **heal**: partitions healed, crashed nodes restarted, paused ones thawed, no new fault;
   the clients finish (every order learns its fate) and the cluster goes quiet;
4. **collect**: the state below, then a clean stop.

Four independent random streams come from the seed (scheduler, network, nodes, workload), so
a change to one part's draws does not shift the others'.

``Result`` (plain data, the shape the invariant checks read):

* ``seed``, ``duration_s`` (virtual, load phase), ``end_s`` (virtual, at the end);
* ``trace``: ``[(t, kind, node, detail), ...]`` in order: faults (``partition``, ``heal``,
  ``cut``, ``drop``, ``crash``, ``power``, ``restart``, ``pause``, ``slow``; the clock and
  disk faults of ``shardex.sim.hazards``: ``skew``, ``step``, ``trap``, ``trapped``, ``full``,
  ``eio``, ``disk``), phases (``phase``) and ``violation``s;
* ``digest``: SHA-256 of every delivered message and every trace event (same seed, same code:
  same digest);
* ``orders``: ``[{"client", "id", "account", "symbol", "side", "qty", "price", "fate",
  "first_fate", "code", "sent", "done"}, ...]`` (``first_fate``: what the client's ``place``
  returned -- ``executed`` / ``not executed`` / ``unknown``, ``shardex.client.results``;
  ``fate``: the same, or for an unknown one what its shard answered after the heal;
  ``code`` the reject's stable code or None; ``sent``/``done`` virtual times);
* ``cancels``: ``[{"client", "id", "symbol", "account", "fate", "code", "sent", "done"}, ...]``:
  the cancels the clients sent (``id``: the order's), each with its fate as above;
* ``state``: ``{"engines": {name: {"index", "seq", "events", "journal_dir"}}, "accounts":
  {name: {"index", "seq", "journal_dir"}}, "audit": [the account shards' audit replies],
  "down": [nodes still down]}`` (``events``: the shard's published events 1..seq from its ring,
  from its ring, or replayed from its journal after a restart emptied the ring; None if
  neither has them all);
* ``counts``: faults injected by kind; ``delivered``: messages; ``violations``: what the
  ``checks`` raised; ``cpu_s``: the CPU the run cost (the simulator reads no real clock).

``schedule``: replay these fault events (a trace's, or the subset a shrinker keeps) instead of
drawing faults (``shardex.sim.script``; message delays stay drawn).

A node whose turn raises (a process would die of it) is a violation: it crashes there and then
and restarts after ``down_s``, as under a supervisor (trace: ``failure``, ``crash``, ``restart``).
So is a restart that raises (the node refuses to start, e.g. its recovered books fail their
integrity check): it stays down, and is tried again ``down_s`` later while faults run.

``bridge``: the cluster's bridge runs too, writing its streams to a ``SimStore`` on the virtual
clock (``self.store``; the stream exact-once check reads it), with ``store_faults`` (outages,
failovers that lose what the store's replica had not copied: ``shardex.sim.storefaults``).

With ``replicas`` 2 in ``plan_kwargs`` every shard runs a leader and a standby, named
``engine-0a``/``engine-0b`` and so on, with the lease on the ``SimStore`` (the bridge's, if
any) and ``store_faults`` (``shardex.sim.worldha``: outages, cuts, opt-in failovers, the
supervisor of replicas that lost their lease, and its checks ``stale_writes``/``cold_failover``
in ``violations``).

``checks``: callables ``check(world)`` run every ``check_every_s`` virtual seconds during the
run (continuous invariants) -- an ``AssertionError`` is recorded as a violation (trace and
``violations``), not raised, so the run goes on and the result shows where.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardex.aio import within
from shardex.client import AsyncClient
from shardex.clock import VirtualClock
from shardex.inproc import InProcCluster
from shardex.journal import JournalError
from shardex.kinds import Plan
from shardex.layout import Layout
from shardex.net import mem_transport
from shardex.net.memasync import MemAsyncContext
from shardex.sim.crash import Lifecycle, StartFailed
from shardex.sim.disk import SimDisk
from shardex.sim.faults import Faults, Network, fire
from shardex.sim.hazards import Hazards
from shardex.sim.loop import run as run_virtual
from shardex.sim.openload import workload_of
from shardex.sim.sched import Scheduler, Trace
from shardex.sim.script import Script
from shardex.sim.skew import Clocks, SkewedCluster
from shardex.sim.storefaults import StoreChaos, StoreFaults
from shardex.sim.turns import TurnCost
from shardex.sim.workload import Workload
from shardex.sim.worldha import HA, is_replicated

try:  # (fakeredis, the ``sim`` extra: only a world with its bridge needs it)
    from shardex.sim.store import SimStore
except ImportError:  # pragma: no cover - installed without the extra
    SimStore = None  # type: ignore[assignment,misc]

HEAL_S = 30.0  # the heal phase's bound (virtual): every client's last order has its fate
CLEAN = Faults()  # no fault at all
# then this long without faults before the state is read (virtual): past two of the account
# links' re-synchronisations (``SYNC_EVERY_S``, 1 s: one repairs what a cut lost, the next
# acknowledges it) and the shards' HELLOs to a restarted router
QUIET_S = 2.5
SETTLE_S = 10.0  # the heal's bound on waiting for the account links to confirm every forward
STORE_URL = "redis://sim/0"  # the bridge's Redis URL: the ``SimStore`` answers it


class SimulationFailed(RuntimeError):
    """The simulation's scheduler died (a fault hook or a check raised something other than
    an ``AssertionError``): the run cannot go on. (A node whose turn raises is a violation
    instead: see ``World._failed``.)"""


@dataclass
class Result:
    """A run's outcome (see the module docstring for each field's shape)."""

    seed: int
    duration_s: float
    end_s: float = 0.0
    trace: list[tuple[float, str, str, str]] = field(default_factory=list)
    digest: str = ""
    orders: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    violations: list[str] = field(default_factory=list)
    cpu_s: float = 0.0


class World:
    """One seeded run of the cluster of ``Plan(**plan_kwargs)`` (see the module)."""

    def __init__(self, seed: int, plan_kwargs: dict[str, Any] | None = None,
                 faults: Faults = CLEAN, *, clients: int = 2, mode: str = "all",
                 checks: list[Callable[[World], None]] | None = None,
                 check_every_s: float = 0.05,
                 schedule: list[tuple[float, str, str, str]] | None = None,
                 workload: dict[str, Any] | None = None,
                 real_disk: bool = False, bridge: bool = False,
                 store_faults: StoreFaults | None = None) -> None:  # fmt: skip
        self.seed = seed
        self.plan_kwargs = {"shards": 1, "accounts": 1, **(plan_kwargs or {})}
        self.faults = faults
        self.n_clients = clients
        self.mode = mode
        self.checks = list(checks or [])
        self.check_every_s = check_every_s
        self.script = Script(schedule) if schedule is not None else None
        self.workload = dict(workload or {})  # ``Workload`` settings (think_s, cancel_p...)
        # the journals' disk: simulated (``SimDisk``: in memory, a power loss keeps what was
        # synced) unless ``real_disk`` (files in a temporary directory, fsync=none)
        self.disk = None if real_disk else SimDisk(random.Random(f"disk-{seed}"))
        self.clock = VirtualClock()
        # the bridge and its stream store: a ``SimStore`` on the virtual clock (no real Redis)
        replicated = is_replicated(self.plan_kwargs)  # (the replicas' leases: on it too)
        if (bridge or replicated) and SimStore is None:
            raise RuntimeError("World(bridge=True) and replicas need the simulated store: "
                               "pip install -e '.[sim]' (fakeredis)")  # fmt: skip
        self.bridge = bridge
        self.store = SimStore(self.clock, seed) if bridge or replicated else None
        self.trace = Trace()
        self.rng = random.Random(f"nodes-{seed}")
        self.loading = False
        self.cluster: InProcCluster | None = None
        self.life: Lifecycle | None = None
        self.net: Network | None = None
        self.hazards: Hazards | None = None  # clock steps, crash points, disk spells
        self.clocks: Clocks | None = None  # per-node clocks (``Faults.skew``/``step_per_s``)
        self.turns: TurnCost | None = None  # turns that cost virtual time (``Faults.turn_s``)
        self.result = Result(seed, 0.0)
        self._restart_at: dict[str, float] = {}
        self._last_tick: float | None = None
        self._next_check = 0.0
        self.ha = self._ha(store_faults)
        self.chaos = self._store_chaos(store_faults)

    def _ha(self, store_faults: StoreFaults | None) -> HA | None:
        """With ``replicas`` 2 in the plan: the standbys' lease store's faults, the supervisor
        of replicas that lost their lease, its checks (``shardex.sim.worldha``)."""
        if not is_replicated(self.plan_kwargs):
            return None
        return HA(self.seed, self.clock, self.trace, store_faults or StoreFaults(), self.store)

    def _store_chaos(self, store_faults: StoreFaults | None) -> StoreChaos | None:
        """The store's faults (``sim.storefaults``): the replicated world's (whose supervisor
        shares their stream), or in a bridge world without replicas the stream store's own
        (outages and failovers: nothing there for a cut to hit)."""
        if self.ha is not None:
            chaos = self.ha.chaos
        elif self.store is not None:
            chaos = StoreChaos(self.store, self.clock, self.trace, store_faults or StoreFaults(),
                               random.Random(f"store-{self.seed}"))  # fmt: skip
        else:
            return None
        chaos.scripted = self.script is not None  # (drawn as before, the script's happen)
        return chaos

    def _store_tick(self, now: float) -> None:
        """The store's part of a tick: its faults (a script's, when replaying) and, replicated,
        the supervisor and the stale-write check (``HA.tick``)."""
        script = self.script if self.loading else None
        if self.ha is not None:
            self.ha.tick(now, self.loading, self._restart_at, self.faults.down_s, script)
        elif self.chaos is not None:
            self.chaos.tick(now, self.loading, script)

    def _plan(self, data_dir: str) -> Plan:
        kw = dict(self.plan_kwargs)
        layout = Layout(base_port=20000, shards=kw.pop("shards"), accounts=kw.pop("accounts"))
        kw.setdefault("fsync", "batch" if self.disk is not None else "none")
        # (a real Redis is outside the simulation: the bridge's, if any, is the ``SimStore``)
        kw.setdefault("redis", STORE_URL if self.store is not None else None)
        return Plan(layout=layout, pin=False, data_dir=data_dir, **kw)

    def run(self, duration_s: float) -> Result:
        """Run the four phases; the ``Result``."""
        self.result.duration_s = duration_s
        cpu = time.process_time()
        with tempfile.TemporaryDirectory(prefix=f"shardex-sim-{self.seed}-") as data_dir:
            run_virtual(self._main(data_dir, duration_s), self.clock)
        r = self.result
        r.end_s = self.clock.now
        r.trace = list(self.trace.events)
        r.digest = self.trace.digest
        r.delivered = self.trace.delivered
        r.cpu_s = time.process_time() - cpu
        return r

    async def _main(self, data_dir: str, duration_s: float) -> None:
        t = mem_transport(clock=self.clock)
        if self.disk is not None:
            t.disk = self.disk
        hub = t.hub  # type: ignore[attr-defined]
        hub.on_deliver = self.trace.message
        cluster = self.cluster = self._cluster(self._plan(data_dir), t)
        self.net = Network(hub, self.clock, self.seed, self.faults, self.trace)
        self.life = Lifecycle(cluster, self.trace)
        self.turns = TurnCost.of(self.seed, self.faults, self.life, hub)
        if self.ha is not None:
            if not self.bridge:
                cluster.bridge = None  # (the store holds the leases only)
            self.ha.attach(self.life)
        self.hazards = Hazards(self.seed, self.faults, self.life, self.trace, self.disk,
                               self.clocks)  # fmt: skip
        sched = cluster.sched = Scheduler(self.seed, mode=self.mode, hub=hub, trace=self.trace)
        sched.on_tick.append(self._tick)
        sched.on_failure = self._failed
        work = workload_of(self.seed, self.n_clients, self.workload)  # (open-loop: rate_per_s)
        async with cluster, contextlib.AsyncExitStack() as stack:
            clients = []
            for k in range(self.n_clients):
                ctx: Any = MemAsyncContext(hub, f"client-{k}")  # (zmq.asyncio's twin)
                cl = AsyncClient(cluster.endpoint, key=False, timeout=work.timeout_s,
                                 context=ctx, clock=self.clock)  # fmt: skip
                cl._prefix = f"c{k}"  # (the SDK draws a random id prefix: not here)
                clients.append(await stack.enter_async_context(cl))
            await self._watch(asyncio.ensure_future(self._phases(work, clients, duration_s)))
        self.result.violations += self.life.failures
        ha = self.chaos.counts if self.chaos is not None else {}
        self.result.violations += self.ha.violations if self.ha is not None else []
        self.result.counts = {**self.net.counts, **ha, "crash": self.life.crashes,
                              "restart": self.life.restarts, "pause": self.life.pauses,
                              "slow": self.life.slows, "power": self.life.powers,
                              "turn": self.turns.turns if self.turns is not None else 0,
                              **self.hazards.counts}  # type: ignore[union-attr] # fmt: skip

    async def _watch(self, main: asyncio.Future) -> None:
        """``main`` to its end, unless the cluster's scheduler dies first (a fault hook or a
        check raised: a bug of the simulation itself): then that error, with the trace."""
        cluster = self.cluster
        assert cluster is not None
        await asyncio.wait({main, *cluster._tasks}, return_when=asyncio.FIRST_COMPLETED)
        failure = cluster.failure()
        if failure is not None and not main.done():
            main.cancel()
            await asyncio.gather(main, return_exceptions=True)
            self.trace.add(self.clock.now, "failure", "", repr(failure))
            raise SimulationFailed(f"seed {self.seed}: the scheduler died at virtual "
                             f"t={self.clock.now:.6f}: {failure!r}") from failure  # fmt: skip
        main.result()

    async def _phases(self, work: Workload, clients: list[AsyncClient], duration_s: float) -> None:
        self._phase("fund")
        await work.fund(clients[0])
        self._phase("load")
        self.loading = True
        end = self.clock.now + duration_s
        tasks = [asyncio.ensure_future(work.client(k, cl, end, self.clock))
                 for k, cl in enumerate(clients)]  # fmt: skip
        await asyncio.sleep(duration_s)
        self.loading = False
        self._phase("heal")
        self._heal()
        await within(asyncio.gather(*tasks), HEAL_S)
        await asyncio.sleep(QUIET_S)  # (settlements and repairs finish)
        await self._links_settled()  # (and the links' repairs, e.g. after a failover)
        self.result.orders = [o for task in tasks for o in task.result()]
        self.result.cancels = work.cancels
        await work.settle(clients[0], self.result.orders)
        await work.settle(clients[0], self.result.cancels, cancels=True)
        self._check()
        self._phase("collect")
        self.result.state = await self._collect(clients[0])

    async def _links_settled(self, bound_s: float = SETTLE_S) -> None:
        """Wait (virtual time, at most ``bound_s``) until the account links are quiet: after
        a partition, crashes or an engine failover the link repairs what was lost only on the
        second report that has not moved (``ResendGate``; and a DEALER to both replicas
        round-robins while the deposed one is bound), which can take longer than the fixed
        quiet time; until then an order's funds are held and it is on no book (what
        ``holds_match_books`` judges)."""
        deadline = self.clock.now + bound_s
        while self.clock.now < deadline and self._unconfirmed():
            await asyncio.sleep(0.05)

    def _unconfirmed(self) -> int:
        """Forwards no engine shard has confirmed, plus settlements an account shard has not
        applied yet (each engine's settlement outbox ahead of that account shard's inbox)."""
        if self.ha is not None:
            engines, accounts = self.ha.leaders()
        elif self.cluster is not None:
            engines, accounts = dict(enumerate(self.cluster.engines)), dict(
                enumerate(self.cluster.accounts))
        else:
            return 0
        n = sum(len(q) for a in accounts.values() for q in a.unconfirmed.values())
        for i, engine in engines.items():
            feed = getattr(getattr(engine, "core", None) and engine.core.engine, "feed", None)
            for j, last in (feed.outbox.last if feed is not None else {}).items():
                account = accounts.get(j)
                if account is not None and account.machine is not None:
                    n += last > account.machine.core.inbox.last.get(i, 0)
        return n

    def _phase(self, name: str) -> None:
        self.trace.add(self.clock.now, "phase", "", name)

    # -- the node faults (a scheduler tick) ------------------------------------------------

    def _tick(self, now: float) -> None:
        if self.turns is not None:
            self.turns.step(now)
        self.hazards.expire(now)  # type: ignore[union-attr]
        scripted = self.loading and self.script is not None
        if scripted:
            self.script.step(now, self.net, self.life, self.hazards)  # type: ignore[union-attr,arg-type]
            self.net.step(now, draw=False)  # type: ignore[union-attr]
        elif self.loading:
            self.net.step(now)  # type: ignore[union-attr]
            self._node_faults(now)
        self._store_tick(now)
        if scripted:  # (the restarts, where the drawn run's supervisor made them: a script's)
            self.script.step_restarts(now, self.life, self.hazards)  # type: ignore[union-attr,arg-type]
        else:
            self._restarts(now)
        if self.checks and now >= self._next_check:
            self._next_check = now + self.check_every_s
            self._check()

    def _restarts(self, now: float) -> None:
        """The supervisor's restarts that are due."""
        for name, at in list(self._restart_at.items()):
            if at <= now:
                del self._restart_at[name]
                self._restart(name)

    def _node_faults(self, now: float) -> None:
        dt = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        f, rng, life = self.faults, self.rng, self.life
        assert life is not None
        if fire(rng, f.crash_per_s, dt):
            names = sorted(n for n in life.named() if n.rsplit("-", 1)[0] in f.crashable)
            if names:
                name = names[rng.randrange(len(names))]
                life.crash(name)
                self._restart_at[name] = now + rng.uniform(*f.down_s)
        if fire(rng, f.power_per_s, dt):
            names = sorted(n for n in life.named() if not n.startswith("router-"))
            if names:
                name = names[rng.randrange(len(names))]
                life.power(name)
                self._restart_at[name] = now + rng.uniform(*f.down_s)
        if fire(rng, f.pause_per_s, dt):
            names = sorted(life.named())
            life.pause(names[rng.randrange(len(names))], rng.uniform(*f.pause_s))
        if fire(rng, f.slow_per_s, dt):
            names = sorted(life.named())
            life.pause(names[rng.randrange(len(names))], rng.uniform(*f.slow_s), "slow")
        self.hazards.step(now)  # type: ignore[union-attr]

    def _cluster(self, plan: Plan, net: Any) -> InProcCluster:
        """The cluster; with clock faults, each node on its own clock (``shardex.sim.skew``)."""
        f = self.faults
        if not (f.skew or f.step_per_s):
            return InProcCluster(plan, net=net, store=self.store)
        self.clocks = Clocks(self.clock, self.seed, f.skew, self.trace)
        return SkewedCluster(plan, net, self.clocks, store=self.store)

    def _restart(self, name: str, again: bool = True) -> None:
        """Restart ``name``; one that fails to start stays down (a violation: ``failures``)
        and, while faults still run (``again``), a supervisor tries again ``down_s`` later."""
        try:
            self.life.restart(name)  # type: ignore[union-attr]
        except StartFailed as exc:
            excused = self.hazards.excused(exc)  # type: ignore[union-attr] # (a disk spell)
            if (again and self.loading) or excused:
                self._restart_at[name] = self.clock.now + self.rng.uniform(*self.faults.down_s)

    def _failed(self, node: Any, exc: Exception) -> None:
        """A node's turn raised: a violation (it would have killed its process), and the
        node crashes there and then; a supervisor restarts it after ``down_s``."""
        life = self.life
        assert life is not None
        sprung = self.hazards.sprung(node, exc)  # type: ignore[union-attr]
        if sprung is not None:  # a crash point: the death was the fault, not a failure
            if self.script is None:  # (a replayed schedule has its restart)
                self._restart_at[sprung] = self.clock.now + self.rng.uniform(*self.faults.down_s)
            return
        name = next(n for n, live in life.named().items() if live is node)
        what = f"{name} raised {exc!r}"
        self.result.violations.append(what)
        self.trace.add(self.clock.now, "failure", name, repr(exc))
        life.crash(name)
        self._restart_at[name] = self.clock.now + self.rng.uniform(*self.faults.down_s)

    def _heal(self) -> None:
        """No more faults: partitions healed, the crashed restarted, the paused thawed."""
        self.net.heal()  # type: ignore[union-attr]
        self.hazards.heal()  # type: ignore[union-attr]
        if self.ha is not None:
            self.ha.heal()
        elif self.chaos is not None:
            self.chaos.heal()
        self._restart_at.clear()
        for name in sorted(self.life.down):  # type: ignore[union-attr]
            self._restart(name, again=False)
        for node in self.cluster.nodes:  # type: ignore[union-attr]
            self.cluster.thaw(node)  # type: ignore[union-attr]

    def _check(self) -> None:
        for check in self.checks:
            try:
                check(self)
            except AssertionError as exc:
                what = f"{getattr(check, '__name__', check)}: {exc}"
                self.result.violations.append(what)
                self.trace.add(self.clock.now, "violation", "", what)

    async def _collect(self, client: AsyncClient) -> dict[str, Any]:
        """The state the invariant checks read (see the module docstring)."""
        life = self.life
        assert life is not None
        engines, accounts = {}, {}
        for name, live in life.named().items():
            node = getattr(live, "leader", live)  # (a replica: its leader node, if it leads)
            if node is None or getattr(live, "exited", None) is not None:
                continue
            if name.startswith("engine-"):
                seq = node.core.engine.seq
                events = _events(node, seq)
                engines[name] = {"index": node.cfg.index, "seq": seq, "events": events,
                                 "journal_dir": node.cfg.journal_dir}  # fmt: skip
            elif name.startswith("accounts-"):
                accounts[name] = {"index": node.cfg.index, "seq": node.machine.seq,
                                  "journal_dir": node.cfg.journal_dir}  # fmt: skip
        audit = await client.audit() if accounts else []
        return {"engines": engines, "accounts": accounts, "audit": audit,
                "down": sorted(life.down)}  # fmt: skip


def _events(node: Any, seq: int) -> list[tuple] | None:
    """Engine shard ``node``'s events 1..``seq``: its ring's, or its journal's replay."""
    if not seq:
        return []
    events = node.core.ring.get(1, seq)
    if events is None:
        try:
            events = node.journal.events(1, seq)
        except (JournalError, OSError):
            return None
    return list(events)


__all__ = ["SimulationFailed", "Result", "World"]
