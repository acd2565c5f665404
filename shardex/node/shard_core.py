"""``ShardCore``: everything an engine shard does per request, without sockets or clocks
(decode a request, check the key and pair ownership, apply to the pure engine, journal, build
the reply; the reads). The node (``shard.ShardNode``) is the loop around it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from shardex.accounts.orders import PAGE, book_rows, book_total
from shardex.accounts.routing import newer
from shardex.auth import KeyInfo, Registry
from shardex.clock import REAL, Clock
from shardex.engine import Engine, Market, implementation
from shardex.engine.codes import (
    MAX_ID_LEN,
    OP_AMEND,
    OP_NEW,
    OP_REJECT,
    REJ_NOT_ALLOWED,
    REJ_WRONG_SHARD,
    Event,
)
from shardex.journal import Journal, JournalError
from shardex.metrics import ShardStats
from shardex.node.admission import UNKNOWN_KEY_REPLY, admit
from shardex.node.expiry_sweep import next_expiry, sweep
from shardex.node.market_admin import admin_write, is_admin_write, pair_perps, pair_rules
from shardex.node.moves import moved_refusal, pair_read
from shardex.node.nulljournal import NullJournal
from shardex.node.positions_read import positions_read
from shardex.node.ring import JOURNAL_READ_BUDGET, EventRing
from shardex.placement.core import PlacementMap, initial
from shardex.timemarks import TIME_MARKS_PRUNE, TimeMarks, stamp, wall_ms
from shardex.wire.codes import MALFORMED, NOT_ALLOWED, UNKNOWN_SYMBOL, WRONG_SHARD
from shardex.wire.errors import bad_events_read, events_gone, read_error
from shardex.wire.layouts import EV_SEQ
from shardex.wire.protocol import (
    MAX_BOOK_DEPTH,
    MAX_EVENTS_REPLY,
    MAX_EVENTS_REPLY_BYTES,
    MAX_SYMBOL_LEN,
    OP_BOOK,
    OP_EVENTS,
    OP_FORWARD,
    OP_MARKETS,
    OP_ORDER,
    OP_PAIR,
    OP_PLACE,
    OP_POSITIONS,
    OP_STATUS,
    edge_command,
    encode_reply,
    internal_error,
    journal_error,
    markets_to_wire,
    packb,
    quote,
)

log = logging.getLogger("shardex.shard")

MAX_FORWARD_BYTES = 4096  # a forwarded command is ~100 bytes; a bigger one is journaled cut
_UNKNOWN_KEY = UNKNOWN_KEY_REPLY


class ShardCore:
    """Everything a shard does per request, without sockets or clocks (testable on its own).

    The contract, for any payload bytes whatsoever: ``handle`` returns a reply of bounded size
    and never raises; a write that is not of the expected shape becomes a bounded ``rejected``
    event (see ``protocol.edge_command``); reads never change state.
    """

    # with the account tier (the node sets it): (commands, may park) → whether to park the
    # request, nothing run (``node.parked``: a cancel read before its order's forward)
    park_check: Callable[[Any, bool], bool] | None = None

    def __init__(
        self,
        index: int,
        shards: int,
        markets: Mapping[str, Market],
        engine: Engine | None = None,
        journal: Journal | NullJournal | None = None,
        ring_size: int = 1 << 20,
        registry: Registry | None = None,
        clock: Clock = REAL,
    ) -> None:
        """``clock``: the node's (``shardex.clock``); only the engine-time metric reads it."""
        if not 0 <= index < shards:
            raise ValueError(f"shard index {index} out of range for {shards} shards")
        self.index = index
        self.shards = shards
        self.engine = engine if engine is not None else Engine(markets)
        # Every command applied is journaled before its reply leaves (the loop commits the
        # journal, then sends the replies of the batch).
        self.journal: Journal | NullJournal = journal if journal is not None else NullJournal()
        self.ring = EventRing(ring_size)
        self.stats = ShardStats(index)
        self._perf = clock.perf_counter  # (bound once: ``time.perf_counter`` itself on REAL)
        self._owner: dict[Any, int] = {}
        # Which shard owns each pair (``shardex.placement``): the cluster's stored map, set by
        # the node before it serves (``set_placement``); its version travels in refusals.
        self.placement: PlacementMap = initial(shards)
        self.on_placement: Callable[[], None] | None = None  # (the node: HELLO the new map, table)
        self.commands = self.internal_errors = 0
        self.budget = MAX_EVENTS_REPLY_BYTES  # bytes the current request's reads may still use
        self.staged: dict[str, Any] = {}  # adoptions arriving in pieces (``node.moves``)
        self.precopies: dict[tuple[str, str], Any] = {}  # pair moves' pre-copies (``precopy``)
        # Set while the journal cannot write: writes are refused with this reason, reads served.
        self.journal_down: str | None = None
        # With a registry every request carries its connection's key id and may act only for
        # the accounts that key holds; None: insecure mode (no identity checks).
        self.registry = registry
        self.key: KeyInfo | None = None  # the key of the request being handled
        # Account shards: with M > 0 the engine is a ``SettledEngine`` and orders
        # come only from the account tier (their holds are taken there); 0: off.
        self.accounts = 0
        # Exchange time: ``wall`` (the node's clock in ms, ``timemarks.wall_ms``; None: no
        # stamping, a core driven without a node) is read at the first write of each batch
        # (``stamp_due``, set again by the node's group commit) and journaled as ``OP_TIME``;
        # ``times`` maps the seqs of the ring's events to their time.
        self.wall: Callable[[], int] | None = None
        self.stamp_due = False
        self.times = TimeMarks()
        # with the account tier: the map it started with, journaled at its first write when
        # newer than the one its journal holds (the forward check's, ``accounts.routing``)
        self.place_due: PlacementMap | None = None
        self._reads: dict[int, Callable[[tuple, dict[str, Any]], dict[str, Any]]] = {
            OP_BOOK: self.book,
            OP_EVENTS: self.events,
            OP_STATUS: self.status,
            OP_ORDER: self.order,
            OP_MARKETS: self.markets_read,
            OP_PAIR: lambda cmd, info: pair_read(self, cmd, info),
            OP_POSITIONS: lambda cmd, info: positions_read(self, cmd, info),
        }

    def set_placement(self, placement: PlacementMap) -> None:
        """Route by ``placement`` from now on (an older version than the one held is ignored).
        A newer map may change the shard count (``shardex reshard`` starting or stopping shard
        processes; with the account tier the map is journaled: ``journal_place``)."""
        count = placement.shards != self.shards
        if count and not self.index < placement.shards:
            raise ValueError(f"placement map of {placement.shards} shards, not {self.shards}")
        if placement.version >= self.placement.version:
            self.placement = placement
            self._owner.clear()
            if count:
                self.shards = placement.shards

    @property
    def markets(self) -> Mapping[str, Market]:
        """The engine's table: the markets file's pairs and those listed at runtime."""
        return self.engine.markets

    def owner(self, symbol: str) -> int:
        owner = self._owner.get(symbol)
        if owner is None:
            moved = self.engine.moved.get(symbol)
            if moved is not None:  # handed off (journaled here): its new shard, whatever the map
                owner = moved[0]
            elif symbol in self.engine.adopted:  # adopted (journaled here): this shard
                owner = self.index
            else:
                owner = self.placement.owner(symbol) if symbol else self.index
            if len(self._owner) < 100_000:  # bounded: garbage symbols must not grow memory
                self._owner[symbol] = owner
        return owner

    def forget_owner(self, symbol: str) -> None:
        """Drop the cached owner of ``symbol`` (a move changed it)."""
        self._owner.pop(symbol, None)

    def handle(self, payload: bytes, out: list[Event], info: dict[str, Any],
               budget: int = MAX_EVENTS_REPLY_BYTES, user: str | None = None,
               park: bool = True) -> bytes | None:  # fmt: skip
        """One request payload → reply bytes; the commands' events are appended to ``out``.

        ``budget`` bounds the bytes this request's reads may return, all reads together.
        ``user`` is the authenticated key id of the connection (never a client-written field).
        None: nothing ran, the node parks the request (``park_check``, ``node.parked``: a
        cancel for an order not known yet); ``park`` False runs it whatever it cancels.
        """
        self.budget = budget
        key, cmds, refused = admit(self.registry, payload, user)
        if refused is not None:
            if refused is not _UNKNOWN_KEY:
                self.key = key
            return refused
        self.key = key
        reads = self._reads
        if self.journal_down is not None:
            for cmd in cmds:
                if self._read_op(cmd) is None:
                    return encode_reply(None, journal_error(self.journal_down))
        elif self.park_check is not None and self.park_check(cmds, park):
            return None
        stats = self.stats
        perf = self._perf
        t0 = perf()
        results: list[Any] = []
        apply = self.engine.apply
        journal_add = self.journal.add
        engine = self.engine
        try:
            for cmd in cmds:
                op = self._read_op(cmd)
                if op is not None:
                    results.append(reads[op](cmd, info))
                    continue
                if self.stamp_due:
                    self.stamp(out)
                if is_admin_write(cmd):  # (a pair's move or rules)
                    results.append(admin_write(self, cmd, out))
                    continue
                cmd = self._admit(edge_command(cmd), key)
                start = len(out)
                seq = engine.seq
                apply(cmd, out)
                journal_add(seq, cmd)
                results.append(out[start:])
        except Exception as exc:  # the engine's contract says this cannot happen; if it does,
            # the process must survive it, and the applied writes stay queryable (OP_ORDER).
            self.internal_errors += 1
            log.exception("internal error while handling a request")
            return encode_reply(None, internal_error(exc))
        n = len(cmds)
        self.commands += n
        if n:
            stats.received += n
            stats.engine_time.add((perf() - t0) / n, n)
            stats.cmds_per_msg.add(n)
        return encode_reply(results)

    def set_wall(self, wall: Callable[[], int]) -> None:
        """Stamp every batch from now on with ``wall()`` (the node's clock, in ms)."""
        self.wall = wall
        self.stamp_due = True

    def new_batch(self) -> None:
        """A group commit ended the batch: the next write reads the time again."""
        self.stamp_due = self.wall is not None

    def stamp(self, out: list[Event] | None = None) -> None:
        """The batch's ``OP_TIME``, before its first write (``timemarks.stamp``); then, with
        ``out``, the ``OP_EXPIRE`` sweep when an order's expire time is reached (its events
        go to ``out``: the batch's)."""
        self.stamp_due = False
        assert self.wall is not None
        ts = stamp(self.engine, self.journal, self.wall)
        times = self.times
        times.mark(self.engine.seq + 1, ts)
        if len(times) > TIME_MARKS_PRUNE:
            times.prune(self.ring.first)
        if self.place_due is not None:
            self.journal_place(self.place_due)
        if out is not None:
            sweep(self.engine, self.journal, ts, out)

    def expire_due(self, out: list[Event]) -> bool:
        """With no write coming, journal a batch of its own when an order's expire time has
        come by the clock (the node calls it every loop turn): True when it did."""
        if self.wall is None or self.journal_down is not None:
            return False
        first = next_expiry(self.engine)
        if first is None or first > self.wall():
            return False
        seq = self.engine.seq
        self.stamp(out)
        return self.engine.seq != seq

    def journal_place(self, pmap: PlacementMap) -> None:
        """With the account tier, journal ``(OP_PLACE, map)`` when ``pmap`` is newer than the
        map the ``SettledEngine`` checks forwards against (no event, no seq), so a replay
        judges each forward as this run did."""
        self.place_due = None
        engine = self.engine
        if not self.accounts or not newer(engine, pmap):
            return
        cmd = (OP_PLACE, pmap.to_wire())
        seq = engine.seq
        engine.apply(cmd, [])
        self.journal.add(seq, cmd)

    def _admit(self, cmd: tuple, key: KeyInfo | None) -> tuple:
        """The command the engine applies for a client's write (``edge_command`` shaped it):
        itself, or the ``OP_REJECT`` it becomes when the key may not act for its account,
        when orders must come through the account tier, or when its pair is another
        shard's."""
        if key is not None and cmd[0] != OP_REJECT and not key.may_act_for(cmd[3]):
            # (an OP_REJECT here is one edge_command made: clients' own are refused)
            cmd = (OP_REJECT, cmd[1], cmd[2], _not_allowed(cmd[3]), REJ_NOT_ALLOWED)
        if self.accounts and cmd[0] in (OP_NEW, OP_AMEND):
            cmd = (OP_REJECT, cmd[1], cmd[2], _NOT_VIA_ACCOUNTS, REJ_NOT_ALLOWED)
        owner = self.owner(cmd[1])
        if owner != self.index:
            if cmd[1] in self.engine.moved:  # the engine answers it: moving, to its new shard
                return cmd
            reason = (f"symbol {cmd[1]} belongs to shard {owner}, not {self.index} (placement "
                      f"v{self.placement.version})")  # fmt: skip
            cmd = (OP_REJECT, cmd[1], cmd[2], reason, REJ_WRONG_SHARD)
        return cmd

    def forward(self, j: int, seq: int, prev: int, cmd: Any, out: list[Event]) -> None:
        """Apply one command account shard ``j`` forwarded (its hold is taken), journaled as
        ``(OP_FORWARD, j, seq, prev, cmd)`` so a replay rebuilds the settlement stage too.
        The caller checked the link (``forward_verdict`` is APPLY). The ``SettledEngine``
        judges the command (shape, account of shard ``j``, symbol of this shard): one it
        refuses is rejected and settled back to ``j`` (the hold is released there), with an
        ALERT here since only a misconfigured cluster or a bug sends such a forward."""
        checked = edge_command(cmd)
        if checked[0] == OP_REJECT and len(packb(cmd)) > MAX_FORWARD_BYTES:
            # journal a bounded stand-in (still refused and settled), never megabytes
            cmd = tuple(_at(cmd, i) if type(_at(cmd, i)) in (int, str) else None
                        for i in range(4))  # fmt: skip
            cmd = tuple(v[:MAX_ID_LEN] if type(v) is str else v for v in cmd)
        rec = (OP_FORWARD, j, seq, prev, cmd)
        if self.stamp_due:
            self.stamp(out)
        engine = self.engine
        before = engine.engine.seq  # (``SettledEngine.seq``, without the property's call)
        refusals = engine.refusals
        start = len(out)
        # of the wire's shape (passed unchanged): the engine's refusal need not check it again
        engine.vetted = cmd if checked is cmd else None
        engine.linked = rec  # (the caller found the link's verdict APPLY: not asked again)
        try:
            engine.apply(rec, out)
        finally:
            engine.vetted = engine.linked = None
        self.journal.add(before, rec)
        if engine.refusals != refusals:
            self.internal_errors += 1
            reason = out[-1][4] if len(out) > start else "?"
            log.error("ALERT account shard %d forwarded a command this shard refuses (%s): "
                      "rejected and settled back", j, reason)  # fmt: skip
        self.commands += 1
        self.stats.received += 1

    def _may_read(self, op: int, account: Any = None) -> dict[str, Any] | None:
        """The refusal of read ``op`` for the current key (``not_allowed``), None if it may."""
        key = self.key
        if key is None or key.role == "admin":
            return None
        if op == OP_EVENTS and key.role not in ("bridge", "reader"):
            return read_error(NOT_ALLOWED, "events: not allowed for this key")
        if op == OP_ORDER and not key.may_act_for(account):
            return read_error(NOT_ALLOWED, _not_allowed(account))
        return None

    def _symbol_refusal(self, symbol: str) -> dict[str, Any] | None:
        """The refusal of a read of ``symbol``'s book or orders (no such market, or another
        shard's: ``data.shard`` its owner), None when this shard holds it."""
        if symbol not in self.markets:
            return read_error(UNKNOWN_SYMBOL, f"unknown symbol {_sym(symbol)}")
        owner = self.owner(symbol)
        if owner != self.index:
            moved = moved_refusal(self, symbol)
            if moved is not None:
                return moved
            return read_error(WRONG_SHARD, f"symbol {symbol} is on shard {owner}", shard=owner,
                              version=self.placement.version)  # fmt: skip
        return None

    def _read_op(self, cmd: Any) -> int | None:
        """The read op of ``cmd`` if it is one (then it changes nothing), else None."""
        if type(cmd) is tuple and cmd:
            op = cmd[0]
            if type(op) is int and op in self._reads:
                return op
        return None

    # -- reads: each (cmd, info) → a map; a refusal is a ``read_error`` map (code, text) ------

    def events(self, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
        """Re-send events [first, last] from the in-memory ring, else the journal. The reply is
        capped in count and bytes: the caller asks again from the last seq it got + 1."""
        denied = self._may_read(OP_EVENTS)
        if denied:
            return denied
        if len(cmd) != 3 or type(cmd[1]) is not int or type(cmd[2]) is not int:
            return bad_events_read()
        first, last = cmd[1], cmd[2]
        if not 0 < first <= last:
            return bad_events_read()
        seq = self.engine.seq
        last = min(last, first + MAX_EVENTS_REPLY - 1, seq)
        if first > last:
            return {"events": [], "seq": seq}
        evs = self.ring.get(first, last)
        runs = self.times.runs(first, last) if evs is not None else None
        if runs is None and not isinstance(self.journal, NullJournal):
            try:  # older than the ring or its time marks: regenerated from the journal
                jevs = self.journal.events(first, last, JOURNAL_READ_BUDGET)
            except JournalError as exc:
                return {**events_gone(first, last, str(exc)), "seq": seq}
            if jevs == []:  # still replaying towards ``first``: ask again (bounded work each)
                return {"events": [], "seq": seq, "pending": True}
            if jevs is not None:
                evs, runs = jevs, self.journal.event_times(first, last)
        if evs is None:
            why = f"events {first}..{last} are gone (ring starts at {self.ring.first}, no journal)"
            return {**events_gone(first, last, why), "seq": seq}
        evs, size = _cap_bytes(evs, self.budget)
        runs = runs or [[first, self.engine.ts]]
        if evs and len(runs) > 1:  # only the marks of the events sent (the cap may cut them)
            top = evs[-1][EV_SEQ]
            runs = [r for r in runs if r[0] <= top]
        self.budget -= size + RUN_BYTES * len(runs)
        return {"events": evs, "seq": seq, "ts": runs if evs else runs[:1]}

    def book(self, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
        symbol = _at(cmd, 1)
        depth = cmd[2] if len(cmd) > 2 else 10
        if type(symbol) is not str:
            return read_error(MALFORMED, f"book: symbol must be a string, got {quote(symbol)}")
        if type(depth) is not int or not 0 < depth <= MAX_BOOK_DEPTH:
            refused = read_error(MALFORMED, f"book: depth must be 1..{MAX_BOOK_DEPTH}")
            return {"symbol": symbol, **refused}
        refused = self._symbol_refusal(symbol)
        if refused is not None:
            return {"symbol": _sym(symbol), **refused}
        book = self.engine.book(symbol)
        assert book is not None  # a known market always has (or gets) a book
        if len(cmd) == 4:  # (OP_BOOK, symbol, depth, offset): its live orders (the audit)
            return self.book_orders(book, cmd[3])
        bids, asks = book.depth(min(depth, max(1, self.budget // 64)))
        self.budget -= 24 * (len(bids) + len(asks))
        return {
            "symbol": symbol,
            "shard": self.index,
            "seq": self.engine.seq,
            "bids": bids,
            "asks": asks,
        }

    def book_orders(self, book: Any, offset: Any) -> dict[str, Any]:
        """A page of ``book``'s live orders with their accounts (admin and reader keys: the
        per-order audit compares them with the account shards' holds)."""
        if self.key is not None and self.key.role not in ("admin", "reader"):
            return {"symbol": book.symbol,
                    **read_error(NOT_ALLOWED, "book orders: not allowed for this key")}  # fmt: skip
        if type(offset) is not int or offset < 0:
            return {"symbol": book.symbol,
                    **read_error(MALFORMED, "book: offset must be an int >= 0")}  # fmt: skip
        rows = book_rows(book, offset, min(PAGE, max(1, self.budget // 96)))  # bytes: bounded
        self.budget -= 96 * len(rows)
        return {"symbol": book.symbol, "shard": self.index, "seq": self.engine.seq,
                "total": book_total(book), "orders": rows}  # fmt: skip

    def order(self, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
        """The fate of one order: live / filled / cancelled (from the book and the engine's
        bounded recent-results window) or unknown (never executed here within that window)."""
        if len(cmd) != 4 or not all(type(v) is str for v in cmd[1:]):
            return read_error(MALFORMED, "order: expected (op, symbol, account, id) as strings")
        _, symbol, account, oid = cmd
        refused = self._may_read(OP_ORDER, account) or self._symbol_refusal(symbol)
        if refused is not None:
            return refused
        # trades are looked up in the event ring (the engine keeps only each order's seq range)
        status = dict(self.engine.order_status(symbol, account, oid, self.ring.get))
        status["seq"] = self.engine.seq
        return status

    def markets_read(self, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
        return {"markets": markets_to_wire(self.markets),
                "rules": pair_rules(self.engine, lambda s: self.owner(s) == self.index),
                "perps": pair_perps(self.engine, lambda s: self.owner(s) == self.index)}

    def status(self, cmd: tuple, info: dict[str, Any]) -> dict[str, Any]:
        eng = self.engine
        return {
            "shard": self.index,
            "shards": self.shards,
            "seq": eng.seq,
            "resting": eng.resting(),
            "symbols": {s: len(b.orders) for s, b in sorted(eng.books.items())},
            # pairs not open, or with limits: their rules (``shardex.engine.admin``)
            "rules": {s: b.gate.to_wire() for s, b in sorted(eng.books.items()) if b.gate},
            "commands": self.commands,
            "journal": "unavailable: " + self.journal_down if self.journal_down else "ok",
            "engine": implementation(),  # "compiled" (mypyc build) or "interpreted"
            **_link_status(eng),
            **info,
        }


def _link_status(eng: Any) -> dict[str, Any]:
    """With the account tier: the last forward applied from each account shard and the last
    settlement put on each account shard's link, so ``shardex reshard`` can see that an
    emptied shard has settled everything before it is stopped ({} without the tier)."""
    feed = getattr(eng, "feed", None)
    if feed is None:
        return {}
    return {"link_in": dict(eng.inbox.last), "link_out": dict(feed.outbox.last)}


_NOT_VIA_ACCOUNTS = (
    "with the account tier on, new and amend go through the account's shard "
    "(routing key @account), which holds their funds first"
)


def _not_allowed(account: Any) -> str:
    shown = account if type(account) is str and len(account) <= 64 else quote(account)
    return f"account {shown} not allowed for this key"


def _sym(symbol: str) -> str:
    """A symbol as a reason may show it: as is when short and printable, else quoted/cut."""
    return symbol if len(symbol) <= MAX_SYMBOL_LEN and symbol.isprintable() else quote(symbol)


RUN_BYTES = 12  # a time mark's size in a reply (``[seq, ts]``: two msgpack ints), for the budget


def _cap_bytes(evs: list[Event], limit: int) -> tuple[list[Event], int]:
    """The longest prefix of ``evs`` whose msgpack encoding stays within ``limit`` bytes (at
    least one event, so a repair always progresses), and its size."""
    size = 0
    for k, ev in enumerate(evs):
        n = len(packb(ev))
        if size + n > limit and k:
            return evs[:k], size
        size += n
    return evs, size


def _at(cmd: Any, i: int) -> Any:
    try:
        return cmd[i]
    except Exception:
        return None


def core_for(cfg: Any, engine: Engine | None, journal: Any, registry: Any, clock: Any) -> ShardCore:
    """The core of engine shard ``cfg.index`` (a ``node.shard.ShardConfig``) around its
    recovered ``engine`` and ``journal``: the account tier's count, exchange time read from
    ``clock`` once per batch, and the placement map it starts with."""
    core = ShardCore(cfg.index, cfg.shards, cfg.markets, engine, journal,
                     ring_size=cfg.ring_size, registry=registry, clock=clock)  # fmt: skip
    core.accounts = cfg.accounts
    core.set_wall(partial(wall_ms, clock))
    if cfg.placement is not None:
        core.set_placement(cfg.placement)
    if cfg.accounts:
        core.place_due = cfg.placement or initial(cfg.shards)
    return core


def check_ownership(
    engine: Engine, index: int, shards: int, where: str, placement: PlacementMap | None = None
) -> None:
    """Refuse to serve a journal whose pairs the placement map (``initial(shards)`` when none
    is given) gives to other shards: their resting orders would be stranded here while their
    new owner starts empty. A pair this journal adopted (a live move) is this shard's."""
    placement = placement if placement is not None else initial(shards)
    foreign = sorted(s for s in engine.books
                     if placement.owner(s) != index and s not in engine.adopted)  # fmt: skip
    if foreign:
        raise JournalError(
            f"{where} holds pairs that shard {index} of {shards} does not own "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}) under placement "
            f"v{placement.version}: the map does not match the journals (written with another "
            "--shards, or DATA_DIR/placement.json replaced); shardex up rebuilds the map from "
            "the journals, or start with the old shard count."
        )
