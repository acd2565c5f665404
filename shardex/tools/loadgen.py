"""Load generator: open loop (fixed rate) or closed loop (concurrency × window), HDR latencies.

Open loop measures latency from each command's *intended* send time, so a stall of the system
delays every command scheduled behind it and shows in the tail (no coordinated omission).
Closed loop keeps C connections each with W frames of B commands in flight and measures the
frame round trip for each command in it.

Orders come from ``shardex.tools.workload.Workload`` in its cheap mode (the project's one
generator and one default mix), engine tuples straight to msgpack, so one process drives well
over 100k orders/s; ``procs`` runs several generator processes and merges their HDR histograms.

A command whose outcome is open (no reply within ``timeout``, the router's "it may have run:
ask its fate" answer after a failover, an unreadable reply) is not just counted: its order's fate
is asked with the SDK's decision (``shardex.tools.fates``, ``ClientCore.fate_steps``), again with
back-off while the answer leaves it open (overloaded, timed out, no leader), and after the load
for at most ``fate_wait`` seconds (progress shown). ``fates`` counts executed / not_executed /
unknown, and ``unknown_why`` says why each unknown one could not be told.

Account tier (issue 14): on a cluster started with ``--accounts M`` the engine shards refuse
orders that did not come through an account shard, so ``risk="on"`` (the default there: "auto")
routes each ``new``/``amend`` to its account's shard (``%j``, grouped per shard; cancels by
symbol), gives market buys a quote ``budget``, and first *funds* every account it trades: an
admin deposit tops each one up to ``fund`` units of every asset it trades (``fund_accounts``),
so orders are not refused for funds. ``risk="off"`` sends orders straight to the engine shards:
it only works on a cluster *without* accounts (with accounts it is refused before sending).
With risk on, an ``ok`` reply means held and forwarded (the account shard's answer), so the
latency measured includes the account tier but not the match.

Ctrl-C / SIGTERM stops sending, waits a moment for replies in flight, and returns the partial
report of every generator process with ``interrupted: true``.

Interface for the CLI::

    cfg = LoadConfig(endpoint=..., rate=None, concurrency=1, window=8, batch=100, duration=10.0,
                     orders=None, symbols=2, accounts=100, mix=DEFAULT_MIX_TEXT, seed=1,
                     direct=False, procs=1, timeout=5.0, key=None)  # LoadError on bad values
    # key: a key file path, "none", or None (the client default: $SHARDEX_KEY, else
    # DATA_DIR/keys/admin.key). Orders are for accounts acct-N: use an admin key.
    report = run(cfg, on_progress=callback)                # callback(p: Progress) once a second
    report.to_dict()  # JSON report, ``config`` holds everything needed to repeat the run
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import select
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import zmq
from hdrh.histogram import HdrHistogram

from shardex.accounts.core import account_shard_for
from shardex.auth import AuthError, KeyFile
from shardex.client import MALFORMED_PREFIX, TIMEOUT_PREFIX, ClientCore, uncertain
from shardex.engine import DEFAULT_MARKETS, Market
from shardex.engine.codes import (
    BUY,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    MARKET,
    OP_AMEND,
    OP_NEW,
    reject_name,
)
from shardex.tools.fates import FATES, FateTracker, Step
from shardex.tools.fills import EventWatch, FillCounter, settle, shard_seqs
from shardex.tools.workload import DEFAULT_MIX, DEFAULT_MIX_TEXT, KINDS, Workload, format_mix
from shardex.wire import codes
from shardex.wire.protocol import (
    ErrorText,
    decode_reply,
    encode_request,
    markets_from_wire,
    markets_to_wire,
    shard_for,
)
from shardex.wire.transport import (
    NO_KEY,
    EndpointError,
    Handshake,
    Pending,
    RequestIds,
    StopFlag,
    TopologyError,
    Unreachable,
    check_endpoint,
    dealer,
    find_key,
    parse_topology,
    request,
)

HIST_MAX_US = 60_000_000
MAX_FATE_QUERIES = 200_000  # open outcomes whose fate one process asks; beyond: "unknown"
FATE_WAIT_S = 30.0  # default: how long after the load open fates are still asked
FATE_TIMEOUT_S = 2.0  # a fate question's reply is awaited at least this long
INTERRUPT_GRACE_S = 1.0  # after Ctrl-C: how long replies in flight are still awaited

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_MIX_TEXT",
    "FATES",
    "LoadConfig",
    "LoadError",
    "Progress",
    "Report",
    "generator",
    "parse_mix",
    "run",
]


class LoadError(Exception):
    """A problem the user can fix (bad endpoint, bad option); the message says which."""


def parse_mix(text: str) -> dict[str, int]:
    """``"limit=45,ioc=10,..."`` → weights; ``LoadError`` naming the bad part."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise LoadError(f"--mix: unknown kind {name!r} ({', '.join(KINDS)})")
        try:
            mix[name] = int(weight)
        except ValueError:
            raise LoadError(f"--mix: weight of {name} must be an integer, got {weight!r}") from None
        if mix[name] < 0:
            raise LoadError(f"--mix: weight of {name} must be >= 0")
    if sum(mix.values()) <= 0:
        raise LoadError("--mix: weights must add up to more than 0")
    return mix


@dataclass
class LoadConfig:
    """One run's settings; validated on creation (``LoadError`` with the option's name)."""

    endpoint: str
    rate: float | None = None  # orders/s offered (open loop); None: closed loop
    concurrency: int = 1  # connections per generator process
    window: int = 8
    batch: int = 100
    duration: float | None = 10.0  # seconds; None only together with ``orders``
    orders: int | None = None
    symbols: int | Sequence[str] = 2  # the first K markets of the cluster, or names
    accounts: int = 100
    mix: str | Mapping[str, int] = DEFAULT_MIX_TEXT
    seed: int = 1
    direct: bool = False
    procs: int = 1
    timeout: float = 5.0
    markets: dict[str, list[str]] | None = None  # wire form; filled from the cluster by ``run``
    key: str | None = None  # key file path; "none": no key; None: the client default
    # account tier: "auto" (on iff the cluster has account shards), "on", "off"
    risk: str = "auto"
    fund: bool = True  # with risk on: top every account up before sending (admin key)
    fate_wait: float = FATE_WAIT_S  # seconds after the load to keep asking open fates
    id_prefix: str = ""  # set by ``run``: every order id of the run starts with it
    account_shards: int = 0  # M, filled from the cluster by ``run``

    def __post_init__(self) -> None:
        try:
            check_endpoint(self.endpoint)
        except EndpointError as exc:
            raise LoadError(str(exc)) from None
        if isinstance(self.mix, str):
            self.mix = parse_mix(self.mix)
        else:
            self.mix = parse_mix(format_mix(self.mix))
        if self.rate is not None and not self.rate > 0:
            raise LoadError(f"--rate must be > 0 orders/s, got {self.rate}")
        if self.orders is not None and self.orders < 1:
            raise LoadError(f"--orders must be >= 1, got {self.orders}")
        if self.duration is not None and not self.duration > 0:
            raise LoadError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.duration is None and self.orders is None:
            raise LoadError("give --duration (seconds) or --orders (a count): a run must end")
        for name in ("concurrency", "window", "batch", "procs", "accounts"):
            if getattr(self, name) < 1:
                raise LoadError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.timeout > 0:
            raise LoadError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if not self.fate_wait >= 0:
            raise LoadError(f"--fate-wait must be >= 0 seconds, got {self.fate_wait}")
        if isinstance(self.symbols, int):
            if self.symbols < 1:
                raise LoadError(f"--symbols must be >= 1, got {self.symbols}")
        elif not self.symbols or not all(isinstance(s, str) for s in self.symbols):
            raise LoadError("--symbols: give a count or a non-empty list of symbol names")
        else:
            self.symbols = list(self.symbols)
        if self.risk not in ("auto", "on", "off"):
            raise LoadError(f"--risk must be on, off or auto, got {self.risk!r}")
        self.keyfile()  # a named key file that cannot be read fails here, before any process

    def keyfile(self) -> KeyFile | None:
        """The key the generators connect with (see ``shardex.wire.transport.find_key``)."""
        key: Any = self.key
        if isinstance(key, str) and key.strip().lower() in NO_KEY:
            key = False
        try:
            return find_key(key)
        except AuthError as exc:
            raise LoadError(str(exc)) from None

    def market_table(self) -> dict[str, Market]:
        return markets_from_wire(self.markets) if self.markets else dict(DEFAULT_MARKETS)

    def symbol_names(self) -> list[str]:
        """The symbols traded: names as given, or the first K of the market table (the built-in
        markets first, in their usual order, then the cluster's others by name)."""
        table = self.market_table()
        names = [s for s in DEFAULT_MARKETS if s in table]
        names += sorted(set(table) - set(DEFAULT_MARKETS))
        if isinstance(self.symbols, int):
            if self.symbols > len(names):
                raise LoadError(f"--symbols must be 1..{len(names)} (the cluster's markets)")
            return names[: self.symbols]
        missing = [s for s in self.symbols if s not in names]
        if missing:
            raise LoadError(f"--symbols: {missing[0]} is not a market of the cluster")
        return list(self.symbols)

    def describe(self) -> dict[str, Any]:
        """Everything needed to repeat the run (the report's ``config``)."""
        return {
            "endpoint": self.endpoint,
            "mode": "open" if self.rate else "closed",
            "rate": self.rate,
            "concurrency": self.concurrency,
            "connections": self.concurrency * self.procs,
            "window": self.window,
            "batch": self.batch,
            "duration": self.duration,
            "orders": self.orders,
            "symbols": self.symbol_names(),
            "accounts": self.accounts,
            "mix": format_mix(self.mix),  # type: ignore[arg-type]
            "seed": self.seed,
            "direct": self.direct,
            "procs": self.procs,
            "timeout": self.timeout,
            "fate_wait": self.fate_wait,
            "risk": self.risk,
            "account_shards": self.account_shards,
        }


class Progress(NamedTuple):
    """What the progress callback gets once a second (sums over generator processes)."""

    elapsed: float
    sent: int
    acked: int
    errors: int  # batch errors + timeouts
    p99: int  # µs
    timeouts: int
    executed: int  # fates of timeouts asked so far
    not_executed: int
    unknown: int
    fates_open: int = 0  # still being asked (after the load: the fate phase)


def open_outcomes(error_codes: Mapping[str, int]) -> int:
    """How many of the counted errors (by code name) left their command's fate open."""
    return sum(n for name, n in error_codes.items()
               if name in codes.BY_NAME and codes.BY_NAME[name].uncertain)  # fmt: skip


@dataclass
class Report:
    sent: int = 0
    acked: int = 0  # commands that got their reply (any outcome)
    accepted: int = 0
    held: int = 0  # risk on: ok replies of the account tier ("held and forwarded", no events)
    trades: int = 0
    fills: int = 0  # order sides of this run filled (a trade between two of its orders: 2)
    cancelled: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # rejects by class (code name)
    # where accepted/trades/fills/cancelled/engine rejects were counted: "replies" (risk off:
    # the engine shard's reply holds them) or "events" (risk on: the engine shards' PUB,
    # ``shardex.tools.fills``); events_lost: events the subscriber missed (counts are short)
    counted_from: str = "replies"
    events_repaired: int = 0  # events the subscriber missed, fetched again by seq range
    events_lost: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # batch errors / timeouts, by text
    error_codes: dict[str, int] = field(default_factory=dict)  # the same, by code name
    # fates of the commands whose outcome was open (timeouts, the router's "may have run",
    # unreadable replies), asked until known or ``fate_wait`` after the load; unknown_why:
    # the unknown ones by the reason of their last question (``shardex.tools.fates.WHY_*``)
    fates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FATES, 0))
    unknown_why: dict[str, int] = field(default_factory=dict)
    fate_questions: int = 0  # fate queries sent (retries included)
    fate_seconds: float = 0.0  # spent asking fates after the load (not in ``seconds``)
    abandoned: int = 0  # in flight when interrupted: neither answered nor timed out
    interrupted: bool = False
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    hist: Any = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def timeouts(self) -> int:
        """Commands whose outcome was open (a timeout, the router's "may have run", an
        unreadable reply): their fates were asked."""
        return open_outcomes(self.error_codes)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "hist"}
        d["timeouts"] = self.timeouts
        d["acked_per_s"] = round(self.acked / self.seconds) if self.seconds else 0
        d["trades_per_s"] = round(self.trades / self.seconds) if self.seconds else 0
        h = self.hist
        d["latency_us"] = (
            {
                "p50": h.get_value_at_percentile(50),
                "p90": h.get_value_at_percentile(90),
                "p99": h.get_value_at_percentile(99),
                "p99.9": h.get_value_at_percentile(99.9),
                "p99.99": h.get_value_at_percentile(99.99),
                "max": h.get_max_value(),
            }
            if h is not None and h.get_total_count()
            else {}
        )
        return d


def format_progress(p: Progress) -> str:
    """The one-line progress shown while a run goes (timeouts and their fates included)."""
    fates = f" (executed {p.executed:,}, not {p.not_executed:,}, unknown {p.unknown:,}"
    fates += f", asking {p.fates_open:,})" if p.fates_open else ")"
    return (
        f"{p.elapsed:6.1f}s  sent {p.sent:>10,}  acked {p.acked:>10,} "
        f"({p.acked / max(p.elapsed, 1e-9):>9,.0f}/s)  p99 {p.p99:>8,} µs  "
        f"errors {p.errors:,}  timeouts {p.timeouts:,}" + (fates if p.timeouts else "") + "   "
    )


def format_report(report: Mapping[str, Any]) -> list[str]:
    """A report (``Report.to_dict()``) as the lines ``shardex loadgen`` prints."""
    lines = [
        f"sent {report['sent']:,}  acked {report['acked']:,} in "
        f"{report['seconds']:.2f}s = {report['acked_per_s']:,} orders/s",
        f"accepted {report['accepted']:,}  trades {report['trades']:,} "
        f"({report.get('trades_per_s', 0):,}/s)  fills {report.get('fills', 0):,}  "
        f"cancelled {report['cancelled']:,}  timeouts {report['timeouts']:,}",
    ]
    if report.get("config", {}).get("risk") == "on":
        lost = report.get("events_lost", 0)
        lines.append(
            f"  risk on ({report['config'].get('account_shards')} account shard(s), "
            f"{report['config'].get('funded', 0)} funding deposits): held and forwarded "
            f"{report.get('held', 0):,} (the ok replies); accepted, trades, fills and cancels "
            "counted from the engine shards' events (PUB) of this run's orders"
            + (
                f" ({report['events_repaired']:,} missed live, fetched again by seq)"
                if report.get("events_repaired")
                else ""
            )
            + (f"; {lost:,} events missed: those counts are short" if lost else "")
        )
    f = report["fates"]
    if report["timeouts"] or any(f.values()):
        lines.append(
            f"  fates of open outcomes (asked, {report.get('fate_questions', 0):,} questions, "
            f"{report.get('fate_seconds', 0):.1f}s after the load): executed "
            f"{f['executed']:,}  not executed {f['not_executed']:,}  unknown {f['unknown']:,}"
        )
        why = report.get("unknown_why") or {}
        if why:
            lines.append("  unknown because: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(why.items(), key=lambda kv: -kv[1])))  # fmt: skip
    for reason, n in sorted(report["rejected"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  rejected {reason:<18} {n:>10,}")
    for reason, n in sorted(report["errors"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  error    {reason:<18} {n:>10,}")
    lat = report["latency_us"]
    if lat:
        lines.append("latency µs   " + "  ".join(f"{k} {v:,}" for k, v in lat.items()))
    return lines


def _probe(cfg: LoadConfig, ctx: zmq.Context) -> dict[str, Any]:
    """The router's topology (one request), with every way it can fail said in one line."""
    key = cfg.keyfile()
    watch: list[Handshake] = []
    sock = dealer(ctx, cfg.endpoint, cfg.timeout, key=key, watch=watch)
    suspect = " (or a wrong or revoked key)" if key is not None else ""
    try:
        info = parse_topology(*request(sock, b"", [], cfg.timeout, RequestIds()))
    except (TimeoutError, Unreachable) as exc:
        problem = watch[0].problem()
        if problem is not None:
            raise LoadError(f"{problem} ({cfg.endpoint})") from None
        if isinstance(exc, Unreachable):
            raise LoadError(
                f"cannot reach {cfg.endpoint} within {cfg.timeout}s (is the cluster running?)"
                f"{suspect}"
            ) from None
        raise LoadError(
            f"no answer from a router at {cfg.endpoint} within {cfg.timeout}s "
            f"(is the cluster running?){suspect}"
        ) from None
    except TopologyError as exc:
        raise LoadError(f"router at {cfg.endpoint}: {exc}") from None
    finally:
        watch[0].close()
        sock.close(0)
    return info


def _cluster_markets(info: dict[str, Any]) -> dict[str, list[str]] | None:
    """The market table the shards registered (merged), in wire form; None if none say."""
    merged: dict[str, Market] = {}
    for t in info["topology"]:
        try:
            merged.update(markets_from_wire(t.get("markets")))
        except ValueError:
            continue
    return markets_to_wire(merged) if merged else None


def resolve_risk(cfg: LoadConfig, info: dict[str, Any]) -> tuple[str, int]:
    """("on" | "off", M) for a run on the cluster described by ``info`` (the router's
    topology), or ``LoadError`` with a reason when the choice cannot work there."""
    m = info.get("accounts") or 0
    m = m if type(m) is int and m > 0 else 0
    risk = cfg.risk if cfg.risk != "auto" else ("on" if m else "off")
    if risk == "off" and m:
        raise LoadError(
            f"--risk off sends orders straight to the engine shards, which refuse orders that "
            f"did not come through an account shard on this cluster ({m} account shard(s)): "
            f"use --risk on (or a cluster without --accounts)"
        )
    if risk == "on" and not m:
        raise LoadError(
            "--risk on needs a cluster with account shards (shardex up --accounts M); "
            "this one has none: use --risk off"
        )
    return risk, m


def fund_target_units(accounts: int) -> int:
    """Units of each asset every generator account is topped up to: an eighth of an account
    shard's per-asset cap (``MAX_UNITS``) split over the accounts, so that even if trading
    moved all of it onto one account shard, its totals stay far inside the cap."""
    from shardex.accounts.assets import MAX_UNITS

    return MAX_UNITS // (8 * accounts)


def fund_accounts(cfg: LoadConfig) -> int:
    """Top every account the run trades (``acct-0``..) up to ``fund_target_units`` of every
    asset of the traded markets with admin deposits (each with a fresh ``ref``). Returns the
    number of deposits made; ``LoadError`` when one is refused (e.g. not an admin key)."""
    from shardex.accounts.assets import AssetTable
    from shardex.client import Client, ShardexError

    table = AssetTable(cfg.market_table())
    pairs = [table.pairs[s] for s in cfg.symbol_names()]
    assets = sorted({a for p in pairs for a in (p.base, p.quote)})
    target = fund_target_units(cfg.accounts)
    key: Any = cfg.key
    if isinstance(key, str) and key.strip().lower() in NO_KEY:
        key = False
    run_id = uuid.uuid4().hex[:12]
    made = 0
    try:
        with Client(cfg.endpoint, key=key, timeout=cfg.timeout) as c:
            for i in range(cfg.accounts):
                account = f"acct-{i}"
                have = c.balance(account)
                for asset in assets:
                    avail, held = have.get(asset, (0, 0))
                    units = (table.to_units(asset, avail) or 0) + (table.to_units(asset, held) or 0)
                    if units >= target:
                        continue
                    amount = table.fmt(asset, target - units)
                    res = c.deposit(account, asset, amount, ref=f"loadgen-{run_id}-{i}-{asset}")
                    if not res.ok:
                        raise LoadError(f"funding {account}: deposit of {amount} {asset} "
                                        f"refused ({res.code}): {res.reason}")  # fmt: skip
                    made += 1
    except ShardexError as exc:
        raise LoadError(f"funding the accounts failed: {exc}") from None
    return made


def _budget(cmd: tuple, table: Mapping[str, Market], mid: Mapping[str, int]) -> tuple:
    """A market buy with a quote ``budget`` (the account tier requires one): twice the mid's
    notional of its qty, as a decimal string of the quote asset."""
    m = table[cmd[1]]
    return (*cmd, str(m.tick * m.lot * (2 * mid[cmd[1]] * cmd[7])))


def _connect(cfg: LoadConfig, ctx: zmq.Context) -> tuple[list[zmq.Socket], int]:
    """Sockets (per connection; when direct, one per engine shard then one per account shard
    with risk on: their direct ports) and the engine shard count from the router."""
    info = _probe(cfg, ctx)
    shards = info["shards"]
    eps = [cfg.endpoint]
    if cfg.direct:
        eps = [t.get("direct") for t in info["topology"]]
        if cfg.risk == "on":
            accts = sorted(info.get("account_topology") or (), key=lambda t: t.get("shard", -1))
            eps += [t.get("direct") for t in accts]
        if len(eps) != shards + (cfg.account_shards if cfg.risk == "on" else 0):
            raise LoadError("not every shard has registered with the router yet")
    if cfg.direct and not all(type(e) is str and e for e in eps):
        raise LoadError("not every shard has registered a direct endpoint yet")
    socks = []
    key = cfg.keyfile()
    for _ in range(cfg.concurrency):
        for ep in eps:
            try:
                socks.append(dealer(ctx, ep, cfg.timeout, immediate=False, key=key))
            except EndpointError as exc:
                raise LoadError(str(exc)) from None
    return socks, shards


def generator(cfg: LoadConfig, prefix: str) -> Workload:
    """The load generator's order flow for ``cfg``: the project's one ``Workload`` in its cheap
    mode (ids ``prefix`` + n; ``.next()`` gives one engine command tuple)."""
    return Workload(
        cfg.symbol_names(),
        seed=cfg.seed,
        markets=cfg.market_table(),
        mix=cfg.mix,  # type: ignore[arg-type]
        accounts=cfg.accounts,
        shadow=False,
        prefix=prefix,
    )


def _fate_core(cfg: LoadConfig, table: Mapping[str, Market]) -> ClientCore:
    """The SDK's socket-free core, for its fate decision (``ClientCore.fate_steps``)."""
    core = ClientCore(cfg.endpoint, markets=table, timeout=cfg.timeout, key=False)
    core.accounts = cfg.account_shards if cfg.risk == "on" else 0
    return core


def _progress_item(index: int, rep: Report, sent: int, errors: Counter[str], timeouts: int,
                   fates: FateTracker) -> tuple:  # fmt: skip
    """What a generator puts on the progress queue (see ``Progress``)."""
    f = fates.fates
    return (
        index, sent, rep.acked, sum(errors.values()), rep.hist.get_value_at_percentile(99),
        timeouts, f["executed"], f["not_executed"], f["unknown"], fates.open,
    )  # fmt: skip


def _count_events(rep: Report, rejected: Counter[str], results: Sequence[Any], ours: str,
                  engine: bool = True) -> None:  # fmt: skip
    """Count one frame's per-command results: ``()`` is the account tier's "held and
    forwarded" (no events), else the events in the reply (reject classes by code; a trade's
    maker is one of ours when its id starts with ``ours``). ``engine`` False: only what the
    account tier decided (held, its rejects): the engine's events come from its PUB."""
    if not engine:
        for evs in results:
            if evs == ():
                rep.held += 1
            for ev in evs if isinstance(evs, tuple | list) else ():
                if isinstance(ev, tuple | list) and len(ev) > 5 and ev[0] == EV_REJECTED:
                    rejected[reject_name(ev[5])] += 1
        return
    for evs in results:
        if evs == ():
            rep.held += 1
        for ev in evs if isinstance(evs, tuple | list) else ():
            kind = ev[0] if isinstance(ev, tuple | list) and ev else None
            if kind == EV_ACCEPTED:
                rep.accepted += 1
            elif kind == EV_TRADE:
                rep.trades += 1
                maker_ours = ours and len(ev) > 6 and str(ev[6]).startswith(ours)
                rep.fills += 2 if maker_ours else 1
            elif kind == EV_CANCELLED:
                rep.cancelled += 1
            elif kind == EV_REJECTED:
                rejected[reject_name(ev[5] if len(ev) > 5 else None)] += 1


def run_one(cfg: LoadConfig, index: int, progress: Any = None, stop: Any = None) -> Report:
    """One generator process's load. ``progress`` (a queue) gets ``_progress_item`` once a
    second; ``stop`` (a ``StopFlag`` or anything truthy when set) ends the run early with a
    partial report. After the load, the fates still open are asked until ``cfg.fate_wait``."""
    ctx = zmq.Context()
    socks, shards = _connect(cfg, ctx)
    per_conn = len(socks) // cfg.concurrency
    gen = generator(cfg, f"{cfg.id_prefix}g{index}-{os.getpid()}-{cfg.seed}-")
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    rep = Report(hist=hist)
    rejected: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    error_codes: Counter[str] = Counter()  # the same errors by code name (decisions, timeouts)
    uniq = list(dict.fromkeys(socks))
    fds = [s.getsockopt(zmq.FD) for s in uniq]
    # req → ("cmds", cmds, sent stamps, (socket index, shard slot)); in ``asking``:
    #       ("fate", (dialogue token, positions), None, socket index)
    pending = Pending(cfg.timeout, time.perf_counter)
    # fate questions wait longer: under a backlog a question asked again too soon is one more
    # request queued behind the first (they are asked again only after back-off anyway)
    asking = Pending(max(cfg.timeout, FATE_TIMEOUT_S), time.perf_counter)
    asking_text = ErrorText(codes.TIMEOUT, f"{TIMEOUT_PREFIX} {max(cfg.timeout, FATE_TIMEOUT_S)}s")
    per_sock_inflight = [0] * len(socks)
    ids = RequestIds()
    risk_on = cfg.risk == "on" and cfg.account_shards > 0
    m_shards = cfg.account_shards
    table = cfg.market_table()
    # commands whose outcome is open (timeout, the router's "may have run", unreadable reply):
    # their fates are asked with the SDK's decision, again with back-off, until a deadline
    fates = FateTracker(_fate_core(cfg, table), cfg.batch, MAX_FATE_QUERIES, cfg.window)
    limit_orders = cfg.orders
    rate = cfg.rate / cfg.procs if cfg.rate else None
    time.sleep(0.2)  # let connections establish
    clock = time.perf_counter
    t0 = clock()
    end = t0 + cfg.duration if cfg.duration else None
    last_progress = t0
    sent_cmds = 0
    stopped_at: float | None = None
    load_done: float | None = None  # every order answered or timed out
    timeout_text = f"{TIMEOUT_PREFIX} {cfg.timeout}s"

    def slot(conn: int, group: int) -> int:
        """The socket of connection ``conn`` for shard slot ``group`` (direct: one socket per
        engine shard, then per account shard; through the router: one per connection)."""
        return conn if per_conn == 1 else conn * per_conn + group

    def target(cmd: tuple, conn: int) -> tuple[int, int]:
        """(socket index, shard slot): a frame must hold commands of one shard only, because
        the router routes a whole frame by its key and a shard rejects pairs it does not own.
        With risk on, new/amend go to their account's shard: slot N + j."""
        if risk_on and cmd[0] in (OP_NEW, OP_AMEND):
            group = shards + account_shard_for(cmd[3], m_shards)
        else:
            group = shard_for(cmd[1], shards)
        return slot(conn, group), group

    def route_key(group: int, cmds: list[tuple]) -> bytes:
        return f"%{group - shards}".encode() if group >= shards else cmds[0][1].encode()

    def send(sock_i: int, cmds: list[tuple], stamps: Any, group: int) -> None:
        req = ids.next()
        socks[sock_i].send_multipart([route_key(group, cmds), req, encode_request(cmds)])
        pending.add(req, ("cmds", cmds, stamps, (sock_i, group)))
        per_sock_inflight[sock_i] += 1

    def ask(steps: list[Step]) -> None:
        """Send fate questions: one frame per target shard (a query is (op, symbol, account,
        id): its account's shard for the account tier's step, else its symbol's)."""
        for step in steps:
            groups: dict[int, list[int]] = {}
            for k, q in zip(step.positions, step.queries, strict=True):
                g = shards + account_shard_for(q[2], m_shards) if step.via_accounts else None
                groups.setdefault(shard_for(q[1], shards) if g is None else g, []).append(k)
            for group, positions in groups.items():
                queries = [step.queries[k] for k in positions]
                req = ids.next()
                si = slot(0, group)
                socks[si].send_multipart([route_key(group, queries), req,
                                          encode_request(queries)])  # fmt: skip
                asking.add(req, ("fate", (step.token, positions), None, si))

    def handle(frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        entry = pending.pop(frames[0]) or asking.pop(frames[0])
        if entry is None:
            return
        kind, cmds, stamps, where = entry
        error, results = decode_reply(frames[1])
        if kind == "fate":
            ask(fates.answer(*cmds, error, results, clock()))
            return
        sock_i, group = where
        per_sock_inflight[sock_i] -= 1
        now = clock()
        n = len(cmds)
        if isinstance(stamps, float):
            hist.record_value(max(1, int((now - stamps) * 1e6)), n)
        else:
            for t in stamps:
                hist.record_value(max(1, int((now - t) * 1e6)))
        if error is None and (not isinstance(results, tuple | list) or len(results) != n):
            error = ErrorText(codes.MALFORMED_REPLY, f"{MALFORMED_PREFIX} (result count)")
        if error is not None:
            errors[str(error)[:200]] += n
            error_codes[error.name] += n
            if uncertain(error):  # e.g. the router's "may have run: ask its fate"
                for c in cmds:
                    fates.add(c, now)
            return
        rep.acked += n
        if not risk_on:
            _count_events(rep, rejected, results, cfg.id_prefix)
        elif group >= shards:  # (an engine shard's reply: its events are on its PUB)
            _count_events(rep, rejected, results, cfg.id_prefix, engine=False)

    def expire(now: float) -> None:
        for kind, cmds, _, where in [*pending.expire(now), *asking.expire(now)]:
            if kind == "fate":
                ask(fates.answer(*cmds, asking_text, None, now))
            else:
                per_sock_inflight[where[0]] -= 1
                errors[timeout_text] += len(cmds)
                error_codes["timeout"] += len(cmds)
                for c in cmds:
                    fates.add(c, now)

    def done_sending(now: float) -> bool:
        if stopped_at is not None:
            return True
        if limit_orders is not None and sent_cmds >= limit_orders:
            return True
        return end is not None and now >= end

    next_i = 0  # open loop: index of the next scheduled command
    while True:
        now = clock()
        if stop and stopped_at is None:
            stopped_at = now
        if not done_sending(now):
            if rate:
                due = int((now - t0) * rate) + 1  # command i is due at t0 + i / rate
                if limit_orders is not None:
                    due = min(due, limit_orders)
                while next_i < due:
                    # one frame per target socket holding every command now due (≤ batch)
                    groups: dict[tuple[int, int], tuple[list[tuple], list[float]]] = {}
                    count = 0
                    while next_i < due and count < cfg.batch:
                        cmd = gen.next()
                        if risk_on and cmd[0] == OP_NEW and cmd[5] == MARKET and cmd[4] == BUY:
                            cmd = _budget(cmd, table, gen.mid)
                        g = groups.setdefault(target(cmd, next_i % cfg.concurrency), ([], []))
                        g[0].append(cmd)
                        g[1].append(t0 + next_i / rate)
                        next_i += 1
                        count += 1
                    for (si, grp), (cmds, stamps) in groups.items():
                        send(si, cmds, stamps, grp)
                        sent_cmds += len(cmds)
            else:
                for conn in range(cfg.concurrency):
                    base = conn * per_conn
                    while sum(per_sock_inflight[base : base + per_conn]) < cfg.window:
                        n = cfg.batch
                        if limit_orders is not None:
                            n = min(n, limit_orders - sent_cmds)
                            if n <= 0:
                                break
                        by_target: dict[tuple[int, int], list[tuple]] = {}
                        for _ in range(n):
                            cmd = gen.next()
                            if risk_on and cmd[0] == OP_NEW and cmd[5] == MARKET and cmd[4] == BUY:
                                cmd = _budget(cmd, table, gen.mid)
                            by_target.setdefault(target(cmd, conn), []).append(cmd)
                        stamp = clock()
                        for (si, grp), cmds in by_target.items():
                            send(si, cmds, stamp, grp)
                        sent_cmds += n
        got_any = False
        for sock in uniq:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                handle(frames)
                got_any = True
        if not got_any:
            # Sleep until the next command is due or a reply may have arrived: select on the
            # sockets' FDs has µs resolution (zmq_poll has ms), so open-loop sends are not late
            # and the generator does not spin on the cores it is measuring.
            if rate and not done_sending(clock()):
                wait = min(0.05, t0 + next_i / rate - clock())
            else:
                wait = 0.05
            if wait > 0:
                select.select(fds, [], [], wait)
        now = clock()
        expire(now)
        if load_done is None and done_sending(now) and not any(per_sock_inflight):
            load_done = now  # the load is over: what is still open gets ``fate_wait`` more
            fates.finish(now + cfg.fate_wait)
        ask(fates.due(now))
        if stopped_at is not None and now - stopped_at > min(cfg.timeout, INTERRUPT_GRACE_S):
            asking.drain()
            for _, cmds, _, _ in pending.drain():
                rep.abandoned += len(cmds)
            fates.abandon()
        if progress is not None and now - last_progress >= 1.0:
            timeouts = open_outcomes(error_codes)
            progress.put(_progress_item(index, rep, sent_cmds, errors, timeouts, fates))
            last_progress = now
        if done_sending(now) and not pending and not asking and fates.done:
            break
    over = stopped_at or load_done or clock()
    rep.seconds = over - t0
    rep.fate_seconds = round(max(0.0, clock() - over), 3)
    rep.sent = sent_cmds
    rep.rejected = dict(rejected)
    rep.errors = dict(errors)
    rep.error_codes = dict(error_codes)
    rep.fates = dict(fates.fates)
    rep.unknown_why = dict(fates.why)
    rep.fate_questions = fates.questions
    rep.interrupted = stopped_at is not None
    for s in socks:
        s.close(0)
    ctx.term()
    return rep


def _child(cfg: LoadConfig, index: int, progress: Any, results: Any) -> None:
    stop = StopFlag.install()  # first thing: Ctrl-C reaches the whole process group
    try:
        rep = run_one(cfg, index, progress, stop)
        d = rep.to_dict()
        d["hist"] = rep.hist.encode()
        results.put(("ok", d))
    except LoadError as exc:
        results.put(("error", str(exc)))
    except Exception as exc:  # reported to the parent, which exits non-zero with it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _caller(on_progress: Callable[..., Any] | None) -> Callable[[Progress], Any] | None:
    """``on_progress(p: Progress)``; a callback taking positional (elapsed, sent, acked,
    errors, p99[, timeouts]) as before ``Progress`` existed is still served."""
    if on_progress is None:
        return None
    try:
        params = inspect.signature(on_progress).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return on_progress
    if len(positional) <= 1:
        return on_progress
    n = min(len(positional), 6)
    return lambda p: on_progress(*p[:n])


def run(cfg: LoadConfig, on_progress: Callable[..., Any] | None = None) -> Report:
    """Run ``cfg.procs`` generator processes and merge their reports.

    Ctrl-C or SIGTERM: every generator stops sending, waits at most a second for replies in
    flight, and reports; the merged report has ``interrupted=True``. The market table and the
    symbols traded come from the cluster (asked once here, so a bad endpoint fails before any
    process starts)."""
    zctx = zmq.Context()
    try:
        info = _probe(cfg, zctx)
    finally:
        zctx.term()
    risk, m = resolve_risk(cfg, info)
    cfg = LoadConfig(
        **{**asdict(cfg), "markets": _cluster_markets(info), "risk": risk, "account_shards": m,
           "id_prefix": f"lg{uuid.uuid4().hex[:6]}-"}
    )  # fmt: skip
    config = cfg.describe()  # also checks the symbols against the cluster's markets
    if risk == "on" and cfg.fund:
        config["funded"] = fund_accounts(cfg)  # deposits made before the first order
    watch = _watch_events(cfg, info) if risk == "on" else None
    ctx = mp.get_context("fork")
    progress: Any = ctx.Queue()
    results: Any = ctx.Queue()
    procs: list[Any] = []

    def forward(signum: int) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)  # a SIGTERM sent to us only: pass it on
                except ProcessLookupError:
                    pass

    stop = StopFlag.install(on_signal=forward)
    try:
        for i in range(cfg.procs):
            orders = None
            if cfg.orders is not None:
                orders = cfg.orders // cfg.procs + (1 if i < cfg.orders % cfg.procs else 0)
                if orders == 0:
                    continue
            sub = LoadConfig(
                **{
                    **asdict(cfg),
                    "symbols": cfg.symbol_names(),
                    "seed": cfg.seed * 1000 + i,
                    "orders": orders,
                }
            )
            p = ctx.Process(target=_child, args=(sub, i, progress, results), daemon=True)
            p.start()
            procs.append(p)
        rep = _collect(cfg, procs, progress, results, _caller(on_progress), stop)
        if watch is not None:
            _count_from_events(cfg, watch, rep, wait=not stop)
    finally:
        if watch is not None:
            watch.stop()
        stop.restore()
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
    rep.config = config
    return rep


def _watch_events(cfg: LoadConfig, info: dict[str, Any]) -> EventWatch:
    """Subscribe to every engine shard's events PUB before the first order (risk on: the
    replies do not say what matched), counting this run's orders from each shard's seq now."""
    pubs = [t.get("pub") for t in info["topology"]]
    if not all(type(p) is str and p for p in pubs):
        raise LoadError("not every engine shard has registered its events PUB yet")
    start = shard_seqs(cfg.endpoint, cfg.keyfile(), cfg.timeout)
    if start is None:
        raise LoadError("an engine shard did not tell its seq (OP_STATUS): is it up?")
    return EventWatch(pubs, FillCounter(cfg.id_prefix, start), cfg.keyfile())


def _count_from_events(cfg: LoadConfig, watch: EventWatch, rep: Report, wait: bool) -> None:
    """After the load: the counts of this run's orders from the events (``settle``; not
    waiting after Ctrl-C) into ``rep``, with where they come from and what was missed."""
    complete = settle(watch, cfg.endpoint, cfg.keyfile(), cfg.timeout, wait)
    c = watch.counter
    rep.accepted, rep.trades, rep.fills, rep.cancelled = c.accepted, c.trades, c.fills, c.cancelled
    rep.rejected = dict(Counter(rep.rejected) + c.rejected)
    rep.counted_from = "events" if complete else "events_incomplete"
    rep.events_lost, rep.events_repaired = c.lost, c.repaired


def _collect(
    cfg: LoadConfig,
    procs: list,
    progress: Any,
    results: Any,
    on_progress: Callable[[Progress], Any] | None,
    stop: StopFlag,
) -> Report:
    last: dict[int, tuple] = {}
    got: list[tuple[str, Any]] = []
    t0 = time.monotonic()
    give_up: float | None = None  # after a stop: when to stop waiting for reports
    while len(got) < len(procs):
        if stop and give_up is None:
            give_up = time.monotonic() + min(cfg.timeout, INTERRUPT_GRACE_S) + 5.0
        if give_up is not None and time.monotonic() > give_up:
            break
        while not progress.empty():
            item = progress.get()
            last[item[0]] = item[1:]
        if on_progress is not None and last and not stop:
            vals = list(last.values())
            on_progress(
                Progress(
                    time.monotonic() - t0,
                    *(sum(v[k] for v in vals) for k in range(3)),
                    max(v[3] for v in vals),
                    *(sum(v[k] for v in vals) for k in range(4, 9)),
                )
            )
        try:
            got.append(results.get(timeout=0.5 if stop else 1.0))
        except Exception:
            if not any(p.is_alive() for p in procs) and results.empty():
                if stop:
                    break
                raise LoadError("a generator process died without a report") from None
    errors_ = [v for k, v in got if k == "error"]
    if errors_ and not stop:
        raise LoadError(errors_[0])
    merged = Report(hist=HdrHistogram(1, HIST_MAX_US, 3))
    rej: Counter[str] = Counter()
    errs: Counter[str] = Counter()
    errcodes: Counter[str] = Counter()
    fates: Counter[str] = Counter(dict.fromkeys(FATES, 0))
    why: Counter[str] = Counter()
    for kind, d in got:
        if kind != "ok":
            continue
        merged.sent += d["sent"]
        merged.acked += d["acked"]
        merged.accepted += d["accepted"]
        merged.held += d.get("held", 0)
        merged.trades += d["trades"]
        merged.fills += d["fills"]
        merged.cancelled += d["cancelled"]
        merged.abandoned += d["abandoned"]
        merged.interrupted |= d["interrupted"]
        merged.seconds = max(merged.seconds, d["seconds"])
        rej.update(d["rejected"])
        errs.update(d["errors"])
        errcodes.update(d.get("error_codes", {}))
        fates.update(d["fates"])
        why.update(d["unknown_why"])
        merged.fate_questions += d["fate_questions"]
        merged.fate_seconds = max(merged.fate_seconds, d["fate_seconds"])
        merged.hist.add(HdrHistogram.decode(d["hist"]))
    merged.rejected = dict(rej)
    merged.errors = dict(errs)
    merged.error_codes = dict(errcodes)
    merged.fates = dict(fates)
    merged.unknown_why = dict(why)
    merged.interrupted |= bool(stop)
    return merged
