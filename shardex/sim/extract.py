"""From live nodes to plain data: the ``ClusterState`` the invariants read
(``shardex.sim.invariants``).

This is the one place that knows the nodes' insides (an engine shard's core, ring and journal;
an account shard's ledger; a leader's replica and epoch; the SDK's ``Result``), so the checks
stay pure. It reads and never changes anything: a journal is replayed into a fresh machine
(read-only, ``journal.Replay``), a ring is copied.

Works on anything shaped like ``shardex.inproc.InProcCluster`` (``engines``, ``accounts``
lists of node objects, optional ``standbys``); a node with a ``replica`` is a replicated
leader (its epoch and node name come from there), one in ``standbys`` is not a leader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shardex.accounts.ledger import required
from shardex.engine.codes import BUY, EV_ACCEPTED
from shardex.journal import Journal, JournalError
from shardex.sim.invariants import (
    EXECUTED,
    AccountShard,
    ClusterState,
    EngineShard,
    Hold,
    Order,
)

REPLAY_STEP = 100_000  # commands replayed per step of a journal read-back


def _role(node: Any, default: str) -> tuple[str, int]:
    """(node name, epoch): a replicated leader's own, else ``default`` at epoch 0."""
    rep = getattr(node, "replica", None)
    if rep is None:
        return default, 0
    return str(getattr(rep, "node", default)), int(rep.epoch)


def _history(ring: Any, seq: int) -> list[tuple] | None:
    """Events 1..seq from an ``EventRing`` (None when it no longer reaches back to 1)."""
    if not seq:
        return []
    got = ring.get(1, seq)
    return list(got) if got is not None else None


def replay_journal(journal: Any) -> tuple[Any, list[tuple], list[list[int]] | None] | None:
    """(the journal's machine replayed from the start, its events, their exchange time marks),
    or None when the node has no journal or its start is no longer on disk (trimmed by
    snapshot retention: then it is replayed from the newest snapshot, without events or
    marks)."""
    if not isinstance(journal, Journal):
        return None
    try:
        replay = journal.replay_from(0)
        keep = True
    except JournalError:
        snaps = journal.snapshots()
        if not snaps:
            return None
        replay = journal.replay_from(1 << 62)
        keep = False
    events: list[tuple] = []
    while True:
        got = replay.step(REPLAY_STEP)
        if keep:
            events += got
        if replay.done:
            break
    times = replay.times.runs(1, replay.machine.seq) if keep else None
    return replay.machine, events if keep else [], times


def engine_shard(node: Any, leader: bool = True, replay: bool = True) -> EngineShard:
    """One engine shard node as plain data (``replay``: read its journal back too)."""
    core = node.core
    inner = getattr(core.engine, "engine", core.engine)  # (a SettledEngine wraps an Engine)
    name, epoch = _role(node, f"engine-{core.index}")
    snap = inner.snapshot()
    events = _history(core.ring, inner.seq)
    replayed = replay_journal(core.journal) if replay else None
    if replayed is not None and events is None and replayed[1]:
        events = replayed[1]
    return EngineShard(shard=core.index, node=name, seq=inner.seq, epoch=epoch, leader=leader,
                       books={"seq": snap["seq"], "books": snap["books"]}, events=events,
                       replayed=_engine_snapshot(replayed), times=core.times.runs(1, inner.seq),
                       replayed_times=replayed[2] if replayed is not None else None)  # fmt: skip


def _engine_snapshot(replayed: tuple[Any, list] | None) -> dict[str, Any] | None:
    if replayed is None:
        return None
    snap = getattr(replayed[0], "engine", replayed[0]).snapshot()  # (SettledEngine: its Engine)
    return {"seq": snap["seq"], "books": snap["books"]}


def account_shard(node: Any, leader: bool = True, replay: bool = True) -> AccountShard:
    """One account shard node's ledger as plain data (``replay``: its journal's too)."""
    machine = node.machine
    core = machine.core
    name, epoch = _role(node, f"accounts-{core.shard}")
    counts = getattr(node, "counts", {})
    holds = []
    for (acct, symbol, oid), o in sorted(core.orders.items()):
        pair = core.table.pairs[symbol]
        asset = pair.quote if o.side == BUY else pair.base
        holds.append(Hold(acct, symbol, oid, asset, o.rem, o.held, required(o, pair)))
    balances = {acct: {asset: (cell[0], cell[1]) for asset, cell in assets.items()}
                for acct, assets in core.balances.items()}  # fmt: skip
    return AccountShard(shard=core.shard, node=name, seq=core.seq, balances=balances,
                        holds=holds, fees=dict(core.fees), deposited=dict(core.deposited),
                        withdrawn=dict(core.withdrawn), flow=dict(core.flow),
                        events=_history(machine.events, core.seq), epoch=epoch,
                        leader=leader, anomalies=core.anomalies,
                        settlements=counts.get("settlements", 0),
                        duplicates=counts.get("duplicates", 0), ledger=core.snapshot(),
                        times=machine.times.runs(1, core.seq),
                        **_ledger_replayed(node, replay))  # fmt: skip


def _ledger_replayed(node: Any, replay: bool) -> dict[str, Any]:
    """``replayed`` (the ledger) and ``replayed_times`` of the node's journal replayed."""
    replayed = replay_journal(getattr(node, "journal", None)) if replay else None
    if replayed is None:
        return {"replayed": None, "replayed_times": None}
    return {"replayed": replayed[0].core.snapshot(), "replayed_times": replayed[2]}


def order_record(client: str, result: Any) -> Order | None:
    """A client's ``Result`` of a ``new`` as an ``Order`` (None for any other command)."""
    cmd = result.command
    if cmd.get("op") != "new":
        return None
    accepted = any(e.get("ev") == "accepted" for e in result.events)
    forwarded = result.error is None and not result.events and result.fate == EXECUTED
    return Order(client=client, symbol=cmd["symbol"], id=cmd["id"], account=cmd.get("account"),
                 fate=result.fate, accepted=accepted, forwarded=forwarded)  # fmt: skip


def orders_of(client: str, results: Iterable[Any]) -> list[Order]:
    """``order_record`` of every ``new`` among ``results``."""
    return [o for o in (order_record(client, r) for r in results) if o is not None]


def read_streams(store: Any, engines: int, accounts: int) -> dict[str, list]:
    """The bridge's streams of ``engines`` engine shards and ``accounts`` account shards from
    ``store`` (a redis-py client, or anything with its ``xrange``), as (id, flat fields)."""
    keys = [f"shardex:events:{i}" for i in range(engines)]
    keys += [f"shardex:balances:{j}" for j in range(accounts)]
    out: dict[str, list] = {}
    for key in keys:
        out[key] = [(_text(i), [_text(x) for kv in fields.items() for x in kv])
                    for i, fields in store.xrange(key)]  # fmt: skip
    return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def cluster_state(cluster: Any, orders: Iterable[Order] = (), streams: Any = None,
                  replay: bool = True, markets: Mapping[str, Any] | None = None,
                  ) -> ClusterState:  # fmt: skip
    """The whole cluster as plain data: its leaders and standbys, the clients' ``orders``
    and ``streams`` (``read_streams``'s, or None). ``replay=False`` skips reading journals
    back (the cheap state a continuous check needs)."""
    standbys = list(getattr(cluster, "standbys", ()))
    leading = replica_leaders(cluster)
    engines = [engine_shard(n, replay=replay) for n in [*cluster.engines, *leading["shard"]]]
    accounts = [account_shard(n, replay=replay)
                for n in [*cluster.accounts, *leading["accounts"]]]  # fmt: skip
    for n in standbys:
        if hasattr(n, "core"):
            engines.append(engine_shard(n, leader=False, replay=replay))
        elif hasattr(n, "machine"):
            accounts.append(account_shard(n, leader=False, replay=replay))
    if markets is None:
        first = [*cluster.engines, *leading["shard"]]
        markets = first[0].core.markets if first else {}
    return ClusterState(engines=engines, accounts=accounts, orders=list(orders),
                        streams=streams, markets=markets)  # fmt: skip


def replica_leaders(cluster: Any) -> dict[str, list[Any]]:
    """The leader nodes of a cluster's replicated shards (``InProcCluster.replicas``), by
    role ("shard", "accounts"): every replica that leads and has not exited -- a deposed one
    that has not noticed yet too (its epoch is older: ``invariants.leaders`` prefers the
    newest)."""
    out: dict[str, list[Any]] = {"shard": [], "accounts": []}
    for r in getattr(cluster, "replicas", ()):
        if getattr(r, "leader", None) is not None and r.exited is None:
            out[r.role].append(r.leader)
    return out


def accepted_ids(state: ClusterState) -> list[tuple[str, str]]:
    """(symbol, id) of every accepted event in the engine shards' histories (tests)."""
    return [(ev[2], ev[3]) for e in state.engines for ev in e.events or () if ev[0] == EV_ACCEPTED]
