"""What ``python -m shardex.sim`` runs per seed, and a stand-in until the simulated world lands.

The command line is written against one small protocol, ``Runner``::

    run(seed, faults, duration, mutation=None, keep=None) -> RunResult

``faults`` names the fault kinds (and rates) the run draws from its seed; ``keep`` (indexes
into the schedule that seed draws) replays only those faults, which is what the shrinker needs;
``mutation`` is a name from ``shardex.sim.mutations``, applied for the run by the runner.
``RunResult`` carries the violations, the trace, the fault schedule, how many invariant checks
ran and the run's digest.

``pick()`` returns the deterministic world's runner (``worldrun.run``, over
``shardex.sim.world.World``) when that module exists, else ``standin``:

**STAND-IN** (``standin``): the in-process cluster (``InProcCluster``) on *real* time, with
the faults it can make today (``pause``: a node frozen for a seeded while, as SIGSTOP or a
long GC would), an SDK client placing a seeded workload, the continuous checks after every
batch and every check after the heal. It is *not* deterministic (real time, real asyncio
scheduling): a seed's replay reruns the same workload and fault schedule, not the same
interleaving, so its digest differs between runs and shrinking it is best effort.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from shardex.client import Result, audit_report
from shardex.inproc import InProcCluster
from shardex.kinds import Plan
from shardex.layout import Layout
from shardex.sim.extract import cluster_state, order_record
from shardex.sim.invariants import EXECUTED, NOT_EXECUTED, Monitor, Order, Violation
from shardex.sim.mutations import applied
from shardex.sim.trace import Trace

STANDIN_FAULTS = ("pause",)
PAUSE_PER_S = 4.0  # pauses a second of stand-in run draws ...
PAUSE_S = (0.05, 1.0)  # ... each this long
ACCOUNTS = tuple(f"acct-{i}" for i in range(6))
SETTLE_S = 5.0  # after the heal: how long the cluster may take to settle everything


@dataclass
class RunResult:
    """One seed's run: what broke, what happened, what was injected."""

    seed: int
    violations: list[Violation]
    trace: list[Any]  # events, any shape ``trace.as_event`` reads
    schedule: list[Any]  # the faults injected, in order (``keep`` indexes into this)
    checked: int  # invariant checks run
    digest: str
    virtual_s: float  # time simulated, every phase (the stand-in: real seconds)
    standin: bool = False
    faults: Counter[str] = field(default_factory=Counter)  # injected, by kind
    cpu_s: float = 0.0  # the CPU the run cost (0: not measured)


class Runner(Protocol):
    def __call__(self, seed: int, faults: list[str], duration: float,
                 mutation: str | None = None, keep: list[int] | None = None,
                 ) -> RunResult: ...  # fmt: skip


@dataclass(frozen=True)
class Pause:
    """Freeze node ``node`` (an index into the cluster's nodes) at ``t`` for ``seconds``."""

    t: float
    node: int
    seconds: float

    def __str__(self) -> str:
        return f"pause node {self.node} at {self.t:.3f}s for {self.seconds:.3f}s"


def draw_schedule(seed: int, faults: list[str], duration: float, nodes: int) -> list[Pause]:
    """The stand-in's fault schedule of ``seed`` (its own random stream); ``safe``, every
    kind it can make, is ``pause``."""
    faults = [k for kind in faults for k in (STANDIN_FAULTS if kind == "safe" else (kind,))]
    unknown = sorted(set(faults) - set(STANDIN_FAULTS))
    if unknown:
        raise ValueError(f"the stand-in cannot inject {', '.join(unknown)} (only "
                         f"{', '.join(STANDIN_FAULTS)}); the simulated world can")  # fmt: skip
    rng = random.Random(f"faults-{seed}")
    out: list[Pause] = []
    if "pause" in faults:
        t = rng.expovariate(PAUSE_PER_S)
        while t < duration:
            out.append(Pause(round(t, 4), rng.randrange(nodes), round(rng.uniform(*PAUSE_S), 4)))
            t += rng.expovariate(PAUSE_PER_S)
    return out


def _orders(rng: random.Random, c: Any, n: int, k0: int) -> list[dict]:
    """``n`` seeded limit orders around fixed mids (ids ``s<k>``)."""
    mids = {"BTC-USD": Decimal(100), "ETH-USD": Decimal(20)}
    out = []
    for k in range(k0, k0 + n):
        sym = rng.choice(sorted(mids))
        price = mids[sym] * (1 + Decimal(rng.randint(-3, 3)) / 100)
        out.append(c.order(sym, rng.choice(("buy", "sell")), "0.1", str(price),
                           account=rng.choice(ACCOUNTS), id=f"s{k}"))  # fmt: skip
    return out


async def _step(rng: random.Random, c: Any, cmds: list[dict], orders: list[Order]) -> str:
    """One batch of the workload: 8 new orders and up to 3 cancels of earlier ones; the new
    orders' records appended to ``orders`` (and their commands to ``cmds``, in step)."""
    news = _orders(rng, c, 8, len(cmds))
    cancels = [{"op": "cancel", "symbol": o["symbol"], "id": o["id"], "account": o["account"]}
               for o in rng.sample(cmds, min(len(cmds), 3))]  # fmt: skip
    results: list[Result] = await c.submit_many(news + cancels, batch=8, window=2)
    cmds += news
    orders += [order_record("c0", r) for r in results[: len(news)]]  # type: ignore[misc]
    fates = Counter(str(r.fate) for r in results[: len(news)])
    return f"{len(news)} orders, {len(cancels)} cancels: " + ", ".join(
        f"{k} {v}" for k, v in sorted(fates.items())
    )


def _names(cluster: InProcCluster) -> list[str]:
    return ([f"router-{i}" for i in range(len(cluster.routers))]
            + [f"engine-{i}" for i in range(len(cluster.engines))]
            + [f"accounts-{j}" for j in range(len(cluster.accounts))])  # fmt: skip


async def _heal(cluster: InProcCluster, c: Any, cmds: list[dict], orders: list[Order],
                settle_s: float = SETTLE_S) -> None:  # fmt: skip
    """Every node running again; the fates left open asked again; the cluster settled (or
    ``settle_s`` spent: the final checks then say what is still open)."""
    for node in cluster.nodes:
        cluster.thaw(node)
    open_ = [i for i, o in enumerate(orders) if o.fate not in (EXECUTED, NOT_EXECUTED)]
    if open_:
        tuples = [c.command(cmd) for cmd in cmds]
        fates, _ = await c._ask_fates(tuples, open_, 50, 8)  # (the SDK's own fate decision)
        for i, (fate, _status) in fates.items():
            orders[i].fate = fate

    async def settled() -> bool:
        return not await c.audit_orders() and audit_report(await c.audit())[1]

    try:
        await cluster.until(settled, settle_s, "the cluster settled")
    except TimeoutError:
        pass


async def _standin(seed: int, schedule: list[Pause], duration: float, data: str) -> RunResult:
    rng = random.Random(f"workload-{seed}")
    trace, monitor = Trace(), Monitor()
    plan = Plan(layout=Layout(base_port=20000, shards=2, accounts=2), pin=False, redis=None,
                data_dir=data, fsync="none")  # fmt: skip
    faults: Counter[str] = Counter()
    async with InProcCluster(plan) as cluster, cluster.client(timeout=0.15) as c:
        names, nodes = _names(cluster), cluster.nodes
        for a in ACCOUNTS:
            for asset, amount in (("USD", "100000"), ("BTC", "100"), ("ETH", "1000")):
                await c.deposit(a, asset, amount, ref=f"{a}-{asset}")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        todo, cmds, orders = list(schedule), [], []
        while (now := loop.time() - t0) < duration:
            while todo and todo[0].t <= now:
                f = todo.pop(0)
                cluster.freeze(nodes[f.node], f.seconds)
                faults["pause"] += 1
                trace.add(now, names[f.node], f"pause {f.seconds:.3f}s")
            trace.add(loop.time() - t0, "client", await _step(rng, c, cmds, orders))
            for v in monitor.observe(cluster_state(cluster, orders, replay=False)):
                trace.add(loop.time() - t0, "checks", str(v))
        # (a run that already broke a continuous check need not wait for a settle that the
        # broken state may never reach: its final checks run after a short grace)
        await _heal(cluster, c, cmds, orders, 0.5 if monitor.violations else SETTLE_S)
        trace.add(loop.time() - t0, "world", "healed")
        for v in monitor.final(cluster_state(cluster, orders)):
            trace.add(loop.time() - t0, "checks", str(v))
    return RunResult(seed, monitor.violations, list(trace.events), list(schedule),
                     monitor.checked, trace.digest(), duration, True, faults)  # fmt: skip


def standin(seed: int, faults: list[str], duration: float, mutation: str | None = None,
            keep: list[int] | None = None) -> RunResult:  # fmt: skip
    """The STAND-IN runner (see the module docstring): real time, pauses only."""
    nodes = 1 + 2 + 2  # the stand-in's cluster: a router, 2 engine and 2 account shards
    schedule = draw_schedule(seed, faults, duration, nodes)
    if keep is not None:
        schedule = [schedule[i] for i in keep]
    with quiet(), applied(mutation), tempfile.TemporaryDirectory(prefix="shardex-sim-") as data:
        return asyncio.run(_standin(seed, schedule, duration, data))


@contextmanager
def quiet() -> Iterator[None]:
    """The cluster's log lines off for a run (the INSECURE banners every node prints at
    start, a pause's warnings, a mutation's ALERTs): the run's own report says what broke."""
    log = logging.getLogger("shardex")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def pick() -> tuple[Runner, bool]:
    """(the runner, whether it is the stand-in): the simulated world's (``worldrun.run``)
    once ``shardex.sim.world`` exists, else ``standin``."""
    try:
        from shardex.sim import worldrun  # noqa: PLC0415 - optional: needs shardex.sim.world
    except ImportError as exc:
        if exc.name not in ("shardex.sim.world", "shardex.sim.faults", "shardex.sim.worldrun"):
            raise  # (a real import error inside the world: never hidden behind the stand-in)
        return standin, True
    return worldrun.run, False
