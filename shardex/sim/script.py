"""A fault schedule replayed instead of drawn: what shrinking a failing run needs.

A run's trace lists every fault it injected as ``(t, kind, node, detail)``; ``Script`` takes
such a list (all of it, or any subset a shrinker keeps) and applies each event when virtual
time reaches its ``t``: ``crash``/``restart``/``pause``/``slow`` of ``node``, a ``partition`` or
``heal`` as its detail reads (``a+b <-> rest``, ``a -> c+d``), a ``cut`` of ``node``'s
connection to the endpoint its detail names. An event that no longer applies (a restart of a
node the subset never crashed, a cut of a connection that is not there) is skipped; the heal
phase heals and restarts whatever a subset leaves broken, as it does for a drawn run. Message
delays stay drawn from the seed (``Faults.delay_p``): they are not events.

The clock and disk faults (``shardex.sim.hazards``: ``step``, ``trap``, ``full``, ``eio``) are
replayed through the world's ``Hazards`` when one is given. A crash point's death (``trapped``,
then the node's ``crash`` or ``power`` at the same instant) is a consequence of its ``trap``:
the replay re-arms the trap and leaves the crash to it, so those two events are not replayed.
Per-node clock rates (``skew``) and reconnect delays are drawn from the seed, like message
delays. The store's faults (``store_down``, ``store_cut``, ``store_failover``:
``shardex.sim.storefaults``) are replayed through the world's ``StoreChaos`` in the store's
part of a tick, and restarts last in a tick, where a drawn run's supervisor makes them, so a
whole schedule replays in the drawn run's order.

With the whole schedule of a seed the replay is the run itself (same seed: same scheduler,
same delays, same workload, so the same events at the same times).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from shardex.sim.crash import Lifecycle, StartFailed
from shardex.sim.faults import Network
from shardex.sim.hazards import KINDS as HAZARDS
from shardex.sim.hazards import Hazards
from shardex.sim.storefaults import STORE_KINDS, StoreChaos

# (``trapped`` is a marker: it says the crash after it is a sprung trap's, not replayed)
KINDS = ("partition", "heal", "cut", "crash", "power", "restart", "pause", "slow",
         *HAZARDS, *STORE_KINDS, "trapped")  # fmt: skip
# applied later in a tick than the rest, where a drawn run makes them (``World._tick``): the
# store's faults in its own part of the tick, the restarts last (the supervisor's)
LATER = ("restart", *STORE_KINDS)


def parse_partition(detail: str) -> tuple[list[str], list[str] | None, bool]:
    """``"a+b <-> rest"`` → (side, other or None, one_way), as ``Partition.__str__`` wrote it."""
    side, arrow, other = detail.split(" ")
    if arrow not in ("<->", "->"):
        raise ValueError(f"not a partition: {detail!r}")
    return side.split("+"), None if other == "rest" else other.split("+"), arrow == "->"


class Script:
    """The fault events of a schedule, applied in order as their times come (see above)."""

    def __init__(self, events: Iterable[tuple[float, str, str, str]]) -> None:
        events = _without_consequences(list(events))
        self.events = deque(sorted((ev for ev in events if ev[1] in KINDS), key=lambda e: e[0]))
        self.skipped = 0

    def step(self, now: float, net: Network, life: Lifecycle,
             hazards: Hazards | None = None) -> None:  # fmt: skip
        """The due network, node, clock and disk faults (not the ``LATER`` ones)."""
        for _, kind, node, detail in self._due(now, lambda kind: kind not in LATER):
            if kind in HAZARDS:
                done = hazards is not None and hazards.apply(kind, node, detail)
            else:
                done = _apply(kind, node, detail, net, life, hazards)
            self.skipped += not done

    def step_store(self, now: float, chaos: StoreChaos) -> None:
        """The due store faults (``StoreChaos.tick`` calls this where it would draw them)."""
        for _, kind, node, detail in self._due(now, STORE_KINDS.__contains__):
            self.skipped += not chaos.apply(kind, node, detail)

    def step_restarts(self, now: float, life: Lifecycle, hazards: Hazards | None = None) -> None:
        """The due restarts (last in a tick, as a drawn run's supervisor makes them)."""
        for _, kind, node, detail in self._due(now, "restart".__eq__):
            self.skipped += not _apply(kind, node, detail, None, life, hazards)  # type: ignore[arg-type]

    def _due(self, now: float, wanted: Any) -> list[tuple[float, str, str, str]]:
        """The events due by ``now`` whose kind is ``wanted``, taken out in order (the others
        stay where they were)."""
        due, rest = [], []
        while self.events and self.events[0][0] <= now:
            ev = self.events.popleft()
            (due if wanted(ev[1]) else rest).append(ev)
        self.events.extendleft(reversed(rest))
        return due


def _without_consequences(events: list[tuple[float, str, str, str]]) -> list[tuple]:
    """``events`` less those another one causes when replayed: the ``crash`` a ``power``
    loss starts with (``Lifecycle.power`` traces both; replaying the crash first would leave
    the power loss nothing to cut back), and the death of a node whose trap sprang (after
    its ``trapped``: the replayed trap springs again)."""
    powers = {(ev[0], ev[2]) for ev in events if ev[1] == "power"}
    out, sprung = [], set()
    for ev in events:
        if ev[1] == "trapped":
            sprung.add(ev[2])
            continue
        if ev[1] == "crash" and (ev[0], ev[2]) in powers:
            continue
        if ev[1] in ("crash", "power") and ev[2] in sprung:
            sprung.discard(ev[2])
            continue
        out.append(ev)
    return out


def _apply(kind: str, node: str, detail: str, net: Network, life: Lifecycle,
           hazards: Hazards | None = None) -> bool:  # fmt: skip
    """Apply one event; False when it no longer applies."""
    live = life.named()
    if kind == "crash" and node in live:
        life.crash(node)
    elif kind == "power" and node in live:
        life.power(node)
    elif kind == "restart" and node in life.down:
        try:
            life.restart(node)
        except StartFailed as exc:  # (in ``life.failures``; it stays down) ...
            if hazards is not None:
                hazards.excused(exc)  # ... unless a disk spell is why
    elif kind in ("pause", "slow") and node in live:
        life.pause(node, float(detail.rstrip("s")), kind)
    elif kind == "partition":
        side, other, one_way = parse_partition(detail)
        net.partition(side, other, one_way)
    elif kind == "heal":
        match = [p for p in net.partitions if str(p) == detail]
        if not match:
            return False
        net.heal(match[0])
    elif kind == "cut":
        return _cut(node, detail.split(" ", 1)[0], net)
    else:
        return False
    return True


def _cut(owner: str, endpoint: str, net: Network) -> bool:
    pipes: list[Any] = [p for p in net.pipes() if p.a.owner == owner and p.endpoint == endpoint]
    if not pipes:
        return False
    net.cut(pipes[0])
    return True


__all__ = ["KINDS", "Script", "parse_partition"]
