"""Account shard process: balances and holds of the accounts with crc32 % M == J.

``AccountHandler`` is the socket-free part (decode a client request, check the key, turn it into
``AccountCore`` commands, build the reply); ``AccountNode`` is the thin loop around it, shaped
like the engine shard's ``ShardNode``: recover (snapshot + journal replay through
``shardex.journal`` with an ``AccountMachine``), then drain → apply → group commit → send.
Nothing leaves before the group commit that journals it: replies to clients, forwards to the
engine shards, answers to their ``HAVE``. Flow is one way: router → here → engine shard →
(settlements) → here; the engine link is sequenced and idempotent both ways
(``shardex.accounts.link``), repaired by ``SYNC``/``HAVE`` (see ``shardex.wire.protocol``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import zmq
from prometheus_client import REGISTRY

from shardex.accounts import implementation
from shardex.accounts.codes import (
    AE_ANOMALY,
    AE_FORWARD,
    AE_GAP,
)
from shardex.accounts.fees import FeeSchedule
from shardex.accounts.machines import (
    AccountMachine,
    AccountMachineFactory,
    _env_size,
)
from shardex.accounts.routing import due
from shardex.datadir import check_routing
from shardex.engine import Market
from shardex.journal import Journal, JournalUnavailable
from shardex.layout import LINK_REPLICAS
from shardex.leasetime import DEFAULT_LEASE_MS
from shardex.metrics import serve
from shardex.net import ZMQ, Transport
from shardex.net.recv import messages, requests
from shardex.net.roles import direct_port, engine_link, pub_socket, router_link
from shardex.node.account_metrics import AccountCollector
from shardex.node.account_service import AccountHandler
from shardex.node.failover import Promotion, run_failover
from shardex.node.forward_link import ForwardLink
from shardex.node.leader import Replicator
from shardex.node.nulljournal import NullJournal
from shardex.node.outbox import DirectPort, RouterLink
from shardex.node.replication import open_journal
from shardex.node.runtime import exit_now, tune_gc
from shardex.node.sequenced import SequencedNode
from shardex.placement.core import PlacementMap, initial
from shardex.recovery import recover_visibly, snapshot_every_default, snapshot_interval_default
from shardex.timemarks import runs_of, wall_ms
from shardex.wire.layouts import AE_KIND, AE_SEQ, GAP_ESHARD
from shardex.wire.link import encode_hello
from shardex.wire.protocol import (
    BATCH,
    BATCH_REQUEST_WIDTH,
    decode_batch,
    encode_events,
    markets_to_wire,
)
from shardex.wire.transport import StopFlag, send_frames

log = logging.getLogger("shardex.accounts")

MAX_FORWARD_RESEND = 20_000  # forwards one HAVE answer re-sends from the journal (``LinkPort``)
SYNC_EVERY_S = 1.0  # each engine link is re-synchronised this often (repairs lost messages)
SYNC_FULL_S = 0.5  # ... and this often while one is backed up (its HAVE ends the shedding)


@dataclass
class AccountsConfig:
    index: int  # J
    shards: int  # M
    engines: int  # N (symbol → engine shard: ``placement``)
    router: str  # router backend endpoint(s), comma-separated
    # engine shard i's account link endpoint, i = 0..N-1 (a replicated one: both replicas'
    # endpoints joined by ``+``, ``layout.LINK_REPLICAS``)
    engine_links: list[str]
    markets: Mapping[str, Market]
    journal_dir: str | None = None
    fsync: str = "batch"
    durability: str = "both"  # a replicated leader's release rule (``leader.DURABILITY``)
    lease_ms: int = DEFAULT_LEASE_MS  # a replica's lease ttl (``--lease-ms``, ``leasetime``)
    snapshot_every: int = field(default_factory=snapshot_every_default)
    snapshot_interval: float = field(default_factory=snapshot_interval_default)
    metrics_port: int | None = None
    keys_dir: str | None = None
    # Balance events for the bridge (phase 2): every event is published with its seq on ``pub``;
    # ``direct`` answers OP_STATUS / OP_EVENTS (range re-send from the event ring). None: off.
    pub: str | None = None
    direct: str | None = None
    pub_hwm: int = 100_000
    # Forwards to one engine shard that it has not confirmed (HAVE) before new orders and
    # amends for its symbols are refused ``overloaded``: an engine shard that is stopped,
    # wedged or slower than this shard must not make it ack (and queue) holds without bound.
    # ``SHARDEX_ACCOUNTS_MAX_UNCONFIRMED`` overrides it (tests make it small).
    max_unconfirmed: int = field(
        default_factory=lambda: _env_size("SHARDEX_ACCOUNTS_MAX_UNCONFIRMED", 50_000)
    )
    # A replicated leader (``--role auto``): what its HELLO adds (role, epoch, node,
    # advertised endpoints) and the routing id of its router links (named after its epoch,
    # as an engine shard leader's: a deposed leader's link is never the one routed to).
    extra: dict[str, Any] = field(default_factory=dict)
    link_identity: str | None = None
    placement: PlacementMap | None = None  # symbol → engine shard (None: the map without pins)
    fees: FeeSchedule | None = None  # the markets file's [fees] (None: the default tier)

    def engine_for(self) -> Callable[[str], int]:
        """Where this shard forwards a symbol's orders: the placement map's owner."""
        return (self.placement or initial(self.engines)).owner


class AccountNode(ForwardLink, SequencedNode):
    """The account shard process: recover, then loop drain → apply → commit → send.

    Replicated (``--role auto``, ``shardex.node.failover``): the leader ships each group commit
    to its standby before its own fsync, and what a batch sends (balance events, forwards to
    engine shards, replies) waits until the in-sync standbys have it (high watermark), as an
    engine shard leader's replies and events do: a forward, a reply or an event that left
    before would be money the next leader never moved. Past its lease deadline it runs
    nothing and answers ``not_leader``.
    """

    def __init__(
        self,
        cfg: AccountsConfig,
        recovered: tuple[AccountMachine, Journal] | None = None,
        replicate: Any = None,
        net: Transport = ZMQ,
    ) -> None:
        """``recovered``: a promoted standby's machine and journal; ``replicate(ctx, zmq)``:
        builds the ``leader.Replicator`` of a replicated leader; ``net``: the transport
        (``shardex.net``; the in-memory twin in one-process runs)."""
        if not 0 <= cfg.index < cfg.shards:
            raise ValueError(f"account shard {cfg.index} out of range for {cfg.shards}")
        if len(cfg.engine_links) != cfg.engines:
            raise ValueError(f"{len(cfg.engine_links)} engine links for {cfg.engines} engines")
        self.cfg = cfg
        self.zmq = net
        self.clock = net.clock  # where it reads the time (``shardex.clock``)
        self.ctx = net.Context()
        self.open_keys("accounts")
        machine, journal = recovered or self.recover()
        self.handler = AccountHandler(machine, journal, self.zap.registry if self.zap else None)
        self.handler.wall = partial(wall_ms, self.zmq.clock)  # (exchange time: once per batch)
        self.handler.new_batch()
        # (the map it starts with goes to the journal before its first write, if newer)
        self.handler.place_due = due(machine, cfg.placement or initial(cfg.engines))
        self.handler.engine_links = cfg.engines  # (the live maps it may take: account_routing)
        self.machine = machine
        self.published = machine.seq  # events up to here are journaled (and were published)
        self.out: list[tuple] = []
        self.replies: list[tuple[RouterLink, list[bytes]]] = []  # sent after the commit
        self.free: list[tuple[RouterLink, list[bytes]]] = []  # sent even if it fails
        # Engine shards heard from on their link (a HAVE or settlements): until then a forward
        # waits in ZeroMQ for the connection, and a cancel on the short path (router → engine
        # shard) could overtake it; readiness checks (``shardex up``, tests) wait for this.
        self.handler.linked = self.linked = set()
        self.counts = {"forwards": 0, "settlements": 0, "duplicates": 0, "resent": 0,
                       "unsent": 0, "malformed": 0, "unpublished": 0, "journal": 0,
                       "messages": 0}  # fmt: skip
        self.init_link(SYNC_EVERY_S, MAX_FORWARD_RESEND)  # (``ForwardLink``)
        self.init_loop_state(machine.seq)
        self.last_sync = -math.inf  # (never: the first SYNC goes at the first turn)
        # Replicated leader: each committed batch's (seq after it, events, replies) waits here
        # for the high watermark (``release_acked``); ``released``: the seq released so far.
        self.replica: Any = replicate(self.ctx, net) if replicate is not None else None
        self.handler.replica = self.replica
        self.repl_wait: deque[tuple[int, list[tuple], list[tuple[RouterLink, list[bytes]]]]] = (
            deque()
        )
        self.released = machine.seq
        self._sockets()
        if self.replica is not None:
            self.poller.register(self.replica.sock, zmq.POLLIN)

    def recover(self) -> tuple[AccountMachine, Journal | NullJournal]:
        cfg = self.cfg
        n = cfg.engines
        factory = account_factory(cfg)
        if not cfg.journal_dir:
            log.warning("account shard %d has no journal: balances are lost if it dies", cfg.index)
            return factory.new(cfg.markets), NullJournal()
        check_routing(cfg.journal_dir, n, f"account shard {cfg.index}")
        journal = open_journal(cfg.journal_dir, cfg.markets, cfg.fsync, factory, self.zmq.disk)
        perf = self.clock.perf_counter
        t, cpu = perf(), time.process_time()
        rec = recover_visibly(
            journal.recover, f"account shard {cfg.index}", self.ctx, cfg.router,
            f"accounts-{cfg.index}", self.key, {"tier": "accounts", "shard": cfg.index,
                                                "shards": cfg.shards, "pid": os.getpid()},
            clock=self.clock,
        )  # fmt: skip
        machine: AccountMachine = rec.engine  # type: ignore[assignment]
        log.info(
            "recovered account shard %d from %s: snapshot seq %s + %d journaled commands in "
            "%.2fs (%.2fs CPU) → seq %d, %d accounts, %d open orders",
            cfg.index, cfg.journal_dir, rec.snapshot_seq, rec.replayed, perf() - t,
            time.process_time() - cpu,
            machine.seq, len(machine.core.balances), len(machine.core.orders),
        )  # fmt: skip
        if rec.replayed or rec.snapshot_seq is None:  # (a restored snapshot was just checked)
            machine.core.check_integrity()  # refuse to serve books that do not balance
        return machine, journal

    def _sockets(self) -> None:
        zmq, cfg = self.zmq, self.cfg
        key, server = self.key, self.server
        identity = cfg.link_identity or f"accounts-{cfg.index}"
        self.links: list[RouterLink] = [
            RouterLink(router_link(self.ctx, zmq, endpoint, identity, key), zmq)
            for endpoint in cfg.router.split(",")
            if endpoint
        ]
        self.outboxes = self.links  # (what the loop pumps: the router links' reply batches)
        self.engines: list[Any] = [
            engine_link(self.ctx, zmq, endpoints.split(LINK_REPLICAS), f"accounts-{cfg.index}",
                        key)  # fmt: skip
            for endpoints in cfg.engine_links
        ]
        self.pub = self.direct = None
        if cfg.pub:
            self.pub = pub_socket(self.ctx, zmq, cfg.pub, cfg.pub_hwm, server)
        if cfg.direct:
            self.direct = direct_port(self.ctx, zmq, cfg.direct, server, sndhwm=1_000,
                                      rcvhwm=1_000, max_msg=1 << 20, mandatory=False)  # fmt: skip
            self.direct_box = DirectPort(self.direct, zmq)
        self.poller = zmq.Poller()
        if self.direct is not None:
            self.poller.register(self.direct, zmq.POLLIN)
        for link in self.links:
            self.poller.register(link.sock, zmq.POLLIN)
        for d in self.engines:
            self.poller.register(d, zmq.POLLIN)
        if self.zap is not None:
            self.poller.register(self.zap.sock, zmq.POLLIN)
        self.hello_msg = encode_hello({
            "tier": "accounts", "shard": cfg.index, "shards": cfg.shards,
            "engines": cfg.engines, "pid": os.getpid(), "pub": cfg.pub, "direct": cfg.direct,
            "markets": markets_to_wire(cfg.markets), **cfg.extra,
        })  # fmt: skip

    # -- the loop -------------------------------------------------------------------------------

    LABEL = "account shard"
    IDLE_POLL_MS = 100

    @property
    def journal(self) -> Journal | NullJournal:
        return self.handler.journal

    def start(self) -> None:
        cfg = self.cfg
        if not self.zmq.in_process:  # (process-wide: not for a node sharing its process)
            REGISTRY.register(AccountCollector(self))
            serve(cfg.metrics_port, "accounts", shard=str(cfg.index))
            tune_gc()
        log.info(
            "account shard %d/%d up (pid %d, %s core): router=%s engines=%s",
            cfg.index, cfg.shards, os.getpid(), implementation(), cfg.router,
            ",".join(cfg.engine_links),
        )  # fmt: skip

    # -- the loop's hooks (``SequencedNode``) ---------------------------------------------

    def journal_held(self) -> bool:
        return self.handler.journal_down is not None

    def retry_journal(self, now: float) -> None:
        self.flush()  # (the commit is retried first; held replies then leave)

    def read_links(self) -> None:
        """The engine shards' links. Their settlements are applied by the core itself and
        the machine takes their events into its rings once, after the read (as a request of
        orders: ``AccountHandler._orders``), not once per settlement."""
        handler, out = self.handler, self.out
        first = len(out)
        handler.applier = handler.core
        try:
            self.from_engines()
        finally:
            handler.applier = self.machine
            self.machine.absorb(out, first)

    def after_links(self) -> None:
        self.sync_all(self.mono())  # (after reading the links: a current have)

    def read_requests(self, now: float) -> None:
        self.from_routers()

    def after_flush(self) -> None:
        self.from_direct()

    def fence_sockets(self) -> list[tuple[Any, bool]]:
        socks = [(link.sock, True) for link in self.links]
        if self.direct is not None:
            socks.append((self.direct, False))
        return socks

    def sync_all(self, now: float) -> None:
        """The periodic SYNC to every engine shard, sent right after its link was read: an
        engine shard re-sends what follows a ``have`` that did not move since the previous
        SYNC, so a ``have`` that is stale (sent at the top of a loop turn after a long one,
        with settlements waiting unread) made it re-send everything in flight (3% of a busy
        link's settlements under CPU contention)."""
        if now - self.last_sync >= (SYNC_FULL_S if self.handler.full else SYNC_EVERY_S):
            self.last_sync = now
            for i in range(self.cfg.engines):
                self.sync(i)

    def from_routers(self) -> None:
        secure = self.zap is not None
        for link in self.links:
            if not self.waiting(link.sock):
                continue
            for frames in messages(link.sock, 10_000):
                items = None
                if len(frames) == 2 and frames[0] == BATCH:
                    items = decode_batch(frames[1], BATCH_REQUEST_WIDTH)
                if items is None:
                    self.counts["malformed"] += 1
                    continue
                handler = self.handler
                for k in range(0, len(items), 4):
                    client, req, user, payload = items[k : k + 4]
                    who = user.decode("ascii", "replace") if secure else None
                    journaled = handler.commands
                    reply = handler.handle(payload, self.out, who)
                    if handler.journal_down is not None and handler.commands == journaled:
                        # journal down and nothing of this request in it (a read, or a write
                        # refused for the journal): answered now, not held with the batch
                        # the journal could not write (which would mute the shard)
                        self.free.append((link, [client, req, reply]))
                    else:
                        self.replies.append((link, [client, req, reply]))

    def from_direct(self) -> None:
        """The bridge's status polls and range repairs (after a flush: ``published`` is
        current), and clients' requests (orders, transfers, reads: as from a router, their
        replies after a group commit here), bounded per wake-up; a malformed request is
        dropped (or answered)."""
        if self.direct is None or not self.waiting(self.direct):
            return
        secure = self.zap is not None
        handler = self.handler
        took = False
        for frames, user in requests(self.direct, secure, 100):
            if len(frames) != 4:  # [identity, routing key, request id, payload]
                self.counts["malformed"] += 1
                continue
            ident, _, req, payload = frames
            if handler.for_clients(payload):
                journaled = handler.commands
                reply = handler.handle(payload, self.out, user)
                down = handler.journal_down is not None and handler.commands == journaled
                (self.free if down else self.replies).append((self.direct_box, [ident, req, reply]))
                took = True
                continue
            reply = handler.direct(payload, user, self.published)
            self.direct_box.send([ident, req, reply])
        if took:
            self.flush()  # (now, not after the next poll: the replies wait for this commit)

    def flush(self) -> None:
        """Group commit, then forwards, replies, answers to HAVE and SYNCs for gaps.

        Replicated: the batch is shipped to the standby before our own fsync (the two
        overlap) and what it sends waits in ``repl_wait`` for the high watermark."""
        handler = self.handler
        journal = handler.journal
        handler.new_batch()  # (what follows is the next batch: it reads the time again)
        rep = self.replica
        if rep is not None and handler.journal_down is None:
            self.ship(journal, self.machine.seq)  # (a retried commit is not shipped twice)
        try:
            journal.commit()
        except JournalUnavailable as exc:
            if handler.journal_down is None:
                log.error("ALERT journal of account shard %d cannot write (%s): holding "
                          "replies, refusing writes", self.cfg.index, exc)  # fmt: skip
            handler.journal_down = str(exc)[:200] or "write failed"
            self._send_free()
            return
        if handler.journal_down is not None:
            log.warning("journal of account shard %d writes again", self.cfg.index)
            handler.journal_down = None
        for ev in self.out:
            kind = ev[AE_KIND]
            if kind == AE_GAP:
                self.tier_link.end.owed.add(ev[GAP_ESHARD])  # (SYNCed after: ``sync_owed``)
            elif kind == AE_ANOMALY:
                _, _, eshard, eseq, why = ev
                log.error("ALERT account shard %d: settlement anomaly from engine shard %s "
                          "eseq %s: %s", self.cfg.index, eshard, eseq, why)  # fmt: skip
        if rep is None:
            self._release(self.out, self.replies)
            self.released = self.machine.seq
        elif self.out or self.replies:
            self.repl_wait.append((self.machine.seq, self.out, self.replies))
            self.out, self.replies = [], []
            self.release_acked()
        self._send_free()
        if self.haves and handler.halted is None:
            self.answer_haves(self.released if rep is not None else None)
        self.sync_owed()

    def _release(self, events: list[tuple], replies: list[tuple[RouterLink, list[bytes]]]
                 ) -> None:  # fmt: skip
        """What a durable (and, replicated, acked) batch sends: its events on the PUB, its
        forwards to the engine shards, then its replies. Replies after the forwards: "ok"
        means held and forwarded, and a client may cancel at once along the short path
        (router → engine shard); the forward must be on its link before the client can even
        know the order exists."""
        handler = self.handler
        per: dict[int, list[tuple]] = {}
        if events:
            self.publish(events)
        for ev in events:
            if ev[AE_KIND] == AE_FORWARD:
                _, seq, eshard, prev, cmd = ev
                per.setdefault(eshard, []).append((seq, prev, cmd))
        events.clear()
        for i, fwds in per.items():
            self.counts["forwards"] += len(fwds)
            if handler.halted is not None:
                self.counts["unsent"] += len(fwds)  # (never a forward on a diverged chain)
                continue
            self.send_forwards(i, fwds)
        for link, frames in replies:
            link.send(frames)
        replies.clear()

    # -- replication (``leader.Replicator``) ---------------------------------------------------

    def release_acked(self) -> None:
        """Release waiting batches up to the high watermark, only while our lease is valid
        (monotonic local deadline, earlier than its expiry in Redis)."""
        rep = self.replica
        if not self.repl_wait or not rep.lease.valid():
            return
        hw = rep.hw()
        wait = self.repl_wait
        if wait[0][0] > hw:
            return
        while wait and wait[0][0] <= hw:
            seq, events, replies = wait.popleft()
            self._release(events, replies)
            self.released = seq
        for link in self.links:
            link.commit()

    def _send_free(self) -> None:
        """Replies that wait for no journal write, then every link's batch of replies."""
        for link, frames in self.free:
            link.send(frames)
        self.free.clear()
        for link in self.links:
            link.commit()

    def publish(self, events: list[tuple]) -> None:
        """Every event of a committed batch, in seq order, on the PUB (the bridge keeps the
        balance changes; it needs every seq to see that nothing is missing). PUB never blocks:
        a dropped message is a hole the bridge repairs from the ring."""
        self.published = events[-1][AE_SEQ]
        if self.pub is None:
            return
        # a replicated leader stamps its epoch (the bridge drops a deposed one's)
        epoch = self.replica.epoch if self.replica is not None else None
        machine = self.machine  # (each message carries its events' exchange time)
        for ts, run in runs_of(events, machine.times, machine.ts):
            for k in range(0, len(run), 1000):
                try:
                    payload = encode_events(self.cfg.index, run[k : k + 1000], epoch, ts)
                    send_frames(self.pub, [b"accounts", payload])
                except self.zmq.Again:
                    self.counts["unpublished"] += 1

    def housekeeping(self, now: float) -> None:
        journal = self.handler.journal
        if self.handler.journal_down is not None or not isinstance(journal, Journal):
            return
        if self.snapshot_due(now, journal, self.machine.seq):
            self.snapshot(now)

    def close(self) -> None:
        self.snapshot_at_stop()
        if self.replica is not None:
            self.replica.close()
        self.close_journal()
        for link in self.links:
            link.sock.close(0)
        for d in self.engines:
            d.close(0)
        for sock in (self.pub, self.direct):
            if sock is not None:
                sock.close(0)
        if self.zap is not None:
            self.zap.close()
        self.ctx.term()
        log.info("account shard %d stopped", self.cfg.index)


def run_accounts(cfg: AccountsConfig) -> None:
    """The account shard's process: returns on SIGTERM/SIGINT."""
    node = AccountNode(cfg)
    node.stop = StopFlag.install()
    node.run()
    exit_now()  # stopped cleanly: skip the heap's teardown


def account_factory(cfg: AccountsConfig) -> AccountMachineFactory:
    """The journal's ``Machine`` for account shard ``cfg.index``: its routing and fee
    schedule (both configuration, the same on every replica and on replay)."""
    return AccountMachineFactory(cfg.index, cfg.shards, cfg.engine_for(), engines=cfg.engines,
                                 schedule=cfg.fees)  # fmt: skip


def run_replicated_accounts(cfg: AccountsConfig, replica: int, redis_url: str,
                            repl_endpoint: str, repl_advertised: str | None = None) -> None:
    """``shardex accounts --role auto``: account shard J as one of two replicas, the same
    standby phase and lease rules as an engine shard's (``failover.run_failover``), then an
    ``AccountNode`` that ships each group commit and releases forwards, replies and balance
    events only at the high watermark (see ``AccountNode.flush``)."""
    factory = account_factory(cfg)

    def build(p: Promotion, replicate: Callable[[Any, Any], Replicator]) -> AccountNode:
        return AccountNode(cfg, recovered=(p.engine, p.journal), replicate=replicate)

    run_failover(cfg, "accounts", replica, redis_url, repl_endpoint, repl_advertised,
                 f"account shard {cfg.index}", build, factory,
                 lambda machine: machine.core.check_integrity(),
                 reserve=(cfg.pub, repl_endpoint))  # fmt: skip


__all__ = [
    "AccountHandler",
    "account_factory",
    "AccountNode",
    "AccountsConfig",
    "run_accounts",
    "run_replicated_accounts",
]
