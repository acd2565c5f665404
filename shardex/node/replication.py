"""Hot standby replication of one shard, engine or account (``--role auto``).

Two processes serve shard I, each with its own journal directory; the Redis lease
(``shardex.lease``) decides which one leads. The leader is an ordinary sequenced node
(``ShardNode``, ``AccountNode``) with a ``Replicator`` (``leader``) attached: after each commit
it ships the batch's commands ``(epoch, seq before, seq after, crc, commands)`` to the standby
over a ROUTER socket, and the batch's replies and events wait until every in-sync standby has
acknowledged that seq (high-watermark rule). The standby (``Standby``) journals and applies
each batch to its own engine (same books, same seq; the engine is deterministic) and acks the
seq it has made durable (the state machine is the journal's: an ``Engine``, ``SettledEngine``
or ``AccountMachine``). A standby that is behind catches up from the leader's recent batches in
memory, else from its journal, before the leader adds it to the in-sync set (recorded in Redis
with the lease: only a member may take an expired lease).

A standby that misses acks for ``ISR_TIMEOUT_S`` is dropped from the in-sync set (recorded in
Redis first) and the leader goes on alone. A leader that cannot renew its lease stops replying
at its local deadline (before the Redis key can expire) and exits once Redis says the lease is
someone else's; the supervisor restarts it, and it rejoins as a standby, first discarding its
journal if it holds records the new leader never had (it was ahead: they were never acked).

Wire (this process pair only; packed in ``shardex.wire.replication``): standby → leader
``[SUB, (node, epoch, seq)]`` (hello / resync), then ``[PID, pid]`` (its process id, for
``shardex status``; a leader that does not know it refuses and counts it, nothing more) and
``[ACK, (epoch, seq)]``; leader → standby
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
import logging
import math
import os
import socket
from typing import Any

from shardex.clock import REAL, Clock
from shardex.journal import OS_DISK, Disk, Journal

log = logging.getLogger("shardex.replica")


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
    (a flood of garbage must not become a flood of log lines). ``clock``: the node's
    (``shardex.clock``)."""

    def __init__(self, side: str, clock: Clock = REAL) -> None:
        self.side = side
        self.count = 0
        self.logged = 0
        self.last_log = -math.inf  # (never: the first refusal is logged at once)
        self._mono = clock.monotonic

    def __call__(self, why: str) -> None:
        self.count += 1
        now = self._mono()
        if now - self.last_log >= LOG_EVERY_S:
            log.error("ALERT %s refused %d replication message(s) (latest: %s)", self.side,
                      self.count - self.logged, why)  # fmt: skip
            self.logged, self.last_log = self.count, now



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


def open_journal(journal_dir: str, markets: Any, fsync: str, machine: Any = None,
                 disk: Disk = OS_DISK) -> Journal:  # fmt: skip
    """A node's journal, held for writing by this process (``Journal.hold_dir``: a second
    process on the directory stops here, before it reads or repairs anything): of the plain
    engine, or of ``machine`` (the account tier's factories), on ``disk`` (the node's
    transport's: a SimDisk in the simulator)."""
    if machine is None:
        journal = Journal(journal_dir, markets, fsync=fsync, disk=disk)
    else:
        journal = Journal(journal_dir, markets, fsync=fsync, machine=machine, disk=disk)
    journal.hold_dir()
    return journal


def replica_dir(data_dir: str, index: int, replica: int, role: str = "shard") -> str:
    """Replica 0 keeps the classic DATA_DIR/shard-I (DATA_DIR/accounts-J); replica r > 0 uses
    DATA_DIR/shard-I.rR (DATA_DIR/accounts-J.rR)."""
    return os.path.join(data_dir, f"{role}-{index}" + (f".r{replica}" if replica else ""))



def node_name(role: str, index: int, replica: int) -> str:
    """A replica's node id in the lease and on the replication link: ``shard-I.rR`` of an
    engine shard, ``accounts-J.rR`` of an account shard."""
    return f"{role}-{index}.r{replica}"

