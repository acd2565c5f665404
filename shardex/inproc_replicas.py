"""The replicated shards of an in-process cluster (``InProcCluster`` with ``plan.replicas`` 2).

Each replica of an engine or account shard is what ``shardex engine|accounts --role auto`` runs
— a ``Standby`` that follows the lease holder until it takes the lease, then the shard's leader
node (``ShardNode``/``AccountNode``) with its ``Replicator`` — as one ``FailoverNode`` whose
``turn`` the cluster's scheduler calls like any node's. Only the wiring differs from a process:
the transport and clock are the cluster's (``net``, ``net.clock``), and the lease is renewed by
the leader's own turns (``Lease(thread=False)``): a replica whose turns stop (``freeze``: a
SIGSTOP, a kill) stops renewing, and after the ttl its standby takes over, as with processes.

The lease's store is ``redis``, a ``lease.Connect``: the simulator's ``SimStore.connect`` (an
in-memory Redis on the cluster's clock), or ``lease.connect`` for a real Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardex.accounts.machines import AccountMachineFactory, settled_factory
from shardex.cli.engine import Replication
from shardex.lease import Connect, Lease
from shardex.net import Transport
from shardex.node.accounts import AccountNode, AccountsConfig
from shardex.node.failover import Build, FailoverNode, Promotion, recover_replica
from shardex.node.leader import Replicator
from shardex.node.rejoin import snapshot_cadence
from shardex.node.replication import node_name
from shardex.node.shard import ShardConfig, ShardNode
from shardex.node.shard_core import check_ownership
from shardex.node.standby import Standby


def engine_replica(cfg: ShardConfig, rep: Replication, net: Transport,
                   redis: Connect) -> FailoverNode:  # fmt: skip
    """Replica ``rep.replica`` of engine shard ``cfg.index`` (``run_replicated``'s parts)."""
    machine = settled_factory(cfg)

    def build(p: Promotion, replicate: Callable[[Any, Any], Replicator]) -> ShardNode:
        shard = ShardNode(cfg, recovered=(p.engine, p.journal), replicate=replicate, net=net)
        if p.ring.last == p.engine.seq:  # (contiguous up to now: what it applied as standby)
            shard.core.ring = p.ring
        return shard

    def check(engine: Any) -> None:
        check_ownership(engine, cfg.index, cfg.shards, cfg.journal_dir, cfg.placement)

    return _replica(cfg, "shard", rep, net, redis, machine, check, build, f"shard {cfg.index}")


def account_replica(cfg: AccountsConfig, rep: Replication, net: Transport,
                    redis: Connect) -> FailoverNode:  # fmt: skip
    """Replica ``rep.replica`` of account shard ``cfg.index`` (``run_replicated_accounts``')."""
    n = cfg.engines
    machine = AccountMachineFactory(cfg.index, cfg.shards, cfg.engine_for(), engines=n)

    def build(p: Promotion, replicate: Callable[[Any, Any], Replicator]) -> AccountNode:
        return AccountNode(cfg, recovered=(p.engine, p.journal), replicate=replicate, net=net)

    def check(m: Any) -> None:
        m.core.check_integrity()

    return _replica(cfg, "accounts", rep, net, redis, machine, check, build,
                    f"account shard {cfg.index}")  # fmt: skip


def _replica(cfg: Any, role: str, rep: Replication, net: Transport, redis: Connect,
             machine: Any, check: Callable[[Any], None], build: Build,
             what: str) -> FailoverNode:  # fmt: skip
    """The standby a replica starts as (journal recovered, lease on ``redis`` and the
    cluster's clock), wrapped in the node that leads once it holds the lease."""
    if not cfg.journal_dir:
        raise ValueError("replicated shards journal: the plan needs a data_dir")
    net.disk.makedirs(cfg.journal_dir)  # (the transport's disk: a SimDisk in the simulator)
    node = node_name(role, cfg.index, rep.replica)
    lease = Lease(redis(rep.redis_url, None), cfg.index, node, rep.repl_at,
                  name=None if role == "shard" else f"{role}-{cfg.index}", clock=net.clock,
                  thread=False)  # fmt: skip
    journal, engine = recover_replica(cfg, machine, check, net.disk, lease)
    standby = Standby(lease, cfg.journal_dir, cfg.markets, cfg.fsync, journal, engine, None,
                      getattr(cfg, "ring_size", 1 << 20), direct=cfg.direct, machine=machine,
                      net=net, **snapshot_cadence(cfg))  # fmt: skip
    return FailoverNode(cfg, role, standby, rep.repl, what, build)
