"""Known bugs, put back one at a time: the proof that the simulator finds what it must.

Each ``Mutation`` is a named, reversible patch of production code (a monkeypatch of the
function or constant a fix changed, inverting that fix), applied only inside ``applied(name)``
(``python -m shardex.sim --mutation NAME``) and restored exactly on the way out, whatever
happened inside. A simulator that runs a mutation for a bounded number of seeds and reports no
violation has a blind spot; one that catches it says which check did.

The bugs fixed in the last round (the commit whose fix each inverts is in ``fix``):

* ``late_sync``: the account shard's periodic SYNC sent at the top of its loop turn, before
  reading its engine links, so after a long turn its ``have`` is stale and the engine shard
  re-sends everything in flight (698b19a). Caught by ``reports_current`` (the SYNC is judged
  as it leaves: ``shardex.sim.reports``), in a world whose turns cost time (``--faults
  safe,turn``); not by ``resends_bounded``, since 666b555's ``ResendGate`` re-sends only on
  a ``have`` repeated over a whole SYNC period, which a stale one alone does not make.
* ``restart_takes_lease``: a just-restarted node takes a free lease at once instead of leaving
  it to the live in-sync standby for one ttl: a second failover for nothing (260dffc).
  Caught by ``cold_failover`` (needs standbys and crashes; a crash keeps what was written,
  so the lost time, not money, is the harm: the check is the fix's own rule).
* ``link_identity_takeover``: account shard 1 connects to the engine shards' account link as
  account shard 0 and takes its pipe (31896fb: with CURVE it was shard 1's key under IDENTITY
  ``accounts-0``; the in-memory cluster runs insecure, where the identity alone names a
  shard). Shard 0's settlements go to shard 1, shard 1's forwards are refused.
* ``queued_not_executed``: a timed-out order's fate asked of its engine shard alone, the
  account shard's ``held`` ignored: an order still queued at a stopped account shard is
  counted "not executed" and then runs (fe76d23 in loadgen, f157527 in the SDK; both use
  ``FateDecisions.held_fate`` now). Caught by ``ran_at_most_once`` (needs pauses).

Three more, of our own:

* ``skip_hwm_wait``: a replicated leader releases replies, events and settlements before its
  in-sync standby has the batch (its high watermark is its own seq): a failover loses acked
  orders. Caught by ``no_anomalies`` / ``holds_match_books`` (needs standbys and crashes).
* ``write_past_lease``: a leader keeps accepting writes past its lease deadline (the fence
  that stops a paused, deposed leader): two writers for one shard. Caught by
  ``stale_writes`` (needs standbys, pauses and store outages: with the store up, a thawed
  leader's first turn renews and learns it was deposed).
* ``double_release``: an order's end releases its remaining hold twice: money appears.
  Caught at once by ``shard_money`` and ``money_conserved`` (no fault needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shardex.accounts.ledger import AVAIL
from shardex.accounts.settlements import Settlements
from shardex.client.fatesteps import FateDecisions
from shardex.engine.codes import BUY
from shardex.lease import Lease
from shardex.node import accounts as account_node
from shardex.node import standby
from shardex.node.accounts import AccountNode
from shardex.node.leader import Replicator
from shardex.node.sequenced import SequencedNode

_MISSING = object()


class Patch:
    """``owner.name = new`` until ``revert``: the attribute as it was in ``owner``'s own
    namespace comes back exactly (or is deleted again when it was inherited)."""

    def __init__(self, owner: Any, name: str, new: Any) -> None:
        self.owner, self.name, self.new = owner, name, new
        self.old: Any = _MISSING
        self.active = False

    def apply(self) -> None:
        if self.active:
            raise RuntimeError(f"{self} is already applied")
        self.old = vars(self.owner).get(self.name, _MISSING)
        setattr(self.owner, self.name, self.new)
        self.active = True

    def revert(self) -> None:
        if not self.active:
            return
        if self.old is _MISSING:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.old)
        self.active = False

    def __repr__(self) -> str:
        return f"<Patch {getattr(self.owner, '__name__', self.owner)}.{self.name}>"


@dataclass(frozen=True)
class Mutation:
    """A known bug: its ``patches`` (built fresh each time), the ``fix`` it inverts, what a
    world ``needs`` to show it, and the check expected to catch it."""

    name: str
    summary: str
    fix: str
    needs: tuple[str, ...]
    caught_by: tuple[str, ...]
    patches: Callable[[], list[Patch]]


# -- the bugs of the last round -----------------------------------------------------------------


def _late_sync() -> list[Patch]:
    def periodic(self: AccountNode, now: float) -> None:
        SequencedNode.periodic(self, now)
        self.sync_all(now)  # at the top of the turn, with ``now`` from before it: stale

    def after_links(self: AccountNode) -> None:
        pass

    return [
        Patch(AccountNode, "periodic", periodic),
        Patch(AccountNode, "after_links", after_links),
    ]


def _restart_takes_lease() -> list[Patch]:
    return [Patch(standby, "START_GRACE_S", 0.0)]


def _link_identity_takeover() -> list[Patch]:
    original = account_node.engine_link

    def engine_link(ctx: Any, zmq: Any, replicas: list[str], identity: str, key: Any) -> Any:
        return original(ctx, zmq, replicas, "accounts-0" if identity == "accounts-1" else identity,
                        key)  # fmt: skip

    return [Patch(account_node, "engine_link", engine_link)]


def _queued_not_executed() -> list[Patch]:
    def held_fate(cmd: Any, error: Any, raw: Any) -> tuple[str, Any] | None:
        return None  # the account shard's answer (held, or none: still queued) ignored

    return [Patch(FateDecisions, "held_fate", staticmethod(held_fate))]


# -- our own ------------------------------------------------------------------------------------


def _skip_hwm_wait() -> list[Patch]:
    def hw(self: Replicator) -> int:
        return self.committed  # not waiting for the in-sync standby's ack

    return [Patch(Replicator, "hw", hw)]


def _write_past_lease() -> list[Patch]:
    def valid(self: Lease, now: float | None = None) -> bool:
        return self.value is not None  # held once: valid forever (no deadline)

    return [Patch(Lease, "valid", valid)]


def _double_release() -> list[Patch]:
    original = Settlements._close

    def _close(self: Any, account: str, oid: str, o: Any, pair: Any, out: list, ref: str) -> None:
        held = o.held
        original(self, account, oid, o, pair, out, ref)
        if held:
            self._cell(account, pair.quote if o.side == BUY else pair.base)[AVAIL] += held

    return [Patch(Settlements, "_close", _close)]


MUTATIONS: dict[str, Mutation] = {
    m.name: m
    for m in (
        Mutation("late_sync", "periodic SYNC at the top of a long loop turn: a stale have",
                 "698b19a", ("accounts", "turns that cost time"), ("reports_current",),
                 _late_sync),
        Mutation("restart_takes_lease", "a restarted leader retakes a free lease before the "
                 "live in-sync standby", "260dffc", ("standbys", "crashes"),
                 ("cold_failover",), _restart_takes_lease),
        Mutation("link_identity_takeover", "account shard 1 takes account shard 0's link",
                 "31896fb", ("accounts >= 2",), ("acked_once", "holds_match_books",
                 "no_anomalies"), _link_identity_takeover),
        Mutation("queued_not_executed", "an order queued at a stopped account shard counted "
                 "'not executed'", "fe76d23", ("accounts", "pauses"), ("ran_at_most_once",),
                 _queued_not_executed),
        Mutation("skip_hwm_wait", "a leader releases before its standby has the batch", "-",
                 ("standbys", "crashes"), ("no_anomalies", "holds_match_books"), _skip_hwm_wait),
        Mutation("write_past_lease", "a leader accepts writes past its lease deadline", "-",
                 ("standbys", "pauses", "store outages"), ("stale_writes",),
                 _write_past_lease),
        Mutation("double_release", "an order's end releases its hold twice", "-",
                 ("accounts",), ("shard_money", "money_conserved"), _double_release),
    )
}  # fmt: skip


@contextmanager
def applied(name: str | None) -> Iterator[Mutation | None]:
    """Mutation ``name`` in force inside the block (None: none); every patch reverted on the
    way out, in reverse order. KeyError names the known mutations."""
    if name is None:
        yield None
        return
    if name not in MUTATIONS:
        raise KeyError(f"unknown mutation {name!r}: one of {', '.join(MUTATIONS)}")
    mutation = MUTATIONS[name]
    patches = mutation.patches()
    done: list[Patch] = []
    try:
        for p in patches:
            p.apply()
            done.append(p)
        yield mutation
    finally:
        for p in reversed(done):
            p.revert()
