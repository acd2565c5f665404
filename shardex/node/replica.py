"""Hot standby replication, as one import path: the names that used to live here, re-exported
from the modules that now own them (``replication``: the protocol, its constants and shared
helpers; ``leader``: ``Replicator``; ``standby``: ``Standby``; ``failover``: standing by and
taking over; ``fencing``: what a leader past its lease deadline answers). The runners of each
tier (``shard.run_replicated``, ``accounts.run_replicated_accounts``) live with their node:
replication knows no concrete node."""

from __future__ import annotations

from shardex.node.failover import Promotion, run_failover, stand_by
from shardex.node.fencing import answer_not_leader, fence
from shardex.node.leader import Peer, Replicator, replica_families
from shardex.node.replication import (
    CATCHUP_RECORDS,
    CHECK_LEASE_S,
    EXIT_LEASE_LOST,
    EXPIRY_SLACK_S,
    ISR_TIMEOUT_S,
    LOG_EVERY_S,
    MAX_STANDBY_MSG,
    RECENT_BATCHES,
    REGISTRY_RELOAD_S,
    REPLICAS,
    RESYNC_S,
    START_GRACE_S,
    Refusals,
    node_name,
    open_journal,
    replica_dir,
    reserve_port,
)
from shardex.node.standby import Diverged, Standby
from shardex.wire.replication import ACK, DIV, PID, REC, SUB

__all__ = [
    "ACK", "CATCHUP_RECORDS", "CHECK_LEASE_S", "DIV", "EXIT_LEASE_LOST", "EXPIRY_SLACK_S",
    "ISR_TIMEOUT_S", "LOG_EVERY_S", "MAX_STANDBY_MSG", "PID", "RECENT_BATCHES",
    "REGISTRY_RELOAD_S", "REPLICAS", "REC", "RESYNC_S", "START_GRACE_S", "SUB", "Diverged",
    "Peer", "Promotion", "Refusals", "Replicator", "Standby", "answer_not_leader", "fence",
    "node_name", "open_journal", "replica_dir", "replica_families", "reserve_port",
    "run_failover", "stand_by",
]  # fmt: skip
