"""What must hold of a whole cluster at every step and after every run: pure checks over plain
data (``ClusterState``), each returning ``Violation``s with a message a person can act on.

The simulator (or a test) takes a ``ClusterState`` from the live nodes and the clients' records
(``shardex.sim.extract``) and hands it here. Nothing in this module touches a socket, a clock,
a file or a node object: the checks see only lists, dicts, ints and strings, so a test can feed
each one a doctored state and watch it fire, and a simulated run can call them thousands of
times.

Two kinds of check (``CHECKS``, each with ``final``):

* **continuous** (cheap; true after every step, whatever is in flight): no balance negative;
  every hold equals what its order can still cost and the held cells equal the sum of the
  holds; each account shard's own money identity (it applies each command atomically); no book
  crossed; no two nodes accepted writes for one shard in one epoch; no order ran twice; an
  order the client was told "not executed" never ran.
* **final** (after the run heals: every message delivered, every client answered): every acked
  order in exactly one leader's history once; per-shard sequences gap-free; the stream store
  exact (each entry with its event's exchange time); money conserved across the account
  shards; books equal to a replay of their journal; exchange time never going backwards along
  a shard's seqs, and a replay giving each event the time the node gave it;
  every client knows every order's fate; the account shards' holds are exactly the books' live
  orders.

``Monitor`` runs the continuous checks step after step and keeps what only a sequence of
states shows (which node wrote under which epoch); ``check_final`` runs everything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shardex.accounts.assets import AssetTable
from shardex.engine.codes import EV_ACCEPTED, EV_REJECTED
from shardex.node.bridge.entries import BALANCE_KINDS, EntryFormatter
from shardex.sim.state import (  # noqa: F401 - the data model, importable from here too
    EXECUTED,
    NOT_EXECUTED,
    SHOW,
    AccountShard,
    ClusterState,
    EngineShard,
    Hold,
    Order,
    Violation,
    Write,
)
from shardex.timemarks import TimeMarks
from shardex.wire.protocol import shard_for

Check = Callable[[ClusterState], list[Violation]]


def _some(items: Iterable[Any]) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:SHOW])
    return shown + (f" (+{len(items) - SHOW} more)" if len(items) > SHOW else "")


def leaders(engines: list[EngineShard]) -> dict[int, EngineShard]:
    """Each shard's leader: the one that says so with the highest epoch."""
    out: dict[int, EngineShard] = {}
    for e in engines:
        if e.leader and (e.shard not in out or e.epoch > out[e.shard].epoch):
            out[e.shard] = e
    return out


# -- continuous ---------------------------------------------------------------------------------


def no_negative_balance(s: ClusterState) -> list[Violation]:
    """No available or held amount below zero, anywhere, ever."""
    bad = [f"{a.node} {acct} {asset} available {av} held {h}"
           for a in s.accounts for acct, cells in sorted(a.balances.items())
           for asset, (av, h) in sorted(cells.items()) if av < 0 or h < 0]  # fmt: skip
    return [Violation("no_negative_balance", f"negative balance: {_some(bad)}")] if bad else []


def holds_cover_orders(s: ClusterState) -> list[Violation]:
    """Every open order holds exactly what it can still cost; each account's held amount is
    the sum of its open orders' holds."""
    out = []
    for a in s.accounts:
        wrong = [f"{h.account}/{h.id} holds {h.held}, can cost {h.need}"
                 for h in a.holds if h.held != h.need or h.held < 0]  # fmt: skip
        if wrong:
            out.append(Violation("holds_cover_orders", f"{a.node}: {_some(wrong)}"))
        per: Counter[tuple[str, str]] = Counter()
        for h in a.holds:
            per[(h.account, h.asset)] += h.held
        cells = {(acct, asset): held for acct, assets in a.balances.items()
                 for asset, (_, held) in assets.items()}  # fmt: skip
        off = [f"{acct} {asset} held {cells.get(k, 0)}, orders hold {per[k]}"
               for k in sorted(set(cells) | set(per)) if cells.get(k, 0) != per[k]
               for acct, asset in (k,)]  # fmt: skip
        if off:
            out.append(Violation("holds_cover_orders", f"{a.node}: {_some(off)}"))
    return out


def shard_money(s: ClusterState) -> list[Violation]:
    """Per account shard and asset: balances + fees == deposits - withdrawals + trade inflow
    (true after every command it applies, whatever is in flight between shards)."""
    out = []
    for a in s.accounts:
        totals: Counter[str] = Counter()
        for cells in a.balances.values():
            for asset, (av, h) in cells.items():
                totals[asset] += av + h
        assets = set(totals) | set(a.fees) | set(a.deposited) | set(a.withdrawn) | set(a.flow)
        for asset in sorted(assets):
            have = totals[asset] + a.fees.get(asset, 0)
            owed = a.deposited.get(asset, 0) - a.withdrawn.get(asset, 0) + a.flow.get(asset, 0)
            if have != owed:
                how = "appeared" if have > owed else "disappeared"
                out.append(
                    Violation(
                        "shard_money",
                        f"{a.node} {asset}: balances+fees {have} "
                        f"!= deposits-withdrawals+inflow {owed} ({how})",
                    )
                )
    return out


def books_not_crossed(s: ClusterState) -> list[Violation]:
    """No book rests a bid at or above an ask (it would have matched)."""
    out = []
    for e in s.engines:
        for symbol, pair in sorted(e.books.get("books", {}).items()):
            bids = [o[2] for o in pair.get("bids", ())]
            asks = [o[2] for o in pair.get("asks", ())]
            if bids and asks and max(bids) >= min(asks):
                out.append(Violation("books_not_crossed", f"{e.node} {symbol}: best bid "
                                     f"{max(bids)} >= best ask {min(asks)} (ticks)"))  # fmt: skip
    return out


def one_writer_per_epoch(s: ClusterState) -> list[Violation]:
    """No two nodes accepted writes for one shard in one epoch (split brain); nor do two
    nodes both lead one shard in one epoch now."""
    writers: dict[tuple[str, int, int], set[str]] = {}
    for w in s.writes:
        writers.setdefault((w.tier, w.shard, w.epoch), set()).add(w.node)
    for tier, nodes in (("engine", s.engines), ("accounts", s.accounts)):
        for n in nodes:
            if n.leader:
                writers.setdefault((tier, n.shard, n.epoch), set()).add(n.node)
    return [Violation("one_writer_per_epoch", f"{tier} shard {shard} epoch {epoch}: "
                      f"{len(names)} writers ({', '.join(sorted(names))})")
            for (tier, shard, epoch), names in sorted(writers.items())
            if len(names) > 1]  # fmt: skip


def _accepts(s: ClusterState) -> Counter[tuple[str, str]]:
    """(symbol, id) → accepted events in the leaders' histories."""
    n: Counter[tuple[str, str]] = Counter()
    for e in leaders(s.engines).values():
        for ev in e.events or ():
            if ev[0] == EV_ACCEPTED:
                n[(ev[2], ev[3])] += 1
    return n


def ran_at_most_once(s: ClusterState) -> list[Violation]:
    """No order accepted twice; none accepted that its client was told did not run."""
    accepts = _accepts(s)
    twice = [f"{sym}/{oid} x{k}" for (sym, oid), k in sorted(accepts.items()) if k > 1]
    out = []
    if twice:
        out.append(Violation("ran_at_most_once", f"accepted more than once: {_some(twice)}"))
    lied = [f"{o.client} {o.symbol}/{o.id}" for o in s.orders
            if o.fate == NOT_EXECUTED and accepts[(o.symbol, o.id)]]  # fmt: skip
    if lied:
        out.append(
            Violation(
                "ran_at_most_once", f"told 'not executed' but accepted by the engine: {_some(lied)}"
            )
        )
    return out


def no_anomalies(s: ClusterState) -> list[Violation]:
    """No account shard met a settlement that did not fit (a fill of an order it never held,
    an order traded twice): money may have moved where it should not."""
    return [Violation("no_anomalies", f"{a.node}: {a.anomalies} settlement anomalies")
            for a in s.accounts if a.anomalies]  # fmt: skip


def reports_current(s: ClusterState) -> list[Violation]:
    """Every SYNC an account shard sent named the settlements it had been given: none left
    while one that continues its ``have`` waited unread in its socket (a stale ``have`` is a
    false stall to the engine shard, which re-sends on a ``have`` that did not move). Skipped
    when the world did not watch its reports (``shardex.sim.reports``)."""
    if not s.stale_reports:
        return []
    per: dict[str, list[str]] = {}
    for r in s.stale_reports:
        what = f"to engine shard {r.engine} with have {r.have}, {r.unread} unread at t={r.t:.6f}"
        per.setdefault(r.node, []).append(what)
    return [Violation("reports_current", f"{node}: {len(syncs)} SYNCs left stale: {_some(syncs)}")
            for node, syncs in sorted(per.items())]  # fmt: skip


CONTINUOUS: dict[str, Check] = {
    "no_negative_balance": no_negative_balance,
    "holds_cover_orders": holds_cover_orders,
    "shard_money": shard_money,
    "books_not_crossed": books_not_crossed,
    "one_writer_per_epoch": one_writer_per_epoch,
    "ran_at_most_once": ran_at_most_once,
    "no_anomalies": no_anomalies,
    "reports_current": reports_current,
}


# -- final (after the run heals) -------------------------------------------------------------


def acked_once(s: ClusterState) -> list[Violation]:
    """Every order the engine acked is in exactly one leader's history, once; every order
    the account tier held and forwarded reached its engine shard (accepted or refused)."""
    accepts = _accepts(s)
    seen: Counter[tuple[str, str]] = Counter()
    heads = leaders(s.engines)
    for e in heads.values():
        for ev in e.events or ():
            if ev[0] in (EV_ACCEPTED, EV_REJECTED):
                seen[(ev[2], ev[3])] += 1
    # an order whose shard's history is not at hand (a ring restarted, a journal trimmed,
    # a shard down) is not judged: absence there proves nothing
    n = 1 + max(heads, default=0)
    orders = [
        o for o in s.orders if (h := heads.get(shard_for(o.symbol, n))) and h.events is not None
    ]
    lost = [f"{o.client} {o.symbol}/{o.id}" for o in orders
            if o.accepted and accepts[(o.symbol, o.id)] != 1]  # fmt: skip
    out = []
    if lost:
        out.append(Violation("acked_once", "acked as accepted but not in exactly one "
                             f"leader's history once: {_some(lost)}"))  # fmt: skip
    dropped = [f"{o.client} {o.symbol}/{o.id}" for o in orders
               if o.forwarded and not o.accepted and not seen[(o.symbol, o.id)]]  # fmt: skip
    if dropped:
        out.append(Violation("acked_once", "held and forwarded but never reached its engine "
                             f"shard: {_some(dropped)}"))  # fmt: skip
    return out


def seq_gap_free(s: ClusterState) -> list[Violation]:
    """Each leader's history is seqs 1..seq, each once, in order (engine and account shards
    whose history is at hand)."""
    out = []
    nodes: list[EngineShard | AccountShard] = [*leaders(s.engines).values(), *s.accounts]
    for n in nodes:
        if n.events is None or not n.leader:
            continue
        seqs = [ev[1] for ev in n.events]
        if seqs != list(range(1, n.seq + 1)):
            at = next((k + 1 for k, q in enumerate(seqs) if q != k + 1), len(seqs) + 1)
            out.append(Violation("seq_gap_free", f"{n.node}: history of {len(seqs)} events "
                                 f"for seq {n.seq}, first wrong at position {at}"))  # fmt: skip
    return out


def _stream_diff(key: str, got: list[tuple[str, list[str]]], want: list[tuple]) -> str | None:
    """Where the stream ``key`` differs from the entries ``want`` ((id, fields)), or None."""
    ids = [i for i, _ in got]
    dup = [i for i, k in Counter(ids).items() if k > 1]
    if dup:
        return f"{key}: duplicate entries {_some(sorted(dup))}"
    if ids != sorted(ids, key=lambda i: int(i.split("-")[0])):
        return f"{key}: entries out of order"
    want_ids = [w[0] for w in want]
    if ids != want_ids:
        missing = sorted(set(want_ids) - set(ids), key=lambda i: int(i.split("-")[0]))
        extra = sorted(set(ids) - set(want_ids), key=lambda i: int(i.split("-")[0]))
        return (f"{key}: {len(ids)} entries, expected {len(want_ids)}; missing "
                f"{_some(missing) or 'none'}; unexpected {_some(extra) or 'none'}")  # fmt: skip
    for (i, fields), w in zip(got, want, strict=True):
        if list(fields) != list(w[1]):
            return f"{key}: entry {i} is {fields}, the shard's event is {list(w[1])}"
    return None


def stream_exact(s: ClusterState) -> list[Violation]:
    """Once healed the stream store holds each leader's events exactly: ``shardex:events:I``
    every event 1..seq once, in order, as the bridge formats it; ``shardex:balances:J`` every
    balance and fee event of account shard J."""
    if s.streams is None:
        return []
    fmt = EntryFormatter(s.markets, AssetTable(s.markets))
    out = []
    for e in leaders(s.engines).values():
        if e.events is not None:
            at = _time_of(e)
            want = [fmt.item(ev, e.shard, at(ev[1]))[:2] for ev in e.events]
            key = f"shardex:events:{e.shard}"
            diff = _stream_diff(key, s.streams.get(key, []), want)
            if diff:
                out.append(Violation("stream_exact", diff))
    for a in s.accounts:
        if a.events is not None and a.leader:
            at = _time_of(a)
            want = [fmt.balance_item(ev, a.shard, at(ev[1]))
                    for ev in a.events if ev[0] in BALANCE_KINDS]  # fmt: skip
            key = f"shardex:balances:{a.shard}"
            diff = _stream_diff(key, s.streams.get(key, []), want)
            if diff:
                out.append(Violation("stream_exact", diff))
    return out


def _time_of(n: EngineShard | AccountShard) -> Callable[[int], int]:
    """Seq → exchange time of ``n``'s events (its journal's replay, else its own marks)."""
    marks = TimeMarks(n.replayed_times or n.times or ())
    return lambda seq: marks.at(seq) or 0


def time_forward(s: ClusterState) -> list[Violation]:
    """Exchange time never goes backwards along a shard's seqs, and replaying its journal
    gives every event the time the node gave it (where the node's own marks reach)."""
    out = []
    for n in [*s.engines, *s.accounts]:
        for what, runs in (("live", n.times), ("replayed", n.replayed_times)):
            tss = [ts for _, ts in runs or ()]
            if tss != sorted(tss):
                out.append(Violation("time_forward", f"{n.node}: {what} time goes backwards: "
                                     f"{_some(runs or ())}"))  # fmt: skip
        if n.times and n.replayed_times:
            live, again = TimeMarks(n.times), TimeMarks(n.replayed_times)
            seqs = sorted({q for q, _ in (*n.times, *n.replayed_times) if q >= n.times[0][0]})
            bad = [(q, live.at(q), again.at(q)) for q in seqs if q <= n.seq and
                   live.at(q) != again.at(q)]  # fmt: skip
            if bad:
                out.append(Violation("time_forward", f"{n.node}: (seq, live ts, replayed ts) "
                                     f"differ: {_some(bad)}"))  # fmt: skip
    return out


def money_conserved(s: ClusterState) -> list[Violation]:
    """``shardex audit``'s identity across every account shard, per asset: balances + fees
    == deposits - withdrawals, and the trade inflows sum to zero (once every settlement
    has landed)."""
    t: dict[str, Counter[str]] = {}
    for a in s.accounts:
        for cells in a.balances.values():
            for asset, (av, h) in cells.items():
                t.setdefault(asset, Counter())["have"] += av + h
        for name, amounts in (("have", a.fees), ("owed", a.deposited), ("flow", a.flow)):
            for asset, v in amounts.items():
                t.setdefault(asset, Counter())[name] += v
        for asset, v in a.withdrawn.items():
            t.setdefault(asset, Counter())["owed"] -= v
    return [Violation("money_conserved", f"{asset}: balances+fees {c['have']}, deposits-"
                      f"withdrawals {c['owed']}, trade inflow {c['flow']} (difference "
                      f"{c['have'] - c['owed']})")
            for asset, c in sorted(t.items()) if c["have"] != c["owed"] or c["flow"]]  # fmt: skip


def _used(books: Mapping[str, Any]) -> dict[str, Any]:
    """The pairs that ever held an order (a read creates an empty book: not state)."""
    parts = ("trade_id", "bids", "asks", "recent")
    return {sym: pair for sym, pair in books.items() if any(pair.get(p) for p in parts)}


def _book_diff(live: dict[str, Any], replayed: dict[str, Any]) -> str | None:
    if live.get("seq") != replayed.get("seq"):
        return f"seq {live.get('seq')}, journal replay reaches {replayed.get('seq')}"
    a, b = _used(live.get("books", {})), _used(replayed.get("books", {}))
    for symbol in sorted(set(a) | set(b)):
        pa, pb = a.get(symbol, {}), b.get(symbol, {})
        for part in sorted(set(pa) | set(pb)):
            if pa.get(part) != pb.get(part):
                return (f"{symbol} {part}: live {_some(pa.get(part) or ['none'])} vs journal "
                        f"replay {_some(pb.get(part) or ['none'])}")  # fmt: skip
    return None


def books_equal_replay(s: ClusterState) -> list[Violation]:
    """Every engine shard's books are what replaying its journal from the start gives (the
    journal holds commands, the engine is deterministic: anything else is state the journal
    lost or the engine made up)."""
    out = []
    for e in s.engines:
        if e.replayed is not None:
            diff = _book_diff(e.books, e.replayed)
            if diff:
                out.append(Violation("books_equal_replay", f"{e.node}: {diff}"))
    return out


def ledgers_equal_replay(s: ClusterState) -> list[Violation]:
    """Every account shard's ledger (balances, holds, fees, transfers, link positions) is
    what replaying its journal from the start gives: money state the journal would not
    bring back after a crash is money a restart loses or makes up."""
    out = []
    for a in s.accounts:
        if a.replayed is None or a.ledger is None:
            continue
        for key in sorted(set(a.ledger) | set(a.replayed)):
            live, again = a.ledger.get(key), a.replayed.get(key)
            if live != again:
                out.append(Violation("ledgers_equal_replay", f"{a.node}: {key}: live "
                                     f"{_diff(live, again)}"))  # fmt: skip
                break
    return out


def _diff(live: Any, again: Any) -> str:
    """The first difference of two snapshot parts, short."""
    if isinstance(live, list) and isinstance(again, list):
        for k, (x, y) in enumerate(zip(live, again, strict=False)):
            if x != y:
                return f"[{k}] {x} vs journal replay {y}"
        return f"{len(live)} entries vs journal replay {len(again)}"
    return f"{live} vs journal replay {again}"


def fates_known(s: ClusterState) -> list[Violation]:
    """Once healed every client knows every order's fate: executed or not executed."""
    open_ = [f"{o.client} {o.symbol}/{o.id} ({o.fate or 'no answer'})"
             for o in s.orders if o.fate not in (EXECUTED, NOT_EXECUTED)]  # fmt: skip
    return [Violation("fates_known", f"{len(open_)} orders without a fate: {_some(open_)}")
            ] if open_ else []  # fmt: skip


def holds_match_books(s: ClusterState) -> list[Violation]:
    """With the account tier, once settled: every live order on a book is held for by its
    account's shard with the same open quantity, and every hold is a live order."""
    if not s.accounts:
        return []
    live: dict[tuple[str, str, str], int] = {}
    for e in leaders(s.engines).values():
        for symbol, pair in e.books.get("books", {}).items():
            for o in (*pair.get("bids", ()), *pair.get("asks", ())):
                live[(o[1], symbol, o[0])] = o[3]  # (id, account, price, qty, ...)
    held = {(h.account, h.symbol, h.id): h.rem for a in s.accounts if a.leader for h in a.holds}
    unheld = [f"{sym}/{oid} of {acct}" for (acct, sym, oid) in sorted(set(live) - set(held))]
    orphan = [f"{sym}/{oid} of {acct}" for (acct, sym, oid) in sorted(set(held) - set(live))]
    differ = [f"{k[1]}/{k[2]}: book {live[k]} lots, hold for {held[k]}"
              for k in sorted(set(live) & set(held)) if live[k] != held[k]]  # fmt: skip
    out = []
    for what, items in (("live orders nobody holds funds for", unheld),
                        ("funds held for orders not on any book", orphan),
                        ("open quantity differs", differ)):  # fmt: skip
        if items:
            out.append(Violation("holds_match_books", f"{what}: {_some(items)}"))
    return out


RESEND_SLACK = 100  # re-sent settlements tolerated per 100 sent (a SYNC crossing a batch) ...
RESEND_FLOOR = 10  # ... and at least this many


def resends_bounded(s: ClusterState) -> list[Violation]:
    """On a run that lost no message, an account shard is re-sent few settlements it had
    already applied (a stale ``have`` makes its engine shard re-send everything in flight:
    correct, but a link that does its work twice under load). Skipped on a lossy run."""
    if s.lossy is not False:
        return []
    return [Violation("resends_bounded", f"{a.node}: {a.duplicates} of {a.settlements} "
                      "settlements were re-sends of ones it had applied")
            for a in s.accounts
            if a.duplicates > max(RESEND_FLOOR, a.settlements // RESEND_SLACK)]  # fmt: skip


def no_needless_failover(s: ClusterState) -> list[Violation]:
    """A shard changes epoch only when its leader was lost: no more epochs wrote than one
    plus the leader losses the world caused (a restarted node that won a free lease back
    before the live in-sync standby is a second failover for nothing)."""
    if s.leader_losses is None:
        return []
    epochs: dict[tuple[str, int], set[int]] = {}
    for w in s.writes:
        epochs.setdefault((w.tier, w.shard), set()).add(w.epoch)
    return [Violation("no_needless_failover", f"{tier} shard {shard}: {len(e)} epochs wrote "
                      f"({', '.join(map(str, sorted(e)))}) after "
                      f"{s.leader_losses.get((tier, shard), 0)} leader losses")
            for (tier, shard), e in sorted(epochs.items())
            if len(e) > 1 + s.leader_losses.get((tier, shard), 0)]  # fmt: skip


FINAL: dict[str, Check] = {
    "acked_once": acked_once,
    "seq_gap_free": seq_gap_free,
    "stream_exact": stream_exact,
    "money_conserved": money_conserved,
    "books_equal_replay": books_equal_replay,
    "ledgers_equal_replay": ledgers_equal_replay,
    "time_forward": time_forward,
    "fates_known": fates_known,
    "holds_match_books": holds_match_books,
    "resends_bounded": resends_bounded,
    "no_needless_failover": no_needless_failover,
}
CHECKS: dict[str, Check] = {**CONTINUOUS, **FINAL}


def run_checks(s: ClusterState, checks: Mapping[str, Check]) -> list[Violation]:
    """Every check of ``checks`` on ``s``; a check that raises is itself a violation (a
    state the checks did not expect is worth a look, never a crash of the simulator)."""
    out: list[Violation] = []
    for name, check in checks.items():
        try:
            out += check(s)
        except Exception as exc:  # noqa: BLE001 - reported, never hidden
            out.append(Violation(name, f"the check failed on this state: {exc!r}"))
    return out


def check_continuous(s: ClusterState) -> list[Violation]:
    return run_checks(s, CONTINUOUS)


def check_final(s: ClusterState) -> list[Violation]:
    """Every check, continuous and final: for a state taken after the run healed."""
    return run_checks(s, CHECKS)


class Monitor:
    """The continuous checks over a run's successive states, plus what only the sequence
    shows: each leader's seq moving under an epoch is a ``Write``, kept for
    ``one_writer_per_epoch`` (a deposed leader that wrote and is gone by the next state is
    still caught). ``checked`` counts check runs (for the per-CPU-second summary)."""

    def __init__(self) -> None:
        self.writes: dict[tuple[str, int, int, str], Write] = {}
        self.last: dict[tuple[str, str], int] = {}  # (tier, node) → seq last seen
        self.violations: list[Violation] = []
        self._seen: set[tuple[str, str]] = set()
        self.checked = 0

    def _record(self, tier: str, nodes: Iterable[EngineShard | AccountShard]) -> None:
        for n in nodes:
            before = self.last.get((tier, n.node), n.seq)  # (first seen: what it recovered)
            self.last[(tier, n.node)] = n.seq
            if n.leader and n.seq > before:
                key = (tier, n.shard, n.epoch, n.node)
                w = self.writes.get(key)
                first = before + 1 if w is None else w.first
                self.writes[key] = Write(tier, n.shard, n.epoch, n.node, first, n.seq)

    def observe(self, s: ClusterState) -> list[Violation]:
        """Record ``s``'s writes, run the continuous checks; the violations new this step."""
        self._record("engine", s.engines)
        self._record("accounts", s.accounts)
        s.writes = [*s.writes, *self.writes.values()]
        self.checked += len(CONTINUOUS)
        return self._keep(check_continuous(s))

    def final(self, s: ClusterState) -> list[Violation]:
        """Every check on the healed state (with the writes seen over the run)."""
        s.writes = [*s.writes, *self.writes.values()]
        self.checked += len(CHECKS)
        return self._keep(check_final(s))

    def _keep(self, found: list[Violation]) -> list[Violation]:
        """The violations not reported yet: one per check and subject (what its message
        names before the first colon: a node, a shard, an asset), so a count that keeps
        growing step after step is one violation, not one per step."""
        new = []
        for v in found:
            key = (v.check, v.message.split(":", 1)[0])
            if key not in self._seen:
                self._seen.add(key)
                new.append(v)
        self.violations += new
        return new
