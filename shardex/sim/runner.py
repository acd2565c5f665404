"""What ``python -m shardex.sim`` runs per seed: one small protocol and its result.

The command line is written against ``Runner``::

    run(seed, faults, duration, mutation=None, keep=None) -> RunResult

``faults`` names the fault kinds (and rates) the run draws from its seed; ``keep`` (indexes
into the schedule that seed draws) replays only those faults, which is what the shrinker needs;
``mutation`` is a name from ``shardex.sim.mutations``, applied for the run by the runner.
``RunResult`` carries the violations, the trace, the fault schedule, how many invariant checks
ran and the run's digest. The runner is ``shardex.sim.worldrun.run`` (the deterministic world);
tests give the command line a fake one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardex.sim.invariants import Violation


@dataclass
class RunResult:
    """One seed's run: what broke, what happened, what was injected."""

    seed: int
    violations: list[Violation]
    trace: list[Any]  # events, any shape ``trace.as_event`` reads
    schedule: list[Any]  # the faults injected, in order (``keep`` indexes into this)
    checked: int  # invariant checks run
    digest: str
    virtual_s: float  # time simulated, every phase
    faults: Counter[str] = field(default_factory=Counter)  # injected, by kind
    cpu_s: float = 0.0  # the CPU the run cost (0: not measured)


class Runner(Protocol):
    def __call__(self, seed: int, faults: list[str], duration: float,
                 mutation: str | None = None, keep: list[int] | None = None,
                 ) -> RunResult: ...  # fmt: skip


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
