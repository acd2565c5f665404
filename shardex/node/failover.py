"""``--role auto`` for either tier: stand by (``Standby``) until this node holds the lease,
then hand what it recovered and applied to the leader node the caller builds (``run_failover``
takes that node's factory: this module knows no concrete node), HELLO, and run it until
stopped or the lease is lost."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardex.auth import KeyStore
from shardex.coord.skew import check_store_clock
from shardex.health import HEALTH, standby_probe
from shardex.journal import OS_DISK, Disk, Journal
from shardex.lease import (
    LOOP_STALL_S,
    MARGIN,
    Connect,
    Lease,
    LeaseLost,
    LeaseTiming,
    check_access,
    connect,
)
from shardex.leasekeeper import KeeperHandle, keeper_mode
from shardex.node.failstop import JournalFailStop
from shardex.node.leader import Replicator
from shardex.node.rejoin import cut_before_recovery, snapshot_cadence
from shardex.node.replication import EXIT_LEASE_LOST, log, node_name, open_journal
from shardex.node.runtime import tune_gc
from shardex.node.standby import Standby
from shardex.redisauth import RedisAuthError, mask_url
from shardex.wire.transport import StopFlag


@dataclass
class Promotion:
    """What a standby hands to the leader it becomes: the lease it took, its journal and
    state machine (same seq as the old leader's last acked batch), and failover timings."""

    node: str
    lease: Lease
    journal: Journal
    engine: Any
    ring: Any  # the standby's event ring (engine shards: served to the bridge's repairs)
    took: float  # monotonic time the lease was taken
    silent: float | None  # how long the old leader had been silent then (None: never followed)
    stop: Any
    times: Any = None  # the standby's time marks of the ring's events (``timemarks``)


# ``run_failover``'s ``build``: the leader node from a promotion and its ``replicate`` factory
Build = Callable[[Promotion, Callable[[Any, Any], Replicator]], Any]


def stand_by(cfg: Any, role: str, replica: int, redis_url: str, repl_advertised: str,
             machine: Any = None, check: Any = None,
             reserve: tuple[str | None, ...] = (),
             redis: Connect = connect) -> Promotion | None:  # fmt: skip
    """The standby phase of ``--role auto``, the same for both tiers: recover this replica's
    journal, follow the lease holder until this node takes the lease (returns what the
    leader needs) or the process is told to stop (None).

    ``role``: "shard" or "accounts" (node names, the lease key, the replication key);
    ``machine``: the journal's state machine factory (None: the plain engine); ``check``:
    called with the recovered state machine before anything is served (refuse state that
    does not belong here or does not balance); ``reserve``: the endpoints the leader will
    bind, held while standing by (``Standby``). With ``cfg.keys_dir`` (a secure cluster) both
    the replication link and the lease are authenticated: the link with the shard's own CURVE
    key pair (the same key the leader registers with the router), the lease as Redis user
    ``lease`` (``redis://lease@HOST:PORT/0``, the password from the keys dir). ``redis``:
    the lease's client factory (``lease.connect``: a real Redis)."""
    if not cfg.journal_dir:
        raise SystemExit("--role auto needs --data-dir (each replica journals)")
    Path(cfg.journal_dir).mkdir(parents=True, exist_ok=True)
    node = node_name(role, cfg.index, replica)
    try:
        r = redis(redis_url, cfg.keys_dir)
    except RedisAuthError as exc:
        raise SystemExit(f"the lease's Redis: {exc}") from None
    except ValueError as exc:  # (a malformed URL: etcd://host:port,... or redis://...)
        raise SystemExit(f"the lease's store: {exc}") from None
    why = check_access(r)
    if why is not None:  # wrong credentials never heal by waiting: say so and stop
        hint = " (a secure cluster's is redis://lease@HOST:PORT/0)" if cfg.keys_dir else ""
        raise SystemExit(f"the lease's Redis {mask_url(redis_url)}: {why}{hint}")
    check_store_clock(r)  # (a warning when this host's wall clock is off the store's)
    key = None
    if cfg.keys_dir:
        key = KeyStore(cfg.keys_dir).process_key(f"{role}-{cfg.index}", role, cfg.index)
    timing = LeaseTiming.of(cfg.lease_ms)
    lease = Lease(r, cfg.index, node, repl_advertised, timing.ttl_ms, timing.renew_ms,
                  name=None if role == "shard" else f"{role}-{cfg.index}")  # fmt: skip
    if redis is connect:  # (a store injected for tests: the thread renews)
        _keeper(lease, redis_url, cfg.keys_dir, timing)
    journal, engine = recover_replica(cfg, machine, check, lease=lease)
    stop = StopFlag.install()
    # The leader runs with the cyclic GC off (``tune_gc``); so does the standby, for the same
    # reason (no collector pauses while it acks) and so that promotion is fast: see below.
    gc_off = tune_gc()
    standby = Standby(lease, cfg.journal_dir, cfg.markets, cfg.fsync, journal, engine, key,
                      getattr(cfg, "ring_size", 1 << 20), direct=cfg.direct,
                      keys_dir=cfg.keys_dir, machine=machine, reserve=reserve,
                      **snapshot_cadence(cfg))  # fmt: skip
    HEALTH.set("engine" if role == "shard" else role, standby_probe(standby))
    log.info("%s starts as standby at seq %d (epoch %d)", node, engine.seq, journal.read_epoch())
    try:
        promoted = standby.run(stop)
    finally:
        standby.close()
    if not promoted:
        return None
    if gc_off:  # the books built while following: frozen now (O(1)), so the ``gc.collect`` of
        gc.freeze()  # the leader's set-up scans nothing big (it cost 20–60 ms of the failover)
    return promotion(standby, stop)


def _keeper(lease: Lease, redis_url: str, keys_dir: str | None, timing: LeaseTiming) -> None:
    """With ``SHARDEX_LEASE_KEEPER=process``: a keeper process renews the lease once this
    replica leads (``shardex.leasekeeper``), started now so that it is connected by then."""
    try:
        mode = keeper_mode()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if mode == "process":
        lease.use_keeper(KeeperHandle(redis_url, keys_dir, lease.name, lease.label,
                                      lease.ttl_ms, timing.renew_ms, MARGIN,
                                      LOOP_STALL_S))  # fmt: skip


def recover_replica(cfg: Any, machine: Any = None, check: Callable[[Any], None] | None = None,
                    disk: Disk = OS_DISK,
                    lease: Lease | None = None) -> tuple[Journal, Any]:  # fmt: skip
    """A replica's journal (on ``disk``) and the state machine it recovers (``machine``,
    ``check``: see ``stand_by``); with its ``lease``, a tail past a later epoch's start is
    cut off first (``cut_before_recovery``)."""
    journal = open_journal(cfg.journal_dir, cfg.markets, cfg.fsync, machine, disk)
    if lease is not None:
        cut_before_recovery(journal, lease)
    engine = journal.recover().engine
    replayed = getattr(engine, "outgoing", None)
    if replayed:  # settlements regenerated by the replay: the rings keep them, and the
        replayed.clear()  # account shards' SYNCs get them once we lead
    if check is not None:
        check(engine)
    return journal, engine


def promotion(standby: Standby, stop: Any) -> Promotion:
    """What a standby that took the lease hands to the leader it becomes."""
    took = standby.took_at or standby.clock.monotonic()
    silent = took - standby.last_heard if standby.last_heard else None
    return Promotion(standby.node, standby.lease, standby.journal, standby.engine, standby.ring,
                     took, silent, stop, standby.times)  # fmt: skip


def _log_failover(p: Promotion, what: str) -> None:
    up = p.lease.clock.monotonic()
    log.warning(
        "FAILOVER %s leads %s at epoch %d from seq %d: lease taken %s after the last "
        "record from the old leader; sockets up and HELLO sent %.0f ms after taking it "
        "(monotonic took=%.4f hello=%.4f)",
        p.node, what, p.lease.epoch, p.engine.seq,
        f"{p.silent * 1000:.0f} ms" if p.silent is not None else "(never followed one)",
        (up - p.took) * 1000, p.took, up,
    )  # fmt: skip


def _leader_config(cfg: Any, p: Promotion, role: str, repl_endpoint: str) -> Any:
    """What a promoted standby of either tier changes in its config before it builds its
    node: the HELLO says primary, epoch and node; the router links are named after the epoch
    (a deposed leader's link is never the one routed to). Returns the node's ``replicate``
    factory: a ``Replicator`` on ``repl_endpoint`` from the seq the standby reached."""
    lease, journal, seq = p.lease, p.journal, p.engine.seq
    cfg.extra = {**cfg.extra, "role": "primary", "epoch": lease.epoch, "node": p.node}
    cfg.link_identity = f"{role}-{cfg.index}.e{lease.epoch}"
    return lambda ctx, zmq: Replicator(ctx, zmq, repl_endpoint, lease, journal, seq,
                                       cfg.keys_dir, role=role,
                                       durability=cfg.durability)  # fmt: skip


def _lead(p: Promotion, node: Any, what: str) -> None:
    """Run the leader ``node`` (a ``ShardNode`` or ``AccountNode``) a standby became: HELLO
    to the routers before the loop's set-up, the FAILOVER line, then its loop until stopped
    or the lease is lost (exit code 3: restarted, it rejoins as a standby)."""
    node.stop = p.stop
    node.hello(p.lease.clock.monotonic())  # register with the routers now, before the set-up
    _log_failover(p, what)
    try:
        node.run()
    except LeaseLost as exc:
        log.error("ALERT %s lost the lease (%s): it stopped answering at its deadline and "
                  "exits; restarted, it rejoins as a standby", p.node, exc)  # fmt: skip
        raise SystemExit(EXIT_LEASE_LOST) from None
    finally:
        p.lease.release()  # (a no-op once lost)


def run_failover(cfg: Any, role: str, replica: int, redis_url: str, repl_endpoint: str,
                 repl_advertised: str | None, what: str,
                 build: Build, machine: Any = None, check: Callable[[Any], None] | None = None,
                 reserve: tuple[str | None, ...] = ()) -> None:  # fmt: skip
    """Stand by until this node holds the lease, then lead: ``build(promotion, replicate)``
    makes the leader node (a ``SequencedNode``) from what the standby recovered and applied;
    ``replicate(ctx, zmq)`` is its ``Replicator``. ``repl_endpoint`` is bound when leading;
    ``repl_advertised`` (default: the same) goes into the lease, where the standby on another
    host reads where to connect. ``machine``, ``check``, ``reserve``: see ``stand_by``."""
    p = stand_by(cfg, role, replica, redis_url, repl_advertised or repl_endpoint, machine,
                 check, reserve=reserve)  # fmt: skip
    if p is None:
        return
    replicate = _leader_config(cfg, p, role, repl_endpoint)
    _lead(p, build(p, replicate), what)


KILLED = -9  # ``FailoverNode.exited`` of a killed replica (as a shell reports SIGKILL)


class FailoverNode:
    """``--role auto`` as turns, for a cluster in one process (``shardex.inproc``, the
    simulator): stand by (``Standby.turn``) until this replica holds the lease, then build its
    leader node (``build(promotion, replicate)``, as ``run_failover``'s) and take that node's
    turns. A lost lease ends it (``exited``): a process exits with ``EXIT_LEASE_LOST`` there
    and its supervisor restarts it as a standby. The lease must be renewed by the turns
    (``Lease(thread=False)``): a node whose turns stop (frozen, killed) stops renewing, as a
    stopped process's lease does."""

    def __init__(self, cfg: Any, role: str, standby: Standby, repl_endpoint: str, what: str,
                 build: Build) -> None:  # fmt: skip
        self.cfg = cfg
        self.role = role
        self.standby = standby
        self.repl_endpoint = repl_endpoint
        self.what = what
        self.build = build
        self.leader: Any = None  # the node it leads as, once promoted
        self.exited: int | None = None  # the exit code a process would have ended with
        self.exit_reason: str | None = None  # why, when it fail-stopped on its journal

    @property
    def node(self) -> str:
        return self.standby.node

    @property
    def lease(self) -> Lease:
        return self.standby.lease

    # what a node of an in-process cluster is asked (its sockets' context, journal, machine):
    # the standby's until it leads, then the leader's
    @property
    def ctx(self) -> Any:
        return (self.leader or self.standby).ctx

    @property
    def journal(self) -> Journal:
        return self.leader.journal if self.leader is not None else self.standby.journal

    @property
    def machine(self) -> Any:
        return self.leader.machine if self.leader is not None else self.standby.engine

    def start(self) -> None:
        log.info("%s starts as standby at seq %d", self.node, self.standby.engine.seq)
        self.standby.start()

    def turn(self) -> None:
        if self.exited is not None:
            return
        if self.leader is None:
            try:
                promoted = self.standby.turn()
            except JournalFailStop as exc:
                self._fail_stop(exc)
                return
            if promoted:
                self._promote()
            return
        try:
            self.leader.turn()
        except LeaseLost as exc:
            log.error("ALERT %s lost the lease (%s): it stopped answering at its deadline "
                      "and exits", self.node, exc)  # fmt: skip
            self.exited = EXIT_LEASE_LOST
            self._close_leader()

    def _promote(self) -> None:
        """The standby holds the lease: close it (its ports are the leader's next), build the
        leader from what it applied, HELLO to the routers at once."""
        standby = self.standby
        standby.close()
        p = promotion(standby, None)
        leader = self.build(p, _leader_config(self.cfg, p, self.role, self.repl_endpoint))
        leader.start()
        leader.hello(p.lease.clock.monotonic())
        _log_failover(p, self.what)
        self.leader = leader

    def _fail_stop(self, exc: JournalFailStop) -> None:
        """The standby's journal failed (``failstop``): end as its process does -- exit code
        ``EXIT_JOURNAL_FAILED``, its sockets closed, its journal let go of where it stands
        (nothing buffered is written: what was not durable dies with the process)."""
        self.exited = int(exc.code)  # type: ignore[arg-type]
        self.exit_reason = exc.reason
        journal = self.standby.journal
        if hasattr(journal, "abandon"):
            journal.abandon()
        self.standby.close()

    def _close_leader(self) -> None:
        try:
            self.leader.close()
        finally:
            self.lease.release()  # (a no-op once lost)

    def kill(self) -> None:
        """A kill -9 in one process: no more turns, its sockets vanish (every peer sees the
        disconnect), nothing is flushed, closed or released (its lease runs out)."""
        self.exited = KILLED
        self.ctx.term()  # (the in-memory context: closes every socket it made)

    def close(self) -> None:
        if self.exited is not None:
            return  # (killed; or closed when it lost the lease or its journal failed)
        if self.leader is not None:
            self._close_leader()
        else:
            self.standby.close()
