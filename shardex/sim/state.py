"""The plain data the simulator's invariants read (``shardex.sim.invariants``): a
``ClusterState`` of engine shards, account shards, the clients' orders, the writes seen per
epoch and the stream store, and the ``Violation`` a check reports. Only lists, dicts, ints and
strings: a test builds or doctors one by hand, ``shardex.sim.extract`` takes one from live
nodes, and the checks never see a node object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shardex.engine.markets import Market

EXECUTED, NOT_EXECUTED = "executed", "not executed"  # (``shardex.client.results``' fates)
SHOW = 3  # examples named in one violation's message


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which check, and what a person needs to start looking."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@dataclass
class Order:
    """A client's record of one order it sent: what it was told.

    ``accepted``: the reply carried the engine's ``accepted`` event; ``forwarded``: the account
    tier held it and sent it on (the reply has no engine event yet); ``fate``: ``executed``,
    ``not executed``, ``unknown`` or None (never answered)."""

    client: str
    symbol: str
    id: str
    account: str | None = None
    fate: str | None = None
    accepted: bool = False
    forwarded: bool = False


@dataclass
class EngineShard:
    """One engine shard node. ``events``: its history 1..seq as published (None: not at
    hand); ``books``: ``Engine.snapshot()`` (seq, books); ``replayed``: the same snapshot of
    its journal replayed from the start (None: it has no journal)."""

    shard: int
    node: str
    seq: int
    books: dict[str, Any]
    events: list[tuple] | None = None
    replayed: dict[str, Any] | None = None
    epoch: int = 0
    leader: bool = True
    # exchange time marks ``[[seq, ts], ...]`` (``timemarks``): the node's own, from seq 1
    # (None: it does not reach back to 1), and its journal's replayed from the start
    times: list[list[int]] | None = None
    replayed_times: list[list[int]] | None = None


@dataclass
class Hold:
    """One order an account shard holds funds for: ``held`` (what it holds) and ``need``
    (what its open remainder ``rem`` can still cost, ``accounts.ledger.required``)."""

    account: str
    symbol: str
    id: str
    asset: str
    rem: int
    held: int
    need: int


@dataclass
class AccountShard:
    """One account shard node's ledger in integer units. ``balances``: account → asset →
    (available, held); ``events``: its events 1..seq (None: not at hand)."""

    shard: int
    node: str
    seq: int
    balances: dict[str, dict[str, tuple[int, int]]]
    holds: list[Hold] = field(default_factory=list)
    fees: dict[str, int] = field(default_factory=dict)
    deposited: dict[str, int] = field(default_factory=dict)
    withdrawn: dict[str, int] = field(default_factory=dict)
    flow: dict[str, int] = field(default_factory=dict)
    events: list[tuple] | None = None
    epoch: int = 0
    leader: bool = True
    anomalies: int = 0  # settlements that did not fit (``shardex audit`` fails on them)
    settlements: int = 0  # settlement messages read from the engine shards ...
    duplicates: int = 0  # ... of which it had already applied (re-sent)
    ledger: dict[str, Any] | None = None  # ``AccountCore.snapshot()`` ...
    replayed: dict[str, Any] | None = None  # ... and the same of its journal replayed
    times: list[list[int]] | None = None  # exchange time marks, as ``EngineShard``'s
    replayed_times: list[list[int]] | None = None


@dataclass(frozen=True)
class Write:
    """``node`` accepted writes (its seq moved ``first``..``last``) for ``tier`` shard
    ``shard`` under ``epoch``."""

    tier: str
    shard: int
    epoch: int
    node: str
    first: int
    last: int


@dataclass(frozen=True)
class StaleReport:
    """An account shard's SYNC that left behind what it had been given: ``have`` (the
    report's) while settlements of engine shard ``engine`` that continue it, up to
    ``unread``, waited unread in its socket; ``t``: virtual time (``shardex.sim.reports``)."""

    node: str
    engine: int
    have: int
    unread: int
    t: float


@dataclass
class ClusterState:
    """Everything the checks read. ``streams``: stream key → [(entry id, flat fields)], None
    when the run has no stream store; ``markets``: the cluster's market table."""

    engines: list[EngineShard] = field(default_factory=list)
    accounts: list[AccountShard] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    streams: dict[str, list[tuple[str, list[str]]]] | None = None
    markets: Mapping[str, Market] = field(default_factory=dict)
    # What the run did to the cluster, from the world (None: not known, those checks skip):
    # whether messages were lost (dropped connections, HWM drops), and per (tier, shard) how
    # many times its leader was lost (crashed, paused past its lease, cut off).
    lossy: bool | None = None
    leader_losses: dict[tuple[str, int], int] | None = None
    # the link reports that left stale, as they left (None: not watched, the check skips)
    stale_reports: list[StaleReport] | None = None
