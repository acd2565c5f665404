"""Engine shard process: one pinned OS process, the single writer of its pairs' state.

``ShardCore`` is the socket-free part (decode a request, check pair ownership, apply to the pure
engine, build the reply); ``run_shard`` is the thin loop around it: drain a batch of messages
from the router and from direct clients, apply, reply, publish events. The loop never blocks on
anything downstream: PUB drops rather than waits, and a backlog past ``max_backlog`` is answered
with ``overloaded`` instead of being queued.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
from prometheus_client import REGISTRY

from shardex.accounts.machines import SettledEngine, settled_factory
from shardex.datadir import check_routing
from shardex.engine import Engine, Market, implementation
from shardex.engine.codes import Event
from shardex.journal import Journal, JournalUnavailable
from shardex.leasetime import DEFAULT_LEASE_MS
from shardex.metrics import ShardCollector, serve
from shardex.net import ZMQ, Transport
from shardex.net.recv import messages, requests
from shardex.net.roles import account_link_server, direct_port, pub_socket, router_link
from shardex.node.failover import Promotion, run_failover
from shardex.node.fencing import not_leader_reply
from shardex.node.journal_hold import JournalHold
from shardex.node.leader import Replicator
from shardex.node.moves import rehello
from shardex.node.nulljournal import NullJournal
from shardex.node.outbox import ReplyOutbox, RouterLink, outbox_families
from shardex.node.parked import ParkedCancels
from shardex.node.replication import open_journal
from shardex.node.ring import JOURNAL_READ_BUDGET
from shardex.node.runtime import exit_now, pin_to_cpu, tune_gc
from shardex.node.sequenced import SequencedNode
from shardex.node.settle_link import SettlementLink
from shardex.node.shard_core import ShardCore, check_ownership, core_for
from shardex.node.shard_metrics import ShardNodeCollector, count_liquidations
from shardex.placement.core import PlacementMap
from shardex.recovery import recover_visibly, snapshot_every_default, snapshot_interval_default
from shardex.timemarks import runs_of
from shardex.wire.layouts import EV_SYMBOL
from shardex.wire.link import encode_hello
from shardex.wire.protocol import (
    BATCH,
    BATCH_REQUEST_WIDTH,
    ERR_MALFORMED_MESSAGE,
    ERR_OVERLOADED,
    MAX_EVENTS_REPLY_BYTES,
    MAX_ROUTED_REPLY_BYTES,
    decode_batch,
    encode_events,
    encode_reply,
    markets_to_wire,
)
from shardex.wire.transport import StopFlag, send_frames

log = logging.getLogger("shardex.shard")

Replies = list[tuple[ReplyOutbox, list[bytes]]]  # (where, frames) of one batch, sent in order

RESEND_EVERY_S = 0.5  # settlements re-sent to one account shard at most this often (ResendGate)
# The journal writer thread (SHARDEX_JOURNAL_WRITER=1): off by default because on the 2-core
# box it was measured on, its two thread hand-offs per commit cost more (~100 µs p50 at 5k/s)
# than the overlap saves; a commit on the loop's thread into a preallocated segment was best.
# (See bench/journal.py --latency / --sync-micro; worth re-measuring on a machine with cores to
# spare, where the hand-offs are cheap.)
JOURNAL_WRITER = os.environ.get("SHARDEX_JOURNAL_WRITER", "") == "1"
DIRECT_HWM = 200  # replies in one direct peer's pipe (× the reply budget bounds its memory)
_MALFORMED = encode_reply(None, ERR_MALFORMED_MESSAGE)


@dataclass
class ShardConfig:
    index: int
    shards: int
    router: str | None  # router backend endpoint(s), comma-separated (None: direct clients only)
    direct: str | None  # endpoint to bind for direct clients (None: router only)
    pub: str  # endpoint to bind for the event stream
    markets: Mapping[str, Market]
    max_backlog: int = 10_000  # messages waiting in one wake-up before we shed load
    publish_every: int = 4096  # events buffered at most before a PUB flush within a wake-up
    pin: bool = True
    cpu: int | None = None
    pub_hwm: int = 100_000
    journal_dir: str | None = None  # None: in-memory only (state lost on crash)
    fsync: str = "batch"  # always | batch | none
    durability: str = "both"  # a replicated leader's release rule (``leader.DURABILITY``)
    lease_ms: int = DEFAULT_LEASE_MS  # a replica's lease ttl (``--lease-ms``, ``leasetime``)
    # journaled commands between snapshots, and seconds between snapshots when something
    # changed: together they bound a restart's replay (``shardex.recovery``)
    snapshot_every: int = field(default_factory=snapshot_every_default)
    snapshot_interval: float = field(default_factory=snapshot_interval_default)
    metrics_port: int | None = None  # Prometheus exporter; None/0: off
    ring_size: int = 1 << 20  # events kept in memory for gap repair
    # CURVE + ZAP from this key store (``shardex.auth``): the router link uses this shard's own
    # key, the direct port and PUB are CURVE servers; None: insecure (lab)
    keys_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Account tier: M account shards connect to ``account_link`` (bound here) and
    # forward orders; 0: off (orders come from clients, as before).
    accounts: int = 0
    account_link: str | None = None
    # The router link's identity (None: ``shard-I``); a replicated leader uses ``shard-I.eE`` so
    # the router can tell epochs apart.
    link_identity: str | None = None
    placement: PlacementMap | None = None  # pair → shard (None: no pins); HELLOs carry it


class ShardNode(SettlementLink, ParkedCancels, JournalHold, SequencedNode):
    """The shard process: recover, then loop drain → dispatch → flush (journal, reply, publish).

    The loop never blocks on anything downstream: PUB drops rather than waits (the bridge
    repairs by seq), replies to a full pipe wait in a bounded ``ReplyOutbox``, a backlog past
    ``max_backlog`` is answered ``overloaded``, and a journal that cannot write holds its batch
    and refuses new writes until it can (reads go on).
    """

    def __init__(
        self,
        cfg: ShardConfig,
        recovered: tuple[Engine, Journal] | None = None,
        replicate: Callable[[Any, Any], Any] | None = None,
        net: Transport = ZMQ,
    ) -> None:
        """``recovered``: an engine and journal already recovered (a promoted standby's);
        ``replicate(ctx, net)``: the ``leader.Replicator`` of a replicated leader; ``net``."""
        self.cfg = cfg
        pin = cfg.pin and not net.in_process  # (``net.in_process``: shares its process)
        self.cpu = pin_to_cpu(cfg.index, cfg.cpu, cfg.shards) if pin else None
        self.zmq = net
        self.clock = net.clock  # where it reads the time (``shardex.clock``)
        self.ctx = net.Context()
        self.open_keys("shard")
        registry = self.zap.registry if self.zap else None
        self.core = core_for(cfg, *(recovered or self.recover()), registry, net.clock)
        self.link_counts = {"forwards": 0, "duplicates": 0, "gaps": 0, "settlements": 0,
                            "resent": 0, "unsent": 0, "refused": 0, "journal": 0,
                            "messages": 0}  # fmt: skip
        self.init_link(RESEND_EVERY_S)  # (``SettlementLink``)
        self.stats = self.core.stats
        self.stats.engine = self.core.engine
        self.stats.seq = self.core.engine.seq
        self.init_loop_state(self.core.engine.seq)
        self.malformed = 0
        self.liquidations: dict[str, list[int]] = {}  # perp take-overs, ADL lots (by pair)
        self.last_resting = -math.inf  # (never: due at the first turn, whatever the clock)
        self.out: list[Event] = []
        self.replies: Replies = []
        self.held: tuple[Replies, list[Event]] | None = None
        self.held_pending = 0  # journal commands waiting with the held batch
        # Replicated leader: each batch's replies and events wait here, (seq after
        # the batch, replies, events), until the in-sync standbys have it (``release_acked``).
        self.replica: Any = replicate(self.ctx, net) if replicate is not None else None
        self.repl_wait: deque[tuple[int, Replies, list[Event]]] = deque()
        # With accounts too: each batch's settlements, (seq after the batch, [(account shard,
        # settlement)]), wait for the same high watermark (``send_settlements``): one that left
        # before the standby had its batch would be money the next leader never moved.
        self.repl_settle: deque[tuple[int, list[tuple[int, tuple]]]] = deque()
        self._sockets(net)
        self.init_parked()  # (``ParkedCancels``: with the account tier)
        if self.replica is not None:
            self.poller.register(self.replica.sock, net.POLLIN)
        self.hello_info = {
            "shard": cfg.index, "shards": cfg.shards, "pid": os.getpid(), "cpu": self.cpu,
            "direct": cfg.direct, "pub": cfg.pub, "markets": markets_to_wire(self.core.markets),
            "placement": self.core.placement.to_wire(), **cfg.extra,
        }  # fmt: skip
        self.hello_msg = encode_hello(self.hello_info)
        self.core.on_placement = lambda: rehello(self)
        self.overloaded = encode_reply(None, ERR_OVERLOADED)

    # -- start-up ---------------------------------------------------------------------------------

    def recover(self) -> tuple[Engine | None, Journal | NullJournal]:
        cfg = self.cfg
        factory = settled_factory(cfg)
        if not cfg.journal_dir:
            log.warning("shard %d has no journal: its state is lost if the process dies", cfg.index)
            return (factory.new(cfg.markets) if factory else None), NullJournal()
        check_routing(cfg.journal_dir, cfg.shards, f"engine shard {cfg.index}")
        journal = open_journal(cfg.journal_dir, cfg.markets, cfg.fsync, factory, self.zmq.disk)
        perf = self.clock.perf_counter
        t, cpu = perf(), time.process_time()
        try:
            rec = recover_visibly(
                journal.recover, f"shard {cfg.index}", self.ctx, cfg.router,
                f"shard-{cfg.index}", self.key, {"shard": cfg.index, "shards": cfg.shards,
                                                 "pid": os.getpid()}, clock=self.clock,
            )  # fmt: skip
            engine = rec.engine
            check_ownership(engine, cfg.index, cfg.shards, cfg.journal_dir, cfg.placement)
        except BaseException:
            journal.close()  # (lets go of the directory: a refusal inside one process)
            raise
        log.info(
            "recovered shard %d from %s: snapshot seq %s + %d journaled commands in %.2fs "
            "(%.2fs CPU) → seq %d, %d resting orders",
            cfg.index,
            cfg.journal_dir,
            rec.snapshot_seq,
            rec.replayed,
            perf() - t,
            time.process_time() - cpu,
            engine.seq,
            engine.resting(),
        )
        replayed = getattr(engine, "outgoing", None)
        if replayed:  # settlements the replay regenerated: the rings keep them and each
            replayed.clear()  # account shard's first SYNC gets what it lacks (sending them
            # now, before any account shard's link id is known, only counted them "unsent")
        return engine, journal

    def _sockets(self, zmq: Any) -> None:
        cfg = self.cfg
        key, server = self.key, self.server
        self.sockets: list[Any] = []
        self.outboxes: list[ReplyOutbox] = []
        self.box: dict[Any, ReplyOutbox] = {}
        # One DEALER per router (``cfg.router`` may list several, comma-separated).
        self.links: list[RouterLink] = []
        identity = cfg.link_identity or f"shard-{cfg.index}"
        for endpoint in (cfg.router or "").split(","):
            if endpoint:
                d = router_link(self.ctx, zmq, endpoint, identity, key)
                link = RouterLink(d, zmq)
                self.links.append(link)
                self._add(d, router=False, box=link)
        if cfg.direct:
            # replies: DIRECT_HWM in the pipe, then the outbox, bounded in bytes
            r = direct_port(self.ctx, zmq, cfg.direct, server, sndhwm=DIRECT_HWM,
                            rcvhwm=10_000, max_msg=64 << 20, mandatory=True)  # fmt: skip
            self._add(r, router=True)
        self.alink = None
        if cfg.accounts and cfg.account_link:
            self.alink = account_link_server(self.ctx, zmq, cfg.account_link, server)
        self.pub = pub_socket(self.ctx, zmq, cfg.pub, cfg.pub_hwm, server)
        self.poller = zmq.Poller()
        for sock in self.sockets:
            self.poller.register(sock, zmq.POLLIN)
        if self.alink is not None:
            self.poller.register(self.alink, zmq.POLLIN)
        if self.zap is not None:
            self.poller.register(self.zap.sock, zmq.POLLIN)
        # With JOURNAL_WRITER (``batch``/``always``): a writer thread makes batch k durable while
        # the loop matches batch k+1; each batch's replies and events wait in ``inflight``
        # until it is durable. Not with accounts: settlements are drawn from the engine as they
        # are produced, so one could leave before its batch is durable (money from a trade a
        # crash would erase); the loop-thread group commit never lets that happen.
        journal = self.core.journal
        self.inflight: deque[tuple[int, Replies, list[Event]]] = deque()
        self.writer_fd: int | None = None
        if (
            JOURNAL_WRITER
            and self.alink is None
            and self.replica is None  # (the replication hooks are on the loop-thread commit)
            and isinstance(journal, Journal)
            and journal.fsync != "none"
        ):
            self.writer_fd = journal.start_writer()
            self.poller.register(self.writer_fd, zmq.POLLIN)

    def _add(self, sock: Any, router: bool, box: ReplyOutbox | None = None) -> None:
        box = box or ReplyOutbox(sock, router, self.zmq)
        self.sockets.append(sock)
        self.outboxes.append(box)
        self.box[sock] = box

    # -- the loop ---------------------------------------------------------------------------------

    LABEL = "shard"
    IDLE_POLL_MS = 200

    @property
    def journal(self) -> Journal | NullJournal:
        return self.core.journal

    @property
    def machine(self) -> Engine:
        return self.core.engine

    def start(self) -> None:
        cfg = self.cfg
        if not self.zmq.in_process:  # (process-wide: not for a node sharing its process)
            REGISTRY.register(ShardCollector(self.stats))
            REGISTRY.register(ShardNodeCollector(self))
            serve(cfg.metrics_port, "engine", shard=str(cfg.index))
            tune_gc()  # after recovery: the recovered books are never scanned again
        log.info(
            "shard %d/%d up (pid %d, cpu %s, %s engine): router=%s direct=%s pub=%s",
            cfg.index, cfg.shards, os.getpid(), self.cpu, implementation(), cfg.router,
            cfg.direct, cfg.pub,
        )  # fmt: skip

    # -- the loop's hooks (``SequencedNode``) ---------------------------------------------

    def journal_held(self) -> bool:
        return self.held is not None

    def after_pump(self) -> None:
        if self.writer_fd is not None:
            self.journal_done()  # release what became durable before taking more

    def read_links(self) -> None:
        if self.alink is not None:  # forwards before client requests: a cancel
            self.from_accounts()  # sent after its order's "ok" must find it here

    def read_requests(self, now: float) -> None:
        self.run_parked(now)  # (``ParkedCancels``: before what came after them)
        self.dispatch(self.drain(), now)
        self.send_marks()

    def fence_sockets(self) -> list[tuple[Any, bool]]:
        return [(sock, type(self.box[sock]) is RouterLink) for sock in self.sockets]

    def drain(self) -> list[tuple[Any, list[bytes], str | None]]:
        """What waits on each socket now (non-blocking), bounded per wake-up, one entry per
        request (a router batch is split here), with the key id of the connection each direct
        request came on (None in insecure mode and for the router's, which carry their own)."""
        cap = 2 * self.cfg.max_backlog  # past max_backlog we only shed
        pending: list[tuple[Any, list[bytes], str | None]] = []
        secure = self.zap is not None
        for sock in self.sockets:
            if len(pending) >= cap or not self.waiting(sock):
                continue
            if type(self.box[sock]) is RouterLink:
                for frames in messages(sock, cap):
                    items = None
                    if len(frames) == 2 and frames[0] == BATCH:
                        items = decode_batch(frames[1], BATCH_REQUEST_WIDTH)
                    if items is None:
                        self.malformed += 1  # not from our router: nothing sensible to answer
                        continue
                    for i in range(0, len(items), 4):
                        pending.append((sock, items[i : i + 4], None))
                    if len(pending) >= cap:
                        break
                continue
            for frames, user in requests(sock, secure, cap - len(pending)):
                pending.append((sock, frames, user))  # (secure: the key id of the connection)
        return pending

    def dispatch(self, pending: list[tuple[Any, list[bytes], str | None]], now: float,
                 park: bool = True) -> None:  # fmt: skip
        stats = self.stats
        core = self.core
        stats.backlog = len(pending)
        stats.batch_size.add(len(pending))
        info = {
            "uptime_s": round(now - self.started, 3),
            "pid": self.pid,
            "cpu": self.cpu,
            "backlog": len(pending),
            "shed": stats.shed,
        }
        if self.replica is not None:  # role, epoch, in-sync set, lag: in ``shardex status``
            info.update(self.replica.info())
        out = self.out
        replies = self.replies
        max_backlog = self.cfg.max_backlog
        publish_every = self.cfg.publish_every
        secure = self.zap is not None
        for n, (sock, frames, user) in enumerate(pending):
            box = self.box[sock]
            routed = type(box) is RouterLink
            if routed:
                # [client identity, request id, client's key id, payload] from a router batch:
                # the key id is trusted because this link is CURVE-authenticated to the router
                head = frames[:2]
                user = frames[2].decode("ascii", "replace") if secure else None
            else:
                # [client identity, routing key, request id, payload] from a direct client
                if len(frames) != 4:
                    self.malformed += 1
                    if len(frames) >= 2:
                        req = frames[-2] if len(frames) > 2 else b""
                        box.send([frames[0], req, _MALFORMED])
                    continue
                head = [frames[0], frames[2]]
            if n >= max_backlog:
                stats.shed += 1
                replies.append((box, [*head, self.overloaded]))
            else:
                budget = MAX_ROUTED_REPLY_BYTES if routed else MAX_EVENTS_REPLY_BYTES
                reply = core.handle(frames[-1], out, info, budget, user, park)
                if reply is None:  # (``node.parked``: its order's forward is not read yet)
                    self.park((sock, frames, user), now)
                    continue
                replies.append((box, [*head, reply]))
            if len(out) >= publish_every:
                self.flush()

    def flush(self) -> None:
        """Group commit: journal the batch's commands, then reply, then publish its events.

        With the writer thread the batch is submitted and its replies and events wait in
        ``inflight`` until the writer reports it durable (``journal_done``), in batch order:
        a batch without writes waits behind the batches before it too, since its reads may
        show their state. If the journal cannot write, the batch (its replies and events) is
        held and retried; meanwhile ``ShardCore`` refuses writes and serves reads, whose
        replies go out now.
        """
        journal = self.core.journal
        self.core.new_batch()  # (what follows is the next batch: it reads the time again)
        if self.writer_fd is not None:
            if self.held is None or journal.pending:  # (down: reads only, served now)
                ticket = journal.submit()  # type: ignore[union-attr]  # ``always``: submitted
                if self.inflight or ticket > journal.durable:  # type: ignore[union-attr]
                    if self.replies or self.out:
                        self.inflight.append((ticket, self.replies, self.out))
                        self.replies = []
                        self.out = []
                    return
            self._release(self.replies, self.out)
            return
        if self.replica is not None and self.held is None:
            self.ship(journal, self.core.engine.seq)
        if self.held is None and journal.pending:
            try:
                journal.commit()
            except JournalUnavailable as exc:
                self._journal_failed(exc)
        if self.replica is not None and self.held is None:
            self.replicate()
            return
        if self.held is not None and journal.pending > self.held_pending:
            # new commands joined the held batch (they cannot: writes are refused while the
            # journal is down; kept as a safety net so nothing is acknowledged before it is durable)
            self.held_pending = journal.pending
            held_replies, held_events = self.held
            held_replies.extend(self.replies)
            held_events.extend(self.out)
            self.replies = []
            self.out = []
            return
        self._release(self.replies, self.out)

    # -- replication (``leader.Replicator``) -----------------------------------------------------

    def replicate(self) -> None:
        """After a group commit (the batch was shipped just before it): its replies and events
        wait until the in-sync standbys have it durably too (reads wait as well: they may show
        its state)."""
        seq = self.core.engine.seq
        if self.replies or self.out:
            self.repl_wait.append((seq, self.replies, self.out))
            self.replies = []
            self.out = []
        if self.alink is not None:
            engine: SettledEngine = self.core.engine  # type: ignore[assignment]
            if engine.outgoing:
                self.repl_settle.append((seq, engine.outgoing))
                engine.outgoing = []
        self.release_acked()

    def release_acked(self) -> None:
        """Release waiting batches up to the high watermark, only while our lease is valid
        (monotonic local deadline, earlier than its expiry in Redis); with accounts, then
        their settlements and the answers to SYNCs, up to the same mark."""
        if not self.replica.lease.valid():
            return
        hw = self.replica.hw()
        wait = self.repl_wait
        while wait and wait[0][0] <= hw:
            _, replies, events = wait.popleft()
            self._release(replies, events)
        if self.alink is not None:
            self.send_settlements(hw)

    def _release(self, replies: Replies, events: list[Event]) -> None:
        """Send a durable batch's replies, then publish its events (and keep them for repair)."""
        journal = self.core.journal
        if journal.last_write_s:
            stats = self.stats
            stats.journal_write.add(journal.last_write_s)
            if journal.fsync != "none":
                stats.journal_fsync.add(journal.last_fsync_s)
            journal.last_write_s = 0.0
        for box, frames in replies:
            box.send(frames)
        replies.clear()
        for link in self.links:
            link.commit()
        # (replicated: ``release_acked``); not while a batch is held: its settlements are in
        # ``engine.outgoing`` with the rest, and must not leave before it is durable
        if self.alink is not None and self.replica is None and self.held is None:
            self.send_settlements()  # (the writer thread is off with accounts: see __init__)
        if events:  # (a replicated leader stamps its epoch: the bridge drops a deposed one's;
            core = self.core  # each message its events' exchange time: a batch is one run)
            core.ring.extend(events)
            count_liquidations(self.liquidations, events)
            epoch = self.replica.epoch if self.replica is not None else None
            for ts, run in runs_of(events, core.times, core.engine.ts):
                _publish(self.pub, core.index, run, epoch, ts)
            events.clear()

    def housekeeping(self, now: float) -> None:
        core, stats = self.core, self.stats
        if self.held is None and core.expire_due(self.out):  # (an idle shard's expiries)
            self.flush()
        if self.run_parked(now):  # (past their deadline, on a quiet shard)
            self.flush()
        stats.seq = core.engine.seq
        if now - self.last_resting >= 1.0:
            stats.resting = core.engine.resting()
            self.last_resting = now
            if self.zap is not None:
                self.zap.registry.reload()  # keys added/revoked without a restart
        journal = core.journal
        if self.held is not None or not isinstance(journal, Journal):
            return
        if self.snapshot_due(now, journal, core.engine.seq):
            self.snapshot(now)

    def close(self) -> None:
        self.snapshot_at_stop()
        if self.replica is not None:
            self.replica.close()
        self.close_journal()  # the writer first writes what is queued, if it can
        if self.writer_fd is not None:
            self.journal_done()  # replies of batches that became durable: best effort
        held = len(self.held[0]) if self.held is not None else 0
        held += sum(len(r) for _, r, _ in self.inflight)
        if held:
            log.error(
                "shard %d stops with %d replies held by an unwritable journal: those commands "
                "were never acknowledged and are not in the journal",
                self.core.index, held,
            )  # fmt: skip
        for s in (*self.sockets, self.pub):
            s.close(0)
        if self.alink is not None:
            self.alink.close(0)  # an open socket would block ctx.term() (SIGTERM never ends it)
        if self.zap is not None:
            self.zap.close()
        self.ctx.term()
        log.info("shard %d stopped", self.cfg.index)


def run_shard(cfg: ShardConfig) -> None:
    """The shard's process: returns on SIGTERM/SIGINT."""
    node = ShardNode(cfg)
    node.stop = StopFlag.install()
    node.run()
    exit_now()  # stopped cleanly: skip the heap's teardown


def _publish(pub: Any, shard: int, events: list[Event], epoch: int | None, ts: int) -> None:
    """One PUB message per symbol per batch (topic = symbol), events in seq order; ``epoch``:
    a replicated leader's (None: none), ``ts`` their exchange time (``encode_events``)."""
    groups: dict[str, list[Event]] = {}
    for ev in events:
        g = groups.get(ev[EV_SYMBOL])
        if g is None:
            groups[ev[EV_SYMBOL]] = [ev]
        else:
            g.append(ev)
    for symbol, evs in groups.items():
        try:
            send_frames(pub, [symbol.encode(), encode_events(shard, evs, epoch, ts)])
        except zmq.Again:
            pass  # PUB never blocks; a subscriber repairs gaps by seq


def run_replicated(cfg: ShardConfig, replica: int, redis_url: str, repl_endpoint: str,
                   repl_advertised: str | None = None) -> None:  # fmt: skip
    """``shardex engine --role auto``: stand by until this node holds the lease, then lead
    (``failover.run_failover``) as a ``ShardNode`` built from what the standby applied."""
    machine = settled_factory(cfg)

    def build(p: Promotion, replicate: Callable[[Any, Any], Replicator]) -> ShardNode:
        shard = ShardNode(cfg, recovered=(p.engine, p.journal), replicate=replicate)
        if p.ring.last == p.engine.seq:  # (contiguous up to now: what it applied as standby)
            shard.core.ring = p.ring
            if p.times is not None:
                shard.core.times = p.times
        return shard

    link = cfg.account_link if cfg.accounts else None
    run_failover(cfg, "shard", replica, redis_url, repl_endpoint, repl_advertised,
                 f"shard {cfg.index}", build, machine,
                 lambda e: check_ownership(e, cfg.index, cfg.shards, cfg.journal_dir,
                                           cfg.placement),
                 reserve=(cfg.pub, repl_endpoint, link))  # fmt: skip


# Names other modules and tests import from here (they moved to their own modules).
__all__ = ["JOURNAL_READ_BUDGET", "NullJournal", "RouterLink", "ShardConfig", "ShardCore",
           "ShardNode", "check_ownership", "not_leader_reply", "outbox_families",
           "run_replicated", "run_shard"]  # fmt: skip
