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

Account tier: on a cluster started with ``--accounts M`` the engine shards refuse
orders that did not come through an account shard, so ``risk="on"`` (the default there: "auto")
routes each ``new``/``amend`` to its account's shard (``%j``, grouped per shard; cancels by
symbol), gives market buys a quote ``budget``, and first *funds* every account it trades: an
admin deposit tops each one up to ``fund`` units of every asset it trades (``fund_accounts``),
so orders are not refused for funds. ``risk="off"`` sends orders straight to the engine shards:
it only works on a cluster *without* accounts (with accounts it is refused before sending).
With risk on, an ``ok`` reply means held and forwarded (the account shard's answer), so the
latency measured includes the account tier but not the match.

Modules: ``loadconfig`` (``LoadConfig``), ``loadproc`` (one generator process: routing, plan
and fates from the SDK core), ``loadreport`` (``Report``, ``Progress`` and their text), and
this one: the run over processes, funding, and counting from the events.

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
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import zmq
from hdrh.histogram import HdrHistogram

from shardex.accounts.assets import MAX_UNITS, AssetTable
from shardex.client import Client, ShardexError
from shardex.engine import Market
from shardex.tools.fates import FATES
from shardex.tools.fills import EventWatch, FillCounter, settle, shard_seqs
from shardex.tools.loadconfig import FATE_WAIT_S, LoadConfig, LoadError, parse_mix
from shardex.tools.loadproc import (
    FATE_TIMEOUT_S,
    HIST_MAX_US,
    INTERRUPT_GRACE_S,
    MAX_FATE_QUERIES,
    generator,
    probe,
    run_one,
)
from shardex.tools.loadreport import Progress, Report, format_progress, format_report
from shardex.tools.workload import DEFAULT_MIX, DEFAULT_MIX_TEXT
from shardex.wire.protocol import markets_from_wire, markets_to_wire
from shardex.wire.transport import NO_KEY, StopFlag

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
# (importable from here as before the split: the CLI and the tests use them)
_REEXPORTED = (FATE_TIMEOUT_S, FATE_WAIT_S, MAX_FATE_QUERIES, format_progress, format_report,
               run_one)  # fmt: skip

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
    return MAX_UNITS // (8 * accounts)


def fund_accounts(cfg: LoadConfig) -> int:
    """Top every account the run trades (``acct-0``..) up to ``fund_target_units`` of every
    asset of the traded markets with admin deposits (each with a fresh ``ref``). Returns the
    number of deposits made; ``LoadError`` when one is refused (e.g. not an admin key)."""
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
    cfg, info = _for_cluster(cfg)
    config = cfg.describe()  # also checks the symbols against the cluster's markets
    if cfg.risk == "on" and cfg.fund:
        config["funded"] = fund_accounts(cfg)  # deposits made before the first order
    watch = _watch_events(cfg, info) if cfg.risk == "on" else None
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
        procs += _spawn(cfg, ctx, progress, results)
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


def _for_cluster(cfg: LoadConfig) -> tuple[LoadConfig, dict[str, Any]]:
    """``cfg`` completed from the router's topology (markets, risk, account shards) and with
    this run's order id prefix; and the topology."""
    zctx = zmq.Context()
    try:
        info = probe(cfg, zctx)
    finally:
        zctx.term()
    risk, m = resolve_risk(cfg, info)
    cfg = LoadConfig(
        **{**asdict(cfg), "markets": _cluster_markets(info), "risk": risk, "account_shards": m,
           "id_prefix": f"lg{uuid.uuid4().hex[:6]}-"}
    )  # fmt: skip
    return cfg, info


def _spawn(cfg: LoadConfig, ctx: Any, progress: Any, results: Any) -> list[Any]:
    """Start the generator processes (``cfg.orders`` split over them; each its own seed)."""
    procs = []
    for i in range(cfg.procs):
        orders = None
        if cfg.orders is not None:
            orders = cfg.orders // cfg.procs + (1 if i < cfg.orders % cfg.procs else 0)
            if orders == 0:
                continue
        sub = LoadConfig(**{**asdict(cfg), "symbols": cfg.symbol_names(),
                            "seed": cfg.seed * 1000 + i, "orders": orders})  # fmt: skip
        p = ctx.Process(target=_child, args=(sub, i, progress, results), daemon=True)
        p.start()
        procs.append(p)
    return procs


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
    """Wait for every generator's report (progress shown meanwhile) and merge them."""
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
            on_progress(_summed(time.monotonic() - t0, list(last.values())))
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
    merged = _merge([d for kind, d in got if kind == "ok"])
    merged.interrupted |= bool(stop)
    return merged


def _summed(elapsed: float, vals: list[tuple]) -> Progress:
    """The generators' latest progress items as one (p99: the worst of theirs)."""
    return Progress(
        elapsed,
        *(sum(v[k] for v in vals) for k in range(3)),
        max(v[3] for v in vals),
        *(sum(v[k] for v in vals) for k in range(4, 9)),
    )


def _merge(reports: list[dict[str, Any]]) -> Report:
    """The generators' reports (``Report.to_dict`` with the encoded histogram) as one."""
    merged = Report(hist=HdrHistogram(1, HIST_MAX_US, 3))
    rej: Counter[str] = Counter()
    errs: Counter[str] = Counter()
    errcodes: Counter[str] = Counter()
    fates: Counter[str] = Counter(dict.fromkeys(FATES, 0))
    why: Counter[str] = Counter()
    for d in reports:
        for name in ("sent", "acked", "accepted", "trades", "fills", "cancelled", "abandoned",
                     "fate_questions"):  # fmt: skip
            setattr(merged, name, getattr(merged, name) + d[name])
        merged.held += d.get("held", 0)
        merged.interrupted |= d["interrupted"]
        merged.seconds = max(merged.seconds, d["seconds"])
        merged.fate_seconds = max(merged.fate_seconds, d["fate_seconds"])
        rej.update(d["rejected"])
        errs.update(d["errors"])
        errcodes.update(d.get("error_codes", {}))
        fates.update(d["fates"])
        why.update(d["unknown_why"])
        merged.hist.add(HdrHistogram.decode(d["hist"]))
    merged.rejected = dict(rej)
    merged.errors = dict(errs)
    merged.error_codes = dict(errcodes)
    merged.fates = dict(fates)
    merged.unknown_why = dict(why)
    return merged
