"""``SequencedNode``: the one loop of a sequenced process (engine shard, account shard).

A sequenced node is the single writer of its shard's state: a ``Machine`` (the ``Engine``, the
account tier's ``SettledEngine``, the ``AccountMachine``) driven by a socket-free ``Service``
(``ShardCore``, ``AccountHandler``) that turns request payloads into journaled commands and
replies. Around them, every node runs the same turn, in this order (``run``):

1. **replica tick** (replicated leader): renew the lease, take the standbys' acks, release
   what the high watermark covers; past the lease deadline the node is *fenced*: every
   request waiting is answered ``not_leader`` (``refuse``), nothing runs, and the turn ends;
2. **periodic**: HELLO to the routers every ``HELLO_EVERY_S``, and a retry of a journal that
   could not write (``journal_held`` / ``retry_journal``);
3. **poll** (``poll_ms``: shorter while replies wait for a full pipe or a standby's ack);
   then, if the lease ran out while we slept in poll, nothing is sent or taken;
4. **pump** the outboxes of replies that waited for a full pipe, then ``after_pump``;
5. **links** (``read_links``): the sequenced link to the other tier is read *before* client
   requests, so a cancel sent after its order's "ok" finds that order here, and whatever the
   poll reported; then ``after_links`` (it runs even when poll found nothing);
6. **requests** (``read_requests``; the ZAP socket and request sockets are read only if the
   poll reported them: ``waiting``) and **commit** (``flush``): one group commit per turn;
   ``flush`` journals the batch, **ships** it to the standbys (before our own fsync: the two
   overlap), and **releases** its replies, events and link messages — at once without a
   standby, else at the **high watermark** (``release_acked``); then ``after_flush``;
7. **housekeeping**: metrics, key-registry reloads, snapshots.

The deliberate differences between the tiers are these hooks (each subclass says why):

- ``after_pump``: engine shard — release the batches the journal writer thread made
  durable (``journal_done``), before taking more; account shard — nothing.
- ``read_links``: engine shard — forwards and SYNCs from the account shards
  (``from_accounts``); account shard — settlements and HAVEs from the engine shards.
- ``after_links``: account shard — the periodic SYNC to every engine shard, sent right after
  the links were read (a stale ``have`` made engine shards re-send what was in flight);
  engine shard — nothing (it answers SYNCs after its group commit).
- ``read_requests``: engine shard — drain the router links and the direct port, dispatch to
  ``ShardCore``; account shard — the router links' batches to ``AccountHandler``.
- ``after_flush``: account shard — its direct port (the bridge's reads and repairs see the
  ``published`` mark of this commit); engine shard — nothing (its direct port is a request
  socket like the router links).
- ``release_acked``: what a batch sends once the standbys have it (engine shard: replies,
  events, then settlements; account shard: events, forwards, then replies).
- ``fence_sockets``: which sockets a fenced leader answers ``not_leader`` on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from shardex.auth import KeyStore, ZapHandler
from shardex.clock import Clock
from shardex.journal import Journal, JournalUnavailable
from shardex.node.fencing import fence
from shardex.node.nulljournal import NullJournal
from shardex.wire.transport import StopFlag, send_frames

log = logging.getLogger("shardex.node")

HELLO_EVERY_S = 1.0  # a node registers with each router this often
JOURNAL_RETRY_S = 1.0  # a journal that cannot write is retried this often


class Machine(Protocol):
    """A deterministic state machine a journal replays and a standby follows: the same
    commands from the same state give the same events and the same ``seq``."""

    @property
    def seq(self) -> int: ...

    def apply(self, cmd: Any, out: list[Any]) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def check_integrity(self) -> None: ...


class Service(Protocol):
    """The socket-free core of a sequenced node: request payloads in, journaled commands and
    bounded replies out, never an exception (``ShardCore``, ``AccountHandler``). Its
    ``handle`` signatures differ by tier (an engine shard's reads take the loop's ``info`` and
    a byte budget); what the node relies on across tiers is this."""

    journal: Journal | NullJournal
    journal_down: str | None  # set while the journal cannot write: writes refused, reads served
    commands: int
    internal_errors: int


class SequencedNode:
    """The loop (``run``) and what both tiers do the same way: HELLO, the replica tick,
    fencing, the journal retry's timing, snapshots and their timing. A subclass sets, before
    ``run``: ``cfg`` (``index``, ``snapshot_every``, ``snapshot_interval``), ``zmq`` (its
    transport), ``ctx``, ``zap``, ``links`` (its router links), ``outboxes`` (what ``pump``
    drains), ``poller``, ``replica``, ``hello_msg``; and implements the hooks named in the
    module docstring.

    Time: the node reads it only through ``clock``, its transport's (``zmq.clock``, see
    ``shardex.clock``; set by ``init_loop_state``, or earlier by a node whose recovery reads
    it), so the same loop runs on a virtual clock in the simulator; ``mono`` is the clock's
    bound ``monotonic``, cached once (``time.monotonic`` itself on ``REAL``: the turn pays
    what it paid before)."""

    IDLE_POLL_MS = 200  # poll timeout with nothing waiting and no standby
    LABEL = "node"  # how logs name it: "shard 3", "account shard 1"

    cfg: Any
    zmq: Any
    clock: Clock  # where this node reads the time (its transport's, ``zmq.clock``)
    mono: Callable[[], float]  # ``clock.monotonic``, bound once (``init_loop_state``)
    ctx: Any
    zap: Any
    key: Any
    server: Any
    links: list[Any]
    outboxes: list[Any]
    poller: Any
    replica: Any
    hello_msg: bytes
    journal: Any  # the service's journal (``Journal`` or ``NullJournal``)
    machine: Any  # the ``Machine`` it drives

    def open_keys(self, role: str) -> None:
        """A secure cluster (``cfg.keys_dir``): this process's key pair (``key``, its links'
        CURVE client key), the cluster's server pair (``server``) and the ZAP handler that
        checks every connection to our server sockets (bound before any CURVE socket).
        ``--insecure``: all three None."""
        cfg = self.cfg
        self.zap = self.key = self.server = None
        if cfg.keys_dir:
            store = KeyStore(cfg.keys_dir)
            self.key = store.process_key(f"{role}-{cfg.index}", role, cfg.index)
            self.server = store.server()
            self.zap = ZapHandler(self.ctx, store.registry())

    def init_loop_state(self, seq: int) -> None:
        """The loop's own state (call from ``__init__``, ``seq`` = the recovered machine's)."""
        self.stop = StopFlag()  # set by SIGINT/SIGTERM once run_* installs it
        self.clock = self.zmq.clock
        self.mono = mono = self.clock.monotonic
        self.started = mono()
        self.pid = os.getpid()  # (a system call: not once per wake-up)
        # -inf: "never", due at the first turn whatever the clock reads (a virtual one starts
        # at 0, where 0.0 would hold the first HELLO back for HELLO_EVERY_S)
        self.last_hello = -math.inf
        self.last_journal_try = -math.inf
        # the sockets this turn's poll reported (``waiting``); None outside a turn: read all
        self.ready: dict[Any, int] | None = None
        self.fenced = False  # a replicated leader past its lease deadline (``refuse``)
        self.refused = 0  # requests answered ``not_leader`` meanwhile
        self.last_snap = mono()
        self.last_snap_seq = seq
        self.last_snap_records = 0

    @property
    def what(self) -> str:
        return f"{self.LABEL} {self.cfg.index}"

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        self.start()
        try:
            while not self.stop:
                self.turn()
        finally:
            self.close()

    def turn(self) -> None:
        """One turn of the loop (the module docstring's steps). A process runs turns until
        stopped (``run``); an in-memory cluster calls ``start``, then every node's ``turn`` in
        rounds (its poll never waits), then ``close``."""
        now = self.mono()
        if self.replica is not None and not self.replica_tick(now):
            # past our lease deadline: accept nothing, acknowledge nothing; requests are
            # answered ``not_leader`` (nothing ran: the client may send them again)
            self.refuse()
            if not self.zmq.in_process:  # (a process's back-off; a shared one never sleeps)
                time.sleep(0.01)
            return
        self.fenced = False
        self.periodic(now)
        try:
            ready = self.poller.poll(self.poll_ms())
        except self.zmq.ZMQError:
            return  # EINTR from a signal: the loop re-checks ``stop``
        if self.replica is not None and not self.replica.lease.valid():
            return  # (paused inside poll past our deadline: send and take nothing)
        self.ready = dict(ready)
        self.pump()
        self.after_pump()
        if ready:
            if self.zap is not None and self.zap.sock in self.ready:
                self.zap.serve()
            self.read_links()
        self.after_links()
        if ready:
            self.read_requests(now)
            self.flush()
            self.after_flush()
        self.ready = None
        self.housekeeping(now)

    def waiting(self, sock: Any) -> bool:
        """Whether to read request socket ``sock`` now: in a turn, only if its poll reported
        it (a read of an empty socket is a system call and an exception, per socket per
        wake-up: at a low rate most of a node's sockets are empty); outside one (a test
        driving a reader directly), always. What arrives after the poll is read at the next
        turn, whose poll then returns at once. The link to the other tier is read whatever
        the poll said (``read_links``): a forward that lands between the poll and the read
        must still be applied before a cancel read in the same turn."""
        ready = self.ready
        return ready is None or sock in ready

    def reported(self, sock: Any) -> bool:
        """Whether this turn's poll reported ``sock`` (a reader of one it did not report asks
        libzmq first instead of letting a read fail: ``net.recv``)."""
        ready = self.ready
        return ready is not None and sock in ready

    def poll_ms(self) -> int:
        if any(box.size for box in self.outboxes):
            return 10  # replies wait for a full pipe: pump again soon
        return self.IDLE_POLL_MS if self.replica is None else 20

    def pump(self) -> None:
        for box in self.outboxes:
            if box.size:
                box.pump()

    def periodic(self, now: float) -> None:
        """HELLO when due; a held journal retried when due."""
        if self.links and now - self.last_hello >= HELLO_EVERY_S:
            self.hello(now)
        if self.journal_held() and now - self.last_journal_try >= JOURNAL_RETRY_S:
            self.last_journal_try = now
            self.retry_journal(now)

    def hello(self, now: float) -> None:
        """Register with each router; a full pipe just skips one (never raises)."""
        self.last_hello = now
        for link in self.links:
            try:
                send_frames(link.sock, [b"", b"HELLO", self.hello_msg])
            except self.zmq.ZMQError:
                pass  # EAGAIN: that router is not reading; the next hello will try again

    # -- replication ------------------------------------------------------------------------

    def ship(self, journal: Any, seq: int) -> None:
        """Send the batch buffered in ``journal`` to the standbys, before our own fsync (the
        two overlap; a batch the standby has and we lost in a crash was never acked)."""
        batch = journal.buffered()
        if batch is not None:
            self.replica.ship(batch[0], batch[1], seq)

    def replica_tick(self, now: float) -> bool:
        """Renew the lease, take acks, release what they cover; False past our deadline
        (raises ``LeaseLost`` once Redis says the lease is someone else's)."""
        self.replica.tick(now)
        self.release_acked()
        if self.replica.sync_behind():  # ``--durability replicated``: our fsync, after that
            self.release_acked()  # (what waited for it: nothing, unless we lead alone)
        return self.replica.lease.valid()

    def refuse(self) -> None:
        """A replicated leader past its lease deadline (fenced, or Redis unreachable): every
        request waiting is answered ``not_leader`` with our epoch (nothing runs; what was
        admitted before the deadline stays held), and each router is told once that this
        link stopped leading (``fencing.fence``)."""
        self.refused += fence(self.zmq, self.replica, self.what, self.fence_sockets(),
                              self.links, self.hello_msg, self.fenced)  # fmt: skip
        self.fenced = True

    # -- snapshots --------------------------------------------------------------------------

    def snapshot_due(self, now: float, journal: Any, seq: int) -> bool:
        """After ``snapshot_every`` journaled commands, or ``snapshot_interval`` seconds when
        something changed: together they bound a restart's replay."""
        cfg = self.cfg
        return journal.records_written - self.last_snap_records >= cfg.snapshot_every or (
            seq != self.last_snap_seq and now - self.last_snap >= cfg.snapshot_interval
        )

    def snapshot(self, now: float) -> None:
        """Snapshot the machine (periodic, and at a clean stop); a failure is an ALERT,
        retried at the next interval, not every turn."""
        journal, machine = self.journal, self.machine
        if not isinstance(journal, Journal):
            return
        perf = self.clock.perf_counter
        t = perf()
        self.last_snap = now
        try:
            path = journal.snapshot(machine)
        except (JournalUnavailable, OSError) as exc:
            log.error("ALERT snapshot of %s failed (%s); will retry", self.what, exc)
            return
        log.info("snapshot %s of %s in %.1f ms", getattr(path, "name", path), self.what,
                 (perf() - t) * 1000)  # fmt: skip
        self.last_snap_seq = machine.seq
        self.last_snap_records = journal.records_written

    def snapshot_at_stop(self) -> None:
        """A clean stop (SIGTERM/SIGINT) with a writable journal: the next start loads this
        snapshot instead of replaying."""
        if isinstance(self.journal, Journal) and not self.journal_held():
            if self.machine.seq != self.last_snap_seq:
                log.info("%s stopping: snapshot at seq %d", self.what, self.machine.seq)
                self.snapshot(self.mono())

    def close_journal(self) -> None:
        try:
            self.journal.close()  # (a writer thread first writes what is queued, if it can)
        except OSError as exc:
            log.error("closing the journal of %s failed: %s", self.what, exc)

    # -- hooks ------------------------------------------------------------------------------

    def start(self) -> None:
        """Metrics, GC settings, the "up" line: once, before the first turn."""
        raise NotImplementedError

    def journal_held(self) -> bool:
        """Whether a batch waits for a journal that could not write."""
        raise NotImplementedError

    def retry_journal(self, now: float) -> None:
        raise NotImplementedError

    def after_pump(self) -> None:
        pass

    def read_links(self) -> None:
        raise NotImplementedError

    def after_links(self) -> None:
        pass

    def read_requests(self, now: float) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def after_flush(self) -> None:
        pass

    def release_acked(self) -> None:
        raise NotImplementedError

    def fence_sockets(self) -> list[tuple[Any, bool]]:
        """(socket, whether it is a router link) of every request socket."""
        raise NotImplementedError

    def housekeeping(self, now: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
