"""The two journaled state machines of the account tier, in the shape ``shardex.journal`` replays.

* ``SettledEngine`` — an engine shard with accounts on: the ``Engine`` plus the
  ``SettlementFeed`` (engine events → settlements per account shard), the ``Inbox`` of forwards
  per account shard, and a bounded ring of the settlements sent on each link (re-sent on a
  ``SYNC``). Journaled commands are the engine's own plus ``(OP_FORWARD, j, seq, prev, cmd)``
  for what account shard ``j`` forwarded, so replaying the journal rebuilds all of it and
  regenerates byte-identical settlements (the account shards skip them as duplicates).
* ``AccountMachine`` — an account shard: ``AccountCore`` plus a bounded ring of the forwards it
  sent per engine shard (re-sent on a ``HAVE``), rebuilt by replay the same way.

Both are pure (no I/O, no clock); the processes in ``shardex.node`` drive them. A machine is made
by its factory's ``new(markets)`` / ``restore(state, markets)`` (``shardex.journal.Machine``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from shardex.accounts.assets import Fee
from shardex.accounts.codes import AE_FORWARD
from shardex.accounts.core import REF_WINDOW, AccountCore, account_shard_for
from shardex.accounts.feed import SettlementFeed
from shardex.accounts.fees import FeeSchedule
from shardex.accounts.link import APPLY, FORWARD, SETTLEMENT, Inbox, sent_after
from shardex.accounts.moves import carry_feed
from shardex.accounts.routing import (
    apply_place,
    is_place,
    restore_routing,
    restored,
    routing_state,
    taken,
)
from shardex.engine import Engine, Market
from shardex.engine.codes import (
    MAX_ID_LEN,
    OP_ADOPT,
    OP_AMEND,
    OP_HANDOFF,
    OP_MARGIN,
    OP_NEW,
    OP_REJECT,
    REJ_MALFORMED,
    REJ_MOVING,
    REJ_UNKNOWN_OP,
    REJ_WRONG_SHARD,
)
from shardex.journal import JournalError
from shardex.ring import EventRing
from shardex.timemarks import TIME_MARKS_PRUNE, TimeMarks, is_time_command
from shardex.wire.layouts import (
    AE_KIND,
    AE_SEQ,
    CMD_ACCOUNT,
    CMD_ID,
    CMD_OP,
    CMD_SYMBOL,
    FWD_CMD,
    FWD_ESHARD,
    FWD_PREV,
    FWD_RECORD_WIDTH,
    MARGIN_ACCOUNT,
    REJECT_CODE,
    REJECT_REASON,
    TIME_TS,
)
from shardex.wire.protocol import MAX_SYMBOL_LEN, OP_FORWARD, OP_PLACE, edge_command, shard_for

RING = 100_000  # messages kept per link for re-sending (older ones: from the journal)
SNAP_RING = 10_000  # of them, kept in a snapshot (so a restart can still re-send recent ones)
EVENT_RING = 200_000  # account shard events kept for the bridge's range repairs (OP_EVENTS)


def _env_size(name: str, default: int) -> int:
    """A ring size from the environment (``SHARDEX_LINK_RING``, ``SHARDEX_EVENT_RING``), else
    ``default``. Read when a machine is made, so a test can make the rings tiny for the
    processes it starts and exercise the journal-backed re-send; a bad value is an error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer >= 1") from None
    if size < 1:
        raise ValueError(f"{name}={raw!r}: expected an integer >= 1")
    return size


def ref_window() -> int:
    """Transfer refs an account shard remembers (its dedup window): ``SHARDEX_REF_WINDOW`` or
    ``core.REF_WINDOW``. Taken when an account shard's state is first created; a restored
    state keeps the window it was journaled under (see ``AccountCore.restore``)."""
    return _env_size("SHARDEX_REF_WINDOW", REF_WINDOW)


def link_ring() -> int:
    """Messages kept in memory per link (settlements per account shard, forwards per engine
    shard): ``SHARDEX_LINK_RING`` or ``RING``."""
    return _env_size("SHARDEX_LINK_RING", RING)


def event_ring() -> int:
    """Account shard events kept in memory for the bridge: ``SHARDEX_EVENT_RING`` or
    ``EVENT_RING``."""
    return _env_size("SHARDEX_EVENT_RING", EVENT_RING)


class SettledEngine:
    """Engine shard ``eshard``'s state with accounts on (see the module docstring).

    Everything the shard reads from its engine (books, order status, seq, resting) is
    delegated to the wrapped ``Engine``; ``apply`` appends only the engine's events to ``out``
    (so the event stream, the ring and the journal's event re-generation are unchanged) and
    queues the settlements in ``outgoing`` for the process to send after its group commit.
    """

    def __init__(
        self, engine: Engine, eshard: int, accounts: int, engines: int | None = None,
        owner_of: Callable[[str], int] | None = None,
    ) -> None:  # fmt: skip
        """``owner_of``: the cluster's symbol -> engine shard (its placement map's ``owner``;
        None: the map without pins over ``engines``)."""
        self.engine = engine
        self.feed = SettlementFeed(eshard, accounts)
        # N, for the check that a forwarded symbol is this engine shard's (None: unchecked)
        self.engines = engines
        self._owner: dict[str, int] = {}  # symbol → engine shard (cache of ``owner_of``)
        self.owner_of = owner_of
        self.inbox = Inbox()  # forwards: last seq applied per account shard
        self.ring_size = link_ring()
        self.rings: dict[int, deque[tuple]] = {}
        self.outgoing: list[tuple[int, tuple]] = []  # (account shard, settlement) to send
        self.anomalies = 0  # events the feed could not place (an order it never saw): ALERT
        self.refusals = 0  # forwards refused before the engine (settled, but ALERT: config)
        # the forward being applied when its caller already found it of the wire's shape
        # (``edge_command`` passed it unchanged: the same object), so ``refusal`` does not check
        # it again; None on replay, where the check runs (same verdict: it is pure)
        self.vetted: Any = None
        # the forward record being applied when its caller found the link's verdict APPLY just
        # before (``forward_verdict``: the same inbox, nothing applied in between), so ``apply``
        # does not ask the inbox again; None on replay, where the check runs
        self.linked: Any = None
        # the journaled map forwards are checked against (``accounts.routing``; None: owner_of)
        self.placement: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    @property
    def seq(self) -> int:
        return self.engine.seq

    @property
    def forward_verdict(self) -> Callable[[int, int, int], int]:
        """``link.APPLY`` / ``DUPLICATE`` / ``GAP`` for a forward ``(j, seq, prev)``, without
        applying it: the inbox's own check (the node reads it once per wake-up, so there is no
        wrapper call per forward)."""
        return self.inbox.check

    def apply(self, cmd: Any, out: list[tuple]) -> None:
        start = len(out)
        if type(cmd) is tuple and len(cmd) == FWD_RECORD_WIDTH and cmd[CMD_OP] == OP_FORWARD:
            _, j, seq, prev, inner = cmd
            if cmd is not self.linked and self.inbox.check(j, seq, prev) != APPLY:
                return  # a duplicate or a gap: nothing happens (the process asks for a re-send)
            self.inbox.applied(j, seq)
            refused = self.refusal(j, inner)
            if refused is None:
                self.engine.apply(inner, out)
            else:
                # Refused here, before the engine: the engine still records the reject (it gets
                # a seq, is published and replays identically) and the feed settles it back to
                # account shard j, which releases the hold it took (``S_REJECTED``, cause seq).
                self.refusals += 1
                sym, oid = _at(inner, CMD_SYMBOL), _at(inner, CMD_ID)
                self.engine.apply(
                    (OP_REJECT, _bounded(sym, MAX_SYMBOL_LEN), _bounded(oid, MAX_ID_LEN),
                     *refused), out,
                )  # fmt: skip
            self._route(inner, out[start:], seq, j)
        elif is_time_command(cmd):
            self.engine.apply(cmd, out)  # (exchange time: no event, nothing to settle)
        elif type(cmd) is tuple and cmd and cmd[CMD_OP] in (OP_HANDOFF, OP_ADOPT):
            carry_feed(self.engine, self.feed, cmd, out, start)
        elif is_place(cmd, OP_PLACE):
            if taken(self, cmd) is not None:  # (no event, no seq: how later forwards are judged)
                self._owner.clear()
        else:
            self.engine.apply(cmd, out)
            self._route(cmd, out[start:], None)

    def refusal(self, j: int, inner: Any) -> tuple[str, int] | None:
        """Why a forward from account shard ``j`` must not reach the engine (reason, code), or
        None. Pure and deterministic (configuration only), so a replay refuses the same ones:
        a command not of the wire's shape, not a new/amend (or a margin move), naming an account
        that account shard ``j`` does not own (``--accounts`` differs between the tiers), or a
        symbol of another engine shard (``--shards``/``--engines`` differ)."""
        if type(inner) is tuple and inner and inner[CMD_OP] == OP_MARGIN and len(inner) == 4:
            # (a margin move, ``accounts.margin``: not a client's shape, which the wire's check
            # knows; the engine checks its fields)
            account, symbol = inner[MARGIN_ACCOUNT], inner[CMD_SYMBOL]
            if type(symbol) is not str or len(symbol) > MAX_SYMBOL_LEN:
                return "margin: bad symbol", REJ_MALFORMED
        else:
            checked = inner if inner is self.vetted else edge_command(inner)
            op = checked[CMD_OP]
            if op == OP_REJECT:
                code = int(checked[REJECT_CODE]) if len(checked) > REJECT_CODE else 0
                return str(checked[REJECT_REASON]), code
            if op not in (OP_NEW, OP_AMEND):
                return f"op {op} is not forwarded by account shards", REJ_UNKNOWN_OP
            account, symbol = checked[CMD_ACCOUNT], checked[CMD_SYMBOL]
        shards = self.feed.shards  # (one account shard owns every account: no hash)
        if type(account) is not str or (
            j != 0 if shards == 1 else account_shard_for(account, shards) != j
        ):
            shown = account if type(account) is str else "?"
            return (
                f"account {shown} is not of account shard {j} of {self.feed.shards} "
                "(--accounts differs between tiers?)",
                REJ_WRONG_SHARD,
            )
        moved = self.engine.moved.get(symbol) if type(symbol) is str else None
        if moved is not None:
            return f"pair {symbol} moved to engine shard {moved[0]}", REJ_MOVING
        if self.engines is not None and symbol not in self.engine.adopted:
            owner = self._owner.get(symbol)
            if owner is None:
                of = self.placement.owner if self.placement is not None else self.owner_of
                owner = of(symbol) if of is not None else shard_for(symbol, self.engines)
                if len(self._owner) < 10_000:  # bounded: junk symbols must not grow memory
                    self._owner[symbol] = owner
            if owner != self.feed.eshard:
                return (
                    f"symbol {symbol} belongs to engine shard {owner}, not "
                    f"{self.feed.eshard} (--engines differs between tiers?)",
                    REJ_WRONG_SHARD,
                )
        return None

    def _route(
        self, cmd: Any, events: list[tuple], cause: int | None, origin: int | None = None
    ) -> None:
        try:
            msgs = self.feed.route(cmd, events, cause, origin)
        except (KeyError, TypeError, IndexError):
            # An event about an order the feed never saw (cannot happen when every order came
            # through it; possible only for a journal that predates the account tier).
            self.anomalies += 1
            return
        for j, msg in msgs:
            ring = self.rings.get(j)
            if ring is None:
                ring = self.rings[j] = deque(maxlen=self.ring_size)
            ring.append(msg)
            self.outgoing.append((j, msg))

    def resend(self, j: int, after: int) -> tuple[list[tuple], bool]:
        """The settlements for account shard ``j`` with engine seq > ``after`` from the ring,
        and whether the ring reached back far enough (False: some are only in the journal)."""
        return sent_after(self.rings.get(j, ()), after, SETTLEMENT)

    def snapshot(self) -> dict[str, Any]:
        state = dict(self.engine.snapshot())
        state["settlement"] = {
            "feed": self.feed.snapshot(),
            "inbox": sorted(self.inbox.last.items()),
            "rings": [[j, list(r)[-SNAP_RING:]] for j, r in sorted(self.rings.items())],
            "engines": self.engines,  # the routing its forwards were refused under (N)
            "placement": routing_state(self),  # (None: none journaled)
        }
        return state


class LinkRepair:
    """The messages of one link older than its ring, regenerated from the sender's journal
    (``journal.Replay`` of the sender's machine: byte-identical to what was sent, so the
    receiver applies each once). Subclasses say which messages of a replay belong to the link.

    Kept between requests like the bridge's journal cursor: a long repair is one pass over the
    journal, ``budget`` commands per call, ``limit`` messages per answer. ``replay_from(at)``
    makes a replay whose machine stands at a seq <= ``at`` (``Journal.replay_from``).
    """

    SEQ, PREV = FORWARD  # where a message carries its seq and prev (``accounts.link``)

    def __init__(self, link: int, replay_from: Callable[[int], Any]) -> None:
        self.link = link
        self.replay_from = replay_from
        self.replay: Any = None
        self.pending: list[tuple] = []  # regenerated, not yet past the receiver's ``after``

    def collect(self, machine: Any, events: list[tuple]) -> list[tuple]:
        """The link's messages among what one replay step produced."""
        raise NotImplementedError

    def last_sent(self, machine: Any) -> int:
        """The seq of the last message the replayed machine put on the link."""
        raise NotImplementedError

    def _continues(self, after: int) -> bool:
        """True when every message with seq in (after, replay position] is pending."""
        if self.replay is None:
            return False
        if self.pending:
            return self.pending[0][self.PREV] == after
        return self.last_sent(self.replay.machine) <= after

    def take(self, after: int, budget: int, limit: int) -> list[tuple]:
        """Up to ``limit`` messages with seq > ``after``, their chain starting at ``after``
        ([]: still replaying towards them, or none in the journal). Raises
        ``journal.JournalError`` when the journal no longer reaches back that far."""
        seq, prev = self.SEQ, self.PREV
        self.pending = [m for m in self.pending if m[seq] > after]
        if not self._continues(after):
            self.replay = self.replay_from(after)
            self.pending = []
        replay = self.replay
        start = replay.replayed
        while len(self.pending) < limit and replay.replayed - start < budget:
            events = replay.step(min(10_000, budget - (replay.replayed - start)))
            self.pending.extend(m for m in self.collect(replay.machine, events) if m[seq] > after)
            if replay.done:
                break
        msgs = self.pending[:limit]
        if msgs and msgs[0][prev] != after:
            self.replay = None
            raise JournalError(
                f"messages after seq {after} on link {self.link} are no longer in the journal "
                f"(it resumes at seq {msgs[0][seq]}, after {msgs[0][prev]})"
            )
        return msgs


class SettlementRepair(LinkRepair):
    """Settlements for account shard ``link`` from an engine shard's journal."""

    SEQ, PREV = SETTLEMENT  # (kind, eshard, eseq, prev, ...)

    def collect(self, machine: Any, events: list[tuple]) -> list[tuple]:
        out, machine.outgoing = machine.outgoing, []
        return [m for k, m in out if k == self.link]

    def last_sent(self, machine: Any) -> int:
        return machine.feed.outbox.last.get(self.link, 0)


class ForwardRepair(LinkRepair):
    """Forwards to engine shard ``link`` from an account shard's journal, as ``(seq, prev,
    cmd)`` like ``AccountMachine.resend``."""

    def collect(self, machine: Any, events: list[tuple]) -> list[tuple]:
        return [(ev[AE_SEQ], ev[FWD_PREV], ev[FWD_CMD]) for ev in events
                if ev[AE_KIND] == AE_FORWARD and ev[FWD_ESHARD] == self.link]  # fmt: skip

    def last_sent(self, machine: Any) -> int:
        return machine.core.outbox.last.get(self.link, 0)


class SettledEngineFactory:
    """``journal.Machine`` for an engine shard with ``accounts`` account shards."""

    def __init__(
        self, eshard: int, accounts: int, engines: int | None = None,
        owner_of: Callable[[str], int] | None = None,
    ) -> None:  # fmt: skip
        self.eshard = eshard
        self.accounts = accounts
        self.engines = engines
        self.owner_of = owner_of  # the placement map's ``owner`` (None: the default)

    def new(self, markets: Mapping[str, Market]) -> SettledEngine:
        return SettledEngine(Engine(markets), self.eshard, self.accounts, self.engines,
                             self.owner_of)  # fmt: skip

    def restore(self, state: Mapping[str, Any], markets: Mapping[str, Market]) -> SettledEngine:
        engine = Engine.restore(state, markets)
        se = SettledEngine(engine, self.eshard, self.accounts, self.engines, self.owner_of)
        extra = state.get("settlement")
        if extra is None:
            if engine.resting():
                raise ValueError(
                    "this snapshot was written without the account tier and holds resting "
                    "orders nobody holds funds for: start accounts on an empty data dir"
                )
            return se
        feed = SettlementFeed.restore(extra["feed"])
        if feed.shards != self.accounts or feed.eshard != self.eshard:
            raise ValueError(
                f"snapshot written for engine shard {feed.eshard} with {feed.shards} account "
                f"shards, not {self.eshard} with {self.accounts}"
            )
        written = extra.get("engines")
        if (written is not None and self.engines is not None and written != self.engines
                and extra.get("placement") is None and extra.get("inbox")):  # fmt: skip
            # (with a journaled map the routing is the snapshot's and the journal's maps, not
            # the configured count: ``shardex reshard`` grew the engine tier since; and a
            # shard that applied no forward judged none)
            raise ValueError(
                f"snapshot written with {written} engine shards, not {self.engines}: its "
                "forwards replay only under the routing they were written under"
            )
        se.feed = feed
        restored(se, extra)
        se.inbox = Inbox({int(k): int(v) for k, v in extra["inbox"]})
        se.rings = {
            int(j): deque(map(tuple, msgs), maxlen=se.ring_size) for j, msgs in extra["rings"]
        }
        return se


class AccountMachine:
    """Account shard state: ``AccountCore`` + the forwards sent per engine shard (a ring) + its
    recent events (``EventRing``, for the bridge's range repairs, ``OP_EVENTS``). Rebuilt by
    journal replay after a restart (replay regenerates the same events), and the ring's tail is
    kept in snapshots, so a restart can still re-send recent events; a range older than the
    ring is regenerated from the journal (``AccountHandler.events``)."""

    def __init__(self, core: AccountCore, engines: int | None = None) -> None:
        self.core = core
        self.engines = engines  # N its forwards are routed under (None: not recorded)
        self.ring_size = link_ring()
        self.rings: dict[int, deque[tuple[int, int, tuple]]] = {}
        self.events = EventRing(event_ring())  # (for the bridge's range repairs)
        # exchange time: the batch's (``OP_TIME``, never a clock), and the seq → time marks
        # of the events in the ring (re-sends carry them)
        self.ts = 0
        self.times = TimeMarks()
        # the placement map its forwards are routed by, once journaled (``accounts.routing``;
        # None: the configured one, as the core's ``engine_for`` was made with)
        self.placement: Any = None

    @property
    def seq(self) -> int:
        return self.core.seq

    def apply(self, cmd: Any, out: list[tuple]) -> None:
        if type(cmd) is tuple and len(cmd) == 2:  # (the two 2-field commands; an order: wider)
            if is_time_command(cmd):
                ts = cmd[TIME_TS]
                if type(ts) is int and ts > self.ts:
                    self.ts = ts
                    self.core.now_ms = ts  # (the 30-day volume of fee tiers counts by this day)
                    self.times.mark(self.core.seq + 1, ts)
                    if len(self.times) > TIME_MARKS_PRUNE:
                        self.times.prune(self.events.first)
                return
            if is_place(cmd):
                apply_place(self, cmd)  # (no event, no seq: where later forwards go)
                return
        start = len(out)
        self.core.apply(cmd, out)
        self.absorb(out, start)

    def absorb(self, out: list[tuple], start: int) -> None:
        """Take the events the core appended to ``out`` from ``start`` into the event ring
        and each forward into its engine shard's ring: after each command (``apply``), or
        once after a batch of orders the core applied in one call (``apply_batch``)."""
        new = out[start:]
        self.events.extend(new)
        for ev in new:
            if ev[AE_KIND] == AE_FORWARD:
                _, seq, eshard, prev, fwd = ev
                ring = self.rings.get(eshard)
                if ring is None:
                    ring = self.rings[eshard] = deque(maxlen=self.ring_size)
                ring.append((seq, prev, fwd))

    def check_integrity(self) -> None:
        """Refuse state that does not balance (``AccountCore.check_integrity``): the
        ``Machine`` protocol's name for the check every tier's state machine has."""
        self.core.check_integrity()

    def resend(self, eshard: int, after: int) -> tuple[list[tuple], bool]:
        """Forwards to ``eshard`` with seq > ``after`` as (seq, prev, cmd), and whether the ring
        reached back far enough."""
        return sent_after(self.rings.get(eshard, ()), after, FORWARD)

    def snapshot(self) -> dict[str, Any]:
        state = self.core.snapshot()
        state["forwards"] = [[e, list(r)[-SNAP_RING:]] for e, r in sorted(self.rings.items())]
        tail = state["events"] = self.events.tail(SNAP_RING)
        state["ts"] = self.ts
        state["times"] = (tail and self.times.runs(tail[0][AE_SEQ], self.seq)) or []
        state["engines"] = self.engines  # its forward chains are per engine shard of N
        placement = routing_state(self)
        if placement is not None:
            state["placement"] = placement
        return state


def settled_factory(cfg: Any) -> SettledEngineFactory | None:
    """An engine shard's machine from its config (``ShardConfig``: index, shards, accounts,
    placement): None without the account tier; forwarded symbols checked against the map."""
    if not cfg.accounts:
        return None
    owner_of = cfg.placement.owner if cfg.placement is not None else None
    return SettledEngineFactory(cfg.index, cfg.accounts, cfg.shards, owner_of)


class AccountMachineFactory:
    """``journal.Machine`` for account shard ``shard`` of ``shards``, forwarding to ``engines``
    engine shards with ``engine_for`` (the cluster's symbol → engine shard function)."""

    def __init__(
        self,
        shard: int,
        shards: int,
        engine_for: Callable[[str], int],
        fees: Mapping[str, Fee] | None = None,
        engines: int | None = None,
        schedule: FeeSchedule | None = None,
    ) -> None:
        self.shard = shard
        self.shards = shards
        self.engine_for = engine_for
        self.fees = fees
        self.ref_window = ref_window()
        self.engines = engines  # N behind ``engine_for`` (None: not checked against snapshots)
        # fee tiers × markets (configuration: the markets file's [fees]; None: the default tier)
        self.schedule = schedule

    def new(self, markets: Mapping[str, Market]) -> AccountMachine:
        return AccountMachine(
            AccountCore(
                markets,
                self.shard,
                self.shards,
                self.fees,
                self.engine_for,
                ref_window=self.ref_window,
                schedule=self.schedule,
            ),
            self.engines,
        )

    def restore(self, state: Mapping[str, Any], markets: Mapping[str, Market]) -> AccountMachine:
        if state.get("shard") != self.shard or state.get("shards") != self.shards:
            raise ValueError(
                f"snapshot of account shard {state.get('shard')!r} of {state.get('shards')!r}, "
                f"not {self.shard} of {self.shards} (changing --shards is not supported)"
            )
        written = state.get("engines")
        if (written is not None and self.engines is not None and written != self.engines
                and state.get("placement") is None and state.get("forwards")):  # fmt: skip
            # (a journaled map routes the replay, and a shard that forwarded nothing routed
            # nothing: see ``SettledEngineFactory.restore``)
            raise ValueError(
                f"snapshot of account shard {self.shard} written with {written} engine shards, "
                f"not {self.engines}: its forward chains would be rebuilt under another routing "
                "and re-sent"
            )
        m = AccountMachine(
            AccountCore.restore(state, markets, self.fees, self.engine_for, self.ref_window,
                                self.schedule),  # fmt: skip
            self.engines if self.engines is not None else written,
        )
        for e, msgs in state.get("forwards", ()):
            m.rings[int(e)] = deque(((s, p, tuple(c)) for s, p, c in msgs), maxlen=m.ring_size)
        m.events.extend([tuple(ev) for ev in state.get("events", ())])  # older snapshots: none
        m.ts = int(state.get("ts", 0))  # (snapshots older than exchange time: 0)
        m.core.now_ms = m.ts or None
        m.times = TimeMarks(state.get("times", ()))
        if m.events.first:
            m.times.prune(m.events.first)
        restore_routing(m, state)
        return m


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None


def _bounded(value: Any, limit: int) -> str:
    """``value`` when it is a string of at most ``limit`` chars, else ``""`` (echoed in a
    reject: never a caller's megabyte)."""
    return value if type(value) is str and len(value) <= limit else ""
