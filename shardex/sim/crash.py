"""Crash, restart and pause of the nodes of an in-process cluster, by name.

Each sync node of an ``InProcCluster`` gets a name (``router-0``, ``engine-1``,
``accounts-0``): the owner of its sockets (``MemContext.owner``, what a partition cuts) and
what the trace says. Then:

* ``crash(name)``: the node object is dropped without ``close()``: its sockets vanish (every
  peer sees the disconnect, what was in the air to or from it is lost), it takes no more
  turns, and nothing of a clean stop happens (no final commit, no shutdown snapshot): what it
  had buffered and not written is gone, as with kill -9. Its journal lets go of its segment
  where it stands (``Journal.abandon``). What the OS had not synced survives, as the page cache
  does after a process crash; ``power(name, rng)`` is the machine's crash as well: the node's
  files on the simulated disk (``shardex.sim.disk.SimDisk``, the transport's ``disk``) go back
  to what was synced, plus a seeded prefix of the rest (the last write possibly torn).
* ``restart(name)``: a new node object from the same parsed options (the same config and data
  dir), recovering from its journal as a restarted process would, in the crashed one's place
  in the cluster's lists (so ``cluster.engines[i]`` is shard i again).
* ``pause(name, seconds)``: a SIGSTOP (``InProcCluster.freeze``) for ``seconds`` of virtual
  time: what is sent to it queues, and it runs again where it stopped; ``kind="slow"`` is the
  same freeze standing for a long loop turn (CPU contention: shorter and more frequent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardex.inproc import InProcCluster, parse
from shardex.kinds import spawns
from shardex.node.failover import KILLED
from shardex.sim.sched import Trace

LISTS = {"router": "routers", "engine": "engines", "accounts": "accounts"}


REPLICA_TAGS = "ab"  # replica r of a replicated shard is named ``engine-0a``, ``engine-0b``...


def _key(kind: str, o: dict[str, Any]) -> str:
    base = f"{kind}-{o.get('index') or 0}"
    if o.get("role") == "auto" and o.get("replica") is not None:  # (a replica: --role auto)
        return base + REPLICA_TAGS[int(o["replica"])]
    return base


def replica_name(node: Any) -> str:
    """A ``FailoverNode``'s name: ``engine-0a`` for replica 0 of engine shard 0 (its lease
    node id ``shard-0.r0``), ``accounts-1b`` for replica 1 of account shard 1."""
    kind = "engine" if node.role == "shard" else "accounts"
    return f"{kind}-{node.cfg.index}{REPLICA_TAGS[int(node.node.rsplit('.r', 1)[1])]}"


class StartFailed(RuntimeError):
    """A restarted node raised while starting (``Lifecycle.restart``); it stays down."""


class Lifecycle:
    """Names, crashes, restarts and pauses of one cluster's nodes (see the module)."""

    def __init__(self, cluster: InProcCluster, trace: Trace | None = None) -> None:
        self.cluster = cluster
        self.trace = trace if trace is not None else Trace()
        self.options: dict[str, tuple[str, dict[str, Any]]] = {}
        for kind, spawn in spawns(cluster.plan):
            if kind.name in LISTS:
                o = parse(kind, spawn.values)
                self.options.setdefault(_key(kind.name, o), (kind.name, o))
        self.down: dict[str, int] = {}  # name -> its index in its list, while crashed
        self.crashes = self.restarts = self.pauses = self.slows = self.powers = 0
        self.failures: list[str] = []  # restarts that raised (the node refused to start)
        self.turning: str | None = None  # the replica whose turn runs now (``_own_turns``)
        # called with a replica's name: as it takes its lease (before it records the epoch:
        # ``worldha``'s watch of the take), and after the turn it was promoted in (the epoch
        # recorded, the leader built, nothing answered yet); ``shardex.sim.hazards`` aims its
        # promotion crash points there
        self.on_take: list[Callable[[str], None]] = []
        self.on_promote: list[Callable[[str], None]] = []
        for name, node in self.named().items():
            self._tag(node, name)
        # every context a node opens from now on (a restart), so that one that fails half
        # way through its start can be closed: what it bound must not outlive it
        self.contexts: list[Any] = []
        net, make = cluster.net, cluster.net.Context

        def context() -> Any:
            ctx = make()
            if self.turning is not None:  # (a replica promoted in its turn: its leader's)
                ctx.owner = self.turning
            self.contexts.append(ctx)
            return ctx

        net.Context = context

    def named(self) -> dict[str, Any]:
        """Every live node by name."""
        c = self.cluster
        out: dict[str, Any] = {f"router-{i}": n for i, n in enumerate(c.routers)}
        out.update({f"engine-{n.cfg.index}": n for n in c.engines})
        out.update({f"accounts-{n.cfg.index}": n for n in c.accounts})
        out.update({replica_name(n): n for n in c.replicas})
        return out

    def _list(self, name: str) -> list[Any]:
        """The cluster's list ``name`` lives in (``replicas`` for a replica's)."""
        if name[-1] in REPLICA_TAGS and name.rsplit("-", 1)[0] != "router":
            return self.cluster.replicas
        return getattr(self.cluster, LISTS[name.rsplit("-", 1)[0]])

    def _tag(self, node: Any, name: str) -> None:
        """``tag``, and for a replica: what it opens in its turns is its own too (a standby
        promoted in a turn builds its leader, whose sockets must be partitionable as its)."""
        tag(node, name)
        if hasattr(node, "standby"):
            _own_turns(self, node, name)

    def exited(self, name: str) -> None:
        """Replica ``name`` exited by itself (``FailoverNode.exited``: its lease lost, or its
        journal failed, ``node.failstop``; it closed what it had): down until ``restart``, as
        under its supervisor."""
        node = self.named()[name]
        nodes = self._list(name)
        self.down[name] = nodes.index(node)
        nodes.remove(node)
        self.cluster.thaw(node)
        for sock in list(node.ctx.socks):  # (the process is gone: what its node left open
            sock.close(0)  # closes with it, as its peers see at an exit)
        why = getattr(node, "exit_reason", None)  # (a journal's fail-stop says why)
        self.trace.add(self._now(), "exit", name, f"{node.exited}: {why}" if why else
                       str(node.exited))  # fmt: skip

    def _now(self) -> float:
        return self.cluster.net.clock.monotonic()

    def crash(self, name: str) -> None:
        node = self.named()[name]
        nodes = self._list(name)
        self.down[name] = nodes.index(node)
        nodes.remove(node)
        self.cluster.thaw(node)
        for sock in list(node.ctx.socks):
            sock.close(0)
        _drop_journal_fd(node)
        if hasattr(node, "standby"):  # (a replica: no more turns, no close, no release)
            node.exited = KILLED
        self.crashes += 1
        self.trace.add(self._now(), "crash", name)

    def power(self, name: str, rng: Any = None) -> None:
        """``name``'s machine loses power: the node crashes, and its files on the simulated
        disk keep what was synced (``SimDisk.crash``, drawing from ``rng`` or the disk's own
        seeded stream) -- a no-op on a real disk."""
        where = getattr(self.named()[name].cfg, "journal_dir", None)
        self.crash(name)
        disk = self.cluster.net.disk
        lost = 0
        if where is not None and hasattr(disk, "crash"):
            report = disk.crash(rng, under=where)
            lost = len(report.files)
        self.powers += 1
        self.trace.add(self._now(), "power", name, f"{lost} files cut back")

    def restart(self, name: str) -> Any:
        """A new node for crashed ``name``, started; it is returned. ``StartFailed`` when it
        raised while starting (e.g. its recovered state failed its integrity check: a
        process would refuse to serve it): it stays down, what it opened is closed, and
        ``failures`` says so."""
        at = self.down.pop(name)
        kind, o = self.options[name]
        nodes = self._list(name)
        mark = len(self.contexts)
        try:
            self.cluster._build(kind, dict(o))
            node = nodes.pop()
            self._tag(node, name)
            node.start()  # (a replica's standby checks its journal against the lease here)
        except Exception as exc:  # (whatever a starting process could die of)
            self._failed_start(name, at, mark, exc)
        nodes.insert(at, node)
        self.restarts += 1
        self.trace.add(self._now(), "restart", name, f"seq {_seq(node)}")
        return node

    def _failed_start(self, name: str, at: int, mark: int, exc: Exception) -> None:
        """A restart raised: close what it opened, keep ``name`` down, say so, and raise
        ``StartFailed``."""
        for ctx in self.contexts[mark:]:
            ctx.term()
        del self.contexts[mark:]
        self.down[name] = at
        self.failures.append(f"{name} failed to start: {exc!r}")
        self.trace.add(self._now(), "failure", name, f"start: {exc!r}")
        raise StartFailed(name) from exc

    def pause(self, name: str, seconds: float, kind: str = "pause") -> None:
        """Freeze ``name`` for ``seconds``: a SIGSTOP or GC (``pause``), or a long loop turn
        (``slow``: the turn it just took lasted ``seconds``; what came meanwhile waits
        unread, and its next turn starts with a backlog)."""
        self.cluster.freeze(self.named()[name], seconds)
        if kind == "slow":
            self.slows += 1
        else:
            self.pauses += 1
        self.trace.add(self._now(), kind, name, f"{seconds!r}s")


def tag(node: Any, name: str) -> None:
    """``name`` owns ``node``'s sockets, now and those it makes later."""
    node.ctx.owner = name
    for sock in node.ctx.socks:
        sock.owner = name


def _own_turns(life: Lifecycle, node: Any, name: str) -> None:
    """``node``'s turns run with ``life.turning`` = ``name`` (its new contexts are its)."""
    turn = type(node).turn.__get__(node)

    def owned() -> None:
        standing_by = node.leader is None
        life.turning = name
        try:
            turn()
        finally:
            life.turning = None
        if standing_by and node.leader is not None:  # (it took the lease in this turn)
            life.trace.add(life._now(), "promote", name,
                           f"epoch {node.lease.epoch} seq {node.machine.seq}")  # fmt: skip
            for hook in life.on_promote:  # (may raise a crash point: it leaves the turn)
                hook(name)

    node.turn = owned


def _seq(node: Any) -> int:
    machine = getattr(node, "machine", None)
    return getattr(machine, "seq", 0)


def _drop_journal_fd(node: Any) -> None:
    """Let go of the crashed node's journal segment as a dying process would
    (``Journal.abandon``: no final write, no sync, no trim; the buffer is lost with it)."""
    journal = getattr(node, "journal", None)
    if hasattr(journal, "abandon"):
        journal.abandon()


__all__ = ["Lifecycle", "StartFailed", "tag"]
