"""Hot standby replication of one engine shard (issue 15, phase 1; ``--role auto``).

Two processes serve shard I, each with its own journal directory; the Redis lease
(``shardex.lease``) decides which one leads. The leader is an ordinary ``ShardNode`` with a
``Replicator`` attached: after each group commit it ships the batch's commands
``(epoch, seq before, seq after, crc, commands)`` to the standby over a ROUTER socket, and the
batch's replies and events wait until every in-sync standby has acknowledged that seq
(high-watermark rule). The standby (``Standby``) journals and applies each batch to its own
engine (same books, same seq; the engine is deterministic) and acks the seq it has made
durable. A standby that is behind catches up from the leader's recent batches in memory, else
from its journal, before the leader adds it to the in-sync set (recorded in Redis with the
lease: only a member may take an expired lease).

A standby that misses acks for ``ISR_TIMEOUT_S`` is dropped from the in-sync set (recorded in
Redis first) and the leader goes on alone. A leader that cannot renew its lease stops replying
at its local deadline (before the Redis key can expire) and exits once Redis says the lease is
someone else's; the supervisor restarts it, and it rejoins as a standby, first discarding its
journal if it holds records the new leader never had (it was ahead: they were never acked).

Wire (this process pair only): standby → leader ``[SUB, (node, epoch, seq)]`` (hello /
resync), then ``[PID, pid]`` (its process id, for ``shardex status``; a leader that does not
know it refuses and counts it, nothing more) and ``[ACK, (epoch, seq)]``; leader → standby
``[REC, (epoch, seq before, seq after or 0, crc32, payload)]`` and ``[DIV, leader seq]``
(you hold records I do not: start over).

Security (a cluster with keys, the default): the leader's ROUTER is a CURVE server whose ZAP
domain ``replication-I`` (``shardex.auth.domain_allows``, answered by the shard process's own
ZAP handler) admits only shard I's own key, which both replicas of shard I run with; the
standby connects as a CURVE client with that key and trusts only the cluster's server key. A
client's, another shard's, an account shard's or the admin key is refused at the handshake, and
every message is checked again against the registry (a key revoked since). A message that is
not well-formed, from either side, is refused and counted (``refused``), never applied and
never a crash. ``--insecure``: none of this (a lab only).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import shutil
import socket
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardex.auth import (
    KeyFile,
    KeyStore,
    Registry,
    client_socket,
    replication_domain,
    replication_peer,
    server_socket,
    user_of,
)
from shardex.journal import Journal
from shardex.lease import Holder, Lease, LeaseLost, check_access, connect
from shardex.wire.protocol import packb, unpackb

log = logging.getLogger("shardex.replica")

SUB, ACK, REC, DIV, PID = b"SUB", b"ACK", b"REC", b"DIV", b"PID"
ISR_TIMEOUT_S = 0.5  # a member that has not acked what is committed for this long is dropped
RESYNC_S = 0.3  # a standby that heard nothing for this long says SUB again (also its heartbeat)
CHECK_LEASE_S = 0.1  # how often a standby looks at the lease (sooner when it is about to expire)
EXPIRY_SLACK_S = 0.002  # look again this long after the holder's ttl runs out
CATCHUP_RECORDS = 200  # journal records per catch-up step (then wait for the standby's ack)
RECENT_BATCHES = 8192  # batches kept in memory for a standby that fell a little behind
EXIT_LEASE_LOST = 3  # exit code of a leader that lost its lease (the supervisor restarts it)
REPLICAS = 2  # replicas per shard (``--replica 0..1``): the only node names a SUB may carry
REGISTRY_RELOAD_S = 1.0  # how often the leader re-reads the key registry (revocations)
MAX_STANDBY_MSG = 1 << 16  # SUB and ACK are tiny: a bigger message drops the connection
LOG_EVERY_S = 1.0  # refused replication messages: at most one log line per second
# A node that has just started does not take a free lease for this long while another node is
# in the in-sync set (that one is alive and about to take it): one lease ttl and a bit.
START_GRACE_S = 1.0


class Refusals:
    """Counts refused replication messages; logs the first and then at most one a second
    (a flood of garbage must not become a flood of log lines)."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.count = 0
        self.logged = 0
        self.last_log = 0.0

    def __call__(self, why: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last_log >= LOG_EVERY_S:
            log.error("ALERT %s refused %d replication message(s) (latest: %s)", self.side,
                      self.count - self.logged, why)  # fmt: skip
            self.logged, self.last_log = self.count, now


@dataclass
class Peer:
    """A standby as the leader sees it."""

    node: str
    ident: bytes
    sent: int  # everything up to this seq has been sent (or the standby said it has it)
    acked: int  # durable on the standby
    heard: float  # monotonic time of its last message
    progress: float  # last time it was caught up or its ack advanced
    waiting: float = 0.0  # a journal catch-up step is out: wait for its ack (time sent)
    # Joining the in-sync set: the committed seq when it became live (-1: not joining). While
    # joining, the high watermark waits for it too, so once it has acked the mark it holds
    # everything ever released, even under a load that never lets it be fully caught up.
    joining: int = -1
    pid: int | None = None  # its process id (``[PID, pid]``), shown by ``shardex status``


class Replicator:
    """The leader's half: ship batches, collect acks, keep the in-sync set, compute the
    high watermark. Driven by the shard's loop (no thread)."""

    def __init__(self, ctx: Any, zmq: Any, endpoint: str, lease: Lease, journal: Journal,
                 seq: int, keys_dir: str | None = None, role: str = "shard") -> None:  # fmt: skip
        """``keys_dir``: a secure cluster's key store (the socket is a CURVE server that
        admits only this shard's key; ``ctx`` must already have the process's ZAP handler);
        None: ``--insecure``. ``role``: "shard" (an engine shard) or "accounts" (an account
        shard: its own ZAP domain, node names ``accounts-J.rR`` and key role)."""
        self.zmq = zmq
        self.role = role
        self.lease = lease
        self.node = lease.node
        self.journal = journal
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted standby takes its id over
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_STANDBY_MSG)
        self.registry: Registry | None = None
        self.last_reload = 0.0
        if keys_dir:
            store = KeyStore(keys_dir)
            self.registry = store.registry()
            server_socket(self.sock, store.server(), replication_domain(lease.shard, role))
        self.refused = Refusals(f"leader {self.node}")
        self.sock.bind(endpoint)
        self.committed = seq
        self.recent: deque[tuple[int, int, bytes]] = deque(maxlen=RECENT_BATCHES)
        self.peers: dict[str, Peer] = {}
        self.isr: list[str] = [self.node]  # as recorded in Redis at the acquire
        self.changes = 0  # in-sync set changes (metrics / status)
        self.beat = time.monotonic()  # the loop's last tick (the lease renewer watches it)
        lease.start_renewer(lambda: self.beat)

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    def _send(self, peer: Peer, kind: bytes, body: Any) -> bool:
        try:
            self.sock.send_multipart([peer.ident, kind, packb(body)], self.zmq.NOBLOCK)
            return True
        except self.zmq.ZMQError:  # full or gone: the standby's SUB resyncs it
            return False

    def _rec(self, peer: Peer, seq0: int, seq1: int, payload: bytes) -> bool:
        return self._send(peer, REC, (self.epoch, seq0, seq1, zlib.crc32(payload), payload))

    def ship(self, seq0: int, cmds: list[Any], seq1: int) -> None:
        """One group commit, durable here: send it to every standby that is live-streaming."""
        payload = packb(cmds)
        self.recent.append((seq0, seq1, payload))
        self.committed = seq1
        for peer in self.peers.values():
            if peer.sent == seq0 and not peer.waiting and self._rec(peer, seq0, seq1, payload):
                peer.sent = seq1

    def hw(self) -> int:
        """Replies and events of batches up to this seq may leave."""
        hw = self.committed
        for node in self.isr:
            if node != self.node:
                peer = self.peers.get(node)
                hw = min(hw, peer.acked if peer is not None else 0)
        for peer in self.peers.values():
            if peer.joining >= 0:
                hw = min(hw, peer.acked)
        return hw

    def tick(self, now: float) -> None:
        """Read the standbys' messages, catch them up, keep the in-sync set (the lease is
        renewed by its own thread while these ticks come). Raises LeaseLost when Redis says
        the lease is someone else's."""
        self.beat = now
        self.lease.check()
        if self.registry is not None and now - self.last_reload >= REGISTRY_RELOAD_S:
            self.last_reload = now
            self.registry.reload()  # a revoked key is refused on its open connection too
        self._receive(now)
        for peer in self.peers.values():
            self._catch_up(peer, now)
        self._maintain_isr(now)

    def _receive(self, now: float) -> None:
        zmq = self.zmq
        refuse = self.refused
        # (peers are never forgotten: a SUB may only name one of the shard's replicas)
        nodes = {node_name(self.role, self.lease.shard, r) for r in range(REPLICAS)} - {self.node}
        for _ in range(10_000):
            try:
                raw = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if self.registry is not None and not replication_peer(
                self.registry.lookup(user_of(raw[-1])), self.lease.shard, self.role
            ):
                refuse("a key not of this shard (revoked?)")
                continue
            if len(raw) != 3:
                refuse(f"{len(raw)} frames")
                continue
            ident, kind, body = (f.bytes for f in raw)
            try:
                msg = unpackb(body)
            except Exception:
                refuse(f"unreadable {kind[:8]!r} ({len(body)} bytes)")
                continue
            if kind == SUB and type(msg) is tuple and len(msg) == 3:
                node, epoch, seq = msg
                if (
                    node not in nodes or type(seq) is not int or type(epoch) is not int
                    or seq < 0 or epoch < 0
                ):  # fmt: skip
                    refuse(f"bad SUB {str(msg)[:80]}")
                    continue
                if epoch > self.epoch:
                    raise LeaseLost(f"standby {node} has seen epoch {epoch} > ours {self.epoch}")
                peer = self.peers.get(node)
                if peer is None:
                    log.info("standby %s connected at seq %d (leader seq %d)", node, seq,
                             self.committed)  # fmt: skip
                    peer = self.peers[node] = Peer(node, ident, seq, seq, now, now)
                peer.ident, peer.heard = ident, now
                if seq > self.committed:
                    log.error("standby %s is ahead (seq %d > %d): it must start over", node, seq,
                              self.committed)  # fmt: skip
                    self._send(peer, DIV, self.committed)
                    continue
                peer.sent = peer.acked = seq  # what it holds durably, by its own word
                peer.waiting = 0.0
            elif kind == ACK and type(msg) is tuple and len(msg) == 2:
                epoch, seq = msg
                if type(seq) is not int or type(epoch) is not int or not 0 <= seq <= self.committed:
                    refuse(f"bad ACK {str(msg)[:80]} (committed {self.committed})")
                    continue
                for peer in self.peers.values():
                    if peer.ident == ident and epoch == self.epoch:
                        peer.heard = now
                        if seq > peer.acked:
                            peer.acked = seq
                            peer.progress = now
                        if peer.waiting:
                            peer.sent, peer.waiting = seq, 0.0
            elif kind == PID and type(msg) is int and 0 < msg < 1 << 32:
                for peer in self.peers.values():
                    if peer.ident == ident:
                        peer.pid = msg
            else:
                refuse(f"unknown {kind[:8]!r} or bad shape")

    def _catch_up(self, peer: Peer, now: float) -> None:
        if peer.sent >= self.committed:
            return
        if peer.waiting:
            if now - peer.waiting < 1.0:
                return
            peer.waiting = 0.0  # its ack got lost: send again from what it acked
            peer.sent = peer.acked
        recent = self.recent
        if recent and recent[0][0] <= peer.sent and any(b[0] == peer.sent for b in recent):
            for seq0, seq1, payload in recent:  # (a batch boundary in memory: stream from it)
                if seq0 < peer.sent:
                    continue
                if seq0 != peer.sent or not self._rec(peer, seq0, seq1, payload):
                    return
                peer.sent = seq1
            return
        records = self.journal.records(peer.sent, CATCHUP_RECORDS)
        if not records:
            log.error(
                "ALERT standby %s needs records from seq %d that the journal no longer holds "
                "(snapshot transfer is not built yet)", peer.node, peer.sent,
            )  # fmt: skip
            peer.waiting = now
            return
        for k, (seq0, payload) in enumerate(records):
            seq1 = records[k + 1][0] if k + 1 < len(records) else 0
            self._rec(peer, seq0, seq1, payload)
        peer.waiting = now

    def _maintain_isr(self, now: float) -> None:
        committed = self.committed
        for peer in self.peers.values():
            if peer.acked >= committed:
                peer.progress = now
        isr = self.isr
        for node in isr:
            peer = self.peers.get(node)
            if node == self.node:
                continue
            if peer is None or now - peer.progress > ISR_TIMEOUT_S:
                self._set_isr([n for n in isr if n != node], f"{node} dropped (no ack for "
                              f"{ISR_TIMEOUT_S:.1f}s)")  # fmt: skip
                return
        for peer in self.peers.values():
            if peer.node in isr:
                peer.joining = -1
                continue
            live = peer.sent >= committed and not peer.waiting and now - peer.heard < 1.0
            if peer.joining < 0:
                if live:
                    peer.joining, peer.progress = committed, now
            elif now - peer.progress > ISR_TIMEOUT_S or now - peer.heard > 1.0:
                peer.joining = -1  # stalled while joining: stop waiting for it
            elif peer.acked >= peer.joining:
                self._set_isr([*isr, peer.node], f"{peer.node} caught up at seq {peer.acked}")
                return

    def _set_isr(self, members: list[str], why: str) -> None:
        if self.lease.set_isr(members):  # (False: Redis unreachable; the hw keeps waiting)
            self.isr = members
            self.changes += 1
            log.warning("%s epoch %d in-sync set now %s: %s", self.lease.label,
                        self.epoch, ",".join(members), why)  # fmt: skip

    def info(self) -> dict[str, Any]:
        return {
            "role": "primary",
            "node": self.node,
            "epoch": self.epoch,
            "isr": list(self.isr),
            "lag": {p.node: self.committed - p.acked for p in self.peers.values()},
            "standby_pids": {p.node: p.pid for p in self.peers.values() if p.pid is not None},
            "repl_refused": self.refused.count,
        }

    def close(self) -> None:
        self.lease.release()  # (stops the renewer; a no-op once lost)
        self.sock.close(0)


class Diverged(Exception):
    """This node's journal holds records the leader does not: it must start over."""


class Standby:
    """The standby's loop: follow the lease holder, journal and apply its batches, ack; take
    the lease when it expires (if in the in-sync set). ``run`` returns True when promoted."""

    def __init__(self, lease: Lease, journal_dir: str, markets: Any, fsync: str,
                 journal: Journal, engine: Any, key: KeyFile | None = None,
                 ring_size: int = 1 << 20, direct: str | None = None,
                 keys_dir: str | None = None, machine: Any = None,
                 reserve: tuple[str | None, ...] = ()) -> None:  # fmt: skip
        """``key``: this shard's key pair in a secure cluster (the link to the leader is
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
        ``close``, just before the leader binds them."""
        import zmq

        from shardex.node.shard import EventRing

        self.zmq = zmq
        self.ctx = zmq.Context()
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
        self.refused = Refusals(f"standby {self.node}")
        self.took_at = 0.0  # monotonic time this node took the lease (failover phases)
        self.started = time.monotonic()
        self.deferred = False  # logged once: a free lease left to the live standby
        # The events of what it applies, as the leader keeps them (same seqs): handed to the
        # ring of the leader it becomes, so the bridge's repair of the old leader's last
        # unpublished events is served from memory. (A journal replay of that range stalled
        # new leaders' loops for seconds.)
        self.ring_size = ring_size
        self.ring = EventRing(ring_size)
        # The direct port this replica serves once it leads, bound while it stands by so a
        # client (or a stale topology) that reaches it gets ``not_leader`` at once instead of
        # a timeout (``serve_clients``). Closed before promotion.
        self.front: Any = None
        self.zap: Any = None
        self.not_leader_refused = 0
        self.reserved = [r for r in (reserve_port(ep) for ep in reserve if ep) if r is not None]
        if direct:
            front = self.ctx.socket(zmq.ROUTER)
            front.setsockopt(zmq.LINGER, 0)
            front.setsockopt(zmq.SNDHWM, 1000)
            try:
                if keys_dir:  # secure clients must complete a handshake to hear the refusal
                    from shardex.auth import DOMAIN_CLIENTS, ZapHandler, server_socket

                    store = KeyStore(keys_dir)
                    self.zap = ZapHandler(self.ctx, store.registry())
                    server_socket(front, store.server(), DOMAIN_CLIENTS)
                front.bind(direct)
                self.front = front
            except zmq.ZMQError as exc:
                front.close(0)
                log.warning("standby %s cannot bind %s (%s): clients there time out instead "
                            "of hearing not_leader", self.node, direct, exc)  # fmt: skip

    def check_divergence(self) -> None:
        """At start: if a later epoch began at a seq below ours, our tail was never acked
        (we were the old leader and it was not replicated): start over from the leader."""
        mine = self.journal.read_epoch()
        later = {e: s for e, s in self.lease.starts().items() if e > mine}
        if later and self.engine.seq > later[min(later)]:
            raise Diverged(
                f"journal at seq {self.engine.seq} (epoch {mine}) is past the start of epoch "
                f"{min(later)} (seq {later[min(later)]})"
            )

    def start_over(self, why: str) -> None:
        """Move the journal aside (kept for forensics) and start from an empty one."""
        self.journal.close()
        aside = f"{self.journal_dir}.diverged-{int(time.time())}"
        log.error("ALERT %s: %s; moving the journal to %s and catching up from the leader",
                  self.node, why, aside)  # fmt: skip
        shutil.move(self.journal_dir, aside)
        os.makedirs(self.journal_dir, exist_ok=True)
        self.journal = open_journal(self.journal_dir, self.markets, self.fsync, self.machine)
        self.engine = self.journal.recover().engine
        self.ring = type(self.ring)(self.ring_size)  # (its seqs start over too)
        if self.sock is not None:
            self.last_sub = 0.0

    def _follow(self, holder: Holder) -> None:
        if self.sock is not None:
            self.sock.close(0)
        s = self.sock = self.ctx.socket(self.zmq.DEALER)
        s.setsockopt(self.zmq.LINGER, 0)
        s.setsockopt(self.zmq.IDENTITY, self.node.encode())
        if self.key is not None:
            client_socket(s, self.key)  # shard I's key; the leader must hold the server key
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
            self.sock.send_multipart([kind, packb(body)], self.zmq.NOBLOCK)
        except self.zmq.ZMQError:
            pass

    def run(self, stop: Any) -> bool:
        try:
            self.check_divergence()
        except Diverged as exc:
            self.start_over(str(exc))
        next_check = 0.0
        poller = None
        while not stop:
            now = time.monotonic()
            if now >= next_check:
                try:
                    wait = self._check_lease()
                    if wait is None:
                        return True
                except Diverged as exc:  # (a new leader whose epoch began below our seq)
                    self.start_over(str(exc))
                    wait = 0.0  # (then follow it, from an empty journal)
                except Exception as exc:  # Redis down: keep following whoever we follow
                    wait = CHECK_LEASE_S
                    if now - self.last_warned >= 5.0:  # (not every 100 ms)
                        self.last_warned = now
                        log.warning("lease check failed: %s", exc)
                next_check = time.monotonic() + wait
            until_check = max(0.0, next_check - time.monotonic())
            if self.zap is not None:
                self.zap.serve()
            if self.front is not None:
                self.serve_clients()
            if self.sock is None:
                if self.front is not None:
                    self.front.poll(int(min(until_check, CHECK_LEASE_S / 2) * 1000) + 1)
                else:
                    time.sleep(min(until_check, CHECK_LEASE_S / 2))
                continue
            if poller is None or poller.sockets[0][0] is not self.sock:
                poller = self.zmq.Poller()
                poller.register(self.sock, self.zmq.POLLIN)
                if self.front is not None:
                    poller.register(self.front, self.zmq.POLLIN)
                if self.zap is not None:
                    poller.register(self.zap.sock, self.zmq.POLLIN)
            if now - self.last_heard > RESYNC_S and now - self.last_sub > RESYNC_S:
                self.last_sub = now
                self._send(SUB, (self.node, self.journal.read_epoch(), self.engine.seq))
                self._send(PID, os.getpid())
            if poller.poll(min(50, int(until_check * 1000) + 1)):
                try:
                    self._drain()
                except Diverged as exc:
                    self.start_over(str(exc))
        return False

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
        from shardex.node.shard import not_leader_reply
        from shardex.wire.protocol import not_leader_error

        zmq, front = self.zmq, self.front
        error = None
        for _ in range(1000):
            try:
                frames = front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 4:  # [client, routing key, request id, payload]
                continue
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
                front.send_multipart([frames[0], frames[2], not_leader_reply(frames[3], error)],
                                     zmq.NOBLOCK)  # fmt: skip
            except zmq.ZMQError:
                pass  # full or gone: that client times out

    def _check_lease(self) -> float | None:
        """Look at the lease: take it if it is free and we may (None: we lead now), else
        follow its holder. Returns when to look again: the holder's remaining ttl plus a hair
        when that is sooner than ``CHECK_LEASE_S`` (so a dead leader's lease is taken within
        a few ms of its expiry in Redis, not up to a period later)."""
        holder, pttl = self.lease.holder_ttl()
        if holder is None:
            if (
                self.leader is None
                and time.monotonic() - self.started < START_GRACE_S
                and any(m != self.node for m in self.lease.isr())
            ):
                # Just (re)started and never followed anyone: a leader killed and restarted
                # at once (the supervisor) found the lease free before its live standby's
                # expiry check took it, and won it back: safe, but a second failover for
                # nothing, served from a cold process. Leave a free lease to the other
                # in-sync member for one ttl; if nobody takes it (it is down too), take it.
                if not self.deferred:
                    self.deferred = True
                    log.info("%s: the lease is free; leaving it to %s for %.1f s (just "
                             "started)", self.node, ",".join(self.lease.isr()),
                             START_GRACE_S)  # fmt: skip
                return CHECK_LEASE_S
            t0 = time.monotonic()
            epoch, why = self.lease.try_acquire(self.journal.read_epoch(), self.engine.seq)
            if epoch:
                self.journal.write_epoch(epoch)
                self.took_at = t0
                log.warning("%s took the lease of %s: epoch %d from seq %d", self.node,
                            self.lease.label, epoch, self.engine.seq)  # fmt: skip
                return None
            log.info("%s may not lead: %s", self.node, why)
            return CHECK_LEASE_S
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
                msg = unpackb(body)
            except Exception:
                self.refused(f"unreadable {kind[:8]!r} ({len(body)} bytes)")
                continue
            if kind == DIV and type(msg) is int and 0 <= msg < engine.seq:
                self.last_heard = time.monotonic()
                raise Diverged(f"the leader is at seq {msg}, below ours ({engine.seq})")
            if kind != REC or type(msg) is not tuple or len(msg) != 5:
                self.refused(f"unknown {kind[:8]!r} or bad shape")
                continue
            epoch, seq0, seq1, crc, payload = msg
            ints = (epoch, seq0, seq1, crc)
            if not all(type(v) is int for v in ints) or type(payload) is not bytes:
                self.refused("malformed record")
                continue
            self.last_heard = time.monotonic()
            if epoch < mine:
                log.warning("refused a record of epoch %d < %d", epoch, mine)
                continue
            if epoch > mine:
                journal.commit()
                journal.write_epoch(epoch)  # before anything of that epoch is journaled
                mine = self.epoch = epoch
            if seq0 != engine.seq:
                if seq0 > engine.seq:  # a gap: ask again from what we have
                    self.last_heard = 0.0
                continue  # (below: a duplicate)
            if zlib.crc32(payload) != crc:
                self.refused(f"record at seq {seq0} failed its crc: resync")
                self.last_heard = 0.0
                continue
            try:
                cmds = unpackb(payload)
            except Exception:
                cmds = None
            if type(cmds) is not tuple:  # (arrays decode as tuples; the engine takes any
                # command, so only the batch's shape is checked here)
                self.refused(f"record at seq {seq0} holds no command list: resync")
                self.last_heard = 0.0
                continue
            out: list[Any] = []
            for cmd in cmds:
                before = engine.seq
                engine.apply(cmd, out)
                journal.add(before, cmd)
            self.ring.extend(out)
            outgoing = getattr(engine, "outgoing", None)
            if outgoing:  # (a settled engine: the rings keep them for re-sending once we
                outgoing.clear()  # lead; a standby sends no settlement itself)
            self.applied += 1
            applied = True
            if seq1 and engine.seq != seq1:
                raise SystemExit(f"ALERT replica diverged: seq {engine.seq} after applying a "
                                 f"batch the leader ended at {seq1}")  # fmt: skip
        if applied:
            journal.commit()
            self._send(ACK, (mine, engine.seq))

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


def reserve_port(endpoint: str) -> Any:
    """Hold ``endpoint``'s TCP port: a socket bound to it (never listening), so the kernel
    picks no ephemeral port there for another process's connect. None for a
    non-TCP endpoint, or when the port is taken already (the bind at promotion says so)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    host = "" if host in ("*", "0.0.0.0") else host.strip("[]")
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return None
    try:  # (no SO_REUSEADDR first: nobody else may bind it either; never listening, it leaves
        s.bind((host, int(port)))  # no TIME_WAIT behind, so the leader rebinds it at once)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return _cannot_hold(s, endpoint, exc)
        # A former leader restarted as standby: its own last connections on this port (the
        # bridge's SUB, the standby's) linger in TIME_WAIT, which refuses a plain bind on
        # every such restart. SO_REUSEADDR binds past TIME_WAIT only: a live listener still
        # refuses (a real conflict, said below), and the leader's bind (libzmq sets
        # SO_REUSEADDR too) works the same.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as again:
            return _cannot_hold(s, endpoint, again)
    except ValueError as exc:
        return _cannot_hold(s, endpoint, exc)
    return s


def _cannot_hold(s: Any, endpoint: str, exc: Exception) -> None:
    s.close()
    log.warning("cannot hold %s while standing by (%s): binding it at promotion may fail",
                endpoint, exc)  # fmt: skip


def open_journal(journal_dir: str, markets: Any, fsync: str, machine: Any = None) -> Journal:
    """A replica's journal: of the plain engine, or of ``machine`` (the account tier's
    ``SettledEngineFactory``)."""
    if machine is None:
        return Journal(journal_dir, markets, fsync=fsync)
    return Journal(journal_dir, markets, fsync=fsync, machine=machine)


def replica_dir(data_dir: str, index: int, replica: int, role: str = "shard") -> str:
    """Replica 0 keeps the classic DATA_DIR/shard-I (DATA_DIR/accounts-J); replica r > 0 uses
    DATA_DIR/shard-I.rR (DATA_DIR/accounts-J.rR)."""
    return os.path.join(data_dir, f"{role}-{index}" + (f".r{replica}" if replica else ""))


def node_name(role: str, index: int, replica: int) -> str:
    """A replica's node id in the lease and on the replication link: ``shard-I.rR`` of an
    engine shard, ``accounts-J.rR`` of an account shard."""
    return f"{role}-{index}.r{replica}"


def replica_families(rep: Replicator, refused: int, lab: list[str],
                     prefix: str = "shardex_replica") -> Any:  # fmt: skip
    """Prometheus families of a replicated leader (engine shards: ``shardex_replica_*``,
    account shards: ``shardex_accounts_replica_*``), labelled ``shard``."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    for cls, name, doc, value in (
        (GaugeMetricFamily, "epoch", "Leader epoch held", rep.epoch),
        (GaugeMetricFamily, "in_sync", "Replicas in the in-sync set (leader included)",
         len(rep.isr)),
        (CounterMetricFamily, "isr_changes", "In-sync set changes (shrink or grow)",
         rep.changes),
        (CounterMetricFamily, "refused_not_leader",
         "Requests answered not_leader while past the lease deadline (nothing ran)", refused),
        (CounterMetricFamily, "refused",
         "Replication messages refused (malformed or from a key that is not this shard's)",
         rep.refused.count),
    ):  # fmt: skip
        fam = cls(f"{prefix}_{name}", doc, labels=["shard"])
        fam.add_metric(lab, value)
        yield fam
    fam = GaugeMetricFamily(f"{prefix}_lag", "Seq the standby has not acked yet",
                            labels=["shard", "node"])  # fmt: skip
    for peer, lag in rep.info()["lag"].items():
        fam.add_metric([*lab, peer], lag)
    yield fam


def answer_not_leader(zmq: Any, sock: Any, via_router: bool, routed: bytes,
                      direct: bytes) -> int:  # fmt: skip
    """Answer every request waiting on ``sock`` with ``not_leader`` (a fenced leader: nothing
    runs, the client may send it again): a router link's batch with ``routed`` per request, a
    direct client's request with ``direct``. Bounded per call; returns the requests refused."""
    from shardex.wire.protocol import BATCH, BATCH_REQUEST_WIDTH, decode_batch, encode_batch
    from shardex.wire.transport import send_frames

    refused = 0
    for _ in range(1000):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        if via_router:
            items = None
            if len(frames) == 2 and frames[0] == BATCH:
                items = decode_batch(frames[1], BATCH_REQUEST_WIDTH)
            if not items:
                continue
            out: list[bytes] = []
            for i in range(0, len(items), BATCH_REQUEST_WIDTH):
                out += (items[i], items[i + 1], routed)
            refused += len(out) // 3
            reply = [b"", BATCH, encode_batch(out)]
        elif len(frames) == 4:
            refused += 1
            reply = [frames[0], frames[2], direct]
        else:
            continue
        try:
            send_frames(sock, reply)
        except zmq.ZMQError:
            pass  # full or gone: that client times out and asks the order's fate
    return refused


def fence(zmq: Any, rep: Replicator, what: str, sockets: list[tuple[Any, bool]],
          links: list[Any], hello_msg: bytes, fenced: bool) -> int:  # fmt: skip
    """A replicated leader past its lease deadline (fenced, or Redis unreachable), engine or
    account shard: every request waiting on ``sockets`` ((socket, via a router)) is answered
    ``not_leader`` with our epoch (nothing runs; what was admitted before the deadline stays
    held), and, the first time (``fenced`` False), each router link is told that this link
    stopped leading, so routers answer ``shard unavailable`` at once until a leader registers
    (they re-point on that leader's hello, or on ours if the lease comes back). Returns the
    requests refused."""
    from shardex.wire.protocol import NOT_LEADER, encode_reply, not_leader_error
    from shardex.wire.transport import send_frames

    why = f"{rep.node} led {what} at epoch {rep.epoch}: lease not confirmed"
    routed = encode_reply(None, not_leader_error(rep.epoch, why, routed=True))
    direct = encode_reply(None, not_leader_error(rep.epoch, why))
    refused = sum(answer_not_leader(zmq, sock, via, routed, direct) for sock, via in sockets)
    if not fenced:
        log.error("ALERT %s is past its lease deadline (epoch %d): refusing requests as not "
                  "leader", rep.node, rep.epoch)  # fmt: skip
        for link in links:
            try:
                send_frames(link.sock, [b"", NOT_LEADER, hello_msg])
            except zmq.ZMQError:
                pass
    return refused


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


def stand_by(cfg: Any, role: str, replica: int, redis_url: str, repl_advertised: str,
             machine: Any = None, check: Any = None,
             reserve: tuple[str | None, ...] = ()) -> Promotion | None:  # fmt: skip
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
    ``lease`` (``redis://lease@HOST:PORT/0``, the password from the keys dir)."""
    from shardex.node.runtime import tune_gc
    from shardex.redisauth import RedisAuthError, mask_url
    from shardex.wire.transport import StopFlag

    if not cfg.journal_dir:
        raise SystemExit("--role auto needs --data-dir (each replica journals)")
    Path(cfg.journal_dir).mkdir(parents=True, exist_ok=True)
    node = node_name(role, cfg.index, replica)
    try:
        r = connect(redis_url, cfg.keys_dir)
    except RedisAuthError as exc:
        raise SystemExit(f"the lease's Redis: {exc}") from None
    why = check_access(r)
    if why is not None:  # wrong credentials never heal by waiting: say so and stop
        hint = " (a secure cluster's is redis://lease@HOST:PORT/0)" if cfg.keys_dir else ""
        raise SystemExit(f"the lease's Redis {mask_url(redis_url)}: {why}{hint}")
    key = None
    if cfg.keys_dir:
        key = KeyStore(cfg.keys_dir).process_key(f"{role}-{cfg.index}", role, cfg.index)
    lease = Lease(r, cfg.index, node, repl_advertised,
                  name=None if role == "shard" else f"{role}-{cfg.index}")  # fmt: skip
    journal = open_journal(cfg.journal_dir, cfg.markets, cfg.fsync, machine)
    engine = journal.recover().engine
    replayed = getattr(engine, "outgoing", None)
    if replayed:  # settlements regenerated by the replay: the rings keep them, and the
        replayed.clear()  # account shards' SYNCs get them once we lead
    if check is not None:
        check(engine)
    stop = StopFlag.install()
    # The leader runs with the cyclic GC off (``tune_gc``); so does the standby, for the same
    # reason (no collector pauses while it acks) and so that promotion is fast: see below.
    gc_off = tune_gc()
    standby = Standby(lease, cfg.journal_dir, cfg.markets, cfg.fsync, journal, engine, key,
                      getattr(cfg, "ring_size", 1 << 20), direct=cfg.direct,
                      keys_dir=cfg.keys_dir, machine=machine, reserve=reserve)  # fmt: skip
    log.info("%s starts as standby at seq %d (epoch %d)", node, engine.seq, journal.read_epoch())
    try:
        promoted = standby.run(stop)
    finally:
        standby.close()
    if not promoted:
        return None
    if gc_off:  # the books built while following: frozen now (O(1)), so the ``gc.collect`` of
        gc.freeze()  # the leader's set-up scans nothing big (it cost 20–60 ms of the failover)
    took = standby.took_at or time.monotonic()
    silent = took - standby.last_heard if standby.last_heard else None
    return Promotion(node, lease, standby.journal, standby.engine, standby.ring, took, silent,
                     stop)  # fmt: skip


def _log_failover(p: Promotion, what: str) -> None:
    up = time.monotonic()
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
                                       cfg.keys_dir, role=role)  # fmt: skip


def _lead(p: Promotion, node: Any, what: str) -> None:
    """Run the leader ``node`` (a ``ShardNode`` or ``AccountNode``) a standby became: HELLO
    to the routers before the loop's set-up, the FAILOVER line, then its loop until stopped
    or the lease is lost (exit code 3: restarted, it rejoins as a standby)."""
    node.stop = p.stop
    node.hello(time.monotonic())  # register with the routers now, before the loop's set-up
    _log_failover(p, what)
    try:
        node.run()
    except LeaseLost as exc:
        log.error("ALERT %s lost the lease (%s): it stopped answering at its deadline and "
                  "exits; restarted, it rejoins as a standby", p.node, exc)  # fmt: skip
        raise SystemExit(EXIT_LEASE_LOST) from None
    finally:
        p.lease.release()  # (a no-op once lost)


def run_replicated(cfg: Any, replica: int, redis_url: str, repl_endpoint: str,
                   repl_advertised: str | None = None) -> None:  # fmt: skip
    """``shardex engine --role auto``: stand by until this node holds the lease, then lead.

    ``repl_endpoint`` is bound when leading; ``repl_advertised`` (default: the same) goes into
    the lease, where the standby on another host reads where to connect (``stand_by``)."""
    from shardex.node.shard import ShardNode, check_ownership

    machine = None
    if cfg.accounts:  # the same machine the leader journals (``ShardNode.recover``)
        from shardex.accounts.machines import SettledEngineFactory

        machine = SettledEngineFactory(cfg.index, cfg.accounts, cfg.shards)
    link = cfg.account_link if cfg.accounts else None
    p = stand_by(cfg, "shard", replica, redis_url, repl_advertised or repl_endpoint, machine,
                 lambda engine: check_ownership(engine, cfg.index, cfg.shards, cfg.journal_dir),
                 reserve=(cfg.pub, repl_endpoint, link))  # fmt: skip
    if p is None:
        return
    replicate = _leader_config(cfg, p, "shard", repl_endpoint)
    shard = ShardNode(cfg, recovered=(p.engine, p.journal), replicate=replicate)
    if p.ring.last == p.engine.seq:  # (contiguous up to now: what it applied as standby)
        shard.core.ring = p.ring
    _lead(p, shard, f"shard {cfg.index}")


def run_replicated_accounts(cfg: Any, replica: int, redis_url: str, repl_endpoint: str,
                            repl_advertised: str | None = None) -> None:  # fmt: skip
    """``shardex accounts --role auto``: account shard J as one of two replicas, the same
    standby phase and lease rules as an engine shard's (``stand_by``), then an
    ``AccountNode`` that ships each group commit and releases forwards, replies and balance
    events only at the high watermark (see ``AccountNode.flush``)."""
    from shardex.accounts.machines import AccountMachineFactory
    from shardex.node.accounts import AccountNode
    from shardex.wire.protocol import shard_for

    n = cfg.engines
    factory = AccountMachineFactory(cfg.index, cfg.shards, lambda s: shard_for(s, n), engines=n)
    p = stand_by(cfg, "accounts", replica, redis_url, repl_advertised or repl_endpoint, factory,
                 lambda machine: machine.core.check_integrity(),
                 reserve=(cfg.pub, repl_endpoint))  # fmt: skip
    if p is None:
        return
    replicate = _leader_config(cfg, p, "accounts", repl_endpoint)
    node = AccountNode(cfg, recovered=(p.engine, p.journal), replicate=replicate)
    _lead(p, node, f"account shard {cfg.index}")
