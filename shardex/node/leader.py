"""The leader's half of hot standby replication (``replication`` says the protocol): ship
each group commit to the standbys, collect their acks, keep the in-sync set in Redis and
compute the high watermark up to which a batch's replies and events may leave. Driven by the
loop of the node it is attached to (``SequencedNode``), engine or account shard alike: it
knows no concrete node."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shardex.auth import (
    KeyStore,
    Registry,
    replication_domain,
    replication_peer,
    user_of,
)
from shardex.journal import Journal, JournalUnavailable
from shardex.lease import Lease, LeaseLost
from shardex.net.roles import replication_server
from shardex.node.replication import (
    CATCHUP_RECORDS,
    ISR_TIMEOUT_S,
    MAX_STANDBY_MSG,
    RECENT_BATCHES,
    REGISTRY_RELOAD_S,
    REPLICAS,
    Refusals,
    log,
    node_name,
)
from shardex.wire.replication import (
    ACK,
    DIV,
    PID,
    REC,
    SUB,
    decode_body,
    encode_body,
    encode_commands,
    rec_body,
)

# When a replicated leader's replies may leave (``Replicator.hw``): after its own fsync
# (``local``), after the in-sync standbys acked the batch (``replicated``), or both.
DURABILITY = ("local", "replicated", "both")


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
                 seq: int, keys_dir: str | None = None, role: str = "shard",
                 durability: str = "both") -> None:  # fmt: skip
        """``keys_dir``: a secure cluster's key store (the socket is a CURVE server that
        admits only this shard's key; ``ctx`` must already have the process's ZAP handler);
        None: ``--insecure``. ``role``: "shard" (an engine shard) or "accounts" (an account
        shard: its own ZAP domain, node names ``accounts-J.rR`` and key role).
        ``durability``: when a batch's replies may leave (``hw``, ``DURABILITY``)."""
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}, got {durability!r}")
        self.durability = durability
        # replicated: our commits write and return, ``sync_behind`` syncs them after the
        # release; ``synced``: the seq our own journal holds durably (the others: committed)
        journal.sync_behind = durability == "replicated"
        self.synced = seq
        self.sync_failed = False
        if durability != "both":
            log.warning("%s leads with --durability %s", lease.node, durability)
        self.zmq = zmq
        self.role = role
        self.lease = lease
        self.node = lease.node
        self.journal = journal
        self.registry: Registry | None = None
        self.last_reload = 0.0
        server = None
        if keys_dir:
            store = KeyStore(keys_dir)
            self.registry = store.registry()
            server = store.server()
        domain = replication_domain(lease.shard, role)
        self.sock = replication_server(ctx, zmq, MAX_STANDBY_MSG, server, domain)
        self.refused = Refusals(f"leader {self.node}", lease.clock)
        self.sock.bind(endpoint)
        self.committed = seq
        self.recent: deque[tuple[int, int, bytes]] = deque(maxlen=RECENT_BATCHES)
        self.peers: dict[str, Peer] = {}
        self.isr: list[str] = [self.node]  # as recorded in Redis at the acquire
        self.changes = 0  # in-sync set changes (metrics / status)
        # the loop's last tick (the lease renewer thread watches it), on the lease's clock (the
        # node's); without a thread (the simulator) the loop's own tick renews (``tick``)
        self.beat = lease.clock.monotonic()
        if lease.thread:
            lease.start_renewer(lambda: self.beat)

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    def _send(self, peer: Peer, kind: bytes, body: Any) -> bool:
        try:
            self.sock.send_multipart([peer.ident, kind, encode_body(body)], self.zmq.NOBLOCK)
            return True
        except self.zmq.ZMQError:  # full or gone: the standby's SUB resyncs it
            return False

    def _rec(self, peer: Peer, seq0: int, seq1: int, payload: bytes) -> bool:
        return self._send(peer, REC, rec_body(self.epoch, seq0, seq1, payload))

    def ship(self, seq0: int, cmds: list[Any], seq1: int) -> None:
        """One group commit, durable here: send it to every standby that is live-streaming."""
        payload = encode_commands(cmds)
        self.recent.append((seq0, seq1, payload))
        self.committed = seq1
        for peer in self.peers.values():
            if peer.sent == seq0 and not peer.waiting and self._rec(peer, seq0, seq1, payload):
                peer.sent = seq1

    def hw(self) -> int:
        """Replies and events of batches up to this seq may leave: the release rule of the
        durability modes. ``local``: once our own commit (write + fsync) returned — the
        standbys' acks are not waited for. ``both``: that, and every in-sync standby (and one
        joining the set) has acked the batch durably. ``replicated``: every in-sync standby
        has acked it; our own fsync follows (``sync_behind``), and is what is waited for
        when no standby is in the set."""
        if self.durability == "local":
            return self.committed
        acks = [self._acked(node) for node in self.isr if node != self.node]
        acks += [peer.acked for peer in self.peers.values() if peer.joining >= 0]
        mine = self.synced if self.durability == "replicated" and len(self.isr) < 2 else (
            self.committed)  # fmt: skip
        return min([mine, *acks])

    def _acked(self, node: str) -> int:
        peer = self.peers.get(node)
        return peer.acked if peer is not None else 0

    def sync_behind(self) -> bool:
        """``replicated``: sync our own writes of the batches released without waiting for
        them (called after each release); True when ``synced`` moved. A failed sync is
        logged once and tried again at the next call (what the in-sync standby acked is
        durable there meanwhile; alone, nothing more is released)."""
        if self.durability != "replicated" or self.synced == self.committed:
            return False
        if self.journal.pending:  # a batch held by a journal that could not write: shipped,
            return False  # not written; nothing past it is durable here until it is
        mark = self.committed
        try:
            self.journal.sync_pending()
        except JournalUnavailable as exc:
            if not self.sync_failed:
                log.error("ALERT %s cannot sync its journal (%s): retrying", self.node, exc)
            self.sync_failed = True
            return False
        if self.sync_failed:
            log.warning("%s syncs its journal again", self.node)
        self.sync_failed = False
        self.synced = mark
        return True

    def tick(self, now: float) -> None:
        """Read the standbys' messages, catch them up, keep the in-sync set (the lease is
        renewed by its own thread while these ticks come, or by this tick when it has none).
        Raises LeaseLost when Redis says the lease is someone else's."""
        self.beat = now
        self.lease.tick(now)
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
                msg = decode_body(body)
            except Exception:
                refuse(f"unreadable {kind[:8]!r} ({len(body)} bytes)")
                continue
            if kind == SUB and type(msg) is tuple and len(msg) == 3:
                self._on_sub(ident, msg, nodes, now)
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

    def _on_sub(self, ident: bytes, msg: tuple, nodes: set[str], now: float) -> None:
        """A standby's hello or resync ``(node, epoch, seq)``: from here it is sent what
        follows ``seq`` (what it holds durably, by its own word); one ahead of us must start
        over (DIV); one that has seen a later epoch means we no longer lead."""
        node, epoch, seq = msg
        if (
            node not in nodes or type(seq) is not int or type(epoch) is not int
            or seq < 0 or epoch < 0
        ):  # fmt: skip
            self.refused(f"bad SUB {str(msg)[:80]}")
            return
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
            # Its tail is a history we never shipped (a deposed leader's unacked batches): what
            # it holds counts as acked or sent for nothing (else, once our own records reach
            # its seq, it would look caught up, join the in-sync set and release a batch it
            # never had) until it has cut that tail and says SUB again.
            peer.sent = peer.acked = 0
            peer.waiting = now
            self._send(peer, DIV, self.committed)
            return
        peer.sent = peer.acked = seq
        peer.waiting = 0.0

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
        self.journal.sync_behind = False  # (the journal's close syncs what is left)
        self.sock.close(0)


def replica_families(rep: Replicator, refused: int, lab: list[str],
                     prefix: str = "shardex_replica") -> Any:  # fmt: skip
    """Prometheus families of a replicated leader (engine shards: ``shardex_replica_*``,
    account shards: ``shardex_accounts_replica_*``), labelled ``shard``."""
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
