"""The standby's half of hot standby replication (``replication`` says the protocol):
follow the lease holder, journal and apply its batches to its own state machine, ack what is
durable, answer clients ``not_leader``, and take the lease when it expires (if in the in-sync
set). Knows no concrete node: the state machine comes from the journal's factory."""

from __future__ import annotations

import os
import time
from typing import Any

from shardex.auth import KeyFile, KeyStore, ZapHandler
from shardex.journal import Journal, JournalError, JournalUnavailable
from shardex.lease import Holder, Lease
from shardex.net import ZMQ, Transport
from shardex.net.roles import replication_follower, standby_front
from shardex.node.failstop import JournalFailStop, fail_stop
from shardex.node.fencing import not_leader_reply
from shardex.node.rejoin import STANDBY_SNAPSHOT_EVERY, cut_and_recover, later_epoch
from shardex.node.replication import (
    CHECK_LEASE_S,
    EXPIRY_SLACK_S,
    RESYNC_S,
    START_GRACE_S,
    Refusals,
    log,
    open_journal,
    reserve_port,
)
from shardex.node.ring import EventRing
from shardex.recovery import SNAPSHOT_INTERVAL
from shardex.timemarks import TIME_MARKS_PRUNE, TimeMarks, is_time_command
from shardex.wire.protocol import not_leader_error
from shardex.wire.replication import (
    ACK,
    DIV,
    PID,
    REC,
    SUB,
    crc_ok,
    decode_body,
    decode_commands,
    encode_body,
    rec_fields,
)


def move_dir(disk: Any, src: str, dst: str) -> None:
    """Move directory ``src`` to a new ``dst`` through ``disk`` (the transport's: a
    ``SimDisk`` in the simulator, where ``shutil`` would reach for real files that are not
    there), leaving ``src`` empty: one rename of the directory where the disk can (the OS:
    atomic), else a rename of each entry, recursively."""
    try:
        disk.replace(src, dst)
    except OSError:
        _move_entries(disk, src, dst)
    disk.makedirs(src)


def _move_entries(disk: Any, src: str, dst: str) -> None:
    disk.makedirs(dst)
    for name in disk.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if disk.isdir(s):
            _move_entries(disk, s, d)
        else:
            disk.replace(s, d)
    disk.fsync_dir(dst)
    disk.fsync_dir(src)


class Diverged(Exception):
    """This node's journal holds records the leader does not: they are cut off (``rejoin``),
    or it starts over. ``leader_seq``: the seq the leader said it is at (a ``DIV``), which
    what is left must not pass."""

    def __init__(self, why: str, leader_seq: int | None = None) -> None:
        super().__init__(why)
        self.leader_seq = leader_seq


class Standby:
    """The standby's loop: follow the lease holder, journal and apply its batches, ack; take
    the lease when it expires (if in the in-sync set). ``run`` returns True when promoted.

    ``key``: this shard's key pair in a secure cluster (the link to the leader is
    CURVE, trusting only the cluster's server key); None: ``--insecure``. ``direct``: the
    client port this replica serves once it leads, bound meanwhile to answer
    ``not_leader`` (a CURVE server checked by this process's own ZAP handler when
    ``keys_dir`` is given, as the leader's is). ``machine``: the journal's state machine
    when it is not the plain engine (with the account tier a ``SettledEngineFactory``:
    the standby then replays the leader's forward records into the same inbox,
    settlement feed and rings, so a promoted standby re-sends exactly the settlements the
    old leader would have); ``journal`` must have been made with it. ``reserve``: the
    other endpoints it binds once it leads (PUB, replication, account link): their TCP
    ports are held (bound, not listening) while it stands by, so no other process's
    outgoing connection takes one as its ephemeral port meanwhile (a promoted standby that
    could not bind exited, and the shard was leaderless for seconds); released at
    ``close``, just before the leader binds them. ``net``: transport and clock (``turn``).
    ``snapshot_every``, ``snapshot_interval``: the standby snapshots its state machine
    after that many journaled commands, or that many seconds when something changed
    (``_snapshot_when_due``), so that a restart replays a bounded tail, not the whole
    journal since seq 0 (a standby that never snapshotted took seconds to restart).
    """

    def __init__(self, lease: Lease, journal_dir: str, markets: Any, fsync: str,
                 journal: Journal, engine: Any, key: KeyFile | None = None,
                 ring_size: int = 1 << 20, direct: str | None = None,
                 keys_dir: str | None = None, machine: Any = None,
                 reserve: tuple[str | None, ...] = (), net: Transport = ZMQ,
                 snapshot_every: int = STANDBY_SNAPSHOT_EVERY,
                 snapshot_interval: float = SNAPSHOT_INTERVAL) -> None:  # fmt: skip
        """The parameters are described in the class docstring."""
        self.zmq, self.clock = net, net.clock
        self.ctx = net.Context()
        self.lease = lease
        self.node = lease.node
        self.journal_dir = journal_dir
        self.markets = markets
        self.fsync = fsync
        self.journal = journal
        self.engine = engine
        self.sock: Any = None
        self.leader: Holder | None = None
        self.last_heard = 0.0
        self.last_sub = 0.0
        self.applied = 0
        self.last_warned = 0.0
        self.epoch: int | None = None  # the journal's epoch, cached (``_drain``)
        self.epoch_of: Journal | None = None
        self.key = key
        self.machine = machine
        self.refused = Refusals(f"standby {self.node}", self.clock)
        self.took_at = 0.0  # monotonic time this node took the lease (failover phases)
        self.started = self.clock.monotonic()
        self.next_check = 0.0  # when ``turn`` looks at the lease again
        self.poller: Any = None
        self.deferred = False  # logged once: a free lease left to the live standby
        self.own_gone_at: float | None = float("-inf")  # None: our former self's lease is held
        # The events of what it applies, as the leader keeps them (same seqs): handed to the
        # ring of the leader it becomes, so the bridge's repair of the old leader's last
        # unpublished events is served from memory. (A journal replay of that range stalled
        # new leaders' loops for seconds.)
        self.ring_size = ring_size
        self.ring = EventRing(ring_size)
        self.times = TimeMarks()  # (the ring's events' exchange time, handed over with it)
        # The direct port this replica serves once it leads, bound while it stands by so a
        # client (or a stale topology) that reaches it gets ``not_leader`` at once instead of
        # a timeout (``serve_clients``). Closed before promotion.
        self.front: Any = None
        self.zap: Any = None
        self.not_leader_refused = 0
        self.reserved = [r for r in (reserve_port(ep) for ep in reserve if ep) if r is not None]
        self.snapshot_every, self.snapshot_interval = snapshot_every, snapshot_interval
        self.snap_at = self.started  # (monotonic) the last snapshot, or the start
        self.snap_seq, self.snap_records = engine.seq, journal.records_written
        if direct:
            self._bind_front(direct, keys_dir)

    def _bind_front(self, direct: str, keys_dir: str | None) -> None:
        """Bind the direct port this replica serves once it leads, to answer ``not_leader``
        meanwhile; one that cannot be bound is a warning (clients there time out)."""
        try:
            server = None
            if keys_dir:  # secure clients must complete a handshake to hear the refusal
                store = KeyStore(keys_dir)
                self.zap = ZapHandler(self.ctx, store.registry())
                server = store.server()
            self.front = standby_front(self.ctx, self.zmq, direct, server)
        except self.zmq.ZMQError as exc:
            log.warning("standby %s cannot bind %s (%s): clients there time out instead "
                        "of hearing not_leader", self.node, direct, exc)  # fmt: skip

    def epoch_start(self) -> tuple[int, int] | None:
        """(epoch, its start seq) of the first epoch after the one our journal has seen: the
        seq our history and the leaders' since may first differ at (None: no later epoch)."""
        return later_epoch(self.journal, self.lease)

    def check_divergence(self) -> None:
        """At start: if a later epoch began at a seq below ours, our tail was never acked
        (we were the old leader and it was not replicated): ``rejoin`` cuts it off."""
        first = self.epoch_start()
        if first is not None and self.engine.seq > first[1]:
            raise Diverged(
                f"journal at seq {self.engine.seq} (epoch {self.journal.read_epoch()}) is past "
                f"the start of epoch {first[0]} (seq {first[1]})"
            )

    def rejoin(self, diverged: Diverged) -> None:
        """Our journal holds records the leaders since never had: cut it back to the start of
        the first later epoch (``journal.truncate``: the records before it are the ones that
        epoch's leader had, ours and its alike), recover what is left, and follow the leader
        from there; only what a cut cannot repair starts over from an empty journal
        (``start_over``): no snapshot at or below that seq that the records on disk continue,
        no later epoch in the lease (a ``DIV`` alone), or a seq still past the leader's."""
        try:
            first = self.epoch_start()
        except Exception as exc:  # (the lease's store unreachable: nothing to cut to)
            first = None
            log.warning("%s cannot read the epochs' starts: %s", self.node, exc)
        why = "no later epoch's start to cut at" if first is None else None
        if first is not None:
            try:
                why = self._cut(first[1], diverged.leader_seq)
            except (OSError, JournalError) as exc:  # (the start over below says it too)
                why = f"the cut failed: {exc}"
        if why is None:
            log.error("ALERT %s: %s; truncated its divergent tail at the start of epoch %d "
                      "(seq %d): recovered at seq %d, catching up from the leader from there",
                      self.node, diverged, first[0], first[1], self.engine.seq)  # fmt: skip
            return
        self.start_over(f"{diverged} (cannot truncate: {why})")

    def _cut(self, at: int, limit: int | None) -> str | None:
        """Truncate the journal at ``at`` and recover from it (None), or why that could not
        repair it (the journal is open again either way)."""
        end = self.engine.seq
        self.journal.close()
        self.journal, self.engine, plan = cut_and_recover(
            self.journal_dir, self.markets, self.fsync, self.machine, self.zmq.disk, at, end)
        engine = self.engine
        self.ring = type(self.ring)(self.ring_size)  # (its seqs go back with the engine)
        self.times = TimeMarks()
        self.snap_seq, self.snap_records = engine.seq, self.journal.records_written
        if self.sock is not None:
            self.last_sub = 0.0
        if plan.why is not None:
            return plan.why
        bound = at if limit is None else min(at, limit)
        if engine.seq > bound:
            return f"at seq {engine.seq} after the cut, past seq {bound} (the leader's)"
        return None

    def start_over(self, why: str) -> None:
        """Move the journal aside (kept for forensics) and start from an empty one."""
        self.journal.close()
        aside = f"{self.journal_dir}.diverged-{int(self.clock.time())}"
        log.error("ALERT %s: %s; moving the journal to %s and catching up from the leader",
                  self.node, why, aside)  # fmt: skip
        move_dir(self.zmq.disk, self.journal_dir, aside)
        self.journal = open_journal(self.journal_dir, self.markets, self.fsync, self.machine,
                                    self.zmq.disk)  # fmt: skip
        self.engine = self.journal.recover().engine
        self.ring = type(self.ring)(self.ring_size)  # (its seqs start over too)
        self.times = TimeMarks()
        if self.sock is not None:
            self.last_sub = 0.0

    def _follow(self, holder: Holder) -> None:
        if self.sock is not None:
            self.sock.close(0)
        # (secure: shard I's key; the leader must hold the server key)
        s = self.sock = replication_follower(self.ctx, self.zmq, self.node, self.key)
        try:
            s.connect(holder.endpoint)
        except self.zmq.ZMQError as exc:  # a garbled endpoint in the lease: wait for the next
            log.error("ALERT cannot connect to %s's replication endpoint %r: %s", holder.node,
                      holder.endpoint, exc)  # fmt: skip
        self.leader = holder
        self.last_sub = 0.0
        log.info("%s follows %s (epoch %d) at %s from seq %d", self.node, holder.node,
                 holder.epoch, holder.endpoint, self.engine.seq)  # fmt: skip

    def _send(self, kind: bytes, body: Any) -> None:
        try:
            self.sock.send_multipart([kind, encode_body(body)], self.zmq.NOBLOCK)
        except self.zmq.ZMQError:
            pass

    def start(self) -> None:
        """Once, before the first turn: a journal holding records a later epoch never had
        (we led and were not replicated) starts over."""
        try:
            self.check_divergence()
        except Diverged as exc:
            self.rejoin(exc)

    def run(self, stop: Any) -> bool:
        """The process's loop: turns until promoted (True) or told to stop (False)."""
        self.start()
        while not stop:
            if self.turn():
                return True
        return False

    def turn(self) -> bool:
        """One pass of the standby's loop: look at the lease when due (True: we hold it now,
        lead), answer clients ``not_leader``, ask the leader for what we lack, journal, apply
        and ack what came. In a process its polls wait until the next lease check is due; on
        an in-process transport (the in-memory cluster, the simulator) they never wait."""
        now = self.clock.monotonic()
        if now >= self.next_check:
            wait = self._look(now)
            if wait is None:
                return True
            self.next_check = self.clock.monotonic() + wait
        self._snapshot_when_due(now)
        until_check = max(0.0, self.next_check - self.clock.monotonic())
        if self.zap is not None:
            self.zap.serve()
        if self.front is not None:
            self.serve_clients()
        if self.sock is None:
            self._idle(until_check)
            return False
        poller = self._poller()
        if now - self.last_heard > RESYNC_S and now - self.last_sub > RESYNC_S:
            self.last_sub = now
            self._send(SUB, (self.node, self.journal.read_epoch(), self.engine.seq))
            self._send(PID, os.getpid())
        wait_ms = 0 if self.zmq.in_process else min(50, int(until_check * 1000) + 1)
        if poller.poll(wait_ms):
            try:
                self._drain()
            except Diverged as exc:
                self.rejoin(exc)
        return False

    def _snapshot_when_due(self, now: float) -> None:
        """Snapshot the state machine after ``snapshot_every`` journaled commands, or
        ``snapshot_interval`` seconds when it changed (the leader's rule, tighter by default):
        what bounds this replica's replay when it restarts. A failure is an ALERT, tried
        again after the interval, not every turn."""
        journal, engine = self.journal, self.engine
        if journal.records_written - self.snap_records < self.snapshot_every and (
            engine.seq == self.snap_seq or now - self.snap_at < self.snapshot_interval
        ):
            return
        self.snap_at = now
        t = self.clock.perf_counter()
        try:
            path = journal.snapshot(engine)
        except (JournalUnavailable, OSError) as exc:
            log.error("ALERT %s: snapshot failed (%s); will retry", self.node, exc)
            return
        log.info("%s: standby snapshot %s in %.1f ms", self.node, path.name,
                 (self.clock.perf_counter() - t) * 1000)  # fmt: skip
        self.snap_seq, self.snap_records = engine.seq, journal.records_written

    def _look(self, now: float) -> float | None:
        """``_check_lease`` with its failures handled: None when we lead now (the epoch we
        took recorded), else how long until the next look (Redis down: keep following
        whoever we follow)."""
        try:
            wait = self._check_lease()
        except Diverged as exc:  # (a new leader whose epoch began below our seq)
            self.rejoin(exc)
            return 0.0  # (then follow it, from an empty journal)
        except Exception as exc:
            if now - self.last_warned >= 5.0:  # (not every 100 ms)
                self.last_warned = now
                log.warning("lease check failed: %s", exc)
            return CHECK_LEASE_S
        if wait is None:  # we took the lease: its epoch is the journal's to record, out of
            self._record_epoch(self.lease.epoch)  # the store's catch-all (a crash is one)
        return wait

    def _idle(self, until_check: float) -> None:
        """Nobody to follow: a process waits (on the front port, if any) until the next lease
        check; an in-process node returns at once (its scheduler runs the others)."""
        if self.zmq.in_process:
            return
        if self.front is not None:
            self.front.poll(int(min(until_check, CHECK_LEASE_S / 2) * 1000) + 1)
        else:
            time.sleep(min(until_check, CHECK_LEASE_S / 2))

    def _poller(self) -> Any:
        """The poller of the socket to the leader (and the front, the ZAP socket), made
        again when that socket changed (a new leader)."""
        poller = self.poller
        if poller is None or poller.sockets[0][0] is not self.sock:
            poller = self.poller = self.zmq.Poller()
            poller.register(self.sock, self.zmq.POLLIN)
            if self.front is not None:
                poller.register(self.front, self.zmq.POLLIN)
            if self.zap is not None:
                poller.register(self.zap.sock, self.zmq.POLLIN)
        return poller

    def status(self) -> dict[str, Any]:
        """The standby's state (role, epoch, seq, whom it follows), for its refusals."""
        leader = self.leader
        return {
            ("account_shard" if self.lease.name.startswith("accounts") else "shard"):
                self.lease.shard,
            "role": "standby",
            "node": self.node,
            "epoch": self.journal.read_epoch() if self.epoch is None else self.epoch,
            "seq": self.engine.seq,
            "leader": leader.node if leader is not None else None,
            "leader_epoch": leader.epoch if leader is not None else None,
            "pid": os.getpid(),
        }

    def serve_clients(self) -> None:
        """Answer what waits on the direct port: ``not_leader`` (nothing runs here; the
        client refreshes its topology and goes to the leader), for reads too: OP_STATUS
        included, since a status answer is what the bridge (and any poller) takes as "this
        is the shard's leader" (serving it kept a bridge polling a restarted old leader's
        port, now a standby's, instead of following the new leader). The refusal says the
        standby's seq and whom it follows."""
        zmq, front = self.zmq, self.front
        error = None
        for _ in range(1000):
            try:
                frames = front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 4:  # [client, routing key, request id, payload]
                continue
            client, _, req, payload = frames
            if error is None:
                status = self.status()
                leader = self.leader
                error = not_leader_error(
                    max(status["epoch"], leader.epoch if leader is not None else 0),
                    f"{self.node} is a standby of {self.lease.label} at seq "
                    f"{status['seq']}; "
                    + (f"{leader.node} leads (epoch {leader.epoch})" if leader else "no leader"),
                )
            self.not_leader_refused += 1
            try:
                front.send_multipart([client, req, not_leader_reply(payload, error)],
                                     zmq.NOBLOCK)  # fmt: skip
            except zmq.ZMQError:
                pass  # full or gone: that client times out

    def _check_lease(self) -> float | None:
        """Take the lease if it is free and we may (None: we lead now), else follow its holder.
        Returns when to look again: the holder's remaining ttl plus a hair if sooner than
        ``CHECK_LEASE_S`` (a dead leader's lease is taken within ms of its expiry in Redis)."""
        holder, pttl = self.lease.holder_ttl()
        if holder is None:
            now = self.clock.monotonic()
            self.own_gone_at = now if self.own_gone_at is None else self.own_gone_at
            if (
                self.leader is None
                and now - max(self.started, self.own_gone_at) < START_GRACE_S
                and any(m != self.node for m in self.lease.isr())
            ):
                # Just (re)started, never followed anyone: a leader killed and restarted at
                # once found the lease free before its live standby did, and won it back: a
                # second failover for nothing, from a cold process. Leave it to the other
                # in-sync member for a grace from our start, or from when our former self's
                # lease (seen held: etcd's outlives the grace) was gone; then take it.
                if not self.deferred:
                    self.deferred = True
                    log.info("%s: the lease is free; leaving it to %s for %.1f s (just "
                             "started)", self.node, ",".join(self.lease.isr()),
                             START_GRACE_S)  # fmt: skip
                return CHECK_LEASE_S
            t0 = self.clock.monotonic()
            epoch, why = self.lease.try_acquire(self.journal.read_epoch(), self.engine.seq)
            if epoch:  # (``_look`` records it)
                self.took_at = t0
                if self.lease.thread:  # renew from now on, not after the promotion's work
                    taken = self.lease.last_renew  # (the take, on the lease's clock)
                    self.lease.start_renewer(lambda: taken)
                log.warning("%s took the lease of %s: epoch %d from seq %d", self.node,
                            self.lease.label, epoch, self.engine.seq)  # fmt: skip
                return None
            log.info("%s may not lead: %s", self.node, why)
            return CHECK_LEASE_S
        if holder.node == self.node and self.leader is None:
            self.own_gone_at = None  # our former self's (a restart): the grace runs once it goes
        if holder.node != self.node and holder != self.leader:
            if holder.epoch > self.journal.read_epoch():
                # Checked again here, not only at start: a deposed leader restarted at once
                # (kill -9, the supervisor) stands by before its successor took the lease, so
                # the start-up check saw no later epoch; and the first record of the new
                # epoch would write that epoch into our journal, hiding the divergence for
                # good (we would apply the leader's batches on top of a tail it never had).
                self.check_divergence()
            self._follow(holder)
        if pttl >= 0:
            return min(CHECK_LEASE_S, pttl / 1000 + EXPIRY_SLACK_S)
        return CHECK_LEASE_S

    def _drain(self) -> None:
        zmq = self.zmq
        journal, engine = self.journal, self.engine
        if self.epoch is None or self.epoch_of is not journal:  # (read once per journal)
            self.epoch, self.epoch_of = journal.read_epoch(), journal
        mine = self.epoch
        applied = False
        for _ in range(10_000):
            try:
                kind, body = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                self.refused("not 2 frames")
                continue
            try:
                msg = decode_body(body)
            except Exception:
                self.refused(f"unreadable {kind[:8]!r} ({len(body)} bytes)")
                continue
            if kind == DIV and type(msg) is int and 0 <= msg < engine.seq:
                self.last_heard = self.clock.monotonic()
                raise Diverged(f"the leader is at seq {msg}, below ours ({engine.seq})", msg)
            if kind != REC or type(msg) is not tuple or len(msg) != 5:
                self.refused(f"unknown {kind[:8]!r} or bad shape")
                continue
            fields = rec_fields(msg)
            if fields is None:
                self.refused("malformed record")
                continue
            epoch, seq0, seq1, crc, payload = fields
            self.last_heard = self.clock.monotonic()
            if epoch < mine:
                log.warning("refused a record of epoch %d < %d", epoch, mine)
                continue
            if epoch > mine:
                self._enter_epoch(epoch)
                mine = self.epoch = epoch
            if seq0 != engine.seq:
                if seq0 > engine.seq:  # a gap: ask again from what we have
                    self.last_heard = 0.0
                continue  # (below: a duplicate)
            if not crc_ok(crc, payload):
                self.refused(f"record at seq {seq0} failed its crc: resync")
                self.last_heard = 0.0
                continue
            applied = self._apply_record(seq0, seq1, payload) or applied
        if applied:
            self._commit_and_ack(mine)

    # -- what the standby makes durable: a journal that fails is a fail-stop (``failstop``)

    def _commit_and_ack(self, epoch: int) -> None:
        """Make what was applied durable, then ack it; a journal that cannot write acks
        nothing and exits (``JournalFailStop``)."""
        with fail_stop(self.node, "journal the leader's batch"):
            self.journal.commit()
        self._send(ACK, (epoch, self.engine.seq))

    def _enter_epoch(self, epoch: int) -> None:
        """A record of a newer epoch came: what we hold of the older one is made durable,
        then the new epoch is recorded, before anything of it is journaled."""
        with fail_stop(self.node, f"record epoch {epoch}"):
            self.journal.commit()
            self.journal.write_epoch(epoch)

    def _record_epoch(self, epoch: int) -> None:
        """We took the lease at ``epoch``: record it before anything of it is journaled. A
        journal that cannot gives the lease back and exits: nothing of the epoch exists yet,
        and a replica that cannot record its epoch must not lead (nor keep the lease from
        the other in-sync member until it expires)."""
        try:
            with fail_stop(self.node, f"record its new epoch {epoch}"):
                self.journal.write_epoch(epoch)
        except JournalFailStop:
            self.lease.release()
            raise

    def _apply_record(self, seq0: int, seq1: int, payload: bytes) -> bool:
        """Journal and apply one record of the leader's (its crc checked): True when applied;
        one that holds no command list is refused and we ask again from what we have."""
        journal, engine = self.journal, self.engine
        cmds = decode_commands(payload)
        if type(cmds) is not tuple:  # (arrays decode as tuples; the engine takes any
            # command, so only the batch's shape is checked here)
            self.refused(f"record at seq {seq0} holds no command list: resync")
            self.last_heard = 0.0
            return False
        out: list[Any] = []
        times = self.times  # (an ``OP_TIME`` heads each batch: its events have the new time)
        for cmd in cmds:
            before = engine.seq
            engine.apply(cmd, out)
            journal.add(before, cmd)
            if is_time_command(cmd):
                times.mark(engine.seq + 1, engine.ts)
        self.ring.extend(out)
        if len(times) > TIME_MARKS_PRUNE:
            times.prune(self.ring.first)
        outgoing = getattr(engine, "outgoing", None)
        if outgoing:  # (a settled engine: the rings keep them for re-sending once we
            outgoing.clear()  # lead; a standby sends no settlement itself)
        self.applied += 1
        if seq1 and engine.seq != seq1:
            raise SystemExit(f"ALERT replica diverged: seq {engine.seq} after applying a "
                             f"batch the leader ended at {seq1}")  # fmt: skip
        return True

    def close(self) -> None:
        for held in self.reserved:  # (the leader binds these next)
            held.close()
        self.reserved = []
        if self.sock is not None:
            self.sock.close(0)
        if self.front is not None:
            self.front.close(0)  # (before ctx.term: the leader binds the same port next)
            self.front = None
        if self.zap is not None:
            self.zap.close()
            self.zap = None
        self.ctx.term()
